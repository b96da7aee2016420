"""A long run of `syncd run` at CloudFormation's pace: commits every few seconds, faults on and
off, and the daemon's memory, open files and threads sampled throughout.

    python bench/soak.py [--minutes 30] [--stacks 10] [--every 2-5] [--fault-period 60]

The scene is the kill campaign's (scene.py: moto behind `faults.FaultyProxy`, change sets
pending `--change-set` s and operations `--operation` s, a real Git repository of N stacks with a
chain through `stack-output`, the journal mirrored to moto's S3 every second), with one daemon
that is never killed. A committer pushes new values for 1-3 root stacks every `--every` seconds.
The run alternates quiet and faulty periods of `--fault-period` seconds; in a faulty period a
fault drawn from `faults.FAULTS` is put on a call drawn from every CloudFormation and S3 call
syncd makes, for 5 s, one after another.

Every `--sample` seconds the daemon's resident memory, open file descriptors, threads and child
processes are read from /proc. At the end the committer stops, the faults are cleared, the daemon
must converge every stack to the last commit, is stopped with SIGTERM, and `syncd journal verify`
runs on the local journal and on its S3 mirror.

Growth is judged after a warm-up (the first `--warmup` minutes): the first quarter of the
samples against the last quarter, and a least-squares slope per hour. Flat means memory's median
within 10 % (or 5 MB), and for open files, threads and children both the median and the floor (the
lowest sample) no higher at the end than at the beginning plus 2. A leak keeps what it took, so it
lifts the floor and the median; the peaks are connections and pipes in flight at the moment of a
sample (more of them while faults make calls retry), so they are reported, with the open files
split into sockets, pipes and other, but not judged. Written to bench/results/soak.json; exit 1 if
anything is not flat, a stack does not converge or the journal does not verify.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))

import campaign  # noqa: E402
import scene  # noqa: E402
from faults import FAULTS  # noqa: E402

FAULT_SECONDS = 5.0
MEMORY_SLACK = (1.10, 5.0)  # ratio, or MB: whichever is larger
COUNT_SLACK = 2  # open files, threads


@dataclass
class Sample:
    at: float  # seconds since the soak began
    faulty: bool
    rss_mb: float
    fds: int
    sockets: int
    pipes: int
    threads: int
    children: int
    records: int


def read_proc(pid: int) -> dict[str, Any]:
    """Resident MB, open fds (and how many are sockets and pipes), threads and child processes
    of a live process."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    targets = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    children = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):  # the thread ended meanwhile
            children += len(Path(f"/proc/{pid}/task/{task}/children").read_text().split())
    return {
        "rss_mb": int(fields["VmRSS"].split()[0]) / 1024,
        "fds": len(targets),
        "sockets": sum(t.startswith("socket:") for t in targets),
        "pipes": sum(t.startswith("pipe:") for t in targets),
        "threads": int(fields["Threads"]),
        "children": children,
    }


class Faults(threading.Thread):
    """Quiet and faulty periods in turn; in a faulty one, a drawn fault on a drawn call for
    FAULT_SECONDS, again and again."""

    def __init__(self, proxy: Any, rng: random.Random, period: float) -> None:
        super().__init__(name="faults", daemon=True)
        self.proxy, self.rng, self.period = proxy, rng, period
        self.stop = threading.Event()
        self.faulty = False
        self.injected: list[tuple[float, str, str]] = []
        self.t0 = time.monotonic()

    def run(self) -> None:
        targets = campaign.CFN_TARGETS + campaign.S3_TARGETS
        while not self.stop.wait(self.period):
            self.faulty = True
            ends = time.monotonic() + self.period
            while time.monotonic() < ends and not self.stop.is_set():
                target, fault = self.rng.choice(targets), self.rng.choice(FAULTS)
                self.proxy.inject(target, fault, seconds=FAULT_SECONDS)
                self.injected.append((round(time.monotonic() - self.t0, 1), target, fault))
                self.stop.wait(FAULT_SECONDS)
            self.proxy.clear_faults()
            self.faulty = False


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value), per hour."""
    if len(points) < 2:
        return 0.0
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return 0.0 if not den else 3600 * sum((x - mx) * (y - my) for x, y in points) / den


def growth(samples: list[Sample], warmup: float) -> dict[str, Any]:
    """First quarter against last quarter of the samples after the warm-up."""
    kept = [s for s in samples if s.at >= warmup]
    if len(kept) < 8:
        return {"error": f"only {len(kept)} samples after the warm-up"}
    quarter = len(kept) // 4
    first, last = kept[:quarter], kept[-quarter:]
    rss_first = statistics.median(s.rss_mb for s in first)
    rss_last = statistics.median(s.rss_mb for s in last)
    allowed = max(rss_first * MEMORY_SLACK[0], rss_first + MEMORY_SLACK[1])
    out: dict[str, Any] = {
        "samples_after_warmup": len(kept),
        "rss_mb": {
            "first_quarter_median": round(rss_first, 1),
            "last_quarter_median": round(rss_last, 1),
            "ratio": round(rss_last / rss_first, 3),
            "slope_mb_per_hour": round(slope_per_hour([(s.at, s.rss_mb) for s in kept]), 1),
            "peak": round(max(s.rss_mb for s in samples), 1),
            "flat": rss_last <= allowed,
        },
    }
    for name in ("fds", "sockets", "pipes", "threads", "children"):
        early = [getattr(s, name) for s in first]
        late = [getattr(s, name) for s in last]
        out[name] = {
            "first_quarter_median": statistics.median(early),
            "last_quarter_median": statistics.median(late),
            "first_quarter_floor": min(early),
            "last_quarter_floor": min(late),
            "first_quarter_max": max(early),
            "last_quarter_max": max(late),
            "peak": max(getattr(s, name) for s in samples),
            "slope_per_hour": round(slope_per_hour([(s.at, getattr(s, name)) for s in kept]), 1),
            "flat": statistics.median(late) <= statistics.median(early) + COUNT_SLACK
            and min(late) <= min(early) + COUNT_SLACK,
        }
    peak = max(samples, key=lambda s: s.fds)  # as the "peak" figures: the warm-up included
    out["fds"]["at_peak"] = {
        "minute": round(peak.at / 60, 1),
        "faulty": peak.faulty,
        "sockets": peak.sockets,
        "pipes": peak.pipes,
        "other": peak.fds - peak.sockets - peak.pipes,
    }
    return out


def soak(args: argparse.Namespace) -> int:
    started = time.monotonic()
    bench = campaign.setup("soak", args, args.operation)
    daemon, proxy = bench.daemon, bench.world.proxy
    print(
        f"soak: {args.minutes} min, {args.stacks} stacks, a commit every {args.every[0]}-"
        f"{args.every[1]} s, faults on and off every {args.fault_period:.0f} s; work in "
        f"{bench.config.parent}",
        flush=True,
    )
    committer = scene.Committer(bench.repo, random.Random(args.seed + 1), args.every)
    faults = Faults(proxy, random.Random(args.seed + 2), args.fault_period)
    samples: list[Sample] = []
    try:
        deploy_s = campaign.first_deploy(bench, 300)
        run = daemon.current
        assert run is not None
        pid = run.proc.pid
        print(f"first deploy converged in {deploy_s:.1f} s; soaking", flush=True)
        t0 = time.monotonic()
        faults.t0 = t0
        committer.start()
        faults.start()
        next_print = 0.0
        while (at := time.monotonic() - t0) < 60 * args.minutes:
            if not daemon.alive():
                print(f"!! the daemon exited (exit {run.proc.poll()}); see {daemon.log}")
                break
            proc = read_proc(pid)
            records = len(scene.on_disk(bench.state_dir)[0])
            samples.append(Sample(at=at, faulty=faults.faulty, records=records, **proc))
            if at >= next_print:
                print(
                    f"{at / 60:5.1f} min {'faults' if faults.faulty else 'quiet '}  rss "
                    f"{proc['rss_mb']:6.1f} MB  fds {proc['fds']:3d} (sockets {proc['sockets']:2d})"
                    f"  threads {proc['threads']:2d}  children {proc['children']}  "
                    f"commits {len(bench.repo.commits):4d}  records {records}",
                    flush=True,
                )
                next_print = at + args.print_every
            time.sleep(args.sample)
        committer.stop.set()
        faults.stop.set()
        committer.join()
        faults.join()
        proxy.clear_faults()
        alive = daemon.alive()
        print(f"committer stopped after {len(bench.repo.commits)} commits; converging", flush=True)
        converge_from = time.monotonic()
        done, state = bench.wait_converged(args.converge_timeout) if alive else (None, {})
        if alive:  # one more sample, after converging
            records = len(scene.on_disk(bench.state_dir)[0])
            end = time.monotonic() - t0
            samples.append(Sample(at=end, faulty=False, records=records, **read_proc(pid)))
        stop_code = daemon.stop()
        s3_missing, _ = bench.wait_mirrored(10)
        verified = campaign.verify(bench)
        dup = campaign.doubles(proxy.executions)
        result = {
            "minutes": args.minutes,
            "daemon_stayed_up": alive,
            "commits": len(bench.repo.commits),
            "records": samples[-1].records if samples else 0,
            "faults_injected": len(faults.injected),
            "faults_by_kind": _count(f for _, _, f in faults.injected),
            "growth": growth(samples, 60 * args.warmup),
            "converged": {
                "seconds": None if done is None else round(done - converge_from, 2),
                **state,
            },
            "executed_twice_by_arn": len(dup["executed_twice_by_arn"]),
            "stop_exit_code": stop_code,
            "journal_verify": verified,
            "records_missing_in_s3_after_stop": s3_missing,
            "log_events": campaign.log_events(daemon.log),
            "committer_errors": committer.errors,
            "first_deploy_s": round(deploy_s, 2),
        }
        print_result(result)
        path = campaign.write(
            args.output or "soak.json",
            {
                "meta": campaign.meta(args, started),
                "result": result,
                "samples": [s.__dict__ for s in samples],
                "faults": faults.injected,
            },
        )
        print(f"results written to {path}")
        return 0 if ok(result) else 1
    finally:
        committer.stop.set()
        faults.stop.set()
        daemon.close()
        bench.world.stop()


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return dict(sorted(out.items()))


def ok(r: dict[str, Any]) -> bool:
    g = r["growth"]
    flat = "error" not in g and all(
        g[k]["flat"] for k in ("rss_mb", "fds", "sockets", "pipes", "threads", "children")
    )
    verified = all(v["exit"] == 0 for v in r["journal_verify"].values())
    return (
        flat
        and r["daemon_stayed_up"]
        and r["converged"]["seconds"] is not None
        and verified
        and not r["executed_twice_by_arn"]
        and r["stop_exit_code"] == 0
    )


def print_result(r: dict[str, Any]) -> None:
    g = r["growth"]
    print()
    if "error" in g:
        print(f"growth: {g['error']}")
    else:
        print(
            f"{'after the warm-up':<22} {'first quarter':>16} {'last quarter':>16} "
            f"{'per hour':>9} {'peak':>5}  flat"
        )
        print(f"{'(median, floor-max)':<22}")
        m = g["rss_mb"]
        print(
            f"{'resident memory (MB)':<22} {m['first_quarter_median']:>16} "
            f"{m['last_quarter_median']:>16} {m['slope_mb_per_hour']:>9} {m['peak']:>5}  "
            f"{'yes' if m['flat'] else 'NO'}"
        )
        for name, label in (
            ("fds", "open files"),
            ("sockets", "  of them sockets"),
            ("pipes", "  of them pipes"),
            ("threads", "threads"),
            ("children", "children"),
        ):
            c = g[name]
            early, late = (
                f"{c[q + '_median']:g}, {c[q + '_floor']}-{c[q + '_max']}"
                for q in ("first_quarter", "last_quarter")
            )
            print(
                f"{label:<22} {early:>16} {late:>16} "
                f"{c['slope_per_hour']:>9} {c['peak']:>5}  {'yes' if c['flat'] else 'NO'}"
            )
        p = g["fds"]["at_peak"]
        print(
            f"open files at their peak (minute {p['minute']}, "
            f"{'faults' if p['faulty'] else 'quiet'}): {p['sockets']} sockets, "
            f"{p['pipes']} pipes, {p['other']} other"
        )
    print()
    converged = r["converged"]
    rows = [
        ("daemon stayed up", r["daemon_stayed_up"]),
        ("commits pushed", r["commits"]),
        ("journal records at the end", r["records"]),
        ("faults injected (5 s each)", f"{r['faults_injected']} {r['faults_by_kind']}"),
        (
            "stacks converged to the last commit",
            f"{converged.get('moto_converged', 0)}/{converged.get('stacks', '?')}"
            + (f" in {converged['seconds']} s" if converged["seconds"] is not None else " (NOT)"),
        ),
        ("change sets executed twice", r["executed_twice_by_arn"]),
        ("SIGTERM exit code", r["stop_exit_code"]),
        *[
            (f"journal verify ({where})", f"exit {v['exit']}: {v['says']}")
            for where, v in r["journal_verify"].items()
        ],
        ("records missing in S3 after the stop", r["records_missing_in_s3_after_stop"]),
        ("warnings and errors logged", r["log_events"]),
    ]
    for label, value in rows:
        print(f"{label:<40} {value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--stacks", type=int, default=10)
    parser.add_argument("--every", type=campaign._range, default=(2.0, 5.0), help="seconds")
    parser.add_argument("--fault-period", type=float, default=60.0, help="seconds")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--print-every", type=float, default=60.0, help="seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="minutes left out of growth")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--change-set", type=float, default=0.5, help="seconds pending")
    parser.add_argument("--operation", type=campaign._range, default=(1.0, 2.0), help="seconds")
    parser.add_argument("--converge-timeout", type=float, default=600.0)
    parser.add_argument("--output", default=None, help="file name in bench/results/")
    return soak(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
