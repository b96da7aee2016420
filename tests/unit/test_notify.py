"""syncd.notify against real datagram sockets bound by the test, as systemd would bind them."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.notify import Notifier


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The test run itself may be under systemd (a CI runner as a service): never talk to it.
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)


def _receiver(address: str | bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(2.0)
    return sock


def _pending(sock: socket.socket) -> list[bytes]:
    """Every datagram already queued on ``sock``, without waiting for more."""
    sock.setblocking(False)
    try:
        out: list[bytes] = []
        while True:
            try:
                out.append(sock.recv(65536))
            except BlockingIOError:
                return out
    finally:
        sock.settimeout(2.0)


@pytest.fixture
def path_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify"
    sock = _receiver(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


@pytest.fixture
def abstract_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    name = f"syncd-test-notify-{uuid.uuid4().hex}"
    sock = _receiver(b"\0" + name.encode())
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    yield sock
    sock.close()


def test_each_method_sends_its_exact_datagram(path_socket: socket.socket) -> None:
    notifier = Notifier.from_environment()
    assert notifier.enabled

    notifier.ready()
    assert path_socket.recv(4096) == b"READY=1"
    notifier.ready("watching 3 repos")
    assert path_socket.recv(4096) == b"READY=1\nSTATUS=watching 3 repos"
    notifier.status("applying stack web (update)")
    assert path_socket.recv(4096) == b"STATUS=applying stack web (update)"
    notifier.watchdog()
    assert path_socket.recv(4096) == b"WATCHDOG=1"
    notifier.stopping()
    assert path_socket.recv(4096) == b"STOPPING=1"
    assert _pending(path_socket) == []


def test_reloading_carries_the_monotonic_clock_in_microseconds(path_socket: socket.socket) -> None:
    notifier = Notifier.from_environment()
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000

    first, second = path_socket.recv(4096).decode().split("\n")
    assert first == "RELOADING=1"
    key, _, value = second.partition("=")
    assert key == "MONOTONIC_USEC"
    assert value.isdigit()
    assert before <= int(value) <= after


def test_abstract_socket(abstract_socket: socket.socket) -> None:
    notifier = Notifier.from_environment()
    assert notifier.enabled
    notifier.ready("up")
    notifier.watchdog()
    assert abstract_socket.recv(4096) == b"READY=1\nSTATUS=up"
    assert abstract_socket.recv(4096) == b"WATCHDOG=1"


def test_newlines_in_a_status_cannot_add_an_assignment(path_socket: socket.socket) -> None:
    notifier = Notifier.from_environment()
    notifier.status("stack web failed:\nREADY=1\r\nSTOPPING=1\rMAINPID=1")
    notifier.ready("ok\nWATCHDOG=trigger")

    status = path_socket.recv(4096)
    assert status.count(b"\n") == 0
    assert b"\r" not in status
    assert status == b"STATUS=stack web failed: READY=1 STOPPING=1 MAINPID=1"
    ready = path_socket.recv(4096)
    assert ready.split(b"\n") == [b"READY=1", b"STATUS=ok WATCHDOG=trigger"]


def test_watchdog_interval_is_half_of_watchdog_usec(
    path_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    assert Notifier.from_environment().watchdog_interval == 30.0

    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert Notifier.from_environment().watchdog_interval == 30.0

    monkeypatch.setenv("WATCHDOG_USEC", "3000")
    assert Notifier.from_environment().watchdog_interval == pytest.approx(0.0015)


def test_no_watchdog_when_not_asked(path_socket: socket.socket) -> None:
    assert Notifier.from_environment().watchdog_interval is None


@pytest.mark.parametrize("usec", ["0", "-5", "sixty", ""])
def test_a_bad_watchdog_usec_means_no_watchdog(
    path_socket: socket.socket, monkeypatch: pytest.MonkeyPatch, usec: str
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", usec)
    assert Notifier.from_environment().watchdog_interval is None


def test_watchdog_pid_of_another_process_disables_the_watchdog(
    path_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    notifier = Notifier.from_environment()
    assert notifier.enabled  # READY/STATUS still go to systemd
    assert notifier.watchdog_interval is None

    monkeypatch.setenv("WATCHDOG_PID", "not-a-pid")
    assert Notifier.from_environment().watchdog_interval is None


def test_without_notify_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")  # a watchdog without a socket means nothing
    notifier = Notifier.from_environment()
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    # Every call is a silent no-op (and must not try to open any socket).
    monkeypatch.setattr(socket, "socket", _forbidden_socket)
    notifier.ready("x")
    notifier.status("x")
    notifier.watchdog()
    notifier.reloading()
    notifier.stopping()

    monkeypatch.setenv("NOTIFY_SOCKET", "")
    assert not Notifier.from_environment().enabled


def _forbidden_socket(*args: object, **kwargs: object) -> socket.socket:
    raise AssertionError("a disabled notifier opened a socket")


def test_relative_notify_socket_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    # sd_notify(3) only accepts an absolute path or "@abstract".
    monkeypatch.setenv("NOTIFY_SOCKET", "relative/notify")
    assert not Notifier.from_environment().enabled


def test_a_missing_socket_does_not_raise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone" / "notify"))
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    notifier = Notifier.from_environment()
    assert notifier.enabled
    assert notifier.watchdog_interval == 10.0
    notifier.ready("up")
    notifier.status("working")
    notifier.watchdog()
    notifier.reloading()
    notifier.stopping()


def test_a_socket_that_went_away_does_not_raise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "notify"
    receiver = _receiver(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    notifier = Notifier.from_environment()
    notifier.ready()
    assert receiver.recv(4096) == b"READY=1"

    receiver.close()  # the path still exists, nobody listens: ECONNREFUSED
    notifier.watchdog()
    path.unlink()  # and now it is gone: ENOENT
    notifier.stopping()

    # A plain file at the path (ECONNREFUSED / ENOTSOCK) is no better and no worse.
    path.write_text("not a socket")
    notifier.status("still fine")


def test_non_ascii_status_is_sent_as_utf8(path_socket: socket.socket) -> None:
    Notifier.from_environment().status("déploiement → ok")
    assert path_socket.recv(4096) == "STATUS=déploiement → ok".encode()
