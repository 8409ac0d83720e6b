"""Performance benchmarks: each module has `run(tiny=False) -> list[dict]`, every figure beside its
baseline measured in the same run; `python -m perf.run` prints them all as one table."""
