"""Benchmark scripts (not tests): each prints a table; bench/RESULTS.md holds their figures."""
