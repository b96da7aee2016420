"""A tiny counting pass-through HTTP proxy (standard library only).

Every peer in the benchmark talks to this proxy as its AWS endpoint; the proxy forwards each
request unchanged to the moto server behind it and counts it, so API calls are counted the same
way for every peer, whatever client library or language it uses.

What is counted: one call per HTTP request, keyed by (service, action).

- service: the service name in the SigV4 credential scope of the `Authorization` header
  (`Credential=AKID/20261125/us-east-1/cloudformation/aws4_request` -> `cloudformation`).
- action: `Action=` in the form-encoded body (the query protocol, which CloudFormation speaks),
  else in the query string, else the `X-Amz-Target` header (JSON protocol), else `?`.

Each call is also logged with its arrival time (`time.monotonic()`, taken when the request's
body has been read, before it is forwarded), service, action and the `StackName` it names (if
any): `calls()` returns that log, `calls_since(t)` the part after `t`. `reset_counts()` clears
the counters only; `reset_log()` clears the log.

It is a reverse proxy, not a forward proxy: clients use its URL as their endpoint URL. It listens
on 127.0.0.1 only and forwards to one upstream URL (the emulator) only.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple

# Headers that belong to one connection and must not be forwarded.
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "expect",
}


def service_from_authorization(header: str | None) -> str:
    """The service name in a SigV4 `Authorization` header, or `?`."""
    if not header or "Credential=" not in header:
        return "?"
    scope = header.split("Credential=", 1)[1].split(",", 1)[0]
    parts = scope.split("/")
    # AKID/date/region/service/aws4_request
    return parts[3] if len(parts) >= 5 else "?"


def _form_field(body: bytes, query: str, name: str) -> str | None:
    """The first value of form field `name` in the body (query protocol) or the query string."""
    key = name.encode() + b"="
    for source in (body, query.encode()):
        if source and key in source:
            try:
                fields = urllib.parse.parse_qs(source.decode("utf-8", "replace"))
            except ValueError:
                fields = {}
            if fields.get(name):
                return fields[name][0]
    return None


def action_of(body: bytes, query: str, target: str | None) -> str:
    """The API action of one request (query protocol body or query string, or X-Amz-Target)."""
    action = _form_field(body, query, "Action")
    if action:
        return action
    if target:
        return target.rsplit(".", 1)[-1]
    return "?"


class Call(NamedTuple):
    """One request as the proxy saw it arrive."""

    at: float  # time.monotonic() when its body had been read
    service: str
    action: str
    stack: str  # the StackName it names ("" if none)


class CountingProxy:
    """Forward HTTP requests from 127.0.0.1:<port> to `upstream_url` and count them."""

    def __init__(self, upstream_url: str) -> None:
        parsed = urllib.parse.urlsplit(upstream_url)
        if parsed.hostname not in ("127.0.0.1", "localhost"):
            raise ValueError(f"refusing to proxy to a non-loopback host: {upstream_url}")
        self._upstream = (parsed.hostname, parsed.port or 80)
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()
        self._log: list[Call] = []
        self._local = threading.local()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._make_handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> CountingProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- counting -------------------------------------------------------------------------
    def reset_counts(self) -> None:
        with self._lock:
            self._counts.clear()

    def counts(self) -> Counter[tuple[str, str]]:
        """A copy of the counts so far, keyed by (service, action)."""
        with self._lock:
            return Counter(self._counts)

    def _count(self, service: str, action: str, at: float | None = None, stack: str = "") -> None:
        with self._lock:
            self._counts[(service, action)] += 1
            self._log.append(Call(time.monotonic() if at is None else at, service, action, stack))

    # -- the timestamped log --------------------------------------------------------------
    def reset_log(self) -> None:
        with self._lock:
            self._log.clear()

    def calls(self) -> list[Call]:
        """Every call since the last `reset_log()`, in the order they were counted."""
        with self._lock:
            return list(self._log)

    def calls_since(self, since: float) -> list[Call]:
        """The calls that arrived at or after `since` (a `time.monotonic()` value)."""
        with self._lock:
            return [c for c in self._log if c.at >= since]

    # -- forwarding -----------------------------------------------------------------------
    def _connection(self) -> http.client.HTTPConnection:
        """One keep-alive connection to the upstream per handler thread."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(*self._upstream, timeout=120)
            self._local.conn = conn
        return conn

    def _forward(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
                for name, value in headers:
                    conn.putheader(name, value)
                if body or method in ("POST", "PUT", "PATCH"):
                    conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body or None)
                if conn.sock is not None:
                    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                resp = conn.getresponse()
                data = resp.read()
                return resp.status, resp.reason, resp.getheaders(), data
            except (ConnectionError, http.client.HTTPException, OSError):
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _make_handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive for clients, as with real endpoints
            disable_nagle_algorithm = True  # no 40 ms delayed-ACK stalls on small replies

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                at = time.monotonic()
                query = urllib.parse.urlsplit(self.path).query
                proxy._count(
                    service_from_authorization(self.headers.get("Authorization")),
                    action_of(body, query, self.headers.get("X-Amz-Target")),
                    at,
                    _form_field(body, query, "StackName") or "",
                )
                headers = [
                    (k, v)
                    for k, v in self.headers.items()
                    if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length"
                ]
                try:
                    status, reason, resp_headers, data = proxy._forward(
                        self.command, self.path, headers, body
                    )
                except OSError as exc:
                    self.send_error(502, f"upstream failed: {exc}")
                    return
                self.send_response_only(status, reason)
                for name, value in resp_headers:
                    if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _handle

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet: the benchmark prints its own table

        return Handler
