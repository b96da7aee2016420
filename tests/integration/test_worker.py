"""A repo's worker: triggers while a pass runs make exactly one more pass, never two at once."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from syncd.core.journal_state import JournalState
from syncd.daemon import RepoWorker
from tests.support.timing import PATIENCE


class SlowSync:
    """Stands in for RepoSync: each pass waits until the test lets it finish."""

    def __init__(self) -> None:
        self.repo = SimpleNamespace(name="r", poll_interval=3600.0)
        self.journal = SimpleNamespace(state=JournalState())  # no asks: a plain pass
        self.passes = 0
        self.running = 0
        self.most_at_once = 0
        self.started = threading.Semaphore(0)
        self.release = threading.Semaphore(0)
        self._lock = threading.Lock()

    def run_pass(self, full: bool = False) -> SimpleNamespace:
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            self.passes += 1
        self.started.release()
        self.release.acquire()
        with self._lock:
            self.running -= 1
        return SimpleNamespace(source_error=None, ok=True)


def test_a_hundred_triggers_during_a_pass_make_one_more_pass() -> None:
    sync = SlowSync()
    stop = threading.Event()
    worker = RepoWorker(sync, stop)  # type: ignore[arg-type]
    worker.start()
    assert sync.started.acquire(timeout=PATIENCE)  # the first pass runs
    threads = [threading.Thread(target=worker.trigger) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sync.release.release()  # the first pass ends ...
    assert sync.started.acquire(timeout=PATIENCE)  # ... and exactly one more starts
    sync.release.release()
    time.sleep(0.3)
    assert sync.passes == 2 and sync.most_at_once == 1
    worker.trigger()  # a trigger while idle: a pass at once, not at the next poll
    assert sync.started.acquire(timeout=PATIENCE)
    stop.set()
    sync.release.release()
    worker.trigger()
    worker.thread.join(timeout=PATIENCE)
    assert not worker.thread.is_alive()
    assert sync.passes == 3


def test_while_a_drift_detection_runs_the_repo_passes_every_30_seconds_at_least() -> None:
    """A detection's result is read at a pass's start: with an hourly poll it would wait an
    hour. The worker's next pass comes within DRIFT_LOOK while one is under way."""
    from syncd.core.journal_state import Kind, Record
    from syncd.daemon import DRIFT_LOOK

    sync = SlowSync()
    worker = RepoWorker(sync, threading.Event())  # type: ignore[arg-type]
    assert worker._sooner(3600.0) == 3600.0
    state = sync.journal.state
    state.apply(
        Record(
            1,
            "2026-12-02T00:00:00Z",
            Kind.VERSION,
            {
                "repo": "r",
                "stack": "s",
                "version": 1,
                "commit": "c",
                "digest": "d",
                "action": "create",
            },
        )
    )
    state.apply(
        Record(2, "2026-12-02T00:00:01Z", Kind.RESULT, {"stack": "s", "result": "succeeded"})
    )
    state.apply(
        Record(
            3,
            "2026-12-02T01:00:00Z",
            Kind.DRIFT_DETECTING,
            {"repo": "r", "stack": "s", "detection": "d-1"},
        )
    )
    assert worker._sooner(3600.0) == DRIFT_LOOK == 30.0
