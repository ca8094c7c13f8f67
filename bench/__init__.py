"""Benchmarks of nst-engine: cases as data, a runner that returns rows, a report renderer."""
