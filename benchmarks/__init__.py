"""Benchmarks: `python -m benchmarks.train_speed` (see benchmarks/README.md). Not tests: no assertions."""
