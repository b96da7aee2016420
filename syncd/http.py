"""syncd's HTTP endpoints (`http.listen`): health, readiness, metrics and webhooks.

    GET  /healthz        200 while the process lives
    GET  /readyz         200 once every repo has been read once, else 503
    GET  /metrics        Prometheus text (syncd.metrics)
    POST /hooks/<repo>   a GitHub-style push webhook: asks for a pass of that repo

A webhook must carry `X-Hub-Signature-256: sha256=<HMAC-SHA256 of the raw body>` made with the
repo's `webhook_secret_file`, compared in constant time: 202 when a pass was asked for, 200 for
a `ping`, a push to another branch or another event (nothing to do), 401 for a missing or wrong
signature, 404 for a repo that does not exist or takes no webhooks, 413 over 1 MiB (refused
before the body is read), 429 when one client's refused requests, or one repo's good ones, come
faster than their share; refused ones never use up the share of good ones, so forgeries cannot
lock out the real webhook. A webhook never reconciles by itself: it triggers the repo's worker,
whose mailbox turns any number of them into one pass.

Hazards: a slow or silent client holds a thread; every connection has a 10 s socket timeout and
at most MAX_CONNECTIONS are served at once (more are closed at once), so a flood cannot starve
the daemon of threads or file descriptors.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import structlog

from syncd.core.text import printable
from syncd.metrics import CONTENT_TYPE, Metrics

MAX_BODY = 1024 * 1024
MAX_CONNECTIONS = 32
REQUEST_TIMEOUT = 10.0


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


class _Unreadable(ValueError):
    """A signed payload that is not a JSON object syncd can read (or is nested absurdly)."""


def _push_ref(body: bytes, content_type: str) -> str | None:
    """The `ref` of a push payload, sent as JSON or as GitHub's form-encoded `payload=`;
    raises _Unreadable when the payload cannot be read (nested JSON deep enough to exhaust
    Python's recursion is one way: it must be a 400, not a dropped connection)."""
    try:
        if content_type.startswith("application/x-www-form-urlencoded"):
            body = parse_qs(body.decode()).get("payload", [""])[0].encode()
        ref = json.loads(body or b"{}").get("ref")
    except (ValueError, AttributeError, UnicodeDecodeError, RecursionError):
        raise _Unreadable from None
    return ref if isinstance(ref, str) else None


def signature_ok(secret: bytes, body: bytes, header: str | None) -> bool:
    if not header or not header.startswith("sha256="):
        return False
    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header.strip().encode())


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


# Headers forges put a delivery's unique id in (GitHub, Gitea/Forgejo, Gogs, GitLab).
_DELIVERY_HEADERS = (
    "X-GitHub-Delivery",
    "X-Gitea-Delivery",
    "X-Gogs-Delivery",
    "X-Gitlab-Event-UUID",
)


class Endpoints:
    """The state the handlers read: swapped as a whole on reload."""

    def __init__(
        self,
        metrics: Metrics,
        hooks: Callable[[], dict[str, Hook]],
        ready: Callable[[], bool],
        limit: RateLimit | None = None,
        refused_limit: RateLimit | None = None,
    ) -> None:
        self.metrics = metrics
        self.hooks = hooks
        self.ready = ready
        self.limit = limit or RateLimit()  # good deliveries, per repo
        self.refused_limit = refused_limit or RateLimit(burst=10, per_second=1)  # per client
        self.deliveries = RecentIds()
        self.log = structlog.get_logger("syncd.http")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: Any, family: int) -> None:
        self.address_family = family
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # too many at once: this one is closed unanswered
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class HttpServer:
    def __init__(self, listen: str, endpoints: Endpoints) -> None:
        """Raises OSError when the address cannot be had (in use, not on this host)."""
        host, _, port = listen.rpartition(":")
        bare = host.strip("[]")
        family = socket.AF_INET6 if ":" in bare else socket.AF_INET
        handler = type("Handler", (_Handler,), {"endpoints": endpoints})
        self._server = _Server((bare, int(port)), handler, family)
        self.address = f"{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.2,), name="http", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    endpoints: Endpoints
    server_version = "syncd"
    sys_version = ""
    timeout = REQUEST_TIMEOUT  # a socket timeout for every read: slow clients are let go

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests that matter are logged as events below

    def do_GET(self) -> None:
        e = self.endpoints
        if self.path == "/healthz":
            self._send(200, b"ok\n")
        elif self.path == "/readyz":
            ready = e.ready()
            self._send(200 if ready else 503, b"ready\n" if ready else b"not ready\n")
        elif self.path == "/metrics":
            self._send(200, e.metrics.render(), CONTENT_TYPE)
        else:
            self._send(404, b"not found\n")

    def do_POST(self) -> None:
        e = self.endpoints
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
        if not signature_ok(hook.secret, body, self.headers.get("X-Hub-Signature-256")):
            return self._refused(e, client, 401, "missing or wrong X-Hub-Signature-256")
        delivery = next((self.headers[h] for h in _DELIVERY_HEADERS if self.headers.get(h)), None)
        if delivery is not None and not e.deliveries.add(f"{repo}/{delivery[:100]}"):
            return 200, "ignored: this delivery was received already"
        if not e.limit.allow(repo):
            return 429, "too many deliveries for this repo; a pass is coming anyway"
        event = self.headers.get("X-GitHub-Event", "push")
        if event == "ping":
            return 200, "pong"
        if event != "push":
            return 200, f"ignored: a {event!r} event does not move the branch"
        try:
            ref = _push_ref(body, self.headers.get("Content-Type", ""))
        except _Unreadable:
            return 400, "the push payload is not a JSON object syncd can read"
        if ref and ref != f"refs/heads/{hook.branch}":
            return 200, f"ignored: a push to {ref}, not refs/heads/{hook.branch}"
        hook.trigger()
        return 202, "a pass was asked for"

    def _refused(self, e: Endpoints, client: str, code: int, message: str) -> tuple[int, str]:
        """A refusal, unless this client has had too many of them: then 429 (and its
        requests stop costing a signature check until its share refills)."""
        if not e.refused_limit.allow(client):
            self.close_connection = True
            return 429, "too many refused requests from this client"
        return code, message

    def _send(self, code: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
