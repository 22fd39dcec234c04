"""Benchmarks of the osteoporosis-escalation CDS Service (see BENCHMARKS.md; run benchmarks/run.sh)."""
