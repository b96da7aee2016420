"""The daemon's timing rules: poll jitter and back-off after failed fetches."""

from __future__ import annotations

from syncd.daemon import MAX_BACKOFF, next_delay


def test_a_healthy_repo_polls_at_its_interval_with_jitter() -> None:
    delays = {round(next_delay(60.0, 0), 3) for _ in range(200)}
    assert all(54.0 <= d <= 66.0 for d in delays)
    assert len(delays) > 10  # jittered, not lockstep


def test_failed_fetches_back_off_doubling_up_to_the_cap() -> None:
    assert [next_delay(2.0, n) for n in range(1, 6)] == [2.0, 4.0, 8.0, 16.0, 32.0]
    assert next_delay(60.0, 30) == MAX_BACKOFF
    # An interval longer than the cap is never shortened by failures.
    assert next_delay(3600.0, 5) == 3600.0
