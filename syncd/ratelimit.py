"""A client-side rate budget for one account and region's CloudFormation calls.

CloudFormation throttles per account and region, and its Describe* calls share that budget
with the calls that change stacks. botocore's `adaptive` retry mode slows its own client, but
only after the first throttle, per client, and it sinks towards nothing when throttles do not
come from its own rate (measured: a 43-stack deploy went from 33 s to 170 s with 30 % of calls
throttled at random). syncd uses botocore's `standard` retries and this bucket instead: it sits
in front of every attempt sent (retries included, through botocore's `before-send` event), so
that hundreds of stacks in flight never send more than `ceiling` calls a second:

- a token bucket refilled at `rate` calls a second, holding at most one second's worth;
- while at least `SHARE` (45 %) of the recent answers are throttles, the rate is cut by 30 %
  at most once a second, down to `floor` (1 call a second by default);
- every answer that is not a throttle raises the rate by `CREEP` calls a second.

Why a share, not every throttle. Throttling that does not follow syncd's own rate (a
neighbour using the account's budget, or a share of calls refused at random) keeps the share of
throttled answers the same whatever the rate, and lowering the rate cannot cure it; cutting on
every throttle sank the rate to the floor when few stacks were left to wait on, and the
critical path waited for tokens. Throttling that comes from syncd's rate grows with it: against
a hard limit of L calls a second, the share is (r - L) / r, so the rate settles where that is
45 %, near 1.8 L; the calls beyond L are throttled and retried by botocore, a bounded excess.
"Recent" is a moving average over about the last 20 answers. Pure apart from the clock and the
sleep, which are injected for tests.
"""

from __future__ import annotations

import contextvars
import heapq
import itertools
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

CUT = 0.7  # the rate after a throttle, as a fraction of the rate before
CREEP = 0.5  # calls a second that each good answer adds back
COOLDOWN = 1.0  # seconds: at most one cut in this time
SHARE = 0.45  # cut while at least this share of recent answers are throttles
SMOOTHING = 0.05  # weight of each answer in that share (about the last 20 answers)

_priority: contextvars.ContextVar[int] = contextvars.ContextVar("call_priority", default=0)


def current_priority() -> int:
    return _priority.get()


@contextmanager
def priority(value: int) -> Iterator[None]:
    """Calls made in this block (this thread) take tokens before calls of lower priority: a
    stack on the critical path is not queued behind a crowd of stacks nothing waits for."""
    token = _priority.set(value)
    try:
        yield
    finally:
        _priority.reset(token)


class RateLimiter:
    def __init__(
        self,
        ceiling: float,
        floor: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.ceiling = float(ceiling)
        self.floor = min(1.0 if floor is None else float(floor), self.ceiling)
        self.rate = self.ceiling
        self.throttles = 0  # throttled answers seen
        self.waited = 0.0  # seconds callers spent waiting for a token
        self._clock = clock
        self._sleep = sleep
        self._cond = threading.Condition()
        self._tokens = self.ceiling
        self._refilled = clock()
        self._last_cut = float("-inf")
        self.throttled_share = 0.0  # moving average over the recent answers
        self._queue: list[tuple[int, int]] = []  # (-priority, arrival): the next token's taker
        self._arrivals = itertools.count()

    def acquire(self) -> float:
        """Take one token, waiting for it if the bucket is empty; returns the seconds waited.
        Waiting callers take tokens by priority (see `priority`), then in order of arrival."""
        if math.isinf(self.ceiling):
            return 0.0  # no budget (the embedded emulator)
        waited = 0.0
        with self._cond:
            ticket = (-_priority.get(), next(self._arrivals))
            heapq.heappush(self._queue, ticket)
            while True:
                if self._queue[0] != ticket:
                    self._cond.wait()
                    continue
                now = self._clock()
                self._tokens = min(
                    max(self.rate, 1.0), self._tokens + (now - self._refilled) * self.rate
                )
                self._refilled = now
                if self._tokens >= 1.0 - 1e-9:  # a float a hair short of a token is one
                    self._tokens -= 1.0
                    heapq.heappop(self._queue)
                    self.waited += waited
                    self._cond.notify_all()
                    return waited
                pause = (1.0 - self._tokens) / self.rate
                # Sleep without the lock, so that a caller of higher priority can queue ahead.
                self._cond.release()
                try:
                    self._sleep(pause)
                finally:
                    self._cond.acquire()
                waited += pause

    def throttled(self) -> None:
        with self._cond:
            self.throttles += 1
            self.throttled_share += SMOOTHING * (1.0 - self.throttled_share)
            now = self._clock()
            if self.throttled_share >= SHARE and now - self._last_cut >= COOLDOWN:
                self._last_cut = now
                self.rate = max(self.floor, self.rate * CUT)

    def answered(self) -> None:
        with self._cond:
            self.throttled_share -= SMOOTHING * self.throttled_share
            self.rate = min(self.ceiling, self.rate + CREEP)
