"""Benchmarks: run as scripts, never collected by pytest (their names start with bench_)."""
