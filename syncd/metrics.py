"""What `/metrics` shows, in Prometheus's text format (the only importer of prometheus_client).

Counters and a histogram are fed by the repo workers as passes end; everything else (stacks by
state, drift checks, the journal, the mirror's backlog) is read from the journal and the
mirror's cursor at scrape time, so it can never drift from what `syncd status` says.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from syncd.core.journal_state import STALE, DriftResult, StackState, status_rows
from syncd.journal.mirror import backlog
from syncd.journal.store import read_steady
from syncd.outbox import oldest_age

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """One registry per daemon; `source` gives the current App (it changes on reload)."""

    def __init__(self, source: Callable[[], Any]) -> None:
        self.registry = CollectorRegistry()
        self.passes = Counter(
            "syncd_passes", "Reconcile passes, by repo.", ["repo"], registry=self.registry
        )
        self.failures = Counter(
            "syncd_pass_failures",
            "Passes that could not fetch or crashed, by repo.",
            ["repo"],
            registry=self.registry,
        )
        self.durations = Histogram(
            "syncd_pass_duration_seconds",
            "How long a pass took, by repo.",
            ["repo"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
            registry=self.registry,
        )
        self.webhooks = Counter(
            "syncd_webhooks",
            "Webhook deliveries, by repo and answer.",
            ["repo", "code"],
            registry=self.registry,
        )
        self.http_refused = Counter(
            "syncd_http_refused",
            "Connections and requests the HTTP listener refused or dropped, by kind.",
            ["kind"],
            registry=self.registry,
        )
        self._last_success: dict[str, float] = {}
        self._lock = threading.Lock()
        self.registry.register(_StateCollector(source, self._successes))

    def pass_done(self, repo: str, seconds: float, ok: bool) -> None:
        self.passes.labels(repo).inc()
        self.durations.labels(repo).observe(seconds)
        if ok:
            with self._lock:
                self._last_success[repo] = time.time()
        else:
            self.failures.labels(repo).inc()

    def last_successes(self) -> dict[str, float]:
        """When each repo's last pass ended without error (Unix time), since start."""
        return self._successes()

    def _successes(self) -> dict[str, float]:
        with self._lock:
            return dict(self._last_success)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))


class _StateCollector(Collector):
    def __init__(self, source: Callable[[], Any], successes: Callable[[], dict[str, float]]):
        self.source = source
        self.successes = successes

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        app = self.source()
        last = GaugeMetricFamily(
            "syncd_last_successful_sync_timestamp_seconds",
            "When a pass of the repo last ended without error (Unix time).",
            labels=["repo"],
        )
        for repo, when in sorted(self.successes().items()):
            last.add_metric([repo], when)
        yield last
        if app is None:
            return
        state = app.journal.state
        stacks = GaugeMetricFamily(
            "syncd_stacks", "Stacks by repo and state.", labels=["repo", "state"]
        )
        counts: dict[tuple[str, str], int] = {}
        for row in read_steady(lambda: status_rows(state)):  # as `status` shows them
            key = (row["repo"], row["state"])
            counts[key] = counts.get(key, 0) + 1
        shown = [st.value for st in StackState] + [STALE]
        for repo in sorted({r.name for r in app.config.repos}):
            for name in shown:
                stacks.add_metric([repo, name], counts.get((repo, name), 0))
        yield stacks
        checks = CounterMetricFamily(
            "syncd_drift_checks",
            "Drift checks that ended (drift_interval), by repo and result: in_sync, drifted or "
            "unknown (the check could not say).",
            labels=["repo", "result"],
        )
        for repo in sorted({r.name for r in app.config.repos}):
            done = state.drift_checks.get(repo, {})
            for result in DriftResult:
                checks.add_metric([repo, result.value], done.get(result.value, 0))
        yield checks
        yield GaugeMetricFamily(
            "syncd_journal_last_seq", "Sequence number of the last journal record.", state.last_seq
        )
        # One call budget per account and region: CloudFormation throttles each on its own.
        rate = GaugeMetricFamily(
            "syncd_aws_call_rate",
            "CloudFormation calls a second the call budget allows now (lower after throttling).",
            labels=["target"],
        )
        throttled = CounterMetricFamily(
            "syncd_aws_throttled", "CloudFormation answers that were throttles.", labels=["target"]
        )
        waited = CounterMetricFamily(
            "syncd_aws_call_wait_seconds",
            "Seconds CloudFormation calls waited for the call budget.",
            labels=["target"],
        )
        gateways = app.cfn
        for place, gateway in gateways.by_place.items():
            target = [place.label(gateways.home) or "default"]
            rate.add_metric(target, gateway.limiter.rate)
            throttled.add_metric(target, gateway.limiter.throttles)
            waited.add_metric(target, gateway.limiter.waited)
        yield rate
        yield throttled
        yield waited
        yield CounterMetricFamily(
            "syncd_cloudformation_looks",
            "Shared looks at CloudFormation made for waiting stacks.",
            app.world.looks,
        )
        yield from _notify_metrics(app.outboxes)
        untrusted = GaugeMetricFamily(
            "syncd_repo_untrusted",
            "1 while the repo's branch head is not signed by a key its verify trusts.",
            labels=["repo"],
        )
        for repo in sorted({r.name for r in app.config.repos}):
            view = state.repos.get(repo)
            untrusted.add_metric([repo], 1 if view is not None and view.untrusted else 0)
        yield untrusted
        mirror = app.mirror
        if mirror is None:
            return
        cursor = mirror.cursor
        yield GaugeMetricFamily(
            "syncd_backup_last_seq", "The last journal record in S3.", cursor.seq
        )
        yield GaugeMetricFamily(
            "syncd_backup_backlog_records",
            "Journal records not yet in S3.",
            max(0, state.last_seq - cursor.seq),
        )
        yield GaugeMetricFamily(
            "syncd_backup_failing",
            "1 while the last mirror cycle failed.",
            1 if cursor.error else 0,
        )
        waiting, oldest = backlog(app.journal, cursor)
        if waiting and oldest:
            yield GaugeMetricFamily(
                "syncd_backup_oldest_unsent_timestamp_seconds",
                "Time of the oldest journal record not yet in S3 (Unix time); absent when none.",
                _unix(oldest),
            )
        if cursor.last_success:
            yield GaugeMetricFamily(
                "syncd_backup_last_success_timestamp_seconds",
                "When a mirror cycle last succeeded (Unix time).",
                _unix(cursor.last_success),
            )


def _notify_metrics(outboxes: list[Any]) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    """Each receiver of events and commit statuses (syncd.outbox): what it sent, what failed."""
    sent = CounterMetricFamily(
        "syncd_notify_sent", "Events and commit statuses delivered.", labels=["receiver"]
    )
    failed = CounterMetricFamily(
        "syncd_notify_failed_sends",
        "Sends that failed and will be tried again.",
        labels=["receiver"],
    )
    dropped = CounterMetricFamily(
        "syncd_notify_dropped",
        "Events the receiver refused for good (400, 404, 410, 422, ...).",
        labels=["receiver"],
    )
    behind = GaugeMetricFamily(
        "syncd_notify_backlog_records",
        "Journal records the receiver has not gone through yet.",
        labels=["receiver"],
    )
    failing = GaugeMetricFamily(
        "syncd_notify_failing", "1 while the receiver's current event fails.", labels=["receiver"]
    )
    oldest = GaugeMetricFamily(
        "syncd_notify_oldest_unsent_age_seconds",
        "How long the event a failing receiver is on has been due (0: none).",
        labels=["receiver"],
    )
    for outbox in outboxes:
        p, name = outbox.progress, [outbox.receiver.name]
        sent.add_metric(name, p.sent)
        failed.add_metric(name, p.failed_sends)
        dropped.add_metric(name, p.dropped)
        behind.add_metric(name, outbox.behind)
        failing.add_metric(name, 1 if p.error else 0)
        oldest.add_metric(name, oldest_age(p) or 0.0)
    yield from (sent, failed, dropped, behind, failing, oldest)


def _unix(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
