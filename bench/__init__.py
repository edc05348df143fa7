"""Benchmarks: `make bench` (speed and peak memory per stage)."""
