"""Pure: models, outcomes, Salesforce's answers once parsed, the refresh policy. No I/O."""
