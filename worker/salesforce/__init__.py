"""Everything that knows how Salesforce's OAuth endpoints look and behave."""
