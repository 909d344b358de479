"""The `tokenworker` command."""
