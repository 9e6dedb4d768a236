"""Benchmarks and checks, each runnable with ``python -m``: the loop (``bench``), tracking,
background, the render server (``remote_bench``), the GPU check (``gpucheck``) and the start-up
check (``selfcheck``, ``main.py --check``)."""
