"""tokenworker: keeps the OAuth tokens of stored Salesforce connections alive."""
