"""Benchmarks for symbackprop: ``python -m benchmarks`` (``make bench``) runs them all."""
