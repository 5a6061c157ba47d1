"""`ticor bench` and the runtime and scorer benchmarks."""
