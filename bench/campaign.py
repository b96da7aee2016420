"""Reliability campaigns against `syncd run` at CloudFormation's pace: kill -9 and a fault matrix.

    python bench/campaign.py kill [--kills 1000] [--stacks 10] [--seed 1] [--minutes M]
    python bench/campaign.py faults [--stacks 5] [--targets T,...] [--faults F,...] [--window 5]

Both run moto's server behind `faults.FaultyProxy` (CloudFormation's pace: change sets pending
`--change-set` seconds, operations `--operation` seconds; busy stacks refuse work; a repeated
execute or change set name is refused as CloudFormation does), a real Git repository of N
stacks (roots s01.. and a chain c1 -> c2 [-> c3] through `stack-output`), and `syncd run` with
the journal mirrored to moto's S3 (`backup.interval: 1s`), `watch: true` and `poll_interval: 1s`.
Everything is checked against moto and S3 directly, never through the proxy. See
bench/README.md ("Reliability") for what each figure means.

**kill**: a committer keeps pushing new values (1-3 root stacks every 0.5-2.5 s) while the
daemon is SIGKILLed and restarted `--kills` times, each kill aimed at a window (`WINDOWS`: on a
journal record, at a proxy call, during an operation or an upload, or at random), the windows
taken in turn in a shuffled order. After each kill the journal's complete records are read
(seq -> hash); after the restart's READY every record ever read must still be there, unchanged.
At the end the committer stops, the daemon runs without kills until every stack has converged
to the last commit, is stopped with SIGTERM, and `syncd journal verify` (local and --remote)
runs. Written to bench/results/campaign-kill.json.

**faults**: for each (target, fault) cell: a fresh daemon, the fault injected on that call for
`--window` seconds, a commit that changes every stack 0.2 s into it, then the wait until every
stack has converged. Written to bench/results/campaign-faults.json, which keeps the cells of
earlier runs for other (target, fault) pairs, so the matrix can be run in parts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))

import scene  # noqa: E402
import servers  # noqa: E402
from faults import FAULTS, LISTING, Seen  # noqa: E402
from scene import Daemon, JournalTail, Run, StackRepo, World  # noqa: E402

from syncd.core.journal_state import StackState  # noqa: E402
from syncd.errors import JournalCorrupt  # noqa: E402
from syncd.journal.store import Journal, verify_journal  # noqa: E402

WORK_DIR = BENCH_DIR / ".work" / "campaign"
RESULTS_DIR = BENCH_DIR / "results"

WINDOWS = {
    "startup": "0-1.2 s after the spawn: before or around READY, mid-recovery",
    "random": "0-5 s after READY",
    "version_record": "as soon as a `version` record is on disk",
    "change_set_pending": "0-change_set s after CloudFormation accepted a CreateChangeSet",
    "change_set_record": "as soon as a `change_set` record is on disk",
    "executing_record": "as soon as an `executing` record is on disk",
    "intent_upload": "the mirror's upload of an `executing` record, before or after S3 stored it",
    "execute_call": "an ExecuteChangeSet at the proxy, before moto saw it or after it executed",
    "operation": "0.1-operation s after an ExecuteChangeSet was accepted",
    "events_read": "a DescribeStackEvents arrives (the stack settled, no result record yet)",
    "mirror_upload": "any mirror PutObject, before or after S3 stored it",
}
CFN_TARGETS = [
    "CreateChangeSet",
    "DescribeChangeSet",
    "ExecuteChangeSet",
    "DescribeStacks",
    LISTING,
    "DescribeStackEvents",
    "DeleteChangeSet",
]
S3_TARGETS = ["S3 PutObject", "S3 GetObject", "S3 ListObjectsV2"]
NOT_CALLED = {
    "ListStacks": "never called by syncd (its looks are DescribeStacks)",
    "GetTemplateSummary": "never called by syncd",
    "DescribeStacks pages after the first": "moto pages at 50 stacks; a faulted listing "
    "covers every page it asks for",
    "DeleteStack": "prune and recreate only; not in these scenes",
}


# -- shared ---------------------------------------------------------------------------------------
@dataclass
class Bench:
    world: World
    repo: StackRepo
    daemon: Daemon
    state_dir: Path
    config: Path
    http_port: int

    def configure(self, manual: tuple[str, ...] = ()) -> None:
        """Write syncd's config again (read at the daemon's next start)."""
        scene.write_config(
            self.config, self.state_dir, self.repo, self.world.proxy.url, self.http_port, manual
        )

    def fresh_daemon(self) -> Run:
        """Stop the daemon, start it again, and wait for its first pass (60 s at most)."""
        self.daemon.stop()
        run = self.daemon.start()
        deadline = time.monotonic() + 60
        while run.first_pass is None and run.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return run

    def syncd_view(self) -> tuple[dict[str, tuple[str, bool]], str | None]:
        """Each stack's (state, open attempt) and the repo's commit, as the journal folds."""
        journal = Journal.open(self.state_dir, writer=False, warn=lambda _: None)
        try:
            state = journal.state
            stacks = {n: (v.state.value, v.attempt is not None) for n, v in state.stacks.items()}
            repo = state.repos.get(scene.REPO_NAME)
            return stacks, repo.commit if repo else None
        finally:
            journal.close()

    def open_attempts(self) -> dict[str, bool]:
        """The stacks with an apply open in the journal, and whether it reached `executing`."""
        journal = Journal.open(self.state_dir, writer=False, warn=lambda _: None)
        try:
            return {
                n: v.attempt.executing
                for n, v in journal.state.stacks.items()
                if v.attempt is not None
            }
        finally:
            journal.close()

    def convergence(self) -> dict[str, Any]:
        """Where the stacks stand against the last commit: moto's parameters (the figure),
        syncd's journal, and the proxy's operations in flight."""
        expected = self.repo.expected()
        params = self.world.parameters()
        wrong = sorted(s for s, v in expected.items() if params.get(s) != v)
        stacks, commit = self.syncd_view()
        in_sync = StackState.IN_SYNC.value
        unsettled = sorted(
            s for s in expected if stacks.get(s, ("absent", False)) != (in_sync, False)
        )
        return {
            "moto_converged": len(expected) - len(wrong),
            "moto_wrong": wrong,
            "syncd_not_in_sync": unsettled,
            "syncd_commit_is_last": commit == self.repo.last_commit(),
            "busy": self.world.proxy.busy(),
            "stacks": len(expected),
        }

    def wait_converged(self, timeout: float) -> tuple[float | None, dict[str, Any]]:
        """The monotonic time all stacks had converged (None: not within `timeout`)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                state = self.convergence()
            except JournalCorrupt as exc:  # a reader beside the writer: report, look again
                state = {"error": str(exc)}
            if (
                not state.get("error")
                and not state["moto_wrong"]
                and not state["syncd_not_in_sync"]
                and state["syncd_commit_is_last"]
                and not state["busy"]
            ):
                return time.monotonic(), state
            if time.monotonic() > deadline or not self.daemon.alive():
                state["daemon_alive"] = self.daemon.alive()
                return None, state
            time.sleep(0.25)

    def wait_mirrored(self, timeout: float) -> tuple[int, float]:
        """Local records not in S3 (0 as soon as all are, else once `timeout` has passed), and
        the monotonic time of that answer."""
        deadline = time.monotonic() + timeout
        while True:
            local, _ = scene.on_disk(self.state_dir)
            remote = self.world.s3_records()
            missing = sum(1 for seq, digest in local.items() if remote.get(seq) != digest)
            if not missing or time.monotonic() > deadline:
                return missing, time.monotonic()
            time.sleep(0.25)


def setup(name: str, args: argparse.Namespace, op: tuple[float, float]) -> Bench:
    work = scene.fresh_dir(WORK_DIR / name)
    world = scene.start_world(args.change_set, op[0], op[1], args.seed)
    repo = StackRepo(work, args.stacks, chain=3 if args.stacks >= 6 else 2)
    repo.create()
    port = servers.free_port()
    config = scene.write_config(work / "syncd.yaml", work / "state", repo, world.proxy.url, port)
    daemon = Daemon(config, work / "daemon.log", world.proxy.url, port)
    return Bench(world, repo, daemon, work / "state", config, port)


def lost_records(must_have: dict[int, str], now: dict[int, str]) -> list[int]:
    return sorted(seq for seq, digest in must_have.items() if now.get(seq) != digest)


def doubles(executions: list[Any]) -> dict[str, Any]:
    """Change sets that CloudFormation (moto, behind the proxy) executed twice, by ARN and by
    (stack, name), and the repeats the proxy refused as CloudFormation does."""
    accepted = [e for e in executions if e.outcome == "accepted"]
    by_arn = Counter(e.arn for e in accepted)
    by_name = Counter((e.stack, e.name) for e in accepted)
    return {
        "executed_twice_by_arn": sorted(a for a, n in by_arn.items() if n > 1),
        "executed_twice_by_name": sorted(f"{s}/{n}" for (s, n), k in by_name.items() if k > 1),
        "outcomes": dict(sorted(Counter(e.outcome for e in executions).items())),
        "repeats": [
            {
                "stack": e.stack,
                "name": e.name,
                "outcome": e.outcome,
                "status": e.status,
                "says": e.says,
            }
            for e in executions
            if e.outcome in ("repeat_refused", "token_retry")
        ],
    }


def journal_first(executions: list[Any], records: list[dict[str, Any]]) -> list[str]:
    """Accepted executes with no `executing` record for their change set written before."""
    intents: dict[str, str] = {}
    for r in records:
        if r["kind"] == "executing" and r["data"].get("change_set"):
            intents.setdefault(r["data"]["change_set"], r["time"])
    return [
        f"{e.stack} {e.name} at {e.wall}"
        for e in executions
        if e.outcome == "accepted" and not (e.arn in intents and intents[e.arn] <= e.wall)
    ]


def verify(bench: Bench) -> dict[str, Any]:
    """`syncd journal verify`, local and --remote (the daemon stopped)."""
    out = {}
    for label, extra in (("local", ()), ("remote", ("--remote",))):
        proc = scene.syncd(bench.config, "journal", "verify", *extra, env=bench.daemon.env)
        text = (proc.stdout + proc.stderr).strip().splitlines()
        says = [t for t in text if t.startswith(f"{label}:")] or text[-1:]
        out[label] = {"exit": proc.returncode, "says": " / ".join(says)[:300], "output": text}
    return out


def log_events(log: Path) -> dict[str, int]:
    """How often the daemons logged each warning or error event, and tracebacks."""
    counts: Counter[str] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if doc.get("level") in ("warning", "error", "critical"):
                counts[f"{doc.get('level')}:{doc.get('event')}"] += 1
        elif line.startswith("Traceback"):
            counts["traceback"] += 1
    return dict(counts.most_common())


def spread(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {
        "n": len(values),
        "median": round(statistics.median(ordered), 3),
        "p90": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 3),
        "max": round(ordered[-1], 3),
    }


def meta(args: argparse.Namespace, started: float) -> dict[str, Any]:
    from pace import _checkout

    script = os.path.relpath(sys.argv[0], BENCH_DIR.parent)  # campaign.py, or soak.py
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", script, *sys.argv[1:]]),
        "args": {k: v for k, v in vars(args).items() if k != "func"},
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "syncd_checkout": _checkout(),
        "total_seconds": round(time.monotonic() - started, 1),
    }


def write(name: str, doc: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / name
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return path


def first_deploy(bench: Bench, timeout: float) -> float:
    started = time.monotonic()
    bench.daemon.start()
    done, state = bench.wait_converged(timeout)
    if done is None:
        raise SystemExit(f"the first deploy did not converge in {timeout:.0f} s: {state}")
    return done - started


# -- kill -----------------------------------------------------------------------------------------
class Trap:
    """Kills one run of the daemon once, from whichever thread sees its moment first."""

    def __init__(self, run: Run, window: str) -> None:
        self.run, self.window = run, window
        self.fired = threading.Event()
        self.detail = ""
        self.at: float | None = None  # seconds after the spawn
        self._lock = threading.Lock()

    def fire(self, detail: str) -> None:
        with self._lock:
            if self.fired.is_set():
                return
            self.run.proc.kill()  # checks that it has not been reaped
            self.at = time.monotonic() - self.run.spawned
            self.detail = detail
            self.fired.set()

    def later(self, delay: float, detail: str) -> None:
        timer = threading.Timer(delay, self.fire, args=(detail,))
        timer.daemon = True
        timer.start()


def arm(
    trap: Trap, bench: Bench, tail: JournalTail, rng: random.Random, args: argparse.Namespace
) -> Callable[[], None]:
    """Set the trap for its window; returns what disarms it."""
    window, proxy = trap.window, bench.world.proxy
    phase = rng.choice(["arrive", "answered"])
    if window == "startup":
        trap.later(rng.uniform(0, 1.2), "at random after the spawn")
        return lambda: None
    if window == "random":
        pause = rng.uniform(0, 5.0)

        def after_ready() -> None:
            if trap.run.ready_event.wait(30):
                trap.later(pause, "at random")

        threading.Thread(target=after_ready, daemon=True).start()
        return lambda: None
    if window in ("version_record", "change_set_record", "executing_record"):
        kind = window.removesuffix("_record")

        def on_record(got: str, data: dict[str, Any]) -> None:
            if got == kind:
                trap.fire(f"{kind} record of {data.get('stack')}")

        tail.listeners.append(on_record)
        return lambda: tail.listeners.remove(on_record)

    # (the call at the proxy, and the seconds after it to kill: None at once, in the thread
    # that handles the call)
    answered_ok = {"phase": "answered", "status": 200}
    calls: dict[str, tuple[str, dict[str, Any], Callable[[], float] | None]] = {
        "change_set_pending": ("CreateChangeSet", answered_ok, lambda: rng.uniform(0, cs)),
        "intent_upload": ("S3 PutObject", {"phase": phase, "executing": True}, None),
        "execute_call": (
            "ExecuteChangeSet",
            {"phase": phase} | ({"status": 200} if phase == "answered" else {}),
            None,
        ),
        "operation": ("ExecuteChangeSet", answered_ok, lambda: rng.uniform(0.1, op)),
        "events_read": ("DescribeStackEvents", {"phase": "arrive"}, None),
        "mirror_upload": ("S3 PutObject", {"phase": phase}, None),
    }
    cs, op = args.change_set, args.operation[1]
    target, wanted, delay = calls[window]

    def on_call(seen: Seen) -> None:
        got = {
            "phase": seen.phase,
            "status": seen.status,
            "executing": b'"kind":"executing"' in seen.body,
        }
        if seen.target != target or any(got[k] != v for k, v in wanted.items()):
            return
        detail = f"{target} {seen.stack or ''} {seen.phase}".replace("  ", " ")
        if delay is None:
            trap.fire(detail)
        else:
            trap.later(delay(), f"{detail}, then a pause")

    proxy.listen(on_call)
    return lambda: proxy.unlisten(on_call)


def kill_campaign(args: argparse.Namespace) -> int:
    started = time.monotonic()
    rng = random.Random(args.seed)
    bench = setup("kill", args, args.operation)
    proxy, daemon = bench.world.proxy, bench.daemon
    print(
        f"kill campaign: {args.stacks} stacks ({', '.join(bench.repo.names)}), change sets "
        f"{args.change_set} s, operations {args.operation[0]}-{args.operation[1]} s, "
        f"{args.kills} kills, seed {args.seed}; work in {bench.config.parent}",
        flush=True,
    )
    tail = JournalTail(bench.state_dir)
    committer = scene.Committer(bench.repo, random.Random(args.seed + 1), (0.5, 2.5))
    kills: list[dict[str, Any]] = []
    must_have: dict[int, str] = {}
    lost: set[int] = set()
    damaged: list[str] = []
    died: list[dict[str, Any]] = []
    order: list[str] = []
    interrupted: dict[str, bool] = {}  # stack -> executing, left open by the last kill
    last_seq = 0
    try:
        deploy_s = first_deploy(bench, 300)
        print(f"first deploy converged in {deploy_s:.1f} s; killing", flush=True)
        tail.start()
        committer.start()
        run = daemon.current
        assert run is not None

        def restart(wait: bool) -> Run:
            """Start the daemon again; once it is READY (it has opened the journal, cutting
            off a torn tail), every record read after every kill must still be there."""
            new = daemon.start()
            if wait and not daemon.wait_ready(new, 60):
                raise SystemExit(
                    f"a restart never sent READY (exit {new.proc.poll()}); see {daemon.log}"
                )
            if wait:
                gone = lost_records(must_have, scene.on_disk(bench.state_dir)[0])
                lost.update(gone)
                if gone:
                    print(f"!! records lost after restart {len(daemon.runs)}: {gone[:10]}")
            return new

        for i in range(args.kills):
            if args.minutes and time.monotonic() - started > 60 * args.minutes:
                print(f"--minutes {args.minutes} reached after {i} kills", flush=True)
                break
            if not order:
                order = list(WINDOWS)
                rng.shuffle(order)
            window = order.pop()
            if i:  # the restart after the last kill; a startup kill does not wait for READY
                run = restart(window != "startup")
            waited = False
            if window not in ("startup",) and rng.random() < args.settle_share:
                waited = True
                deadline = time.monotonic() + 30
                while run.first_pass is None and run.proc.poll() is None:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.02)
            trap = Trap(run, window)
            disarm = arm(trap, bench, tail, rng, args)
            deadline = time.monotonic() + args.window_timeout
            while not trap.fired.wait(0.02):
                if run.proc.poll() is not None:
                    break
                if time.monotonic() > deadline:
                    trap.fire("no event in time: killed at the timeout")
            disarm()
            if not trap.fired.is_set():  # it ended on its own: a crash
                code = run.proc.returncode
                died.append({"run": len(daemon.runs), "exit": code, "window": window})
                print(f"!! the daemon exited on its own (exit {code}); see {daemon.log}")
            daemon.reap()
            disk, torn = scene.on_disk(bench.state_dir)
            gone = lost_records(must_have, disk)
            lost.update(gone)
            try:
                verify_journal(bench.state_dir, warn=lambda _: None)
            except JournalCorrupt as exc:
                damaged.append(f"after kill {i + 1}: {exc}")
            must_have.update(disk)
            resolved = resolution(bench, interrupted, last_seq, run)
            interrupted, last_seq = bench.open_attempts(), max(disk, default=0)
            kills.append(
                {
                    "window": window,
                    "hit": not trap.detail.startswith("no event"),
                    "detail": trap.detail,
                    "waited_for_first_pass": waited,
                    "killed_at_s": None if trap.at is None else round(trap.at, 3),
                    "ready_s": None if run.ready is None else round(run.ready, 3),
                    "first_pass_s": None if run.first_pass is None else round(run.first_pass, 3),
                    "records": len(disk),
                    "torn_bytes": torn,
                    "lost_now": gone,
                    # the applies the kill before this one left open, closed by this run
                    "resolved_s": resolved,
                    "left_open": interrupted,
                }
            )
            if (i + 1) % args.progress == 0:
                progress(i + 1, args.kills, kills, lost, proxy.executions, started)
        if not daemon.alive():
            run = restart(True)
        committer.stop.set()
        committer.join()
        print(f"committer stopped after {len(bench.repo.commits)} commits; converging", flush=True)
        final_started = time.monotonic()
        done, state = bench.wait_converged(args.converge_timeout)
        final_run = daemon.current
        converge_s = None if done is None else done - final_started
        # the last run's first pass, if it was not done when converging began
        deadline = time.monotonic() + 30
        while final_run is not None and final_run.first_pass is None:
            if time.monotonic() > deadline or final_run.proc.poll() is not None:
                break
            time.sleep(0.05)
        final_resolved = resolution(bench, interrupted, last_seq, final_run) if final_run else {}
        stop_code = daemon.stop()
        disk, _ = scene.on_disk(bench.state_dir)
        lost.update(lost_records(must_have, disk))
        s3_missing, _ = bench.wait_mirrored(5)
        verified = verify(bench)
        records = scene.records_of(bench.state_dir)
        dup = doubles(proxy.executions)
        unjournaled = journal_first(proxy.executions, records)
        stacks, _ = bench.syncd_view()
        open_attempts = sorted(n for n, (_, attempt) in stacks.items() if attempt)
        runs = daemon.runs[1:]  # restarts (the first run is the first deploy)
        result = {
            "kills": len(kills),
            "kills_by_window": {
                w: {
                    "hit": sum(1 for k in kills if k["window"] == w and k["hit"]),
                    "timed_out": sum(1 for k in kills if k["window"] == w and not k["hit"]),
                }
                for w in WINDOWS
            },
            "commits": len(bench.repo.commits),
            "records": len(disk),
            "acknowledged_records_lost": sorted(lost),
            "torn_tails_after_kill": sum(1 for k in kills if k["torn_bytes"]),
            "journal_damaged": damaged,
            "daemon_died_on_its_own": died,
            "executions": dup,
            "executes_without_prior_intent": unjournaled,
            "converged": {
                "seconds": None if converge_s is None else round(converge_s, 2),
                **state,
            },
            "open_attempts_at_end": open_attempts,
            "stop_exit_code": stop_code,
            "journal_verify": verified,
            "records_missing_in_s3_after_stop": s3_missing,
            "recovery": {
                "ready_s": spread([r.ready for r in runs if r.ready is not None]),
                "first_pass_s": spread([r.first_pass for r in runs if r.first_pass is not None]),
                "first_pass_s_when_waited_for": spread(
                    [
                        k["first_pass_s"]
                        for k in kills[1:]
                        if k["waited_for_first_pass"] and k["first_pass_s"] is not None
                    ]
                ),
                "restarts": len(runs),
                "restarts_killed_before_ready": sum(1 for r in runs if r.ready is None),
                "restarts_killed_before_first_pass": sum(1 for r in runs if r.first_pass is None),
                "final_run_first_pass_s": final_run.first_pass if final_run else None,
                "open_applies_closed_s": spread(
                    [
                        max(r.values())
                        for r in [k["resolved_s"] for k in kills[1:]] + [final_resolved]
                        if r and None not in r.values()
                    ]
                ),
                "open_apply_closed_per_stack_s": spread(
                    [
                        sec
                        for k in [*kills[1:], {"resolved_s": final_resolved}]
                        for stack, sec in (k["resolved_s"] or {}).items()
                        if sec is not None
                    ]
                ),
                "restarts_leaving_applies_open": sum(1 for k in kills if k["left_open"]),
                "restarts_killed_before_closing_them": sum(
                    1 for k in kills[1:] if k["resolved_s"] and None in k["resolved_s"].values()
                ),
            },
            "log_events": log_events(daemon.log),
            "committer_errors": committer.errors,
            "first_deploy_s": round(deploy_s, 2),
            "calls_by_action": dict(sorted(Counter(c.action for c in proxy.log).items())),
            "s3_calls_by_operation": dict(sorted(Counter(t for _, t, _ in proxy.s3_calls).items())),
        }
        print_kill(result)
        path = write(
            args.output or "campaign-kill.json",
            {"meta": meta(args, started), "result": result, "kills": kills},
        )
        print(f"results written to {path}")
        bad = (
            lost
            or dup["executed_twice_by_arn"]
            or dup["executed_twice_by_name"]
            or done is None
            or unjournaled
        )
        return 1 if bad else 0
    finally:
        committer.stop.set()
        tail.stop.set()
        daemon.close()
        bench.world.stop()


def resolution(
    bench: Bench, interrupted: dict[str, bool], after_seq: int, run: Run
) -> dict[str, float | None]:
    """For each apply a kill left open: seconds from the next run's spawn to the record that
    closed it (its `result`), None if that run was killed first."""
    if not interrupted:
        return {}
    out: dict[str, float | None] = dict.fromkeys(interrupted)
    for record in scene.records_of(bench.state_dir):
        stack = record["data"].get("stack")
        fresh = record["seq"] > after_seq and record["kind"] == "result"
        if fresh and stack in out and out[stack] is None:
            when = datetime.fromisoformat(record["time"].replace("Z", "+00:00"))
            out[stack] = round(when.timestamp() - run.spawned_wall, 3)
    return out


def progress(
    done: int, total: int, kills: list[dict[str, Any]], lost: set[int], ex: list[Any], t0: float
) -> None:
    accepted = Counter(e.arn for e in ex if e.outcome == "accepted")
    twice = sum(1 for n in accepted.values() if n > 1)
    ready = [k["ready_s"] for k in kills if k["ready_s"] is not None]
    hits = sum(1 for k in kills if k["hit"])
    print(
        f"kill {done}/{total} ({hits} in their window) {time.monotonic() - t0:.0f} s: "
        f"records lost {len(lost)}, executed twice {twice}, executes accepted "
        f"{sum(accepted.values())}, READY median "
        f"{statistics.median(ready) if ready else float('nan'):.2f} s",
        flush=True,
    )


def print_kill(r: dict[str, Any]) -> None:
    rec = r["recovery"]
    ex = r["executions"]
    print()
    print(f"{'window':<20} {'kills':>6} {'in window':>10} {'timed out':>10}")
    for window, n in r["kills_by_window"].items():
        total = n["hit"] + n["timed_out"]
        print(f"{window:<20} {total:>6} {n['hit']:>10} {n['timed_out']:>10}")
    print(f"{'total':<20} {r['kills']:>6}")
    print()
    rows = [
        ("kills made", r["kills"]),
        ("commits pushed", r["commits"]),
        ("journal records at the end", r["records"]),
        ("acknowledged records lost (target 0)", len(r["acknowledged_records_lost"])),
        ("kills that left a torn last record", r["torn_tails_after_kill"]),
        ("journal damaged after a kill", len(r["journal_damaged"])),
        ("daemon exits on its own", len(r["daemon_died_on_its_own"])),
        ("change sets executed twice, by ARN (target 0)", len(ex["executed_twice_by_arn"])),
        ("... by stack and name (target 0)", len(ex["executed_twice_by_name"])),
        ("ExecuteChangeSet calls by outcome", ex["outcomes"]),
        (
            "accepted executes without an earlier `executing` record",
            len(r["executes_without_prior_intent"]),
        ),
        (
            "stacks converged to the last commit (moto)",
            f"{r['converged']['moto_converged']}/{r['converged']['stacks']}"
            + (
                f" in {r['converged']['seconds']} s"
                if r["converged"]["seconds"] is not None
                else " (timed out)"
            ),
        ),
        ("stacks not in sync per syncd", len(r["converged"].get("syncd_not_in_sync", []))),
        ("open attempts at the end", len(r["open_attempts_at_end"])),
        ("SIGTERM exit code", r["stop_exit_code"]),
        *[
            (f"journal verify ({where})", f"exit {v['exit']}: {v['says']}")
            for where, v in r["journal_verify"].items()
        ],
        ("records missing in S3 after the stop", r["records_missing_in_s3_after_stop"]),
        (
            "restart -> READY (s)",
            f"median {rec['ready_s'].get('median')}, p90 {rec['ready_s'].get('p90')}, "
            f"max {rec['ready_s'].get('max')} (n {rec['ready_s']['n']})",
        ),
        (
            "restart -> first pass done (s)",
            f"median {rec['first_pass_s'].get('median')}, p90 {rec['first_pass_s'].get('p90')}, "
            f"max {rec['first_pass_s'].get('max')} (n {rec['first_pass_s']['n']}; "
            f"{rec['restarts_killed_before_first_pass']} killed before)",
        ),
        (
            "restart -> every apply the kill left open closed (s)",
            f"median {rec['open_applies_closed_s'].get('median')}, p90 "
            f"{rec['open_applies_closed_s'].get('p90')}, max "
            f"{rec['open_applies_closed_s'].get('max')} (n {rec['open_applies_closed_s']['n']} "
            f"of {rec['restarts_leaving_applies_open']} kills that left one; "
            f"{rec['restarts_killed_before_closing_them']} killed again first)",
        ),
        (
            "... when the kill waited for it",
            f"median {rec['first_pass_s_when_waited_for'].get('median')}, max "
            f"{rec['first_pass_s_when_waited_for'].get('max')} "
            f"(n {rec['first_pass_s_when_waited_for']['n']})",
        ),
    ]
    for label, value in rows:
        print(f"{label:<58} {value}")
    if r["log_events"]:
        print(f"{'warnings and errors the daemons logged':<58} {r['log_events']}")


# -- faults ---------------------------------------------------------------------------------------
def fault_campaign(args: argparse.Namespace) -> int:
    started = time.monotonic()
    targets = _pick(args.targets, CFN_TARGETS + S3_TARGETS, {"cfn": CFN_TARGETS, "s3": S3_TARGETS})
    faults = _pick(args.faults, list(FAULTS), {})
    output = RESULTS_DIR / (args.output or "campaign-faults.json")
    # Cells of earlier runs for other (target, fault) pairs are kept: the matrix can be run in
    # parts (`--targets cfn`, then `--targets s3`), each part under ~20 minutes.
    earlier: dict[str, Any] = {}
    if output.exists() and not args.fresh_results:
        earlier = json.loads(output.read_text())
    this_run = {(t, f) for t in targets for f in faults}
    kept = [c for c in earlier.get("cells", []) if (c["target"], c["fault"]) not in this_run]
    runs = [r for r in earlier.get("runs", []) if any(c["run"] == r["run"] for c in kept)]
    run_id = max((r["run"] for r in runs), default=0) + 1
    bench = setup("faults", args, args.operation)
    print(
        f"fault matrix: {len(targets)} targets x {len(faults)} faults, {args.stacks} stacks "
        f"({', '.join(bench.repo.names)}), window {args.window} s, change sets "
        f"{args.change_set} s, operations {args.operation[0]}-{args.operation[1]} s",
        flush=True,
    )
    cells: list[dict[str, Any]] = []

    def save(summary: dict[str, Any] | None = None) -> Path:
        every = kept + cells
        order = {
            (t, f): i
            for i, (t, f) in enumerate((t, f) for t in CFN_TARGETS + S3_TARGETS for f in FAULTS)
        }
        every.sort(key=lambda c: order.get((c["target"], c["fault"]), 0))
        doc = {
            "runs": [*runs, {"run": run_id, **meta(args, started)}],
            "summary": summary or {},
            "not_called": NOT_CALLED,
            "cells": every,
        }
        return write(output.name, doc)

    try:
        deploy_s = first_deploy(bench, 300)
        print(f"first deploy converged in {deploy_s:.1f} s", flush=True)
        for target in targets:
            for fault in faults:
                cell = {"run": run_id, **run_cell(bench, target, fault, args)}
                cells.append(cell)
                print(_cell_line(cell), flush=True)
                save()
        bench.daemon.stop()
        verified = verify(bench)
        every = kept + cells
        summary = {
            "cells": len(every),
            "cells_converged": sum(1 for c in every if c["converged"]),
            "cells_exercised": sum(1 for c in every if c["hits"]),
            "records_lost": sum(len(c["records_lost"]) for c in every),
            "executed_twice": sum(c["executed_twice"] for c in every),
            "journal_verify_at_end_of_this_run": verified,
            "log_events_this_run": log_events(bench.daemon.log),
            "calls_by_action_this_run": dict(
                sorted(Counter(c.action for c in bench.world.proxy.log).items())
            ),
        }
        print_matrix(
            every,
            [t for t in CFN_TARGETS + S3_TARGETS if any(c["target"] == t for c in every)],
            [f for f in FAULTS if any(c["fault"] == f for c in every)],
            summary,
        )
        if kept:
            print(f"({len(kept)} cells from earlier runs in {output}; --fresh-results drops them)")
        path = save(summary)
        print(f"results written to {path}")
        bad = summary["cells_converged"] < len(every) or summary["records_lost"]
        return 1 if bad or summary["executed_twice"] else 0
    finally:
        bench.daemon.close()
        bench.world.stop()


def _pick(text: str | None, every: list[str], groups: dict[str, list[str]]) -> list[str]:
    if not text:
        return every
    out: list[str] = []
    for item in (t.strip() for t in text.split(",")):
        if item in groups:
            out += groups[item]
        elif item in every:
            out.append(item)
        else:
            raise SystemExit(f"unknown: {item!r} (one of {', '.join([*groups, *every])})")
    return out


def run_cell(bench: Bench, target: str, fault: str, args: argparse.Namespace) -> dict[str, Any]:
    proxy, daemon = bench.world.proxy, bench.daemon
    t_begin = time.monotonic()
    before, _ = scene.on_disk(bench.state_dir)
    first_seq = max(before, default=0) + 1
    n_hits, n_exec = len(proxy.hits), len(proxy.executions)
    notes: list[str] = []
    restarted = False
    verify_during: dict[str, Any] = {}
    manual = ("s01",) if target == "DeleteChangeSet" else ()
    if manual:
        # The next pass on a newer commit deletes the change set of an apply that never
        # executed (syncd.apply._end_unexecuted): s01 waits for approval, then is superseded.
        bench.configure(manual)
    if manual or not args.keep_daemon:
        # A fresh process for every cell: botocore's retry quota (500, 14 a retry, 1 back per
        # call that needed none) and syncd's retry back-off are per process.
        bench.fresh_daemon()
    if manual:
        bench.repo.change(bench.repo.roots, "s01 waits for approval")
        deadline = time.monotonic() + 30
        while not _awaiting(bench, "s01") and time.monotonic() < deadline:
            time.sleep(0.1)
        notes.append("s01 awaiting approval" if _awaiting(bench, "s01") else "s01 never waited")
    t0 = time.monotonic()
    if target == "S3 GetObject":
        # The mirror reads an object back only when its conditional put finds the key taken:
        # the first upload in the window is stored but answered 500, so the retry gets 412.
        proxy.inject("S3 PutObject", "stored_500", times=1)
    proxy.inject(target, fault, seconds=args.window)
    time.sleep(0.2)
    bench.repo.change(bench.repo.roots, f"{target} {fault}")
    verifier = None
    if target == "S3 ListObjectsV2":
        # The daemon never lists; restore and `journal verify --remote` do: one runs beside
        # the daemon while the fault lasts (in a thread, so the cell's clock is not held).
        verifier = threading.Thread(target=lambda: verify_during.update(_timed_verify(bench)))
        verifier.start()
    t_end = t0 + args.window
    time.sleep(max(0.0, t_end - time.monotonic()))
    proxy.clear_faults()
    if manual:  # approval back to auto: the stack goes on to the last commit
        bench.configure()
        bench.daemon.stop()
        bench.daemon.start()
    timeout = args.converge_timeout
    done, state = bench.wait_converged(timeout)
    if done is None:
        notes.append(f"not converged {timeout:.0f} s after the fault ended: {state}")
        if not daemon.alive():
            notes.append(
                f"the daemon had exited (code {daemon.current and daemon.current.proc.poll()})"
            )
    missing, mirrored_at = bench.wait_mirrored(15)
    if verifier is not None:
        verifier.join()
    verify_after = _timed_verify(bench) if target == "S3 ListObjectsV2" else {}
    disk, _ = scene.on_disk(bench.state_dir)
    records = [r for r in scene.records_of(bench.state_dir) if r["seq"] >= first_seq]
    executions = proxy.executions[n_exec:]
    dup = doubles(executions)
    hits = [h for h in proxy.hits[n_hits:] if h.target == target]
    cell = {
        "target": target,
        "fault": fault,
        "hits": len(hits),
        "hit_stacks": sorted({h.stack for h in hits if h.stack}),
        "converged": done is not None,
        "moto_converged": state.get("moto_converged"),
        "stacks": len(bench.repo.names),
        "seconds_after_fault": None if done is None else round(max(0.0, done - t_end), 2),
        "converged_before_fault_ended": done is not None and done < t_end,
        "seconds_from_commit": None if done is None else round(done - t0 - 0.2, 2),
        "records_lost": lost_records(before, disk),
        "records_missing_in_s3": missing,
        "mirror_complete_after_fault_s": None
        if missing
        else round(max(0.0, mirrored_at - t_end), 2),
        "executed_twice": len(dup["executed_twice_by_arn"]) + len(dup["executed_twice_by_name"]),
        "execute_outcomes": dup["outcomes"],
        "executions": [
            f"{e.at - t0:+.2f}s {e.stack} {e.name} {e.outcome} {e.status} {e.says}".rstrip()
            for e in executions
        ],
        "failed_results": sum(
            1
            for r in records
            if r["kind"] == "result"
            and r["data"].get("result") == "failed"
            and "superseded" not in (r["data"].get("message") or "")
        ),
        "failures": sorted(
            {
                f"{r['data'].get('stack')}: {(r['data'].get('message') or '')[:160]}"
                for r in records
                if r["kind"] == "result" and r["data"].get("result") == "failed"
            }
        ),
        "blocked": sum(1 for r in records if r["kind"] == "blocked"),
        "journal_kinds": dict(Counter(r["kind"] for r in records)),
        "notes": notes,
        "cell_seconds": 0.0,
    }
    if verify_during:
        cell["verify_remote_during_fault"] = verify_during
        cell["verify_remote_after"] = verify_after
    if done is None:
        daemon.stop()
        daemon.start()
        recovered, _ = bench.wait_converged(timeout)
        restarted = True
        notes.append(
            "restarted the daemon: " + ("converged" if recovered else "still not converged")
        )
    cell["restarted"] = restarted
    cell["cell_seconds"] = round(time.monotonic() - t_begin, 1)
    return cell


def _awaiting(bench: Bench, stack: str) -> bool:
    stacks, _ = bench.syncd_view()
    return bool(stacks.get(stack, ("", False))[0] == StackState.AWAITING_APPROVAL.value)


def _timed_verify(bench: Bench) -> dict[str, Any]:
    start = time.monotonic()
    proc = scene.syncd(bench.config, "journal", "verify", "--remote", env=bench.daemon.env)
    text = (proc.stdout + proc.stderr).strip().splitlines()
    says = [t for t in text if not t.startswith("warning:")] or text[-1:]
    return {
        "exit": proc.returncode,
        "seconds": round(time.monotonic() - start, 2),
        "says": " / ".join(says)[:300],
    }


def _cell_line(c: dict[str, Any]) -> str:
    conv = (
        f"converged {c['seconds_after_fault']:.1f} s after the fault"
        if c["converged"]
        else f"NOT converged ({c['moto_converged']}/{c['stacks']} in moto)"
    )
    extra = (
        f", verify --remote during: exit {c['verify_remote_during_fault']['exit']}"
        if "verify_remote_during_fault" in c
        else ""
    )
    return (
        f"{c['target']:<26} {c['fault']:<13} hits {c['hits']:>3}  {conv}; lost "
        f"{len(c['records_lost'])}, S3 missing {c['records_missing_in_s3']}, executed twice "
        f"{c['executed_twice']}, failed {c['failed_results']}, blocked {c['blocked']}{extra} "
        f"[{c['cell_seconds']:.0f} s]"
    )


def print_matrix(
    cells: list[dict[str, Any]], targets: list[str], faults: list[str], summary: dict[str, Any]
) -> None:
    print()
    print("seconds from the fault's end until every stack had converged (moto and syncd);")
    print("'-' the call was not made during the window; 'X' not converged; * stack failed/blocked")
    width = max(len(f) for f in faults) + 1
    print(f"{'target':<26}" + "".join(f"{f:>{width}}" for f in faults))
    by = {(c["target"], c["fault"]): c for c in cells}
    for target in targets:
        row = f"{target:<26}"
        for fault in faults:
            c = by.get((target, fault))
            if c is None:
                text = ""
            elif not c["converged"]:
                text = "X"
            else:
                text = f"{c['seconds_after_fault']:.1f}"
                if not c["hits"]:
                    text = "-" + text
                if c["failed_results"] or c["blocked"]:
                    text += "*"
            row += f"{text:>{width}}"
        print(row)
    print()
    print(
        f"cells {summary['cells']}, converged {summary['cells_converged']}, exercised "
        f"{summary['cells_exercised']}; records lost {summary['records_lost']}; change sets "
        f"executed twice {summary['executed_twice']}; journal verify at the end: local exit "
        f"{summary['journal_verify_at_end_of_this_run']['local']['exit']}, remote exit "
        f"{summary['journal_verify_at_end_of_this_run']['remote']['exit']} (this run)"
    )


# -- main -----------------------------------------------------------------------------------------
def _range(text: str) -> tuple[float, float]:
    low, _, high = text.partition("-")
    return float(low), float(high or low)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--seed", type=int, default=1)
    common.add_argument("--change-set", type=float, default=0.5, help="seconds pending")
    common.add_argument("--output", default=None, help="file name in bench/results/")
    kill = sub.add_parser("kill", parents=[common], help="SIGKILL campaign")
    kill.add_argument("--kills", type=int, default=1000)
    kill.add_argument("--stacks", type=int, default=10)
    kill.add_argument("--operation", type=_range, default=(1.0, 2.0), help="seconds, e.g. 1-2")
    kill.add_argument("--minutes", type=float, default=0, help="stop killing after this long")
    kill.add_argument("--window-timeout", type=float, default=6.0, help="then kill anyway")
    kill.add_argument(
        "--settle-share", type=float, default=0.25, help="kills that wait for the first pass"
    )
    kill.add_argument("--converge-timeout", type=float, default=300.0)
    kill.add_argument("--progress", type=int, default=10, help="a line every N kills")
    kill.set_defaults(func=kill_campaign)
    faults = sub.add_parser("faults", parents=[common], help="fault matrix")
    faults.add_argument("--stacks", type=int, default=5)
    faults.add_argument("--operation", type=_range, default=(1.0, 1.0), help="seconds, e.g. 1-2")
    faults.add_argument("--targets", default=None, help="comma-separated; or cfn, s3")
    faults.add_argument("--faults", default=None, help=f"comma-separated of {', '.join(FAULTS)}")
    faults.add_argument("--window", type=float, default=5.0, help="seconds each fault lasts")
    faults.add_argument("--converge-timeout", type=float, default=150.0)
    faults.add_argument(
        "--fresh-results", action="store_true", help="drop cells of earlier runs from the file"
    )
    faults.add_argument(
        "--keep-daemon",
        action="store_true",
        help="one daemon for every cell (botocore's retry quota carries over)",
    )
    faults.set_defaults(func=fault_campaign)
    args = parser.parse_args(argv)
    if args.stacks < 3:
        raise SystemExit("--stacks must be at least 3")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
