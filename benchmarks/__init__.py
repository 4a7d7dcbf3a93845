"""vl2 benchmarks: each `bench_*` module has `run() -> BenchResult`; `python -m benchmarks.run` runs them all."""
