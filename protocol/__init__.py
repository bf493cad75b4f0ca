"""jetsplit.protocol."""
