"""Receivers of events and commit statuses (syncd.outbox) against a local HTTP receiver: a real
journal on disk, real sends, receivers that fail, hang and come back, and restarts."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from syncd.core.config import CommitStatusConfig, WebhookConfig, parse_config
from syncd.core.forges import Request
from syncd.core.journal_state import Kind
from syncd.errors import ConfigError
from syncd.journal.follow import Follower
from syncd.journal.mirror import lineage_of
from syncd.journal.store import Journal
from syncd.metrics import _notify_metrics
from syncd.outbox import (
    CommitStatuses,
    EventWebhook,
    Outbox,
    Progress,
    open_receivers,
    post,
    progress_path,
)
from tests.support.receiver import Receiver, receiving
from tests.support.timing import PATIENCE, eventually

C1 = "1" * 40
FAST = (0.05, 0.2)  # back-off for tests: the real one starts at 1 s


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal.open(tmp_path / "state", writer=True)
    yield j
    j.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as r:
        yield r


class Running:
    """Outboxes started in a test, stopped at its end."""

    def __init__(self, journal: Journal, state_dir: Path) -> None:
        self.journal, self.state_dir = journal, state_dir
        self.follower = Follower(journal)
        self.lineage = lineage_of(journal.directory).id
        self.started: list[tuple[Outbox, threading.Event]] = []

    def start(self, receiver: Any, backoff: tuple[float, float] = FAST) -> Outbox:
        outbox = Outbox(
            receiver,
            self.follower,
            self.journal.state,
            self.state_dir,
            self.lineage,
            backoff=backoff,
        )
        stop = threading.Event()
        outbox.start(stop)
        self.started.append((outbox, stop))
        return outbox

    def stop(self, outbox: Outbox) -> None:
        for o, stop in self.started:
            if o is outbox:
                stop.set()
                assert o.thread is not None
                o.thread.join(PATIENCE)

    def close(self) -> None:
        for outbox, _ in self.started:
            self.stop(outbox)
        self.follower.close()


@pytest.fixture
def running(journal: Journal, tmp_path: Path) -> Iterator[Running]:
    r = Running(journal, tmp_path / "state")
    yield r
    r.close()


def webhook(receiver: Receiver, secret: bytes | None = b"key", **options: Any) -> EventWebhook:
    return EventWebhook(
        WebhookConfig(name="ops", url=receiver.url, **options), receiver.url, secret, "h"
    )


def apply_one(journal: Journal, stack: str, version: int = 1, result: str = "succeeded") -> None:
    journal.append(
        Kind.VERSION,
        repo="app",
        stack=stack,
        version=version,
        commit=C1,
        digest="d",
        action="create",
    )
    journal.append(
        Kind.RESULT, stack=stack, result=result, message="no" if result == "failed" else ""
    )


def test_events_arrive_in_order_signed_with_stable_ids(
    journal: Journal, running: Running, receiver: Receiver
) -> None:
    journal.append(Kind.PASS_OK, repo="app")  # before the receiver: history is not replayed
    running.start(webhook(receiver))
    apply_one(journal, "db")
    apply_one(journal, "web", result="failed")
    got = receiver.wait_for(4, PATIENCE)
    assert [r.json()["type"] for r in got] == [
        "syncd.version.started",
        "syncd.succeeded",
        "syncd.version.started",
        "syncd.failed",
    ]
    lineage = running.lineage
    assert [r.json()["id"] for r in got] == [f"{lineage}-{seq}" for seq in (2, 3, 4, 5)]
    first = got[0]
    assert first.headers["Content-Type"].startswith("application/cloudevents+json")
    expected = hmac.new(b"key", first.body, hashlib.sha256).hexdigest()
    assert first.headers["X-Syncd-Signature-256"] == f"sha256={expected}"
    assert first.headers["X-Syncd-Delivery"] == first.json()["id"]
    assert got[3].json()["data"]["commit"] == C1


def test_a_receiver_down_gets_every_event_once_when_it_is_back(
    journal: Journal, running: Running, receiver: Receiver
) -> None:
    receiver.code = 503
    outbox = running.start(webhook(receiver))
    for n in range(5):
        apply_one(journal, f"s{n}")
    receiver.wait_attempts(3, PATIENCE)  # tried, and tried again
    assert receiver.requests == [] and outbox.progress.error == "HTTP 503"
    assert outbox.progress.waiting_since is not None
    receiver.code = 202
    got = receiver.wait_for(10, PATIENCE)
    ids = [r.json()["id"] for r in got]
    assert len(ids) == len(set(ids)) == 10
    eventually(lambda: outbox.progress.sent == 10)
    assert outbox.progress.error is None


def test_events_due_at_a_stop_are_sent_after_the_restart(
    journal: Journal, running: Running, receiver: Receiver, tmp_path: Path
) -> None:
    receiver.code = 500
    outbox = running.start(webhook(receiver))
    apply_one(journal, "db")
    receiver.wait_attempts(1, PATIENCE)
    running.stop(outbox)  # the daemon stops (or is killed) with the events unsent
    saved = Progress.load(progress_path(tmp_path / "state", "ops"))
    assert saved is not None and saved.seq == 0 and saved.error == "HTTP 500"
    apply_one(journal, "web")  # and more happen while nothing sends them
    receiver.code = 200
    running.start(webhook(receiver))
    got = receiver.wait_for(4, PATIENCE)
    assert [r.json()["data"]["stack"] for r in got] == ["db", "db", "web", "web"]


def test_an_event_refused_for_good_is_dropped_and_the_rest_go_on(
    journal: Journal, running: Running, receiver: Receiver
) -> None:
    receiver.answer = lambda r: (422, b"no") if r.json()["data"]["stack"] == "bad" else (200, b"")
    outbox = running.start(webhook(receiver, events=("succeeded",)))
    apply_one(journal, "bad")
    apply_one(journal, "good")
    got = receiver.wait_for(1, PATIENCE)
    assert [r.json()["data"]["stack"] for r in got] == ["good"]
    eventually(lambda: outbox.progress.sent == 1)
    assert outbox.progress.dropped == 1
    samples = {
        (s.name, s.labels["receiver"]): s.value
        for family in _notify_metrics([outbox])
        for s in family.samples
    }
    assert samples[("syncd_notify_dropped_total", "ops")] == 1
    assert samples[("syncd_notify_sent_total", "ops")] == 1
    assert samples[("syncd_notify_failing", "ops")] == 0


def test_a_receiver_failing_again_and_again_is_tried_less_and_less_often(
    journal: Journal, running: Running, receiver: Receiver
) -> None:
    """The back-off doubles from its first pause (with up to 20 % jitter either way); only
    lower bounds are checked, which a slow machine cannot break."""
    times: list[float] = []

    def down(r: Any) -> tuple[int, bytes]:
        times.append(time.monotonic())
        return 503, b""

    receiver.answer = down
    first = 0.1
    outbox = running.start(webhook(receiver), backoff=(first, 10.0))
    apply_one(journal, "db")
    receiver.wait_attempts(5, PATIENCE)
    running.stop(outbox)
    gaps = [b - a for a, b in itertools.pairwise(times)][:4]
    for n, gap in enumerate(gaps):
        assert gap >= 0.8 * first * 2**n, gaps
    assert outbox.progress.failed_sends >= 5


def test_a_429_waits_as_long_as_its_retry_after_says(
    journal: Journal, running: Running, receiver: Receiver
) -> None:
    times: list[float] = []

    def answer(r: Any) -> tuple[int, bytes, dict[str, str]]:
        times.append(time.monotonic())
        if len(times) == 1:
            return 429, b"slow down", {"Retry-After": "2"}
        return 200, b"", {}

    receiver.answer = answer
    # Without Retry-After the pause would be 0.05 s; the longest pause (10 s) caps it.
    running.start(webhook(receiver, events=("succeeded",)), backoff=(0.05, 10.0))
    apply_one(journal, "db")
    receiver.wait_for(1, PATIENCE)
    assert times[1] - times[0] >= 2.0


def test_filters_by_event_and_repo(journal: Journal, running: Running, receiver: Receiver) -> None:
    running.start(webhook(receiver, events=("failed", "backup.failing"), repos=("other",)))
    apply_one(journal, "db", result="failed")  # repo app: not for it
    journal.append(Kind.BACKUP_FAILING, error="503")  # the daemon's own: only for all-repo ones
    journal.append(
        Kind.RESULT, stack="x", repo="other", version=1, commit=C1, result="failed", message="m"
    )
    got = receiver.wait_for(1, PATIENCE)
    journal.append(Kind.BACKUP_OK)
    assert [(r.json()["type"], r.json()["data"]["repo"]) for r in got] == [
        ("syncd.failed", "other")
    ]


def test_slack_gets_text(journal: Journal, running: Running, receiver: Receiver) -> None:
    running.start(webhook(receiver, secret=None, format="slack", events=("failed",)))
    apply_one(journal, "<db>", result="failed")
    got = receiver.wait_for(1, PATIENCE)
    text = got[0].json()["text"]
    assert text.startswith("syncd failed (repo app, commit 111111111111): &lt;db&gt;: version 1")
    assert "X-Syncd-Signature-256" not in got[0].headers


def test_commit_statuses_per_commit(journal: Journal, running: Running, receiver: Receiver) -> None:
    config = CommitStatusConfig(
        forge="github",
        repository="org/app",
        token_file=Path("/dev/null"),
        api_url=receiver.url + "/api/v3",
        per="commit",
    )
    running.start(CommitStatuses("app", config, "t0ken", lambda: journal.state.history))
    apply_one(journal, "db")
    got = receiver.wait_for(2, PATIENCE)
    assert {r.path for r in got} == {f"/api/v3/repos/org/app/statuses/{C1}"}
    assert got[0].headers["Authorization"] == "Bearer t0ken"
    assert [r.json()["context"] for r in got] == ["syncd", "syncd"]
    # The first status is sent once the version started; by then the journal may already hold
    # its result, so the first may say pending or success: the last says success.
    assert got[-1].json()["state"] == "success"


def test_a_receiver_that_never_answers_holds_nothing_else(
    journal: Journal, running: Running, receiver: Receiver
) -> None:
    receiver.hang.set()
    hung = running.start(webhook(receiver, timeout=0.5))
    with receiving() as other:
        running.start(
            EventWebhook(WebhookConfig(name="other", url=other.url), other.url, None, "h")
        )
        for n in range(20):
            apply_one(journal, f"s{n}")  # appends do not wait for any receiver
        assert len(other.wait_for(40, PATIENCE)) == 40
    receiver.wait_attempts(2, PATIENCE)  # timed out, and tried again
    assert hung.progress.seq == 0 and hung.progress.error is not None
    assert "no whole answer within 0.5 s" in hung.progress.error
    assert hung.behind == 40


def test_a_send_that_fails_oddly_is_tried_again_and_its_event_not_lost(
    journal: Journal, running: Running, receiver: Receiver, tmp_path: Path
) -> None:
    # A drift event is news only once: were its record folded twice, the event would be lost.
    calls: list[str] = []

    def flaky(request: Any, timeout: float) -> tuple[int, bytes, float | None]:
        calls.append(request.url)
        if len(calls) == 1:
            raise RuntimeError(f"a bug that quotes {request.headers}")
        return post(request, timeout)

    hook = webhook(receiver, events=("drifted",))
    outbox = Outbox(
        hook,
        running.follower,
        journal.state,
        tmp_path / "state",
        running.lineage,
        send=flaky,
        backoff=FAST,
    )
    stop = threading.Event()
    outbox.start(stop)
    try:
        journal.append(
            Kind.DRIFT_CHECKED,
            repo="app",
            stack="db",
            detection="d",
            result="drifted",
            resources=[{"logical_id": "Queue"}],
        )
        got = receiver.wait_for(1, PATIENCE)
        assert got[0].json()["type"] == "syncd.drifted" and len(calls) == 2
    finally:
        stop.set()
        assert outbox.thread is not None
        outbox.thread.join(PATIENCE)


def test_a_send_never_quotes_its_request() -> None:
    token = "ghp_secret_token_value"
    bad = Request("POST", "http://127.0.0.1:9/x", {"Authorization": f"Bearer {token}\nX: y"}, b"")
    with pytest.raises(OSError) as info:
        post(bad, 1.0)
    assert token not in str(info.value)
    with pytest.raises(OSError) as info:
        post(Request("POST", "http://127.0.0.1:9/é x", {}, b""), 1.0)
    assert "é" not in str(info.value)


def test_a_receiver_that_answers_a_byte_at_a_time_is_cut_off_at_the_timeout() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = server.accept()
        conn.recv(65536)
        for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000:
            if stop.wait(0.2):
                break
            with contextlib.suppress(OSError):
                conn.send(bytes([byte]))
        conn.close()

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    started = time.monotonic()
    try:
        with pytest.raises(OSError) as info:
            post(Request("POST", f"http://127.0.0.1:{port}/", {}, b"{}"), 1.0)
        assert "no whole answer within 1 s" in str(info.value)
        assert time.monotonic() - started >= 1.0  # the deadline, not cut short
    finally:
        stop.set()
        server.close()


def test_progress_that_cannot_be_read_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    for text in ('{"seq": "5", "lineage": "x"}', "[]", "not json", '{"lineage": 3}'):
        path.write_text(text)
        assert Progress.load(path) is None
    path.write_text('{"seq": 5, "lineage": "x", "unknown": 1}')
    assert Progress.load(path) == Progress(lineage="x", seq=5)


def test_secret_files_that_hold_more_than_one_word_are_refused_unshown(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("ghp_first\nghp_second\n")
    (tmp_path / "url").write_text("https://hooks.example.com/services/SECRETPATH # ours\n")
    text = f"""
state_dir: {tmp_path / "state"}
notify:
  webhooks: [{{name: chat, url_file: {tmp_path / "url"}, format: slack}}]
repos:
  - name: app
    url: {tmp_path / "repo"}
    notify:
      commit_status: {{forge: github, repository: o/r, token_file: {tmp_path / "token"}}}
"""
    config = parse_config(text, "syncd.yaml", tmp_path)
    with pytest.raises(ConfigError) as info:
        open_receivers(config, list)
    problems = "\n".join(info.value.problems)
    assert "url_file" in problems and "token_file" in problems
    assert "SECRETPATH" not in problems and "ghp_" not in problems
