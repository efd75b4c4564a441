"""Speed and quality benchmarks, each runnable as `python -m benchmarks.<name>`; timings are ratios in-process."""
