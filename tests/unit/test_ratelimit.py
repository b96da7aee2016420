"""The CloudFormation call budget on a fake clock: its ceiling, its cut on throttles, its creep."""

from __future__ import annotations

import random
import threading

from syncd.ratelimit import RateLimiter, priority


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def limiter(ceiling: float = 10.0, floor: float = 1.0) -> tuple[RateLimiter, Clock]:
    clock = Clock()
    return RateLimiter(ceiling, floor, clock=clock, sleep=clock.sleep), clock


def test_a_burst_of_one_second_is_free_then_calls_are_spaced_at_the_rate():
    bucket, clock = limiter(10)
    waits = [bucket.acquire() for _ in range(30)]
    assert waits[:10] == [0.0] * 10
    assert clock.now == 2.0  # 20 more calls at 10 a second
    assert bucket.waited == 2.0


def test_a_burst_of_throttles_cuts_the_rate_once_a_second():
    bucket, clock = limiter(10)
    for _ in range(30):
        bucket.throttled()  # the same instant: the share passes 45 %, one cut
    assert bucket.rate == 7.0 and bucket.throttles == 30
    clock.now += 1.0
    bucket.throttled()
    assert round(bucket.rate, 6) == 4.9


def test_a_few_throttles_among_answers_cut_nothing():
    bucket, _ = limiter(10)
    for _ in range(10):
        bucket.throttled()
        bucket.answered()
        bucket.answered()  # one in three throttled
    assert bucket.rate == 10.0 and bucket.throttled_share < 0.45


def test_the_rate_never_falls_below_its_floor_and_creeps_back_to_the_ceiling():
    bucket, clock = limiter(10, floor=2)
    for _ in range(40):
        clock.now += 1.0
        bucket.throttled()
    assert bucket.rate == 2.0
    for _ in range(16):  # 0.5 a second each: 16 answers from 2 to 10
        bucket.answered()
    assert bucket.rate == 10.0


def simulate(
    bucket: RateLimiter, clock: Clock, seconds: float, throttled: object, demand: float
) -> int:
    """Callers wanting `demand` calls a second for `seconds`; returns the calls answered."""
    answered = 0
    next_call = 0.0
    while clock.now < seconds:
        clock.now = max(clock.now, next_call)
        next_call += 1.0 / demand
        bucket.acquire()
        if throttled(clock.now):  # type: ignore[operator]
            bucket.throttled()
        else:
            bucket.answered()
            answered += 1
    return answered


def test_random_throttling_of_thirty_percent_does_not_sink_the_rate():
    # Throttles that do not depend on syncd's rate: lowering it would not help, and it does
    # not collapse to the floor.
    bucket, clock = limiter(20)
    rng = random.Random(1)
    answered = simulate(bucket, clock, 60.0, lambda _: rng.random() < 0.3, demand=15)
    assert bucket.rate > 10
    assert answered > 0.8 * 0.7 * 15 * 60  # 70 % get through; the budget costs little more


def test_a_server_side_limit_pulls_the_rate_down_towards_it():
    # A server that allows 5 calls a second: the rate falls from 20 to near that limit.
    bucket, clock = limiter(20)
    window: list[float] = []

    def server(now: float) -> bool:
        window[:] = [t for t in window if t > now - 1.0]
        if len(window) >= 5:
            return True
        window.append(now)
        return False

    simulate(bucket, clock, 60.0, server, demand=30)
    assert bucket.rate < 12
    assert bucket.throttles < 0.5 * 30 * 60


def test_callers_of_higher_priority_take_the_next_token_first():
    bucket = RateLimiter(5.0)  # real clock: a token every 0.2 s once the burst is spent
    for _ in range(5):
        bucket.acquire()
    order: list[str] = []
    lined_up = threading.Barrier(3)

    def call(name: str, level: int, delay: float) -> None:
        with priority(level):
            lined_up.wait()
            threading.Event().wait(delay)  # the low one queues first
            bucket.acquire()
            order.append(name)

    threads = [
        threading.Thread(target=call, args=("low", 1, 0.0)),
        threading.Thread(target=call, args=("high", 3, 0.05)),
    ]
    for t in threads:
        t.start()
    lined_up.wait()
    for t in threads:
        t.join(5)
    assert order == ["high", "low"]
