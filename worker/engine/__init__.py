"""The check cycle: the one place that combines the store, Salesforce and events."""
