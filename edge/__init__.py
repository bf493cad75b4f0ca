"""jetsplit.edge."""
