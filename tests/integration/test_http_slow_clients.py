"""syncd.http against slow and greedy clients, over real sockets on loopback, as an attacker
would: trickled requests, too many connections, busy webhook threads, and a wrong Host.

Clients come from distinct loopback addresses (127.0.0.2, 127.0.0.3, ...; all of 127/8 is
loopback on Linux) where a test needs many addresses. Deadlines are short so tests stay fast.
"""

from __future__ import annotations

import http.client
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import pytest
import structlog

from syncd.http import Endpoints, Hook, HttpServer, RateLimit
from syncd.listener import STALLED, Limits, Listener
from syncd.metrics import Metrics
from tests.integration.test_http import PUSH, SECRET, Triggers, signed
from tests.support.timing import PATIENCE

# Clients from many addresses use 127.0.0.2 and up: on Linux the whole of 127/8 is loopback.
LINE = "POST /hooks/platform HTTP/1.1"
HALF_POST = f"{LINE}\r\nHost: syncd\r\nContent-Length: 100\r\n\r\n".encode() + b"x" * 99


@contextmanager
def serving(
    limits: Limits, trigger: Any = None, allowed_hosts: Any = lambda: None
) -> Iterator[tuple[str, Endpoints, Triggers]]:
    triggers = Triggers()
    hooks = {"platform": Hook(SECRET, "main", trigger or triggers)}
    endpoints = Endpoints(
        Metrics(lambda: None),
        hooks=lambda: hooks,
        ready=lambda: True,
        limit=RateLimit(burst=200, per_second=100),
        allowed_hosts=allowed_hosts,
    )
    server = HttpServer("127.0.0.1:0", endpoints, limits)
    server.start()
    try:
        yield server.address, endpoints, triggers
    finally:
        server.stop()


def request(
    address: str,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    source: str | None = None,
    timeout: float = 5.0,
) -> tuple[int, bytes]:
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(
        host, int(port), timeout=timeout, source_address=(source, 0) if source else None
    )
    try:
        conn.request(method, path, body=body, headers=headers or {})
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def connect(address: str, source: str | None = None) -> socket.socket:
    host, port = address.rsplit(":", 1)
    return socket.create_connection(
        (host, int(port)), timeout=5, source_address=(source, 0) if source else None
    )


def closed_by_server(sock: socket.socket, wait: float = 2.0) -> bool:
    """True if the server closed (or reset) `sock` within `wait` seconds."""
    sock.settimeout(wait)
    try:
        return sock.recv(1000) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


class Trickle:
    """`count` slow clients, each from its own loopback address, sending `text` one byte every
    `every` seconds."""

    def __init__(self, address: str, count: int, text: bytes, every: float) -> None:
        self.socks = [connect(address, f"127.0.0.{2 + i}") for i in range(count)]
        self.text, self.every = text, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for byte in self.text:
            for sock in self.socks:
                with suppress(OSError):
                    sock.send(bytes([byte]))
            if self._stop.wait(self.every):
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for sock in self.socks:
            sock.close()


def timed_healthz(address: str) -> float:
    started = time.monotonic()
    assert request(address, "GET", "/healthz") == (200, b"ok\n")
    return time.monotonic() - started


def test_healthz_readyz_metrics_and_webhooks_answer_with_100_slow_clients_connected() -> None:
    with serving(Limits(deadline=30)) as (address, endpoints, triggers):
        slow = Trickle(address, 100, HALF_POST, every=1.0)
        try:
            time.sleep(1.5)  # every one connected, and two bytes in
            seconds = [timed_healthz(address) for _ in range(5)]
            print(f"/healthz with 100 slow clients: {[round(s * 1000, 1) for s in seconds]} ms")
            assert request(address, "GET", "/readyz")[0] == 200
            assert request(address, "GET", "/metrics")[0] == 200
            assert request(address, "POST", "/hooks/platform", PUSH, signed(PUSH))[0] == 202
            assert triggers.count == 1
            assert not endpoints.refusals  # none of the 100 was dropped: they were all held
        finally:
            slow.close()


@pytest.mark.parametrize(
    "sent, trickled",
    [
        pytest.param(b"", HALF_POST, id="head-trickled"),
        pytest.param(HALF_POST[:70], HALF_POST[70:], id="body-trickled"),
    ],
)
def test_a_slow_client_is_cut_off_at_its_whole_request_deadline(sent, trickled) -> None:
    with (
        serving(Limits(deadline=1.0)) as (address, endpoints, triggers),
        structlog.testing.capture_logs() as logs,
    ):
        sock = connect(address)
        started = time.monotonic()
        sock.sendall(sent)
        answer = b""
        for byte in trickled:  # a byte every 0.2 s: each read alone is quick
            sock.send(bytes([byte]))
            sock.settimeout(0.2)
            try:
                answer = sock.recv(1000)
                break
            except TimeoutError:
                continue
        elapsed = time.monotonic() - started
        sock.close()
        print(f"cut off after {elapsed:.2f} s")
        assert answer.startswith(b"HTTP/1.0 408 ")
        assert elapsed > 0.9  # not cut off before its deadline; the 408 says it was cut off
        assert endpoints.refusals == {"deadline": 1}
        (event,) = [e for e in logs if e["event"] == "http.refused"]
        # What the client had sent of its request line when it was cut off.
        assert event["kind"] == "deadline" and event["request"]
        assert LINE.startswith(event["request"])
        # The listener goes on: a webhook after the slow client is answered at once.
        assert request(address, "POST", "/hooks/platform", PUSH, signed(PUSH))[0] == 202
        assert triggers.count == 1


def test_past_the_per_address_cap_the_oldest_slow_connection_of_that_address_is_dropped() -> None:
    with serving(Limits(per_client=3)) as (address, endpoints, _):
        mine = [connect(address) for _ in range(3)]
        others = [connect(address, "127.0.0.2") for _ in range(3)]
        for sock in mine + others:
            sock.sendall(HALF_POST[:20])
        time.sleep(0.2)
        assert not endpoints.refusals
        # A fourth from 127.0.0.1: it is served, and 127.0.0.1's oldest goes (not 127.0.0.2's).
        assert request(address, "GET", "/healthz") == (200, b"ok\n")
        assert closed_by_server(mine[0])
        assert not any(closed_by_server(s, wait=0.1) for s in mine[1:] + others)
        assert endpoints.refusals == {"per_client": 1}
        for sock in mine + others:
            sock.close()


def test_past_the_total_cap_the_oldest_slow_connection_is_dropped() -> None:
    with serving(Limits(connections=5)) as (address, endpoints, _):
        slow = [connect(address, f"127.0.0.{2 + i}") for i in range(5)]
        for sock in slow:
            sock.sendall(HALF_POST[:20])
            time.sleep(0.05)  # in this order: slow[0] is the oldest
        assert request(address, "GET", "/healthz") == (200, b"ok\n")
        assert closed_by_server(slow[0])
        assert not any(closed_by_server(s, wait=0.1) for s in slow[1:])
        assert endpoints.refusals == {"full": 1}
        for sock in slow:
            sock.close()


def test_health_is_answered_while_every_webhook_thread_is_busy() -> None:
    release, entered = threading.Event(), threading.Semaphore(0)

    def stuck_trigger() -> None:  # a webhook whose handling never ends (until released)
        entered.release()
        release.wait(10)

    with serving(Limits(threads=2, per_client=2), trigger=stuck_trigger) as (address, endpoints, _):
        codes: list[int] = []

        def post() -> None:
            codes.append(request(address, "POST", "/hooks/platform", PUSH, signed(PUSH))[0])

        posts = [threading.Thread(target=post) for _ in range(2)]
        for thread in posts:
            thread.start()
        both = entered.acquire(timeout=PATIENCE) and entered.acquire(timeout=PATIENCE)
        assert both  # both threads stuck
        # Health, readiness and metrics have threads of their own.
        assert request(address, "GET", "/healthz", source="127.0.0.2") == (200, b"ok\n")
        assert request(address, "GET", "/metrics", source="127.0.0.2")[0] == 200
        # 127.0.0.1 has two connections being answered: a third one gets a 503.
        code, body = request(address, "GET", "/healthz")
        assert code == 503 and b"too many connections" in body
        assert endpoints.refusals == {"busy": 1}
        release.set()
        for thread in posts:
            thread.join()
        assert codes == [202, 202]


def test_a_head_over_64_kib_gets_431() -> None:
    with serving(Limits()) as (address, endpoints, _):
        sock = connect(address)
        sock.sendall(b"GET /healthz HTTP/1.1\r\n" + b"X-Filler: " + b"a" * 70_000 + b"\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.0 431 ")
        sock.close()
        assert endpoints.refusals == {"head_too_large": 1}


def test_a_host_not_allowed_gets_421_and_is_logged_bounded() -> None:
    allowed = ("syncd.example.com", "127.0.0.1", "::1")
    with (
        serving(Limits(), allowed_hosts=lambda: allowed) as (address, endpoints, triggers),
        structlog.testing.capture_logs() as logs,
    ):
        for host in ("syncd.example.com", "SYNCD.Example.com.:9280", address, "[::1]:9280"):
            assert request(address, "GET", "/healthz", headers={"Host": host})[0] == 200, host
        code, body = request(address, "GET", "/healthz", headers={"Host": "evil.example"})
        assert (code, body) == (421, b"misdirected request: this Host is not served here\n")
        headers = {**signed(PUSH), "Host": "attacker.example:80"}
        assert request(address, "POST", "/hooks/platform", PUSH, headers)[0] == 421
        assert triggers.count == 0
        # A raw request: a Host no client library would send, long and with escapes.
        sock = connect(address)
        sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\x1b[2J" + b"y" * 5000 + b"\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.0 421 ")
        sock.close()
        time.sleep(0.1)
        assert endpoints.refusals == {"host": 3}
        events = [e for e in logs if e["event"] == "http.refused"]
        assert [e["kind"] for e in events] == ["host"] * 3
        assert "evil.example" in events[0]["request"]
        assert all("\x1b" not in e["request"] and len(e["request"]) <= 200 for e in events)


def test_without_an_allow_list_any_host_is_served() -> None:
    with serving(Limits()) as (address, endpoints, triggers):
        assert request(address, "GET", "/healthz", headers={"Host": "evil.example"})[0] == 200
        headers = {**signed(PUSH), "Host": "anything.example"}
        assert request(address, "POST", "/hooks/platform", PUSH, headers)[0] == 202
        assert triggers.count == 1 and not endpoints.refusals


def test_clients_that_ask_and_never_read_their_answers_do_not_lock_the_listener() -> None:
    # Answers too big for the socket's buffers, to clients that never read: once the listener
    # is full of them, each new connection drops the oldest that has stalled for a second.
    big = b"x" * (8 * 1024 * 1024)

    def answer(request: bytes, _: Any) -> bytes:
        body = big if request.startswith(b"GET /big") else b"ok\n"
        return b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body

    refused: list[str] = []
    sock = socket.create_server(("127.0.0.1", 0))
    listener = Listener(
        sock, answer, lambda kind, *_: refused.append(kind), Limits(connections=4), 1024
    )
    listener.start()
    address = f"127.0.0.1:{sock.getsockname()[1]}"
    stalled = []
    try:
        for i in range(4):
            s = connect(address, f"127.0.1.{1 + i}")
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            s.sendall(b"GET /big HTTP/1.0\r\n\r\n")
            stalled.append(s)
        # Each answer has begun to arrive (the listener notes the time it hands one over) ...
        for s in stalled:
            readable, _, _ = select.select([s], [], [], PATIENCE)
            assert readable, "an answer never began"
        time.sleep(STALLED + 0.5)  # ... and has stayed untaken past STALLED
        assert request(address, "GET", "/healthz") == (200, b"ok\n")
        assert refused == ["full"]
    finally:
        for s in stalled:
            s.close()
        listener.stop()
