"""Speed and memory benchmarks, each a ratio against a baseline run in the same process: `python -m benchmarks.NAME`."""
