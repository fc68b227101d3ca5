"""Data contract, synthetic data and ingest."""
