"""Tell systemd how the daemon is doing: the ``sd_notify`` protocol, without libsystemd.

With ``Type=notify`` systemd starts the service, hands it a datagram socket in
``$NOTIFY_SOCKET`` and waits for ``READY=1``. The daemon then sends ``STATUS=`` lines while it
works (``systemctl status`` shows the last one), ``WATCHDOG=1`` from its main loop (when the unit
sets ``WatchdogSec=``), ``RELOADING=1`` when SIGHUP makes it reload (and ``READY=1`` again when the
reload is done) and ``STOPPING=1`` when SIGTERM makes it stop.

The whole protocol is one ``AF_UNIX``/``SOCK_DGRAM`` datagram per message, newline-separated
``KEY=value`` assignments, to the path in ``$NOTIFY_SOCKET`` (or to an abstract socket when it
starts with ``@``). Outside systemd ``$NOTIFY_SOCKET`` is unset and every call is a no-op, so the
daemon calls these methods unconditionally.

Sending never raises: a notification is advice to the service manager, and a socket that is gone
or full must not stop the daemon. Nothing is logged either (this may be called from a signal path
or many times a minute).
"""

from __future__ import annotations

import os
import socket
import time

__all__ = ["Notifier"]

# How long one send may block if systemd's receive queue is full. systemd reads the socket from
# its event loop, so this is only reached when PID 1 is stuck; the message is then dropped.
_SEND_TIMEOUT = 2.0


def _one_line(text: str) -> str:
    """Make ``text`` a single assignment value: no newline may start another ``KEY=``."""
    return text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ").replace("\0", " ")


def _socket_address(value: str) -> bytes | None:
    """The ``sendto`` address for a ``$NOTIFY_SOCKET`` value, or None if it is not one.

    ``@name`` is Linux's abstract namespace (a leading NUL byte); otherwise the value must be an
    absolute filesystem path, as sd_notify(3) requires.
    """
    if value.startswith("@") and len(value) > 1:
        return b"\0" + os.fsencode(value[1:])
    if value.startswith("/"):
        return os.fsencode(value)
    return None


def _watchdog_interval(usec: str | None, pid: str | None) -> float | None:
    """Seconds between two ``WATCHDOG=1``: half of ``$WATCHDOG_USEC``, as sd_watchdog_enabled(3)
    recommends; None when no watchdog is asked, or when ``$WATCHDOG_PID`` names another process
    (the variables were inherited from a parent that systemd watches, not from systemd for us)."""
    if not usec:
        return None
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    try:
        micros = int(usec)
    except ValueError:
        return None
    if micros <= 0:
        return None
    return micros / 2 / 1_000_000


class Notifier:
    """Sends notifications to the service manager; does nothing when there is none.

    Build it with :meth:`from_environment`. Each method sends one datagram on a fresh socket, so
    an instance is safe to share between threads.
    """

    enabled: bool
    watchdog_interval: float | None

    def __init__(self, address: str | None = None, watchdog_interval: float | None = None) -> None:
        """``address`` is a ``$NOTIFY_SOCKET`` value (a path or ``@abstract``); None disables."""
        self._address = _socket_address(address) if address else None
        self.enabled = self._address is not None
        self.watchdog_interval = watchdog_interval if self.enabled else None

    @classmethod
    def from_environment(cls) -> Notifier:
        """Read ``$NOTIFY_SOCKET``, ``$WATCHDOG_USEC`` and ``$WATCHDOG_PID``.

        The variables are left in the environment: with ``NotifyAccess=main`` systemd ignores
        messages from child processes anyway, and ``$WATCHDOG_PID`` stops a child Python from
        believing the watchdog is its own.
        """
        address = os.environ.get("NOTIFY_SOCKET")
        interval = _watchdog_interval(
            os.environ.get("WATCHDOG_USEC"), os.environ.get("WATCHDOG_PID")
        )
        return cls(address or None, interval)

    def __repr__(self) -> str:
        return f"Notifier(enabled={self.enabled}, watchdog_interval={self.watchdog_interval})"

    def ready(self, status: str | None = None) -> None:
        """Startup (or a reload) is complete: ``READY=1``, with a ``STATUS=`` line if given."""
        if status is None:
            self._send("READY=1")
        else:
            self._send(f"READY=1\nSTATUS={_one_line(status)}")

    def status(self, text: str) -> None:
        """A one-line description of what the daemon is doing now: ``STATUS=text``."""
        self._send(f"STATUS={_one_line(text)}")

    def watchdog(self) -> None:
        """Still alive: ``WATCHDOG=1``; send it every :attr:`watchdog_interval` seconds."""
        self._send("WATCHDOG=1")

    def reloading(self) -> None:
        """A reload has begun: ``RELOADING=1``; call :meth:`ready` when it is done.

        ``MONOTONIC_USEC`` (CLOCK_MONOTONIC in microseconds) lets systemd ≥ 253 tell this reload
        from an earlier one; older versions ignore the field.
        """
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={now_usec}")

    def stopping(self) -> None:
        """The daemon is shutting down: ``STOPPING=1``."""
        self._send("STOPPING=1")

    def _send(self, message: str) -> None:
        address = self._address
        if address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.settimeout(_SEND_TIMEOUT)
                sock.sendto(message.encode("utf-8", "replace"), address)
        except OSError:
            # Gone, refused, full or timed out: the daemon goes on; systemd will notice on its
            # own (watchdog, start timeout) if it matters.
            pass
