"""``python main.py serve``: start a local Ray instance and the render server application on it,
say where it serves, and run until Ctrl+C (or SIGTERM).

Its inputs are checked before Ray starts, so a mistake costs one line and exit status 2: the
token (required to listen on anything but loopback), the port (free), TLS files, the weights."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path

from ...cli.console import EXIT_INTERRUPTED, EXIT_OK
from ...cli.options import add_token_arguments, token_from_args
from .. import protocol as p
from .options import DEFAULTS, MIN_TOKEN_LENGTH, add_server_arguments, check_token, is_loopback, server_args

log = logging.getLogger(__name__)


def add_serve_arguments(ap: argparse.ArgumentParser) -> None:
    from engines.options import add_engine_arguments

    add_engine_arguments(ap, backend=DEFAULTS.backend, device=DEFAULTS.device, download=True)
    ap.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1; any other needs a token)")
    ap.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    add_token_arguments(ap, f"the token clients must present (at least {MIN_TOKEN_LENGTH} characters)")
    add_server_arguments(ap)
    ap.add_argument("--tls-cert", metavar="PEM", help="serve wss:// with this certificate (and --tls-key)")
    ap.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")


def read_token(args: argparse.Namespace) -> str | None:
    """The token from ``--token`` or ``--token-file`` (None: neither); ``ValueError`` when too short."""
    return check_token(token_from_args(args))


def check_serve_args(args: argparse.Namespace) -> str | None:
    """Everything that can be checked before Ray starts; returns the token."""
    token = read_token(args)
    if not is_loopback(args.host) and token is None:
        raise ValueError(f"refusing to listen on {args.host} without a token: give --token or --token-file "
                         "(or listen on 127.0.0.1)")
    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port: expected 1..65535, got {args.port}")
    if args.max_sessions < 1 or args.max_batch < 1:
        raise ValueError("--max-sessions and --max-batch must be at least 1")
    if args.idle_timeout_s <= 0:
        raise ValueError("--idle-timeout must be positive")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ValueError("--tls-cert and --tls-key go together")
    for flag, path in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)):
        if path and not Path(path).is_file():
            raise ValueError(f"{flag}: {path} not found")
    with socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET) as s:
        try:
            s.bind((args.host, args.port))
        except OSError as e:
            raise ValueError(f"cannot listen on {args.host}:{args.port}: {e.strerror}") from None
    return token


def run_server(args: argparse.Namespace) -> int:
    """Start, serve until Ctrl+C or SIGTERM, stop. Exit status as ``main``'s."""
    token = check_serve_args(args)
    weights = None
    if args.backend != "stub":
        from engines.weights import ensure_weights, resolve_weights_dir

        weights = str(ensure_weights(resolve_weights_dir(args.weights), download=not args.no_download))
    from engines.device import resolve_device

    resolve_device(args.device)          # --device cuda without a GPU: one line, before Ray starts

    # Ray's usage statistics stay off unless the user turned them on
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    import torch
    from ray import serve

    from .deployment import build_app

    logging.getLogger("ray.serve").setLevel(logging.WARNING)     # its start-up chatter; our lines say it
    t0 = time.perf_counter()
    ray.init(include_dashboard=False, configure_logging=False, log_to_driver=True,
             logging_level=logging.WARNING)
    stop = threading.Event()
    interrupted = False
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        http = {"host": args.host, "port": args.port}
        if args.tls_cert:
            http.update(ssl_certfile=args.tls_cert, ssl_keyfile=args.tls_key)
        serve.start(http_options=http, logging_config={"log_level": "WARNING"})
        app = build_app({"weights": weights, "backend": args.backend, "device": args.device, "token": token,
                         "loopback_only": is_loopback(args.host),
                         **server_args(args),
                         # as many as this process would use: a CPU server renders as fast as a local
                         # run, and its floating-point sums come out the same (the stub's tiny
                         # operations run best on one)
                         "cpu_threads": 1 if args.backend == "stub" else torch.get_num_threads()})
        try:
            serve.run(app, name="avatarcam", route_prefix="/",
                      logging_config={"log_level": "WARNING", "enable_access_log": False})
        except RuntimeError as e:       # the replica's constructor failed; Ray has shown its traceback
            raise ValueError(f"the render server did not start: {e}") from None
        scheme = "wss" if args.tls_cert else "ws"
        log.info("render server ready in %.1f s: %s://%s:%d%s (health: %s://%s:%d%s); Ctrl+C stops it",
                 time.perf_counter() - t0, scheme, args.host, args.port, p.SESSION_PATH,
                 "https" if args.tls_cert else "http", args.host, args.port, p.HEALTH_PATH)
        try:
            while not stop.wait(0.2):
                pass
        except KeyboardInterrupt:
            interrupted = True
    finally:
        t1 = time.perf_counter()
        signal.signal(signal.SIGTERM, previous)
        ray.shutdown()                   # ends Serve's actors with the local instance
        log.info("render server stopped in %.1f s", time.perf_counter() - t1)
    return EXIT_INTERRUPTED if interrupted else EXIT_OK
