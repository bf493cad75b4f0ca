"""jetsplit.cloud."""
