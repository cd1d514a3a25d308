"""Benchmarks: ``python -m suite.bench`` (``__main__``), the measurements (``measure``)."""
