"""What the CLI, the API and the console may ask: typed results, never printing."""
