"""The apply slots that every repo's stacks share: `concurrency` stacks worked on at once.

A stack holds a slot from its change set to its settled result (waiting costs no AWS call of
its own: the shared look in `syncd.world` serves every waiter). When a slot frees, the next
holder is chosen by `syncd.core.schedule.pick`: the critical path first, then the repo holding
the fewest slots. Each waiter sleeps on its own event, so a release wakes one thread, not all.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from syncd.core.schedule import Request, pick


class Slots:
    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._lock = threading.Lock()
        self._free = self.capacity
        self._held: Counter[str] = Counter()
        self._waiting: list[Request] = []
        self._events: dict[Request, threading.Event] = {}
        self._seq = itertools.count()

    @contextmanager
    def take(self, repo: str, stack: str, height: int = 1) -> Iterator[None]:
        """Hold a slot for the block; blocks until one is granted."""
        with self._lock:
            if self._free > 0 and not self._waiting:
                self._grant_locked(repo)
                queued = None
            else:
                queued = Request(repo, stack, height, next(self._seq))
                self._waiting.append(queued)
                self._events[queued] = threading.Event()
                self._dispatch_locked()
        if queued is not None:  # in line: wait until a release picks this request
            self._events[queued].wait()
            with self._lock:
                del self._events[queued]
        try:
            yield
        finally:
            with self._lock:
                self._free += 1
                self._held[repo] -= 1
                if not self._held[repo]:
                    del self._held[repo]
                self._dispatch_locked()

    def in_use(self) -> int:
        with self._lock:
            return self.capacity - self._free

    def _grant_locked(self, repo: str) -> None:
        self._free -= 1
        self._held[repo] += 1

    def _dispatch_locked(self) -> None:
        while self._free > 0 and self._waiting:
            request = self._waiting.pop(pick(self._waiting, self._held))
            self._grant_locked(request.repo)
            self._events[request].set()
