"""Compare syncd with its peers on the same N small CloudFormation stacks.

    python bench/peers.py [--stacks 50] [--runs 3] [--peers boto3,awscli,sceptre,syncd]

One run of this script:

1. starts ONE moto server on 127.0.0.1 (`syncd.emulator.start_emulator`) and a counting
   pass-through proxy in front of it (`countproxy.py`); every peer talks to the proxy, which
   counts API calls by service and `Action=`;
2. generates N stacks in a real Git repository under bench/.work/ (`workload.py`), plus a
   sceptre project and an `aws cloudformation deploy` loop for the same templates, parameters
   and tags;
3. for each run and each peer (`runners.py`): resets the emulator, times the **first deploy**
   from empty, checks that all N stacks are really there, then times the **no-op pass** (the
   same command again, nothing changed); the proxy's counters give the API calls of each;
4. prints the medians over the runs (wall time, CloudFormation API calls) with ratios against
   the plain boto3 loop, and writes them with the raw samples to bench/results/peers.json.

A peer that fails is reported as "peer X failed: <stderr tail>" and left out of the later runs;
the others go on.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(PROJECT_ROOT))  # syncd.emulator from this checkout

import boto3_loop  # noqa: E402
import runners  # noqa: E402
from countproxy import CountingProxy  # noqa: E402
from workload import make_workload  # noqa: E402

from syncd.emulator import start_emulator  # noqa: E402

WORK_DIR = BENCH_DIR / ".work"
RESULTS = BENCH_DIR / "results" / "peers.json"
BASELINE = "boto3-loop"
PHASES = ("first_deploy", "noop")


def make_peers(names: list[str], syncd_cmd: list[str] | None) -> list[runners.Peer]:
    table: dict[str, runners.Peer] = {
        "boto3": runners.Boto3Loop(),
        "awscli": runners.AwsCliLoop(),
        "sceptre": runners.Sceptre(),
        "syncd": runners.Syncd(syncd_cmd),
        "syncd-inprocess": runners.SyncdInprocess(),
    }
    unknown = [n for n in names if n not in table]
    if unknown:
        raise SystemExit(f"unknown peer(s) {unknown}; choose from {list(table)}")
    return [table[n] for n in names]


def live_stack_count(emulator_url: str) -> int:
    """Stacks in a *_COMPLETE state, asked of moto directly (not through the proxy)."""
    live = boto3_loop.deployed_stacks(boto3_loop.make_client(emulator_url))
    return sum(
        1 for s in live.values() if s["StackStatus"] in ("CREATE_COMPLETE", "UPDATE_COMPLETE")
    )


def cfn_calls(counts: Counter[tuple[str, str]]) -> int:
    return sum(n for (service, _), n in counts.items() if service == "cloudformation")


def by_action(counts: Counter[tuple[str, str]]) -> dict[str, int]:
    return {f"{service}:{action}": n for (service, action), n in sorted(counts.items())}


def measure(
    peer: runners.Peer, phase: str, ctx: runners.Context, em: Any, proxy: CountingProxy
) -> tuple[float, Counter[tuple[str, str]]]:
    proxy.reset_counts()
    seconds = getattr(peer, phase)(ctx)
    return seconds, proxy.counts()


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarise(samples: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for phase in PHASES:
        runs = samples[phase]
        out[phase] = {
            "median_s": round(median([r["seconds"] for r in runs]), 3),
            "cfn_calls_median": median([r["cfn_calls"] for r in runs]),
            "other_calls_median": median([r["other_calls"] for r in runs]),
            "runs_s": [round(r["seconds"], 3) for r in runs],
            "calls_by_action_last_run": runs[-1]["by_action"] if runs else {},
        }
    return out


def ratio(value: float | None, base: float | None) -> float | None:
    if value is None or not base:
        return None
    return round(value / base, 2)


def print_table(results: dict[str, Any], n: int, runs: int) -> None:
    base = results.get(BASELINE, {}).get("summary")
    header = (
        f"{'peer':<16} {'first s':>8} {'calls':>6} {'no-op s':>8} {'calls':>6}"
        f"   {'first s':>8} {'calls':>6} {'no-op s':>8} {'calls':>6}"
    )
    print()
    print(f"{n} stacks, median of {runs} run(s); right half: ratio to the plain boto3 loop")
    print(header)
    print("-" * len(header))
    for name, res in results.items():
        summary = res.get("summary")
        if summary is None:
            status = " | ".join(line.strip() for line in res["status"].splitlines())
            print(f"{name:<16} {status[:150]}")
            continue
        f, z = summary["first_deploy"], summary["noop"]
        cells = [
            f"{f['median_s']:8.2f}",
            f"{f['cfn_calls_median']:6.0f}",
            f"{z['median_s']:8.2f}",
            f"{z['cfn_calls_median']:6.0f}",
        ]
        if base:
            rf = res["ratio_vs_boto3"]
            cells += [
                _ratio_cell(rf["first_deploy_s"], 8),
                _ratio_cell(rf["first_deploy_calls"], 6),
                _ratio_cell(rf["noop_s"], 8),
                _ratio_cell(rf["noop_calls"], 6),
            ]
        print(f"{name:<16} " + " ".join(cells[:4]) + "   " + " ".join(cells[4:]))
    print()
    print(
        "s = wall seconds (boto3 loop in-process; the others as subprocesses, interpreter "
        "start included); calls = CloudFormation API calls seen by the proxy"
    )


def _ratio_cell(value: float | None, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width - 1}.2f}x"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stacks", type=int, default=50, help="number of stacks (default 50)")
    parser.add_argument("--runs", type=int, default=3, help="runs per peer; medians reported")
    parser.add_argument(
        "--peers",
        default=",".join(runners.ALL_PEERS),
        help=f"comma-separated subset of {','.join(runners.ALL_PEERS)}",
    )
    parser.add_argument(
        "--syncd-cmd",
        default=None,
        help="command that runs syncd (default: `syncd` on PATH, else this "
        "checkout's syncd.cli:main)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON results file")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    peers = make_peers(
        [p.strip() for p in args.peers.split(",") if p.strip()],
        args.syncd_cmd.split() if args.syncd_cmd else None,
    )
    WORK_DIR.mkdir(exist_ok=True)

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request log lines
    em = start_emulator()
    proxy = CountingProxy(em.url).start()
    print(f"moto at {em.url}, counting proxy at {proxy.url}")
    try:
        workload = make_workload(WORK_DIR / "workload", args.stacks)
        print(f"{args.stacks} stacks in git repo {workload.repo}")
        ctx = runners.Context(workload=workload, proxy_url=proxy.url, work_dir=WORK_DIR)

        results: dict[str, dict[str, Any]] = {}
        active: list[runners.Peer] = []
        for peer in peers:
            results[peer.name] = {"description": peer.description, "status": "ok"}
            try:
                peer.prepare(ctx)
            except runners.PeerUnavailable as exc:
                results[peer.name]["status"] = f"skipped: {exc}"
                print(f"peer {peer.name} skipped: {exc}")
                continue
            results[peer.name]["version"] = peer.version(ctx)
            active.append(peer)

        samples: dict[str, dict[str, list[dict[str, Any]]]] = {
            p.name: {phase: [] for phase in PHASES} for p in active
        }
        for run in range(args.runs):
            ctx.run = run
            for peer in list(active):
                try:
                    for phase in PHASES:
                        if phase == "first_deploy":
                            em.reset()
                        seconds, counts = measure(peer, phase, ctx, em, proxy)
                        if phase == "first_deploy":
                            live = live_stack_count(em.url)
                            if live != args.stacks:
                                raise runners.PeerFailed(
                                    f"{live} of {args.stacks} stacks deployed "
                                    f"({cfn_calls(counts)} CloudFormation calls reached the proxy)"
                                )
                        calls = cfn_calls(counts)
                        samples[peer.name][phase].append(
                            {
                                "seconds": seconds,
                                "cfn_calls": calls,
                                "other_calls": sum(counts.values()) - calls,
                                "by_action": by_action(counts),
                            }
                        )
                        print(
                            f"run {run + 1}/{args.runs} {peer.name:<16} {phase:<12} "
                            f"{seconds:7.2f} s {calls:5d} calls",
                            flush=True,
                        )
                except NotImplementedError as exc:
                    results[peer.name]["status"] = f"skipped: {exc}"
                    print(f"peer {peer.name} skipped: {exc}")
                    active.remove(peer)
                except runners.PeerFailed as exc:
                    results[peer.name]["status"] = f"failed: {exc}"
                    print(f"peer {peer.name} failed: {exc}")
                    active.remove(peer)

        for peer in active:
            results[peer.name]["summary"] = summarise(samples[peer.name])
        base = results.get(BASELINE, {}).get("summary")
        for res in results.values():
            s = res.get("summary")
            if s is None or base is None:
                continue
            res["ratio_vs_boto3"] = {
                "first_deploy_s": ratio(
                    s["first_deploy"]["median_s"], base["first_deploy"]["median_s"]
                ),
                "first_deploy_calls": ratio(
                    s["first_deploy"]["cfn_calls_median"], base["first_deploy"]["cfn_calls_median"]
                ),
                "noop_s": ratio(s["noop"]["median_s"], base["noop"]["median_s"]),
                "noop_calls": ratio(
                    s["noop"]["cfn_calls_median"], base["noop"]["cfn_calls_median"]
                ),
            }

        print_table(results, args.stacks, args.runs)
        total = time.perf_counter() - started
        print(f"whole benchmark: {total:.0f} s")
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(
            json.dumps(
                {
                    "meta": {
                        "date": datetime.now(UTC).isoformat(timespec="seconds"),
                        "stacks": args.stacks,
                        "runs": args.runs,
                        "statistic": "median over runs",
                        "python": platform.python_version(),
                        "moto": _moto_version(),
                        "cpus": _cpus(),
                        "total_seconds": round(total, 1),
                        "timing": {
                            "boto3-loop": "in-process perf_counter around the pass (no interpreter "
                            "start; client creation included)",
                            "others": "subprocess wall time, interpreter start included",
                        },
                        "calls": "HTTP requests through the counting proxy; cfn_calls are those "
                        "signed for the cloudformation service",
                    },
                    "peers": results,
                },
                indent=2,
            )
            + "\n"
        )
        print(f"results written to {args.output}")
    finally:
        proxy.stop()
        em.stop()
    return 0


def _moto_version() -> str:
    import moto

    return str(moto.__version__)


def _cpus() -> int | None:
    import os

    return os.cpu_count()


if __name__ == "__main__":
    sys.exit(main())
