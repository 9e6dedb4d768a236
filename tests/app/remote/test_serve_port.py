"""``main.py serve``'s pre-start port check: a port that a stopped server left with connections in
TIME_WAIT is free (Serve's proxy binds with SO_REUSEADDR too), a port something listens on is not."""
from __future__ import annotations

import argparse
import socket

import pytest

from app.remote.server.cli import check_serve_args


def args_for(port: int) -> argparse.Namespace:
    return argparse.Namespace(host="127.0.0.1", port=port, token=None, token_file=None, max_sessions=8,
                              max_batch=8, idle_timeout_s=30.0, tls_cert=None, tls_key=None)


def test_a_port_with_connections_in_time_wait_is_free():
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)     # as Serve's proxy
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        served, _ = listener.accept()
        served.close()                        # the server closes first: its side goes to TIME_WAIT
        assert client.recv(1) == b""
        client.close()
    check_serve_args(args_for(port))          # no "cannot listen": the restart goes ahead


def test_a_port_in_use_is_refused():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with pytest.raises(ValueError, match="cannot listen on 127.0.0.1"):
            check_serve_args(args_for(listener.getsockname()[1]))
