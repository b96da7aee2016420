"""syncd's HTTP endpoints (`http.listen`): health, readiness, metrics and webhooks.

    GET  /healthz        200 while the process lives
    GET  /readyz         200 once every repo has been read once, else 503
    GET  /metrics        Prometheus text (syncd.metrics)
    POST /hooks/<repo>   a GitHub-style push webhook: asks for a pass of that repo

A webhook must carry `X-Hub-Signature-256: sha256=<HMAC-SHA256 of the raw body>` made with the
repo's `webhook_secret_file`, compared in constant time: 202 when a pass was asked for, 200 for
a `ping` or a push to another branch (nothing to do), 401 for a missing or wrong signature,
404 for a repo that does not exist or takes no webhooks, 413 over 1 MiB (refused before the
body is read), 429 when one client sends more than its share. A webhook never reconciles by
itself: it triggers the repo's worker, whose mailbox turns any number of them into one pass.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog

from syncd.metrics import CONTENT_TYPE, Metrics

MAX_BODY = 1024 * 1024


@dataclass
class Hook:
    """What a repo's webhook needs: its secret, its branch, and how to ask for a pass."""

    secret: bytes
    branch: str
    trigger: Callable[[], None]


@dataclass
class RateLimit:
    """A token bucket per client address: `burst` at once, `per_second` after that."""

    burst: float = 30.0
    per_second: float = 10.0
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def allow(self, client: str) -> bool:
        now = time.monotonic()
        with self._lock:
            tokens, since = self._buckets.get(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - since) * self.per_second)
            if tokens < 1:
                self._buckets[client] = (tokens, now)
                return False
            self._buckets[client] = (tokens - 1, now)
            return True


def signature_ok(secret: bytes, body: bytes, header: str | None) -> bool:
    if not header or not header.startswith("sha256="):
        return False
    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header.strip().encode())


class Endpoints:
    """The state the handlers read: swapped as a whole on reload."""

    def __init__(
        self,
        metrics: Metrics,
        hooks: Callable[[], dict[str, Hook]],
        ready: Callable[[], bool],
        limit: RateLimit | None = None,
    ) -> None:
        self.metrics = metrics
        self.hooks = hooks
        self.ready = ready
        self.limit = limit or RateLimit()
        self.log = structlog.get_logger("syncd.http")


class HttpServer:
    def __init__(self, listen: str, endpoints: Endpoints) -> None:
        host, _, port = listen.rpartition(":")
        handler = type("Handler", (_Handler,), {"endpoints": endpoints})
        self._server = ThreadingHTTPServer((host.strip("[]"), int(port)), handler)
        self._server.daemon_threads = True
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
        log("webhook", repo=repo, code=code, client=self.client_address[0], result=message)
        self._send(code, json.dumps({"result": message}).encode() + b"\n", "application/json")

    def _hook(self, e: Endpoints, repo: str) -> tuple[int, str]:
        if not e.limit.allow(self.client_address[0]):
            return 429, "too many requests"
        hook = e.hooks().get(repo)
        if hook is None:
            self._drain()
            return 404, "no such repo, or it takes no webhooks"
        try:
            length = int(self.headers.get("Content-Length") or "0")
        except ValueError:
            return 400, "bad Content-Length"
        if length > MAX_BODY or length < 0:
            self.close_connection = True  # the body is left unread
            return 413, "body over 1 MiB"
        body = self.rfile.read(length)
        if not signature_ok(hook.secret, body, self.headers.get("X-Hub-Signature-256")):
            return 401, "missing or wrong X-Hub-Signature-256"
        event = self.headers.get("X-GitHub-Event", "push")
        if event == "ping":
            return 200, "pong"
        if event == "push":
            try:
                ref = json.loads(body or b"{}").get("ref")
            except (ValueError, AttributeError):
                ref = None
            if ref and ref != f"refs/heads/{hook.branch}":
                return 200, f"ignored: a push to {ref}, not refs/heads/{hook.branch}"
        hook.trigger()
        return 202, "a pass was asked for"

    def _drain(self) -> None:
        length = int(self.headers.get("Content-Length") or "0")
        if 0 < length <= MAX_BODY:
            self.rfile.read(length)
        else:
            self.close_connection = True

    def _send(self, code: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
