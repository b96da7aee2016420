"""A TCP server on loopback that answers every connection with nonsense: what a Git remote
(git:// or http://) looks like when it is not a Git server, is broken, or is hostile.

Each answer is a function of the connection: it may send bytes, send forever, or say nothing
and hold the connection open. The server stops (and closes every connection) when its
context ends.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Answer = Callable[[socket.socket], None]


def reply(data: bytes) -> Answer:
    """Read what the client sends first, answer `data`, close."""

    def answer(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(data)

    return answer


def endless(chunk: bytes) -> Answer:
    """Answer `chunk` over and over until the client goes away."""

    def answer(conn: socket.socket) -> None:
        conn.recv(65536)
        while True:
            conn.sendall(chunk)

    return answer


def then_silence(data: bytes) -> Answer:
    """Answer `data`, then keep the connection open and say nothing more."""

    def answer(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(data)
        while conn.recv(65536):
            pass

    return answer


@contextmanager
def garbage_server(answer: Answer) -> Iterator[int]:
    """Serve `answer` on 127.0.0.1; yields the port."""
    listener = socket.create_server(("127.0.0.1", 0))
    conns: list[socket.socket] = []
    stopping = threading.Event()

    def serve(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            answer(conn)
        with contextlib.suppress(OSError):
            conn.close()

    def accept() -> None:
        while not stopping.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conns.append(conn)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stopping.set()
        # close() alone leaves a thread blocked in accept() holding the port open on Linux,
        # answering whoever gets that port next; shutdown() wakes it.
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        acceptor.join(10)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
