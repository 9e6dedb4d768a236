"""``python main.py serve``: start a local Ray instance and the render server application on it,
say where it serves, and run until Ctrl+C (or SIGTERM).

Its inputs are checked before Ray starts, so a mistake costs one line and exit status 2: the
token (required to listen on anything but loopback), the port (free), TLS files, the weights."""
from __future__ import annotations

import argparse
import logging
import os
import secrets
import shutil
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ...cli.console import EXIT_INTERRUPTED, EXIT_OK
from ...cli.options import add_token_arguments, token_from_args
from .. import protocol as p
from . import gatekeeper
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
        # as Serve's proxy binds: a port with connections of a stopped server in TIME_WAIT is free
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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
    private = private_ray_dir()
    try:
        return _serve(args, token, weights, private)
    finally:
        shutil.rmtree(private, ignore_errors=True)      # Ray's session files, logs and token


def _serve(args: argparse.Namespace, token: str | None, weights: str | None, private: Path) -> int:
    os.environ.update(ray_environment(private, token, loopback=is_loopback(args.host)))
    if token is None:
        os.environ.pop(gatekeeper.TOKEN_ENV, None)
    gatekeeper.raise_descriptor_limit()          # Ray's processes, the proxy among them, inherit it
    import ray
    import torch
    from ray import serve

    from .deployment import build_app

    logging.getLogger("ray.serve").setLevel(logging.WARNING)     # its start-up chatter; our lines say it
    t0 = time.perf_counter()
    ray.init(include_dashboard=False, configure_logging=False, log_to_driver=True,
             logging_level=logging.WARNING, **ray_init_options(private, loopback=is_loopback(args.host)))
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
                         # a weight set first needed by a session (animal) is downloaded as the app does
                         "download": not args.no_download,
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
        _drain(serve)
        ray.shutdown()                   # ends Serve's actors with the local instance
        log.info("render server stopped in %.1f s", time.perf_counter() - t1)
    return EXIT_INTERRUPTED if interrupted else EXIT_OK


# Unix sockets live under Ray's temp dir (<dir>/session_<date>_<time>_<pid>/sockets/plasma_store,
# about 64 characters more): the whole path must stay under the 107-byte limit
MAX_BASE_DIR_CHARS = 25


def private_ray_dir() -> Path:
    """A new directory of ours (mode 0700) for Ray's session files, sockets, logs and token:
    under $XDG_RUNTIME_DIR when that is short enough, else the system's temp dir (else /tmp)."""
    for base in (os.environ.get("XDG_RUNTIME_DIR"), tempfile.gettempdir(), "/tmp"):
        if base and os.path.isdir(base) and len(base) <= MAX_BASE_DIR_CHARS:
            return Path(tempfile.mkdtemp(prefix="avc-", dir=base))     # mkdtemp: 0700
    raise ValueError("no short temporary directory for Ray's files (set XDG_RUNTIME_DIR)")


def ray_environment(private: Path, token: str | None, *, loopback: bool) -> dict[str, str]:
    """Environment variables for Ray's processes: Serve's proxy callback, our token for it, and
    Ray's own token in a private file (not ~/.ray/auth_token, world-readable and left behind)."""
    env = {gatekeeper.CALLBACK_ENV: gatekeeper.CALLBACK_PATH}
    if token is not None:
        env[gatekeeper.TOKEN_ENV] = token
    if "RAY_AUTH_TOKEN" not in os.environ and "RAY_AUTH_TOKEN_PATH" not in os.environ:
        path = private / "ray_token"
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(32))
        env["RAY_AUTH_TOKEN_PATH"] = str(path)
    if loopback:
        # the worker setup hook (``ray_init_options``) is imported before Ray adds the driver's
        # directory to a worker's path
        root = str(Path(__file__).resolve().parents[3])
        env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])
        # Ray otherwise resolves 127.0.0.1 to the machine's LAN address for its node, and its
        # agents and metrics exporters bind every interface; with this it keeps to loopback
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    return env


def ray_init_options(private: Path, *, loopback: bool) -> dict:
    """``ray.init``'s keyword arguments for where Ray listens, keeps its files and (not) spills."""
    # Ray makes its temp dir world-writable: it goes inside ours, which stays 0700
    options: dict = {"_temp_dir": str(private / "r"),
                     # objects over the store's size fail instead of going to disk: they are frames
                     "_system_config": {"automatic_object_spilling_enabled": False}}
    if loopback:
        options.update(_node_ip_address="127.0.0.1", dashboard_host="127.0.0.1",
                       runtime_env={"worker_process_setup_hook":
                                    "app.remote.server.ray_local.keep_replica_grpc_on_loopback"})
    return options


def _drain(serve: Any) -> None:
    """Every open session closed with 1001 before Ray stops (the replica's ``drain``)."""
    try:
        handle = serve.get_app_handle("avatarcam")
        closed = handle.drain.remote().result(timeout_s=3.0)
        if closed:
            log.info("closed %d open session(s): server stopping", closed)
    except Exception as e:  # noqa: BLE001 - the server stops anyway; the clients see the connection end
        log.debug("sessions not drained: %s", e)
