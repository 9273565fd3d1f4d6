"""Speed and memory benchmarks, side by side with Flax and PyTorch (not installed with the library)."""
