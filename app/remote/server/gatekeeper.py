"""Protection in the HTTP proxy, before a request reaches a replica: connection-level limits,
health rate limits and the session token.

Ray Serve's proxy is a uvicorn server that Serve configures itself (host, port, keep-alive, TLS):
it never times out a connection that has not completed a request and caps no connections, and
every request, health included, goes through a replica. Serve calls ``proxy_middlewares`` in each
proxy process at start when ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` names it (``main.py
serve`` sets it before Ray starts; on a cluster it must be in the environment of ``ray start`` on
every node). It does three things there:

- ``install_connection_guard``: wraps uvicorn's HTTP protocol classes (httptools and h11), once
  per process, in this module only: a connection must complete
  its request head within ``head_timeout_s`` (after it opens, and again after each response),
  and connections are capped per client address and in total; a connection over a cap is
  aborted at once. uvicorn's internals are not an API, so the patch is made only for the tested
  versions and the methods it expects; otherwise it logs a warning and leaves uvicorn alone.
- ``GateMiddleware`` (ASGI): ``/v1/health`` is rate-limited per client address (token bucket;
  over the limit: 429 from the proxy), and a WebSocket upgrade without the right ``Authorization:
  Bearer`` token is refused with 403 in the proxy (constant-time comparison), so floods without
  the token never occupy a replica.
- raises the process's soft descriptor limit to its hard limit.

Every kind of drop is counted and logged as one aggregated WARNING line per interval (reason,
count, the addresses with the most), never a line per connection.

Settings come from the proxy's environment (``GateSettings.from_env``): ``AVATARCAM_TOKEN``,
``AVATARCAM_HEAD_TIMEOUT_S``, ``AVATARCAM_MAX_CONNECTIONS``, ``AVATARCAM_MAX_CONNECTIONS_PER_ADDRESS``,
``AVATARCAM_HEALTH_RATE``, ``AVATARCAM_HEALTH_BURST``, ``AVATARCAM_DROP_LOG_INTERVAL_S``. Client
addresses are the TCP peers: behind a load balancer they are the balancer's.

Nothing here imports Ray, torch or the render code: the proxy loads it alone."""
from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import os
import resource
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import protocol as p
from .options import TOKEN_ENV

log = logging.getLogger(__name__)

CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
CALLBACK_PATH = f"{__name__}:proxy_middlewares"
# uvicorn versions whose protocol classes the guard was written and tested against
TESTED_UVICORN = ("0.55.",)
FD_HEADROOM_MIN = 256               # descriptors kept for Ray's own sockets, files and pipes


def _env_number(name: str, default: float, minimum: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}: expected a number, got {raw!r}") from None
    if not value >= minimum:
        raise ValueError(f"{name}: expected at least {minimum:g}, got {raw!r}")
    return value


def default_max_connections(soft_limit: int) -> int:
    """All connections the proxy accepts at once: its descriptor limit less headroom (an eighth,
    at least ``FD_HEADROOM_MIN``), never below 16."""
    return max(16, soft_limit - max(FD_HEADROOM_MIN, soft_limit // 8))


@dataclass(frozen=True)
class GateSettings:
    """What the proxy enforces (``from_env``: the proxy's environment, defaults below)."""

    token: str | None = None
    head_timeout_s: float = 10.0           # to complete a request head, after opening or a response
    max_connections: int = 1024
    max_connections_per_address: int = 64
    health_rate: float = 5.0               # /v1/health per second and client address, sustained
    health_burst: float = 10.0
    drop_log_interval_s: float = 10.0

    @classmethod
    def from_env(cls) -> GateSettings:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        soft = soft if soft != resource.RLIM_INFINITY else 1 << 20
        return cls(
            token=os.environ.get(TOKEN_ENV) or None,
            head_timeout_s=_env_number("AVATARCAM_HEAD_TIMEOUT_S", cls.head_timeout_s, 0.1),
            max_connections=int(_env_number("AVATARCAM_MAX_CONNECTIONS", default_max_connections(soft), 1)),
            max_connections_per_address=int(_env_number("AVATARCAM_MAX_CONNECTIONS_PER_ADDRESS",
                                                        cls.max_connections_per_address, 1)),
            health_rate=_env_number("AVATARCAM_HEALTH_RATE", cls.health_rate, 0.01),
            health_burst=_env_number("AVATARCAM_HEALTH_BURST", cls.health_burst, 1),
            drop_log_interval_s=_env_number("AVATARCAM_DROP_LOG_INTERVAL_S", cls.drop_log_interval_s, 0.1))


class DropLog:
    """Counts drops by (reason, address) and logs one WARNING line per reason and interval."""

    def __init__(self, interval_s: float, logger: logging.Logger = log) -> None:
        self.interval_s = interval_s
        self.logger = logger
        self.counts: dict[str, Counter[str]] = {}
        self.totals: Counter[str] = Counter()        # since the start, for tests and health checks
        self._flush_at: float | None = None
        self._window = 0

    def count(self, reason: str, address: str) -> None:
        self.counts.setdefault(reason, Counter())[address] += 1
        self.totals[reason] += 1
        now = time.monotonic()
        if self._flush_at is None:
            self._flush_at = now + self.interval_s
            try:      # flushed on time even if nothing else is dropped
                asyncio.get_running_loop().call_later(self.interval_s, self._flush_window, self._window)
            except RuntimeError:
                pass
        elif now >= self._flush_at:
            self.flush()

    def _flush_window(self, window: int) -> None:
        if window == self._window:      # not flushed since by a later drop
            self.flush()

    def flush(self) -> None:
        counts, self.counts, self._flush_at = self.counts, {}, None
        self._window += 1
        for reason, by_address in counts.items():
            top = ", ".join(f"{a}: {n}" for a, n in by_address.most_common(5))
            more = f" and {len(by_address) - 5} more addresses" if len(by_address) > 5 else ""
            self.logger.warning("proxy dropped %d %s in the last %g s (%s%s)", sum(by_address.values()), reason,
                                self.interval_s, top, more)


@dataclass
class _Connection:
    address: str
    deadline: asyncio.TimerHandle | None = None


@dataclass
class ConnectionGuard:
    """The connection state the patched protocols report to (one per proxy process)."""

    settings: GateSettings
    drops: DropLog
    open: dict[Any, _Connection] = field(default_factory=dict)       # transport -> connection
    per_address: Counter[str] = field(default_factory=Counter)

    def opened(self, transport: Any, loop: asyncio.AbstractEventLoop) -> None:
        address = _peer_host(transport)
        reason = None
        if len(self.open) >= self.settings.max_connections:
            reason = f"connections over the proxy's cap of {self.settings.max_connections}"
        elif self.per_address[address] >= self.settings.max_connections_per_address:
            reason = f"connections over the cap of {self.settings.max_connections_per_address} per address"
        if reason is not None:
            self.drops.count(reason, address)
            transport.abort()             # connection_lost follows; it finds nothing to release
            return
        self.open[transport] = _Connection(address)
        self.per_address[address] += 1
        self.await_head(transport, loop)

    def await_head(self, transport: Any, loop: asyncio.AbstractEventLoop) -> None:
        connection = self.open.get(transport)
        if connection is not None and connection.deadline is None:
            connection.deadline = loop.call_later(self.settings.head_timeout_s, self._expired, transport)

    def head_complete(self, transport: Any) -> None:
        connection = self.open.get(transport)
        if connection is not None and connection.deadline is not None:
            connection.deadline.cancel()
            connection.deadline = None

    def closed(self, transport: Any) -> None:
        connection = self.open.pop(transport, None)
        if connection is None:
            return
        if connection.deadline is not None:
            connection.deadline.cancel()
        self.per_address[connection.address] -= 1
        if self.per_address[connection.address] <= 0:
            del self.per_address[connection.address]

    def _expired(self, transport: Any) -> None:
        connection = self.open.get(transport)
        if connection is None:
            return
        connection.deadline = None
        self.drops.count(f"connections without a complete request head within {self.settings.head_timeout_s:g} s",
                         connection.address)
        transport.abort()


def _peer_host(transport: Any) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"


# --- the uvicorn patch: the only code here that knows uvicorn's internals ---------------------

_guard: ConnectionGuard | None = None
_originals: list[tuple[type, str, Callable[..., Any]]] = []


def _protocol_classes() -> tuple[list[type], str | None]:
    """uvicorn's HTTP protocol classes, and why they cannot be patched (None: they can)."""
    import uvicorn

    if not uvicorn.__version__.startswith(TESTED_UVICORN):
        return [], f"uvicorn {uvicorn.__version__} is not a tested version ({', '.join(TESTED_UVICORN)}x)"
    from uvicorn.protocols.http.h11_impl import H11Protocol
    http: list[type] = [H11Protocol]
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
        http.append(HttpToolsProtocol)
    except ImportError:       # no httptools: uvicorn uses h11
        pass
    for cls in http:
        head = "on_headers_complete" if cls.__name__ == "HttpToolsProtocol" else "handle_events"
        for method in ("connection_made", "connection_lost", "on_response_complete", "handle_websocket_upgrade", head):
            if not callable(getattr(cls, method, None)):
                return [], f"uvicorn's {cls.__name__} has no {method}"
    return http, None


def _wrap(cls: type, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    original = getattr(cls, name)
    _originals.append((cls, name, original))
    setattr(cls, name, functools.wraps(original)(make(original)))


def install_connection_guard(settings: GateSettings, drops: DropLog | None = None) -> ConnectionGuard | None:
    """Patch uvicorn's protocol classes in this process (once; a second call returns the first
    guard). None, with a warning, where uvicorn's internals are not the ones expected."""
    global _guard
    if _guard is not None:
        return _guard
    http, problem = _protocol_classes()
    if problem is not None:
        log.warning("proxy connection limits are OFF: %s", problem)
        return None
    import h11

    guard = ConnectionGuard(settings, drops or DropLog(settings.drop_log_interval_s))

    # Each connection: admitted (or aborted) when it opens; released when it closes, from the
    # HTTP protocol or, after an upgrade, from the WebSocket protocol that took the transport
    # (whichever implementation it is: its instance's connection_lost is wrapped).
    def connection_made(original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(self: Any, transport: Any) -> None:
            original(self, transport)          # first: uvicorn's own state must exist for connection_lost
            guard.opened(transport, self.loop)
        return wrapper

    def connection_lost(original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(self: Any, exc: Exception | None) -> None:
            guard.closed(self.transport)
            original(self, exc)
        return wrapper

    def handle_websocket_upgrade(original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(self: Any, *args: Any) -> None:
            transport = self.transport
            original(self, *args)
            upgraded = transport.get_protocol()
            if upgraded is not self:
                lost = upgraded.connection_lost

                def upgraded_lost(exc: Exception | None) -> None:
                    guard.closed(transport)
                    lost(exc)
                upgraded.connection_lost = upgraded_lost
        return wrapper

    # After a response the next request head is due within the deadline again (a keep-alive
    # connection must not trickle headers either); a pipelined request already has its head.
    def on_response_complete(original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(self: Any) -> None:
            if not getattr(self, "pipeline", None) and not self.transport.is_closing():
                guard.await_head(self.transport, self.loop)
            original(self)
        return wrapper

    def on_headers_complete(original: Callable[..., Any]) -> Callable[..., Any]:       # httptools
        def wrapper(self: Any) -> None:
            guard.head_complete(self.transport)
            original(self)
        return wrapper

    def handle_events(original: Callable[..., Any]) -> Callable[..., Any]:             # h11
        def wrapper(self: Any) -> None:
            original(self)
            # h11 leaves IDLE for the client only with a whole request head (h11.Request)
            if self.conn.their_state is not h11.IDLE:
                guard.head_complete(self.transport)
        return wrapper

    for cls in http:
        _wrap(cls, "connection_made", connection_made)
        _wrap(cls, "connection_lost", connection_lost)
        _wrap(cls, "on_response_complete", on_response_complete)
        _wrap(cls, "handle_websocket_upgrade", handle_websocket_upgrade)
        if cls.__name__ == "HttpToolsProtocol":
            _wrap(cls, "on_headers_complete", on_headers_complete)
        else:
            _wrap(cls, "handle_events", handle_events)
    _guard = guard
    return guard


def uninstall_connection_guard() -> None:
    """Undo ``install_connection_guard`` (tests)."""
    global _guard
    while _originals:
        cls, name, original = _originals.pop()
        setattr(cls, name, original)
    _guard = None


# --- the ASGI middleware ------------------------------------------------------------------------

class TokenBuckets:
    """One token bucket per key: ``rate`` per second, up to ``burst``."""

    MAX_KEYS = 4096

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.buckets: dict[str, tuple[float, float]] = {}     # key -> (tokens, when)

    def take(self, key: str) -> bool:
        now = self.clock()
        tokens, when = self.buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - when) * self.rate)
        allowed = tokens >= 1.0
        self.buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        if len(self.buckets) > self.MAX_KEYS:     # forget the full buckets: they are the default
            full_after = self.burst / self.rate
            self.buckets = {k: v for k, v in self.buckets.items() if now - v[1] < full_after}
        return allowed


TOO_MANY = b"too many health requests\n"


class GateMiddleware:
    """Health rate limits and the session token, answered in the proxy."""

    def __init__(self, app: Any, settings: GateSettings | None = None, drops: DropLog | None = None) -> None:
        self.app = app
        self.settings = settings or GateSettings.from_env()
        self.drops = drops or DropLog(self.settings.drop_log_interval_s)
        self.health = TokenBuckets(self.settings.health_rate, self.settings.health_burst)
        self._token = self.settings.token.encode() if self.settings.token else None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope.get("type")
        if kind == "websocket" and self._token is not None and not self._authorized(scope):
            self.drops.count("WebSocket upgrades without the right token (403)", _client(scope))
            await send({"type": "websocket.close", "code": int(p.Close.POLICY)})    # before accept: 403
            return
        if kind == "http" and scope.get("path", "").rstrip("/") == p.HEALTH_PATH \
                and not self.health.take(_client(scope)):
            self.drops.count("health requests over the rate limit (429)", _client(scope))
            await send({"type": "http.response.start", "status": 429,
                        "headers": [(b"content-type", b"text/plain"), (b"retry-after", b"1"),
                                    (b"content-length", str(len(TOO_MANY)).encode())]})
            await send({"type": "http.response.body", "body": TOO_MANY})
            return
        await self.app(scope, receive, send)

    def _authorized(self, scope: dict[str, Any]) -> bool:
        assert self._token is not None
        header = next((v for k, v in scope.get("headers", ()) if k == b"authorization"), b"")
        scheme, _, presented = header.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(presented.strip(), self._token)


def _client(scope: dict[str, Any]) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def raise_descriptor_limit() -> int:
    """The soft RLIMIT_NOFILE raised to the hard limit (to 65536 where the hard one is unlimited);
    returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 20
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as e:
            log.warning("could not raise the descriptor limit from %d to %d: %s", soft, target, e)
    return soft


def proxy_middlewares() -> list[Any]:
    """Serve's proxy callback (``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``): raises the descriptor
    limit, installs the connection guard and returns the middleware."""
    from starlette.middleware import Middleware

    # our WARNING lines: the proxy's log file, and the server's console
    from ...cli.console import log_app_lines_to_stderr

    log_app_lines_to_stderr()
    raise_descriptor_limit()
    settings = GateSettings.from_env()
    drops = DropLog(settings.drop_log_interval_s)
    install_connection_guard(settings, drops)
    return [Middleware(GateMiddleware, settings=settings, drops=drops)]
