"""A local stand-in for the Hugging Face file server, enough for ``huggingface_hub.hf_hub_download``.

Two HTTP servers in threads, as on the real hub: the *hub* on 127.0.0.1 answers
``HEAD``/``GET /{repo}/resolve/{revision}/{path}`` with a 302 to the *CDN* on 127.0.0.2 (another
host, so the client does not follow the HEAD's redirect and reads the file's metadata from the 302
itself: ``X-Repo-Commit``, ``X-Linked-Etag`` = the file's sha256 as for an LFS file,
``X-Linked-Size``); the CDN serves ``/lfs/{sha256}`` with ``Range`` requests. Nothing advertises Xet,
so the client takes its plain HTTP path.

Faults are switched per repository path (``FakeHub.faults[path] = Fault(...)``): a status from the
hub, a connection dropped after N bytes (then a status until cleared, or normal service), a short
file, changed bytes, a stall until the test releases it. Every request is logged (``requests``) with
its ``Range`` header and the bytes sent, so a test can check what the client really asked for.

Use: ``with FakeHub({"org/repo": {"a/b.pth": Path(...)}}) as hub: ...`` and point the client at
``hub.endpoint`` (``HF_ENDPOINT`` for a child process, ``hub.patch_endpoint(monkeypatch)`` in process).
"""
from __future__ import annotations

import hashlib
import re
import socket
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest

HUB_HOST = "127.0.0.1"
CDN_HOST = "127.0.0.2"          # another host: the client does not follow the HEAD's redirect there
COMMIT = "0123456789abcdef0123456789abcdef01234567"
STALL_LIMIT_S = 60.0            # a stalled response gives up by itself after this


@dataclass
class Fault:
    """What goes wrong for one repository path (all off by default)."""

    status: int | None = None          # the hub answers HEAD and GET with this status
    cut_after: int | None = None       # the CDN drops the connection once this many bytes of the file are sent...
    cuts: int = 1                      # ...this many times, then serves normally
    status_after_cut: int | None = None  # once cut, the CDN answers this status until the fault is cleared
    truncate_to: int | None = None     # the CDN's file has only this many bytes (consistent headers: a short file)
    corrupt: bool = False              # the CDN serves the right size with some bytes changed
    stall_after: int | None = None     # the CDN stops after this many bytes until ``release`` is set, then
    #                                    drops the connection (once)
    release: threading.Event = field(default_factory=threading.Event)
    stalled: threading.Event = field(default_factory=threading.Event)   # set when the stall begins


@dataclass(frozen=True)
class Request:
    server: str            # "hub" or "cdn"
    method: str
    path: str              # repository path of the file
    range: str | None      # the Range header as sent
    status: int
    sent: int              # body bytes written


@dataclass(frozen=True)
class _File:
    repo: str
    path: str
    source: Path
    sha256: str
    size: int


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


class FakeHub:
    """The two servers, their files, faults and request log. A context manager (stops both)."""

    def __init__(self, repos: dict[str, dict[str, Path]], *, chunk: int = 1 << 20) -> None:
        self.files: dict[tuple[str, str], _File] = {}
        for repo, files in repos.items():
            for rel, source in files.items():
                self.files[(repo, rel)] = _File(repo, rel, Path(source), _sha256(source), Path(source).stat().st_size)
        self.by_sha = {f.sha256: f for f in self.files.values()}
        self.faults: dict[str, Fault] = {}
        self.requests: list[Request] = []
        self.chunk = chunk
        self._lock = threading.Lock()
        self._hub = self._serve(HUB_HOST, "hub")
        self._cdn = self._serve(CDN_HOST, "cdn")

    # -- public ----------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return f"http://{HUB_HOST}:{self._hub.server_address[1]}"

    @property
    def cdn(self) -> str:
        return f"http://{CDN_HOST}:{self._cdn.server_address[1]}"

    def patch_endpoint(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Point an already imported ``huggingface_hub`` at this server (it reads ``HF_ENDPOINT`` once,
        at import; a child process gets ``HF_ENDPOINT`` instead)."""
        from huggingface_hub import constants

        monkeypatch.setattr(constants, "ENDPOINT", self.endpoint)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            self.endpoint + "/{repo_id}/resolve/{revision}/{filename}")

    def log(self, path: str, server: str = "cdn", method: str = "GET") -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == path and r.server == server and r.method == method]

    def close(self) -> None:
        for fault in self.faults.values():
            fault.release.set()
        for server in (self._hub, self._cdn):
            server.shutdown()
            server.server_close()

    def __enter__(self) -> FakeHub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- servers ---------------------------------------------------------------------------------
    def _serve(self, host: str, role: str) -> ThreadingHTTPServer:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:   # noqa: A002 - the base's name
                pass

            def do_HEAD(self) -> None:
                hub._handle(self, role, body=False)

            def do_GET(self) -> None:
                hub._handle(self, role, body=True)

        server = ThreadingHTTPServer((host, 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         name=f"fake-hub-{role}", daemon=True).start()
        return server

    def _record(self, req: BaseHTTPRequestHandler, role: str, path: str, status: int, sent: int) -> None:
        with self._lock:
            self.requests.append(Request(role, req.command, path, req.headers.get("Range"), status, sent))

    def _handle(self, req: BaseHTTPRequestHandler, role: str, *, body: bool) -> None:
        if role == "hub":
            self._resolve(req, body=body)
        else:
            self._lfs(req, body=body)

    def _reply(self, req: BaseHTTPRequestHandler, status: int, headers: dict[str, str], payload: bytes = b"",
               *, body: bool = True) -> None:
        req.send_response(status)
        for name, value in headers.items():
            req.send_header(name, value)
        req.send_header("Content-Length", str(len(payload)))
        req.end_headers()
        if body and payload:
            req.wfile.write(payload)

    def _resolve(self, req: BaseHTTPRequestHandler, *, body: bool) -> None:
        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", req.path.split("?")[0])
        if not m:
            self._reply(req, 404, {"X-Error-Code": "RepoNotFound"}, b"not found", body=body)
            return
        repo, path = m[1], unquote(m[3])
        file = self.files.get((repo, path))
        fault = self.faults.get(path, Fault())
        if fault.status is not None or file is None:
            status = fault.status or 404
            headers = {"X-Repo-Commit": COMMIT}
            if status == 404:
                headers["X-Error-Code"] = "EntryNotFound"
            self._record(req, "hub", path, status, 0)
            self._reply(req, status, headers, HTTPStatus(status).phrase.encode(), body=body)
            return
        self._record(req, "hub", path, 302, 0)
        self._reply(req, 302, {
            "X-Repo-Commit": COMMIT,
            "ETag": f'"{file.sha256}"',
            "X-Linked-Etag": f'"{file.sha256}"',
            "X-Linked-Size": str(file.size),
            "Location": f"{self.cdn}/lfs/{file.sha256}",
        }, body=body)

    def _lfs(self, req: BaseHTTPRequestHandler, *, body: bool) -> None:
        file = self.by_sha.get(req.path.split("?")[0].rsplit("/", 1)[-1])
        if file is None:
            self._reply(req, 404, {}, b"no such object", body=body)
            return
        fault = self.faults.get(file.path, Fault())
        if fault.status_after_cut is not None and fault.cuts <= 0:
            self._record(req, "cdn", file.path, fault.status_after_cut, 0)
            self._reply(req, fault.status_after_cut, {}, HTTPStatus(fault.status_after_cut).phrase.encode(),
                        body=body)
            return
        size = fault.truncate_to if fault.truncate_to is not None else file.size
        start, end = 0, size - 1
        status = 200
        wanted = req.headers.get("Range")
        if wanted:
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted.strip())
            if not m or int(m[1]) >= size:
                self._record(req, "cdn", file.path, 416, 0)
                self._reply(req, 416, {"Content-Range": f"bytes */{size}"}, body=body)
                return
            start, end, status = int(m[1]), min(int(m[2]) if m[2] else size - 1, size - 1), 206
        req.send_response(status)
        req.send_header("Content-Length", str(end - start + 1))
        req.send_header("Accept-Ranges", "bytes")
        req.send_header("ETag", f'"{file.sha256}"')
        name = file.path.rsplit("/", 1)[-1]        # as the real CDN: the client's bar shows the file's name
        req.send_header("Content-Disposition", f"attachment; filename*=UTF-8''{name}; filename=\"{name}\";")
        if status == 206:
            req.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        req.end_headers()
        if not body:
            self._record(req, "cdn", file.path, status, 0)
            return
        sent = self._send_range(req, file, fault, start, end)
        self._record(req, "cdn", file.path, status, sent)

    def _send_range(self, req: BaseHTTPRequestHandler, file: _File, fault: Fault, start: int, end: int) -> int:
        """Writes bytes start..end of the file, applying the fault; returns how many were written."""
        stop = end + 1
        cut = fault.cut_after is not None and fault.cuts > 0 and start < fault.cut_after < stop
        stall = fault.stall_after is not None and start < fault.stall_after < stop
        limit = fault.cut_after if cut else fault.stall_after if stall else stop
        sent = 0
        with open(file.source, "rb") as f:
            f.seek(start)
            pos = start
            while pos < limit:
                data = f.read(min(self.chunk, limit - pos))
                if not data:
                    break
                if fault.corrupt and pos <= file.size // 2 < pos + len(data):
                    i = file.size // 2 - pos           # one changed byte in the middle: same size, wrong hash
                    data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
                try:
                    req.wfile.write(data)
                except OSError:            # the client went away (a killed download)
                    return sent
                pos += len(data)
                sent += len(data)
        if cut:
            fault.cuts -= 1
            req.wfile.flush()
            req.connection.shutdown(socket.SHUT_RDWR)    # mid-body: the client sees a dropped connection
            req.close_connection = True
        elif stall:
            req.wfile.flush()
            fault.stalled.set()
            fault.release.wait(STALL_LIMIT_S)
            fault.stall_after = None            # once: the client's retry then gets the rest
            req.connection.shutdown(socket.SHUT_RDWR)
            req.close_connection = True
        return sent
