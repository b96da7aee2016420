"""A local HTTP server on loopback that plays a webhook receiver or a forge's status API: it
keeps every request (method, path, headers, body) and answers as the test says (a code, a
code with a body and headers, or no answer at all until it is told to answer again)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Answer = tuple[int, bytes] | tuple[int, bytes, dict[str, str]]  # code, body[, headers]


class Receiver:
    def __init__(self) -> None:
        self.requests: list[Received] = []  # those answered 2xx
        self.attempts = 0  # every request, answered or not
        self.code = 201
        self.answer: Callable[[Received], Answer] | None = None
        self.hang = threading.Event()  # set: take the request, never answer (until cleared)
        self.released = threading.Event()
        self.arrived = threading.Condition()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                got = Received(
                    "POST",
                    self.path,
                    {k: v for k, v in self.headers.items()},
                    self.rfile.read(length),
                )
                with owner.arrived:
                    owner.attempts += 1
                    owner.arrived.notify_all()
                if owner.hang.is_set():
                    owner.released.wait(60)
                    return
                code, body, *more = owner.answer(got) if owner.answer else (owner.code, b"{}")
                if 200 <= code < 300:
                    with owner.arrived:
                        owner.requests.append(got)
                        owner.arrived.notify_all()
                self.send_response(code)
                for name, value in (more[0] if more else {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def wait_for(self, count: int, timeout: float) -> list[Received]:
        """The accepted requests, once there are at least `count` (AssertionError if not)."""
        with self.arrived:
            if not self.arrived.wait_for(lambda: len(self.requests) >= count, timeout):
                raise AssertionError(f"{len(self.requests)} of {count} requests arrived")
            return list(self.requests)

    def wait_attempts(self, count: int, timeout: float) -> None:
        with self.arrived:
            if not self.arrived.wait_for(lambda: self.attempts >= count, timeout):
                raise AssertionError(f"{self.attempts} of {count} attempts arrived")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def receiving() -> Iterator[Receiver]:
    receiver = Receiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()
