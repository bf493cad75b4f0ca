"""jetsplit.tools."""
