"""The shared look at CloudFormation: one look per tick for every stack syncd is waiting on.

Many stacks in flight each want to know when their operation has settled, and each change set
wants to know whether its stack is busy. Asked per stack, the call rate grows with the stacks
waiting, and CloudFormation throttles an account that asks too much. Instead, a caller asks for
the stack "as a look newer than T saw it"; one thread at a time makes the look for every stack
asked about meanwhile, and every other caller takes its answer:

- a few stacks wanted (no more than the pages a listing of the account takes): DescribeStacks
  by name for each;
- more: one paginated DescribeStacks of the whole account and region, which covers every stack
  (one missing from it is gone).

So a look costs at most `max(1, pages)` calls however many stacks wait, and the next look
starts no sooner than its share of the call budget allows: a look of n calls is followed by a
gap of n / (LOOK_SHARE x the budget's ceiling) seconds (at most `max_gap`), so waiting takes at
most half of the account's calls, however many stacks wait.

A look is made once, without botocore's retries: the next tick is its retry, and one throttled
look must not hold every waiter through an exponential back-off. A look that failed that way
raises `LookFailed` (retryable) to the callers it was for; they ask again for a look newer
than that one. A listing can also fail because of one stack (moto answers 500 for some
resource types): then the wanted stacks are described by name, and an error reaches only the
stack it is about. A look is only as fresh as its start: callers compare look *start* times.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

from syncd import ratelimit
from syncd.cloudformation import THROTTLING_CODES, CloudFormation, ObservedStack
from syncd.errors import AwsError

LOOK_SHARE = 0.5  # the share of the call budget that looks may take


class LookFailed(AwsError):
    """The look for this stack failed; `at` is its start (ask for a look newer than that)."""

    def __init__(self, cause: AwsError, at: float) -> None:
        super().__init__(str(cause), code=cause.code, retryable=cause.retryable)
        self.at = at

    def again(self) -> LookFailed:
        """The same failure as a new exception, with no traceback of an earlier raise."""
        return LookFailed(AwsError(str(self), code=self.code, retryable=self.retryable), self.at)


class World:
    """What CloudFormation shows of each stack, as of the newest look that covered it."""

    def __init__(
        self,
        cfn: CloudFormation,
        *,
        max_gap: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfn = cfn
        self.max_gap = max_gap
        self.clock = clock
        self.looks = 0  # how many looks were made (for tests and metrics)
        self._cond = threading.Condition()
        self._wanted: Counter[str] = Counter()
        self._priorities: Counter[int] = Counter()  # of the callers waiting: a look takes the top
        self._seen: dict[str, tuple[float, ObservedStack | None]] = {}
        self._errors: dict[str, LookFailed] = {}
        self._looking = False
        self._last_start = float("-inf")
        self._pages = 1  # pages the last listing took
        self._calls = 1  # calls the last look made

    # --- asking -------------------------------------------------------------------------------

    def waiting(self) -> int:
        """How many stacks callers are waiting to see now."""
        with self._cond:
            return len(self._wanted)

    def observe(self, name: str, newer_than: float) -> tuple[ObservedStack | None, float]:
        """The stack (None: not there) as the first look started after `newer_than` saw it,
        and that look's start time (pass it as `newer_than` to ask for the next look).
        Raises LookFailed when that look failed for this stack."""
        priority = ratelimit.current_priority()
        with self._cond:
            self._wanted[name] += 1
            self._priorities[priority] += 1
            try:
                while True:
                    seen = self._seen.get(name)
                    error = self._errors.get(name)
                    if (
                        error is not None
                        and error.at > newer_than
                        and (seen is None or error.at >= seen[0])
                    ):
                        # A new exception each time: raising the stored one would hang each
                        # caller's frames (a whole pass's) on its traceback while it is kept.
                        raise error.again()
                    if seen is not None and seen[0] > newer_than:
                        return seen[1], seen[0]
                    if self._looking:
                        self._cond.wait()
                        continue
                    wait = self._last_start + self._gap() - self.clock()
                    if wait > 0:
                        self._cond.wait(wait)  # another caller may start it meanwhile
                        continue
                    self._look_locked()
            finally:
                self._wanted[name] -= 1
                if not self._wanted[name]:
                    del self._wanted[name]
                self._priorities[priority] -= 1
                if not self._priorities[priority]:
                    del self._priorities[priority]

    def look_all(self) -> dict[str, ObservedStack]:
        """A listing of every stack now (the start-up look), remembered for later callers."""
        with self._cond:
            while self._looking:
                self._cond.wait()
            started = max(self.clock(), self._last_start + 1e-6)
            self._looking = True
            self._last_start = started
        try:
            stacks, pages = self.cfn.describe_all_pages()
            with self._cond:
                self.looks += 1
                self._pages = self._calls = max(1, pages)
                self._record_listing(started, stacks)
        finally:
            with self._cond:
                self._looking = False
                self._cond.notify_all()
        return stacks

    # --- looking ------------------------------------------------------------------------------

    def _gap(self) -> float:
        # The budget's ceiling, not its current rate: after throttling, the looks' calls wait
        # for their tokens like every other call, and a wider gap as well would only make
        # every waiting stack late twice.
        ceiling = self.cfn.limiter.ceiling  # inf: no budget (the embedded emulator)
        return min(self.max_gap, self._calls / (LOOK_SHARE * ceiling))

    def _look_locked(self) -> None:
        """Make one look for every stack wanted now; called with the lock held, released
        during the calls."""
        wanted = sorted(self._wanted)
        # Strictly later than any look before: "newer than" compares start times.
        started = max(self.clock(), self._last_start + 1e-6)
        self._looking = True
        self._last_start = started
        # The look is for every waiter: it takes tokens at the highest priority among them.
        top = max(self._priorities, default=0)
        self._cond.release()
        try:
            with ratelimit.priority(top):
                found, errors, pages = self._look(wanted)
        finally:
            self._cond.acquire()
            self._looking = False
            self._cond.notify_all()
        self.looks += 1
        self._calls = pages or len(wanted)
        if pages:
            self._pages = pages
            self._record_listing(started, found)
        else:
            for name in wanted:
                if name in errors:
                    self._errors[name] = LookFailed(errors[name], started)
                else:
                    self._seen[name] = (started, found.get(name))
                    self._errors.pop(name, None)  # older than this look: no one is told it

    def _look(self, wanted: list[str]) -> tuple[dict[str, ObservedStack], dict[str, AwsError], int]:
        """(stacks found, errors by stack, pages of a listing or 0 when asked by name)."""
        if len(wanted) > self._pages:
            try:
                stacks, pages = self.cfn.describe_all_pages(once=True)
                return stacks, {}, max(1, pages)
            except AwsError as exc:
                if exc.code in THROTTLING_CODES:  # missed for all, until the next tick
                    return {}, dict.fromkeys(wanted, exc), 0
                # else one stack may spoil a listing (moto's 500): ask for each by name
        found: dict[str, ObservedStack] = {}
        errors: dict[str, AwsError] = {}
        for name in wanted:
            try:
                observed = self.cfn.describe(name, once=True)
            except AwsError as exc:
                errors[name] = exc
                continue
            if observed is not None:
                found[name] = observed
        return found, errors, 0

    def _record_listing(self, started: float, stacks: dict[str, ObservedStack]) -> None:
        for name in set(self._seen) | set(stacks) | set(self._wanted):
            self._seen[name] = (started, stacks.get(name))
        self._errors.clear()
