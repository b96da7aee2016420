"""The connections of syncd's HTTP listener (syncd.http): each request is read whole before a
thread is spent on it.

One asyncio loop, on its own thread, reads every connection's request (head and body) at
whatever pace the client sends it, so a slow client costs a socket and a few bytes, never a
thread. Only a whole request goes to a thread: a POST (a webhook) to one small pool, health,
readiness and metrics to another, and the dashboard's pages to a third, so neither webhooks nor
pages waiting for a thread ever delay `/healthz`.

- Deadline: a connection has `deadline` seconds in all to send its request and take the
  answer, whatever its pace; then it is closed (with a 408 if it was still sending).
- Caps: at most `per_client` connections from one address and `connections` in all. A new
  connection past either cap drops the oldest one (of that address, or of all) still sending
  its request, so requests that arrive whole in good time are never locked out by ones that
  trickle; if none is, the oldest that has left its answer untaken for STALLED seconds (a
  client that asks and never reads). If none of those either, the new one gets a 503.
- A head (request line and headers) over 64 KiB gets a 431; a body is read only up to
  `max_body` (past it the request goes on without its body, for the handler to refuse).

Each of these is reported to `refused(kind, client address, request line so far)`.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

MAX_HEAD = 64 * 1024
# Requests answered by their own threads, never kept waiting behind webhooks or dashboard pages.
_PROBES = (b"GET /healthz ", b"GET /readyz ", b"GET /metrics ", b"HEAD /healthz ")
STALLED = 1.0  # seconds a client may leave its answer untaken before a full listener drops it

# The whole request -> the whole answer (called on a pool thread).
Answer = Callable[[bytes, Any], bytes]
# kind ("deadline", "per_client", "full", "busy", "head_too_large"), client address, request line
Refused = Callable[[str, str, str], None]


@dataclass(frozen=True)
class Limits:
    deadline: float = 10.0  # seconds for a whole request and its answer
    per_client: int = 16  # connections at once from one address
    connections: int = 128  # connections at once in all (each may hold up to max_body)
    threads: int = 4  # threads answering webhooks, and as many for everything else


@dataclass(eq=False)
class _Conn:
    client: str
    writer: asyncio.StreamWriter
    task: asyncio.Task[Any] | None
    head: bytearray = field(default_factory=bytearray)  # what was read, the body's start too
    reading: bool = True  # still sending its request (the ones a cap may drop)
    answered_at: float | None = None  # when its answer was handed to the socket


class _HeadTooLarge(Exception):
    pass


class Listener:
    def __init__(
        self, sock: socket.socket, answer: Answer, refused: Refused, limits: Limits, max_body: int
    ) -> None:
        self.limits = limits
        self._sock, self._answer, self._refused, self._max_body = sock, answer, refused, max_body
        self._open: dict[_Conn, None] = {}  # oldest first; touched on the loop's thread only
        self._hooks = ThreadPoolExecutor(limits.threads, thread_name_prefix="http-hooks")
        self._probes = ThreadPoolExecutor(limits.threads, thread_name_prefix="http")
        self._pages = ThreadPoolExecutor(limits.threads, thread_name_prefix="http-pages")
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.ident is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout=5)
        else:
            self._sock.close()
            self._loop.close()
        for pool in (self._hooks, self._probes, self._pages):
            pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        server = await asyncio.start_server(self._connection, sock=self._sock)
        await self._stop.wait()
        server.close()
        tasks = [conn.task for conn in self._open if conn.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("unknown", 0)  # None: already reset
        conn = _Conn(str(peer[0]), writer, asyncio.current_task())
        if not self._admit(conn):
            _reply(writer, "503 Service Unavailable", "too many connections; try again")
            return _close(writer)
        self._open[conn] = None
        writer.transport.set_write_buffer_limits(high=0)  # drain() waits for the kernel to take all
        try:
            async with asyncio.timeout(self.limits.deadline):
                request = await self._read(conn, reader)
                conn.reading = False
                pool = (
                    self._hooks
                    if request.startswith(b"POST ")
                    else self._probes
                    if request.startswith(_PROBES)
                    else self._pages
                )
                loop = asyncio.get_running_loop()
                writer.write(await loop.run_in_executor(pool, self._answer, request, peer))
                conn.answered_at = time.monotonic()
                await writer.drain()
        except TimeoutError:
            self._report("deadline", conn)
            if conn.reading:
                _reply(writer, "408 Request Timeout", "the request did not arrive in time")
        except _HeadTooLarge:
            self._report("head_too_large", conn)
            _reply(writer, "431 Request Header Fields Too Large", "request head over 64 KiB")
        except (OSError, asyncio.IncompleteReadError):
            pass  # the client went away, or was dropped
        except asyncio.CancelledError:
            pass  # the listener is stopping (a task ends quietly: not cancelled, done)
        finally:
            self._open.pop(conn, None)
            _close(writer)

    async def _read(self, conn: _Conn, reader: asyncio.StreamReader) -> bytes:
        """The request line, the headers, and the body their Content-Length gives."""
        searched = 0
        while (end := _end_of_head(conn.head, searched)) is None:
            if len(conn.head) > MAX_HEAD:
                raise _HeadTooLarge
            searched = max(0, len(conn.head) - 2)  # a byte at a time costs no more than a block
            chunk = await reader.read(16384)
            if not chunk:
                raise asyncio.IncompleteReadError(bytes(conn.head), None)
            conn.head += chunk
        if end > MAX_HEAD:
            raise _HeadTooLarge
        head, body = bytes(conn.head[:end]), bytes(conn.head[end:])
        length = _content_length(head)
        if length > self._max_body:
            return head  # the handler refuses it without its body
        if length > len(body):
            body += await reader.readexactly(length - len(body))
        return head + body[:length]

    def _admit(self, conn: _Conn) -> bool:
        """Room for `conn`, made by dropping, past a cap, the oldest connection still sending
        its request, else the oldest that has not taken its answer for STALLED seconds (a
        client that asks and never reads); False when every one past the cap is being
        answered and reading."""
        limits = self.limits
        stalled = time.monotonic() - STALLED
        for kind, cap in (("per_client", limits.per_client), ("full", limits.connections)):
            group = [c for c in self._open if kind == "full" or c.client == conn.client]
            if len(group) < cap:
                continue
            oldest = next((c for c in group if c.reading), None) or next(
                (c for c in group if c.answered_at is not None and c.answered_at < stalled), None
            )
            if oldest is None:
                self._report("busy", conn)
                return False
            self._report(kind, oldest)
            del self._open[oldest]
            oldest.writer.transport.abort()
        return True

    def _report(self, kind: str, conn: _Conn) -> None:
        line = bytes(conn.head[:200]).split(b"\n", 1)[0].decode("latin-1").rstrip("\r")
        self._refused(kind, conn.client, line)


def _end_of_head(data: bytearray, start: int) -> int | None:
    """Where the head ends (after its first empty line, CRLF or bare LF), looking from `start`."""
    ends = [i + len(s) for s in (b"\n\r\n", b"\n\n") if (i := data.find(s, start)) >= 0]
    return min(ends) if ends else None


def _content_length(head: bytes) -> int:
    """The first Content-Length of a head; 0 when there is none or it is not a number (the
    handler reads the same header and refuses what it cannot read)."""
    for line in head.split(b"\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() == b"content-length":
            value = value.strip()
            return int(value) if value.isdigit() and len(value) <= 12 else 0
    return 0


def _reply(writer: asyncio.StreamWriter, status: str, text: str) -> None:
    body = text.encode() + b"\n"
    head = f"HTTP/1.0 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
    writer.write(head.encode() + b"Connection: close\r\n\r\n" + body)


def _close(writer: asyncio.StreamWriter) -> None:
    """Close once what was written is with the kernel; at once (abort) if the client does not
    take it, so a client that stops reading cannot keep the socket open."""
    if writer.transport.get_write_buffer_size():
        writer.transport.abort()
    else:
        writer.close()
