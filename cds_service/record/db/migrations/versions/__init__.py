"""Hand-written, deterministic migrations; one file per revision."""
