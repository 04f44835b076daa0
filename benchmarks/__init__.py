"""Benchmarks for trio_realtime (not tests: nothing here asserts a timing)."""
