"""The render server: sessions over WebSockets (``service``, ``session``), W+G batched across
sessions (``batching``), the Ray Serve deployment (``deployment``) and what its health tells of
the other replicas (``cluster``), ``main.py serve`` (``cli``) and a server in a child process for
tests and benchmarks (``local_server``). Needs ``requirements-server.txt``."""
