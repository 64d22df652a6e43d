"""Benchmarks (`make bench`): timings against the reference libraries, never asserted in tests."""
