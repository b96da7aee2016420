"""syncd's HTTP endpoints (`http.listen`): health, readiness, metrics and webhooks.

    GET  /healthz        200 while the process lives
    GET  /readyz         200 once every repo has been read once, else 503
    GET  /metrics        Prometheus text (syncd.metrics)
    GET  /, /stacks/..., /journal, /live, /static/...   the dashboard (syncd.web.dashboard)
    POST /hooks/<repo>   a push webhook (GitHub, GitLab, Gitea, Forgejo, Bitbucket Cloud): asks
                         for a pass of that repo

A webhook must carry its forge's signature of the raw body, or its token, made with the repo's
`webhook_secret_file` and compared in constant time (syncd.core.forges): 202 when a pass was
asked for, 200 for a ping, a push to another branch or another event (nothing to do), 401 for a
missing or wrong signature, 404 for a repo that does not exist or takes no webhooks, 413 over 1
MiB (refused before the body is read), 429 when one client's refused requests, or one repo's
good ones, come faster than their share; refused ones never use up the share of good ones, so
forgeries cannot lock out the real webhook. A webhook never reconciles by itself: it triggers
the repo's worker, whose mailbox turns any number of them into one pass.

With `http.allowed_hosts`, a request whose Host header names another host gets 421 (a DNS
rebinding page in a browser cannot reach the listener under its own name).

Hazards: slow clients, floods of connections, and webhooks that keep threads busy. Connections
are read without threads, under a whole-request deadline and caps per address and in all, and
health, readiness and metrics are answered by other threads than webhooks (syncd.listener).
Refused and dropped connections are counted (Endpoints.refusals) and logged, bounded.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import structlog

from syncd.core.forges import Unreadable, authenticate, read_push
from syncd.core.text import printable
from syncd.listener import Limits, Listener
from syncd.metrics import CONTENT_TYPE, Metrics

MAX_BODY = 1024 * 1024

# What each kind of refused connection or request means, for the log.
REFUSALS = {
    "deadline": "the request was not sent (or its answer taken) within the deadline",
    "per_client": "dropped: this address opened more connections than its share",
    "full": "dropped: the listener was full and this connection was the oldest still sending",
    "busy": "refused: 503, every connection past the cap was being answered",
    "head_too_large": "refused: 431, request head over 64 KiB",
    "host": "refused: 421, the Host header is not in http.allowed_hosts",
}


@dataclass
class Hook:
    """What a repo's webhook needs: its secret, its branch, and how to ask for a pass."""

    secret: bytes
    branch: str
    trigger: Callable[[], None]


@dataclass
class RateLimit:
    """A token bucket per key: `burst` at once, `per_second` after that."""

    burst: float = 30.0
    per_second: float = 10.0
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        with self._lock:
            if len(self._buckets) > 10_000:  # forget keys whose buckets have refilled
                full = self.burst / self.per_second
                self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full}
            tokens, since = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - since) * self.per_second)
            if tokens < 1:
                self._buckets[key] = (tokens, now)
                return False
            self._buckets[key] = (tokens - 1, now)
            return True


def _length(header: str | None) -> int | None:
    try:
        value = int(header or "0")
    except ValueError:
        return None
    return value if value >= 0 else None


class RecentIds:
    """The last `size` delivery ids seen: a signed delivery sent again (a replay) is known."""

    def __init__(self, size: int = 1000) -> None:
        self._order: deque[str] = deque(maxlen=size)
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def add(self, delivery: str) -> bool:
        """Remember `delivery`; False if it was already there."""
        with self._lock:
            if delivery in self._seen:
                return False
            if len(self._order) == self._order.maxlen:
                self._seen.discard(self._order[0])
            self._order.append(delivery)
            self._seen.add(delivery)
            return True


def host_name(header: str) -> str:
    """The host a Host header names, as `http.allowed_hosts` lists it: lower case, without its
    port, an IPv6 address without its brackets, no trailing dot."""
    text = header.strip().lower()
    if text.startswith("["):
        return text[1:].split("]", 1)[0]
    if text.count(":") == 1:
        text = text.split(":", 1)[0]
    return text.rstrip(".")


class Endpoints:
    """The state the handlers read; what a reload changes (hooks, allowed hosts) is read
    through the callables on each request."""

    def __init__(
        self,
        metrics: Metrics,
        hooks: Callable[[], dict[str, Hook]],
        ready: Callable[[], bool],
        limit: RateLimit | None = None,
        refused_limit: RateLimit | None = None,
        allowed_hosts: Callable[[], Collection[str] | None] = lambda: None,
        dashboard: Any = None,
    ) -> None:
        self.metrics = metrics
        self.dashboard = dashboard  # syncd.web.dashboard.Dashboard, or None: no pages
        self.hooks = hooks
        self.ready = ready
        self.limit = limit or RateLimit()  # good deliveries, per repo
        self.refused_limit = refused_limit or RateLimit(burst=10, per_second=1)  # per client
        self.allowed_hosts = allowed_hosts  # host names as config.HttpConfig has them; None: any
        self.deliveries = RecentIds()
        self.log = structlog.get_logger("syncd.http")
        self.refusals: Counter[str] = Counter()  # by kind (REFUSALS), since start
        self._log_limit = RateLimit(burst=10, per_second=1)  # log lines, per kind
        self._unlogged: Counter[str] = Counter()
        self._lock = threading.Lock()

    def refused(self, kind: str, client: str, request: str) -> None:
        """Count a refused or dropped connection or request, and log it: 10 of a kind at once
        and 1 a second after that, each with how many went unlogged before it, the client's
        text cut short and its control characters escaped."""
        self.metrics.http_refused.labels(kind).inc()
        with self._lock:
            self.refusals[kind] += 1
            if not self._log_limit.allow(kind):
                self._unlogged[kind] += 1
                return
            unlogged = self._unlogged.pop(kind, 0)
        self.log.warning(
            "http.refused",
            kind=kind,
            reason=REFUSALS.get(kind, kind),
            client=printable(client[:64]),
            request=printable(request[:120]),
            unlogged=unlogged,
        )


class HttpServer:
    def __init__(self, listen: str, endpoints: Endpoints, limits: Limits | None = None) -> None:
        """Raises OSError when the address cannot be had (in use, not on this host)."""
        host, _, port = listen.rpartition(":")
        bare = host.strip("[]")
        family = socket.AF_INET6 if ":" in bare else socket.AF_INET
        sock = socket.create_server((bare, int(port)), family=family)
        self.address = f"{host}:{sock.getsockname()[1]}"
        handler = type("Handler", (_Handler,), {"endpoints": endpoints})

        def answer(request: bytes, client: Any) -> bytes:
            out = io.BytesIO()
            handler(request, client, out)
            return out.getvalue()

        self._listener = Listener(sock, answer, endpoints.refused, limits or Limits(), MAX_BODY)

    def start(self) -> None:
        self._listener.start()

    def stop(self) -> None:
        self._listener.stop()


class _Handler(BaseHTTPRequestHandler):
    endpoints: Endpoints
    server_version = "syncd"
    sys_version = ""

    def __init__(self, request: bytes, client_address: Any, out: io.BytesIO) -> None:
        """Answer one request, read whole by the listener, into `out`."""
        self.rfile, self.wfile, self.client_address = io.BytesIO(request), out, client_address
        try:
            self.handle()
        except Exception as exc:  # a bug: the client gets a 500, the log the error's type
            self.endpoints.log.error("http.error", error=type(exc).__name__, path=self._shown)
            if not out.tell():
                self._send(500, b"internal error\n")

    @property
    def _shown(self) -> str:
        return printable(getattr(self, "path", "")[:100])

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests that matter are logged as events below

    def _host_allowed(self) -> bool:
        allowed = self.endpoints.allowed_hosts()
        host = self.headers.get("Host", "")
        if allowed is None or host_name(host) in allowed:
            return True
        self.endpoints.refused("host", self.client_address[0], f"{self._shown} Host: {host}")
        self._send(421, b"misdirected request: this Host is not served here\n")
        return False

    def do_GET(self) -> None:
        e = self.endpoints
        if not self._host_allowed():
            return
        if self.path == "/healthz":
            self._send(200, b"ok\n")
        elif self.path == "/readyz":
            ready = e.ready()
            self._send(200 if ready else 503, b"ready\n" if ready else b"not ready\n")
        elif self.path == "/metrics":
            self._send(200, e.metrics.render(), CONTENT_TYPE)
        elif e.dashboard is not None and e.dashboard.serves(self.path):
            answer = e.dashboard.answer(
                self.path, self.headers.get("Authorization"), self.headers.get("Host", "")
            )
            self._send(answer.code, answer.body, answer.content_type, answer.headers)
        else:
            self._send(404, b"not found\n")

    def do_POST(self) -> None:
        e = self.endpoints
        if not self._host_allowed():
            return
        if not self.path.startswith("/hooks/"):
            return self._send(404, b"not found\n")
        repo = self.path[len("/hooks/") :].split("?", 1)[0]
        code, message = self._hook(e, repo)
        e.metrics.webhooks.labels(repo if repo in e.hooks() else "unknown", str(code)).inc()
        log = e.log.warning if code in (401, 413, 429) else e.log.info
        # The path is the client's: bounded and printable in the log.
        shown = printable(repo[:100])
        log("webhook", repo=shown, code=code, client=self.client_address[0], result=message)
        self._send(code, json.dumps({"result": message}).encode() + b"\n", "application/json")

    def _hook(self, e: Endpoints, repo: str) -> tuple[int, str]:
        client = self.client_address[0]
        hook = e.hooks().get(repo)
        length = _length(self.headers.get("Content-Length"))
        if length is None:
            return self._refused(e, client, 400, "bad Content-Length")
        if length > MAX_BODY:
            self.close_connection = True  # the body is left unread
            return self._refused(e, client, 413, "body over 1 MiB")
        body = self.rfile.read(length)
        if hook is None:
            return self._refused(e, client, 404, "no such repo, or it takes no webhooks")
        forge = authenticate(self.headers, body, hook.secret)
        if forge is None:
            return self._refused(e, client, 401, "missing or wrong signature or token")
        try:
            push = read_push(forge, self.headers, body)
        except Unreadable:
            return 400, "the push payload is not a JSON object syncd can read"
        if push.delivery is not None and not e.deliveries.add(f"{repo}/{push.delivery}"):
            return 200, "ignored: this delivery was received already"
        if not e.limit.allow(repo):
            return 429, "too many deliveries for this repo; a pass is coming anyway"
        if push.event == "ping":
            return 200, "pong"
        if push.event != "push":
            shown = printable(push.event[:60])
            return 200, f"ignored: a {shown!r} event does not move the branch"
        if push.branches is not None and hook.branch not in push.branches:
            moved = ", ".join(f"refs/heads/{printable(b[:100])}" for b in push.branches[:5])
            return 200, f"ignored: a push to {moved or 'no branch'}, not refs/heads/{hook.branch}"
        hook.trigger()
        return 202, "a pass was asked for"

    def _refused(self, e: Endpoints, client: str, code: int, message: str) -> tuple[int, str]:
        """A refusal, unless this client has had too many of them: then 429, and the
        connection is closed."""
        if not e.refused_limit.allow(client):
            self.close_connection = True
            return 429, "too many refused requests from this client"
        return code, message

    def _send(
        self,
        code: int,
        body: bytes,
        content_type: str = "text/plain",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
