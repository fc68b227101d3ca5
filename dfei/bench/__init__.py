"""Performance benchmarks: in-process limits and Ray pipeline measurements (pipelines/benchmark.py)."""
