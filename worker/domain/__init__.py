"""Pure: models, outcomes, the refresh policy, what counts as a secret. No I/O."""
