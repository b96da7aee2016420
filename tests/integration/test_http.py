"""syncd.http over real HTTP on loopback: health, readiness, metrics, and webhook checks."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from syncd.http import MAX_BODY, Endpoints, Hook, HttpServer, RateLimit
from syncd.metrics import Metrics

SECRET = b"s3cret-for-tests"


class Triggers:
    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            self.count += 1


@pytest.fixture
def served() -> Iterator[tuple[str, Triggers, dict[str, Any]]]:
    triggers = Triggers()
    state: dict[str, Any] = {"ready": False}
    hooks = {"platform": Hook(SECRET, "main", triggers)}
    endpoints = Endpoints(
        Metrics(lambda: None),
        hooks=lambda: hooks,
        ready=lambda: state["ready"],
        limit=RateLimit(burst=200, per_second=100),
    )
    server = HttpServer("127.0.0.1:0", endpoints)
    server.start()
    yield server.address, triggers, state
    server.stop()


def request(
    address: str, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def signed(body: bytes, secret: bytes = SECRET, event: str = "push") -> dict[str, str]:
    digest = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", "X-GitHub-Event": event}


PUSH = json.dumps({"ref": "refs/heads/main", "after": "a" * 40}).encode()


def test_health_readiness_and_metrics(served) -> None:
    address, _, state = served
    assert request(address, "GET", "/healthz") == (200, b"ok\n")
    assert request(address, "GET", "/readyz")[0] == 503
    state["ready"] = True
    assert request(address, "GET", "/readyz")[0] == 200
    code, text = request(address, "GET", "/metrics")
    assert code == 200 and b"# TYPE syncd_passes_total counter" in text
    assert request(address, "GET", "/nope")[0] == 404


def test_a_signed_push_asks_for_a_pass(served) -> None:
    address, triggers, _ = served
    code, body = request(address, "POST", "/hooks/platform", PUSH, signed(PUSH))
    assert code == 202 and triggers.count == 1
    assert json.loads(body) == {"result": "a pass was asked for"}
    code, text = request(address, "GET", "/metrics")
    assert b'syncd_webhooks_total{code="202",repo="platform"} 1.0' in text


@pytest.mark.parametrize(
    ("headers", "path", "body", "code"),
    [
        pytest.param({}, "/hooks/platform", PUSH, 401, id="unsigned"),
        pytest.param(signed(PUSH, b"wrong"), "/hooks/platform", PUSH, 401, id="forged"),
        pytest.param(
            signed(b"other"), "/hooks/platform", PUSH, 401, id="signature-of-another-body"
        ),
        pytest.param({"X-Hub-Signature-256": "sha1=abc"}, "/hooks/platform", PUSH, 401, id="sha1"),
        pytest.param(signed(PUSH), "/hooks/other-repo", PUSH, 404, id="unknown-repo"),
    ],
)
def test_refused_deliveries_trigger_nothing(served, headers, path, body, code) -> None:
    address, triggers, _ = served
    assert request(address, "POST", path, body, headers)[0] == code
    assert triggers.count == 0


def test_an_oversized_body_is_refused_before_it_is_read(served) -> None:
    address, triggers, _ = served
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("POST", "/hooks/platform")
    conn.putheader("Content-Length", str(MAX_BODY + 1))
    conn.endheaders()  # no body is sent: the answer must come anyway
    reply = conn.getresponse()
    assert reply.status == 413
    conn.close()
    assert triggers.count == 0


def test_ping_and_a_push_to_another_branch_do_nothing(served) -> None:
    address, triggers, _ = served
    ping = b'{"zen": "Keep it logically awesome."}'
    assert request(address, "POST", "/hooks/platform", ping, signed(ping, event="ping")) == (
        200,
        b'{"result": "pong"}\n',
    )
    other = json.dumps({"ref": "refs/heads/feature"}).encode()
    code, body = request(address, "POST", "/hooks/platform", other, signed(other))
    assert code == 200 and b"ignored" in body
    assert triggers.count == 0


def test_too_many_deliveries_get_429_and_forgeries_never_lock_out_the_real_webhook() -> None:
    triggers = Triggers()
    endpoints = Endpoints(
        Metrics(lambda: None),
        hooks=lambda: {"platform": Hook(SECRET, "main", triggers)},
        ready=lambda: True,
        limit=RateLimit(burst=5, per_second=0.001),
        refused_limit=RateLimit(burst=3, per_second=0.001),
    )
    server = HttpServer("127.0.0.1:0", endpoints)
    server.start()
    try:
        forged = [
            request(server.address, "POST", "/hooks/platform", PUSH, signed(PUSH, b"x"))[0]
            for _ in range(6)
        ]
        good = [
            request(server.address, "POST", "/hooks/platform", PUSH, signed(PUSH))[0]
            for _ in range(8)
        ]
    finally:
        server.stop()
    assert forged == [401] * 3 + [429] * 3
    assert good == [202] * 5 + [429] * 3
    assert triggers.count == 5


def test_other_events_and_form_encoded_pushes(served) -> None:
    from urllib.parse import urlencode

    address, triggers, _ = served
    pr = b'{"action": "opened"}'
    code, body = request(address, "POST", "/hooks/platform", pr, signed(pr, event="pull_request"))
    assert code == 200 and b"ignored" in body
    form = urlencode({"payload": json.dumps({"ref": "refs/heads/feature"})}).encode()
    headers = {**signed(form), "Content-Type": "application/x-www-form-urlencoded"}
    code, body = request(address, "POST", "/hooks/platform", form, headers)
    assert code == 200 and b"refs/heads/feature" in body
    assert triggers.count == 0
    assert request(address, "POST", "/hooks/nope", b"", {"Content-Length": "abc"})[0] == 400


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="nested-past-recursion"),
        pytest.param(b"not json", id="not-json"),
        pytest.param(b'["a", "list"]', id="not-an-object"),
    ],
)
def test_a_signed_payload_that_cannot_be_read_is_a_400_and_the_server_goes_on(
    served, payload
) -> None:
    address, triggers, _ = served
    code, body = request(address, "POST", "/hooks/platform", payload, signed(payload))
    assert code == 400 and b"not a JSON object" in body
    assert triggers.count == 0
    assert request(address, "GET", "/healthz")[0] == 200


def test_slow_clients_are_let_go_and_cannot_starve_the_server(served) -> None:
    import socket as sockets

    address, _, _ = served
    host, port = address.rsplit(":", 1)
    stalled = []
    for _ in range(40):  # more than one address may hold (Limits.per_client), each half-sent
        s = sockets.create_connection((host, int(port)))
        s.sendall(b"POST /hooks/platform HTTP/1.1\r\nContent-Length: 100\r\n")
        stalled.append(s)
    try:
        # The oldest half-sent ones are dropped to make room: a whole request is answered.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if request(address, "GET", "/healthz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise AssertionError("the server never answered again")
    finally:
        for s in stalled:
            s.close()


def test_a_replayed_delivery_asks_for_nothing(served) -> None:
    address, triggers, _ = served
    first = {**signed(PUSH), "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"}
    assert request(address, "POST", "/hooks/platform", PUSH, first)[0] == 202
    code, body = request(address, "POST", "/hooks/platform", PUSH, first)  # captured, sent again
    assert code == 200 and b"received already" in body
    assert triggers.count == 1
    other = {**signed(PUSH), "X-Gitea-Delivery": "a-new-one"}
    assert request(address, "POST", "/hooks/platform", PUSH, other)[0] == 202
    assert triggers.count == 2


def test_a_refused_path_is_logged_bounded_and_printable(served, capsys) -> None:
    import structlog

    address, _, _ = served
    import socket

    host, port = address.rsplit(":", 1)
    path = "/hooks/" + "x\x1b[2J" * 100  # http.client refuses to send this: a raw socket does
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(PUSH)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in signed(PUSH).items()) + "\r\n"
    with structlog.testing.capture_logs() as logs:
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(head.encode("latin-1") + PUSH)
            assert b" 404 " in sock.recv(100)
        time.sleep(0.2)
    (event,) = [e for e in logs if e.get("event") == "webhook"]
    assert "\x1b" not in event["repo"] and len(event["repo"]) <= 400


def hex_hmac(body: bytes, secret: bytes = SECRET) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


BITBUCKET_PUSH = json.dumps(
    {"push": {"changes": [{"new": {"type": "branch", "name": "main", "target": {"hash": "a"}}}]}}
).encode()
BITBUCKET_OTHER = json.dumps(
    {"push": {"changes": [{"new": {"type": "branch", "name": "feature"}}]}}
).encode()


@pytest.mark.parametrize(
    ("forge", "body", "headers"),
    [
        ("gitlab", PUSH, {"X-Gitlab-Token": SECRET.decode(), "X-Gitlab-Event": "Push Hook"}),
        ("gitea", PUSH, {"X-Gitea-Signature": hex_hmac(PUSH), "X-Gitea-Event": "push"}),
        ("forgejo", PUSH, {"X-Forgejo-Signature": hex_hmac(PUSH), "X-Forgejo-Event": "push"}),
        (
            "bitbucket",
            BITBUCKET_PUSH,
            {"X-Hub-Signature": f"sha256={hex_hmac(BITBUCKET_PUSH)}", "X-Event-Key": "repo:push"},
        ),
    ],
)
def test_pushes_from_each_forge(served, forge: str, body: bytes, headers: dict[str, str]) -> None:
    address, triggers, _ = served
    code, answer = request(address, "POST", "/hooks/platform", body, headers)
    assert (code, triggers.count) == (202, 1), answer
    # The same request with a wrong secret is refused and triggers nothing.
    forged = {
        k: (v.replace(v[-4:], "0000") if k != "X-Gitlab-Token" else "wrong")
        for k, v in headers.items()
        if k.startswith(("X-Gitlab-Token", "X-Gitea-Sig", "X-Forgejo-Sig", "X-Hub-Sig"))
    }
    events = {k: v for k, v in headers.items() if k not in forged}
    code, _ = request(address, "POST", "/hooks/platform", body, {**events, **forged})
    assert (code, triggers.count) == (401, 1)


def test_forge_events_that_move_no_followed_branch(served) -> None:
    address, triggers, _ = served
    headers = {"X-Hub-Signature": f"sha256={hex_hmac(BITBUCKET_OTHER)}", "X-Event-Key": "repo:push"}
    code, answer = request(address, "POST", "/hooks/platform", BITBUCKET_OTHER, headers)
    assert code == 200 and b"refs/heads/feature" in answer
    mr = {"X-Gitlab-Token": SECRET.decode(), "X-Gitlab-Event": "Merge Request Hook"}
    code, answer = request(address, "POST", "/hooks/platform", b"{}", mr)
    assert code == 200 and b"Merge Request Hook" in answer
    ping = {"X-Hub-Signature": f"sha256={hex_hmac(b'{}')}", "X-Event-Key": "diagnostics:ping"}
    assert request(address, "POST", "/hooks/platform", b"{}", ping) == (
        200,
        b'{"result": "pong"}\n',
    )
    assert triggers.count == 0
