"""jetsplit.calibration."""
