"""Benchmarks: `python -m bench [--quick] [--tables 1,2,3,4]` prints markdown tables (see bench/RESULTS.md)."""
