"""`syncd run`: the daemon loop, its triggers and its signals.

The main thread owns signals and systemd: it sends READY once the config and journal are good,
WATCHDOG from its loop while every repo worker lives, STATUS lines, and STOPPING on SIGTERM. Each
repo has a worker thread with a size-one mailbox (an Event): the poll timer and any number of
other triggers while a pass runs make exactly one more pass.

SIGTERM stops at a safe point: workers finish the journal write they are in, waits on
CloudFormation are left at once (the operation is journaled and observed after the restart).
SIGHUP reloads the config; a bad new config is logged and the old one kept.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import structlog

from syncd.app import App, Secrets, open_app, read_secrets
from syncd.approvals import Approval, Approvals
from syncd.asks import AskBox, serve
from syncd.configfile import load_config
from syncd.core.journal_state import HistoryRow, StackState, status_rows
from syncd.core.text import bounded
from syncd.errors import ConfigError, SyncdError
from syncd.http import Endpoints, Hook, HttpServer
from syncd.journal.follow import Follower
from syncd.journal.mirror import lineage_of
from syncd.journal.store import read_steady
from syncd.metrics import Metrics
from syncd.notify import Notifier
from syncd.outbox import Outbox
from syncd.reconcile import RepoSync, jittered, observe_world
from syncd.requests import deliver
from syncd.sources.git import fetch_limit_problem
from syncd.sources.watch import RefWatcher
from syncd.web.access import Access
from syncd.web.dashboard import Dashboard

MAX_BACKOFF = 900.0
DRIFT_LOOK = 30.0  # while a drift detection of a repo's stack runs, its repo passes this often


def next_delay(poll_interval: float, failures: int) -> float:
    """The pause before a repo's next pass: its poll interval (±10% jitter), or after
    `failures` failed fetches in a row, the interval doubled each time up to MAX_BACKOFF."""
    if not failures:
        return jittered(poll_interval)
    return min(poll_interval * 2.0 ** (failures - 1), max(poll_interval, MAX_BACKOFF))


class RepoWorker:
    """Runs one repo's passes: on its poll timer, or at once when triggered."""

    def __init__(
        self,
        sync: RepoSync,
        stop: threading.Event,
        metrics: Metrics | None = None,
        after_pass: Callable[[RepoWorker], object] = lambda _: None,
    ) -> None:
        self.sync = sync
        self.stop = stop
        self.metrics = metrics
        self.after_pass = after_pass
        self.mailbox = threading.Event()
        self.passes = 0
        self.read_once = False  # a pass has fetched and read the repo
        self.thread = threading.Thread(
            target=self._loop, name=f"repo-{sync.repo.name}", daemon=True
        )
        self.log = structlog.get_logger("syncd.daemon").bind(repo=sync.repo.name)

    def start(self) -> None:
        self.thread.start()

    def trigger(self) -> None:
        self.mailbox.set()

    def _loop(self) -> None:
        failures = 0
        while not self.stop.is_set():
            self.mailbox.clear()
            started = time.monotonic()
            ok = False
            try:
                report = serve(self.sync)  # the pass, and what commands asked of it
                fetched = not report.source_error
                ok = report.ok  # every stack fine too: what "last successful sync" means
                self.read_once = self.read_once or fetched
                failures = 0 if fetched else failures + 1
            except SyncdError as exc:
                failures += 1
                self.log.error("pass.failed", error=str(exc))
            except Exception:  # a bug must not kill the repo's worker silently
                failures += 1
                self.log.exception("pass.crashed")
            self.passes += 1
            if self.metrics is not None:
                self.metrics.pass_done(self.sync.repo.name, time.monotonic() - started, ok)
            try:
                self.after_pass(self)
            except Exception:  # waking the other repos must never end this one's loop
                self.log.exception("pass.after_failed")
            self.mailbox.wait(self._sooner(next_delay(self.sync.repo.poll_interval, failures)))

    def _sooner(self, delay: float) -> float:
        """The pause before the next pass, shortened for what a pass must look at before it: a
        drift detection under way (its result is read at a pass's start), an apply whose
        outcome could not be read (by the time its record says syncd looks again)."""
        name = self.sync.repo.name
        now = datetime.now(UTC)
        for view in list(self.sync.journal.state.stacks.values()):
            if view.repo != name:
                continue
            if view.drift_detection:
                delay = min(delay, DRIFT_LOOK)
            if view.attempt is not None and view.attempt.look_again_at:
                with contextlib.suppress(ValueError):  # not a time: the poll looks
                    at = datetime.fromisoformat(view.attempt.look_again_at)
                    delay = min(delay, max(0.0, (at - now).total_seconds()))
        return delay


class Daemon:
    def __init__(self, config_file: Path, notifier: Notifier | None = None) -> None:
        self.config_file = config_file
        self.notifier = notifier or Notifier.from_environment()
        self.log = structlog.get_logger("syncd.daemon")
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._reload = threading.Event()
        self.app: App | None = None
        self.workers: list[RepoWorker] = []
        self.mirror_thread: threading.Thread | None = None
        self._mirror_stop = threading.Event()
        self.watchers: list[RefWatcher] = []
        self.metrics = Metrics(lambda: self.app)
        self.http: HttpServer | None = None
        self._secrets = Secrets({}, [], Access())  # read at start and on each reload
        self.follower: Follower | None = None
        self._hooks: dict[str, Hook] = {}
        self._approvals_seen: set[Approval] = set()
        self._approve_signal = threading.Event()

    def run(self) -> int:
        config = load_config(self.config_file)  # ConfigError: nothing has started
        self._secrets = read_secrets(config, lambda: self._history())
        self._install_signals()
        self.app = open_app(config)
        try:
            self._deliver_requests()  # those left while no daemon ran, before any pass
            self._take_asks()
            self._observe()
            self._start_workers()
            if config.http.listen:
                self._start_http(config.http.listen)
            self.notifier.ready(status=self._status_line())
            self.log.info("daemon.ready", repos=[r.name for r in config.repos])
            if unbounded := fetch_limit_problem():
                self.log.warning("git.fetch_size_unbounded", reason=unbounded)
            self._main_loop()
        finally:
            self.notifier.stopping()
            if self.http is not None:
                self.http.stop()
            self._stop_workers()
            if self.follower is not None:
                self.follower.close()
            if self.app is not None:
                self.app.close()
            self.log.info("daemon.stopped")
        return 0

    def _main_loop(self) -> None:
        # At least every 5 s: requests (approve, suspend, resume) from users who cannot signal it.
        period = min(self.notifier.watchdog_interval or 5.0, 5.0)
        while not self._stopping.is_set():
            self._wake.wait(period)
            self._wake.clear()
            if self._stopping.is_set():
                return
            if self._reload.is_set():
                self._reload.clear()
                self._do_reload()
            self._deliver_requests()
            self._take_asks()
            self._deliver_approvals()
            threads = [w.thread for w in self.workers]
            threads += [self.mirror_thread] if self.mirror_thread is not None else []
            if all(t.is_alive() for t in threads):
                self.notifier.watchdog()
            self.notifier.status(self._status_line())

    def _deliver_requests(self) -> None:
        """`syncd suspend`/`resume` left requests (and sent SIGUSR1): journal them, and wake
        the repos they name (a resumed stack is applied at once)."""
        if self.app is None:
            return
        config = self.app.config
        repos = [r.name for r in config.repos]
        try:
            concerned = deliver(config.state_dir, self.app.journal, repos, self.log)
        except (SyncdError, OSError) as exc:  # the journal cannot be written, or the folder
            self.log.error("request.not_journaled", error=str(exc))
            return
        for worker in self.workers:
            if worker.sync.repo.name in concerned:
                worker.trigger()

    def _take_asks(self) -> None:
        """`syncd sync` or `rollback` asked for a pass (and sent SIGUSR1): journal the asks and
        wake the repos' workers, which answer them (see syncd.asks)."""
        if self.app is None:
            return
        repos = [r.name for r in self.app.config.repos]
        try:
            concerned = AskBox(self.app.config.state_dir).take(self.app.journal, repos, self.log)
        except (SyncdError, OSError) as exc:  # the journal cannot be written, or the folder
            self.log.error("ask.not_journaled", error=str(exc))
            return
        for worker in self.workers:
            if worker.sync.repo.name in concerned:
                worker.trigger()

    def _deliver_approvals(self) -> None:
        """`syncd approve` left a request (and sent SIGUSR1): wake the stack's repo worker."""
        if self.app is None:
            return
        stacks = self.app.journal.state.stacks
        pending = Approvals(self.app.config.state_dir).pending()
        # Each request wakes its worker once (a pass that cannot answer it, e.g. a fetch that
        # fails, must not be re-run every 5 s); SIGUSR1 from `syncd approve` wakes them all.
        asked = self._approve_signal.is_set()
        self._approve_signal.clear()
        new = {a for a in pending.values() if asked or a not in self._approvals_seen}
        self._approvals_seen = set(pending.values())
        repos = {stacks[a.stack].repo for a in new if a.stack in stacks}
        for worker in self.workers:
            if worker.sync.repo.name in repos:
                worker.trigger()

    def _wake_readers(self, done: RepoWorker) -> None:
        """A pass has ended: a repo whose stacks read outputs that pass changed (or waited for a
        stack it was applying) runs now, not at its next poll."""
        for worker in self.workers:
            if worker is not done and worker.sync.waits_on_outputs():
                worker.trigger()

    def _observe(self) -> None:
        assert self.app is not None
        try:
            observe_world(self.app.world, self.app.journal)
        except SyncdError as exc:
            self.log.error("observe.failed", error=str(exc))

    def _start_workers(self) -> None:
        assert self.app is not None
        self._start_outboxes()  # first: they read the state while nothing else writes it
        self.workers = [
            RepoWorker(s, self.app.stop, self.metrics, self._wake_readers)
            for s in self.app.syncs.values()
        ]
        for worker in self.workers:
            if worker.sync.repo.watch:
                self._watch(worker)
            worker.start()
        self._hooks = {
            w.sync.repo.name: Hook(
                self._secrets.webhooks[w.sync.repo.name], w.sync.repo.branch, w.trigger
            )
            for w in self.workers
            if w.sync.repo.name in self._secrets.webhooks
        }
        if self.app.mirror is not None:
            # Its own stop, set once the workers have ended: its last cycle must come after
            # their last records, or a clean stop could leave one of them out of S3.
            self._mirror_stop = threading.Event()
            self.mirror_thread = threading.Thread(
                target=self.app.mirror.run, args=(self._mirror_stop,), name="mirror", daemon=True
            )
            self.mirror_thread.start()

    def _history(self) -> list[HistoryRow]:
        return self.app.journal.state.history if self.app is not None else []

    def _start_outboxes(self) -> None:
        """A thread per receiver of events and commit statuses (syncd.outbox)."""
        assert self.app is not None
        journal = self.app.journal
        if not self._secrets.receivers:
            self.app.outboxes = []
            return
        if self.follower is None:  # kept across reloads: the journal is the same
            self.follower = Follower(journal)
        lineage = lineage_of(journal.directory).id
        self.app.outboxes = [
            Outbox(r, self.follower, journal.state, self.app.config.state_dir, lineage)
            for r in self._secrets.receivers
        ]
        for outbox in self.app.outboxes:
            outbox.start(self.app.stop)

    def _start_http(self, listen: str) -> None:
        # Always made: whether it serves (http.dashboard) is read per request, as reloads change.
        dashboard = Dashboard(
            lambda: self.app, self.metrics.last_successes, lambda: self._secrets.access
        )
        endpoints = Endpoints(
            self.metrics,
            hooks=lambda: self._hooks,
            ready=lambda: bool(self.workers) and all(w.read_once for w in self.workers),
            allowed_hosts=lambda: self.app.config.http.allowed_hosts if self.app else None,
            dashboard=dashboard,
        )
        try:
            self.http = HttpServer(listen, endpoints)
        except OSError as exc:
            source = self.app.config.source if self.app else str(self.config_file)
            raise ConfigError(
                source, [f"http.listen: cannot listen on {listen}: {exc.strerror or exc}"]
            ) from None
        self.http.start()
        self.log.info("http.listening", address=self.http.address)

    def _watch(self, worker: RepoWorker) -> None:
        """Filesystem events on a local repo's refs trigger its worker; polling goes on
        beside them (and alone when events cannot be had)."""
        repo = worker.sync.repo
        path = repo.local_path
        # A repo made from init_from on first run is made now, so that it can be watched (and
        # before the worker starts, which would make it too); the worker's passes report a repo
        # that is still missing, as without watch.
        try:
            worker.sync.source.seed_if_missing()
        except Exception as exc:
            self.log.warning("repo.init_failed", repo=repo.name, error=bounded(str(exc), 500))
        watcher = RefWatcher(path, worker.trigger) if path is not None else None
        reason = watcher.start() if watcher is not None else f"{repo.url} is not on this machine"
        if reason or watcher is None:
            self.log.warning("watch.unavailable", repo=repo.name, reason=reason)
            return
        self.watchers.append(watcher)
        self.log.info("watch.started", repo=repo.name, path=str(watcher.git_folder))

    def _stop_workers(self) -> None:
        for watcher in self.watchers:
            watcher.stop()
        self.watchers = []
        if self.app is not None:
            self.app.stop.set()
        for worker in self.workers:
            worker.trigger()
        for worker in self.workers:
            # No time limit: a worker left running beside its successor would give a repo two
            # passes at once. Every wait a worker can be in is bounded (git fetch, botocore's
            # timeouts) or left at once on stop; systemd's TimeoutStopSec is the last word.
            while worker.thread.is_alive():
                worker.thread.join(timeout=5.0)
                if worker.thread.is_alive():
                    self.log.info("daemon.waiting_for_worker", repo=worker.sync.repo.name)
                    self.notifier.watchdog()
        self.workers = []
        for outbox in self.app.outboxes if self.app is not None else []:
            # Each wait is left at once on stop; a send under way ends within its timeout.
            while outbox.thread is not None and outbox.thread.is_alive():
                outbox.thread.join(timeout=5.0)
                self.notifier.watchdog()
        if self.mirror_thread is not None:  # after the workers: its last cycle sends their records
            self._mirror_stop.set()
            if self.app is not None and self.app.mirror is not None:
                self.app.mirror.wake()
            while self.mirror_thread.is_alive():
                self.mirror_thread.join(timeout=5.0)
                self.notifier.watchdog()
            self.mirror_thread = None

    def _do_reload(self) -> None:
        assert self.app is not None
        self.notifier.reloading()
        try:
            config = load_config(self.config_file)
            secrets = read_secrets(config, lambda: self._history())
        except ConfigError as exc:
            self.log.error("config.reload_refused", problems=exc.problems)
            self.notifier.ready(status=self._status_line())
            return
        if config.state_dir != self.app.config.state_dir:
            self.log.error("config.reload_refused", problems=["state_dir cannot change on reload"])
            self.notifier.ready(status=self._status_line())
            return
        if config.http.listen != self.app.config.http.listen:
            self.log.warning(
                "config.reload_partial",
                problem="http.listen changes only with a restart; the old address is kept",
            )
        old = self.app
        try:  # build the new wiring first: if that fails, the old one keeps running
            new = open_app(
                config,
                journal=old.journal,
                emulator=old.emulator if config.aws.embedded else None,
            )
        except SyncdError as exc:
            self.log.error("config.reload_failed", error=str(exc))
            self.notifier.ready(status=self._status_line())
            return
        self._stop_workers()
        old.close_sources()
        new._owns_journal = True
        self.app = new
        self._secrets = secrets
        if not config.aws.embedded and old.emulator is not None:
            old.emulator.stop()
        self._start_workers()
        self.log.info("config.reloaded", repos=[r.name for r in config.repos])
        self.notifier.ready(status=self._status_line())

    def _install_signals(self) -> None:
        def stop(signum: int, _: FrameType | None) -> None:
            self._stopping.set()
            self._wake.set()
            if self.app is not None:
                self.app.stop.set()

        def reload(signum: int, _: FrameType | None) -> None:
            self._reload.set()
            self._wake.set()

        def wake(signum: int, _: FrameType | None) -> None:
            self._approve_signal.set()
            self._wake.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reload)
        signal.signal(signal.SIGUSR1, wake)  # approve, suspend, resume: a request is waiting

    def _status_line(self) -> str:
        if self.app is None:
            return "starting"
        # As `status` shows them: suspended, stale and drifted included.
        state = self.app.journal.state
        rows = read_steady(lambda: status_rows(state))  # workers append meanwhile
        counts: dict[str, int] = {}
        for row in rows:
            counts[row["state"]] = counts.get(row["state"], 0) + 1
        in_sync = counts.get(StackState.IN_SYNC.value, 0)
        others = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()) if s != "in_sync")
        return f"{len(rows)} stacks, {in_sync} in sync" + (f", {others}" if others else "")
