"""Push to change set: how long after `git push` returns is the change set created?

    python bench/watch.py [--pushes 20] [--poll-pushes 3] [--stacks 10]

Runs `syncd run` (this checkout) against moto's server in a process of its own, on a bare
repository on this machine, twice: with `watch: true` (and `poll_interval: 1h`, so only the
watch can explain a fast reaction), then with polling every 60 s and no watch. Each push changes
one stack's parameter; the latency is the time of the journal's `change_set` record for that
version minus the moment `git push` returned (the same clock). Prints median and 95th percentile
and writes bench/results/watch.json. Targets (issue 4): median under 0.3 s, 95th under 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml
from servers import start_moto

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results" / "watch.json"
TEMPLATE = """\
Parameters:
  Value:
    Type: String
Resources:
  Setting:
    Type: AWS::SSM::Parameter
    Properties:
      Type: String
      Value: !Ref Value
"""


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def deployment(value: str) -> str:
    return yaml.safe_dump(
        {"template-file-path": "templates/setting.yaml", "parameters": {"Value": value}}
    )


def change_set_times(state: Path, stack: str) -> dict[int, datetime]:
    """version -> time of its change_set record, from the journal."""
    versions: dict[str, int] = {}
    found: dict[int, datetime] = {}
    for segment in sorted((state / "journal").glob("segment-*.jsonl")):
        for line in segment.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line being written
            data = record["data"]
            if data.get("stack") != stack:
                continue
            if record["kind"] == "version":
                versions["current"] = data["version"]
            elif record["kind"] == "change_set" and "current" in versions:
                when = datetime.fromisoformat(record["time"].replace("Z", "+00:00"))
                found[versions["current"]] = when
    return found


def measure(work: Path, endpoint: str, pushes: int, watch: bool, stacks: int) -> list[float]:
    repo, clone, state = work / "repo.git", work / "clone", work / "state"
    for path in (repo, clone, state):
        shutil.rmtree(path, ignore_errors=True)
    git("init", "--quiet", "--bare", "--initial-branch", "main", str(repo), cwd=work)
    git("clone", "--quiet", str(repo), str(clone), cwd=work)
    (clone / "templates").mkdir()
    (clone / "templates" / "setting.yaml").write_text(TEMPLATE)
    (clone / "deployments").mkdir()
    for i in range(stacks):
        (clone / "deployments" / f"s{i:02d}.yaml").write_text(deployment("v0"))
    git("-c", "user.name=b", "-c", "user.email=b@b", "add", "-A", cwd=clone)
    git("-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "v0", cwd=clone)
    git("push", "--quiet", "origin", "main", cwd=clone)
    config = work / "syncd.yaml"
    repo_entry: dict[str, object] = {
        "name": "bench",
        "url": str(repo),
        "poll_interval": "1h" if watch else "60s",
        "watch": watch,
    }
    config.write_text(
        yaml.safe_dump(
            {
                "state_dir": str(state),
                "aws": {"region": "us-east-1", "endpoint_url": endpoint, "wait_poll": "200ms"},
                "repos": [repo_entry],
            }
        )
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AWS_ACCESS_KEY_ID": "testing"}
    env["AWS_SECRET_ACCESS_KEY"] = "testing"
    daemon = subprocess.Popen(
        [sys.executable, "-m", "syncd", "run", "-c", str(config), "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    latencies: list[float] = []
    try:
        deadline = time.monotonic() + 120
        while 1 not in change_set_times(state, "s00") and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2)  # let the first pass settle
        for push in range(1, pushes + 1):
            (clone / "deployments" / "s00.yaml").write_text(deployment(f"v{push}"))
            git(
                "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qam", f"v{push}", cwd=clone
            )
            git("push", "--quiet", "origin", "main", cwd=clone)
            pushed = datetime.now(UTC)
            version = push + 1
            deadline = time.monotonic() + (90 if not watch else 30)
            while time.monotonic() < deadline:
                seen = change_set_times(state, "s00")
                if version in seen:
                    latencies.append((seen[version] - pushed).total_seconds())
                    break
                time.sleep(0.02)
            else:
                raise SystemExit(f"version {version} never got a change set")
            print(f"  {'watch' if watch else 'poll 60s'} push {push}: {latencies[-1]:.3f} s")
            time.sleep(0.5)  # let the apply finish before the next push
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
    return latencies


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pushes", type=int, default=20)
    parser.add_argument("--poll-pushes", type=int, default=3)
    parser.add_argument("--stacks", type=int, default=10)
    args = parser.parse_args()
    moto, endpoint = start_moto()
    work = Path(tempfile.mkdtemp(prefix="syncd-bench-watch-"))
    try:
        watched = measure(work, endpoint, args.pushes, True, args.stacks)
        polled = (
            measure(work, endpoint, args.poll_pushes, False, args.stacks)
            if args.poll_pushes
            else []
        )
    finally:
        moto.terminate()
        moto.wait()
        shutil.rmtree(work, ignore_errors=True)
    summary = {
        "stacks": args.stacks,
        "watch": {
            "pushes": len(watched),
            "median": statistics.median(watched),
            "p95": p95(watched),
        },
    }
    if polled:
        summary["poll_60s"] = {
            "pushes": len(polled),
            "median": statistics.median(polled),
            "p95": p95(polled),
        }
    print()
    print(f"push -> change set created, {args.stacks} stacks in the repo")
    w = summary["watch"]
    print(
        f"  watch: true       median {w['median']:.3f} s   p95 {w['p95']:.3f} s"
        f"   ({w['pushes']} pushes)   target: median < 0.3 s, p95 < 1 s"
    )
    if polled:
        p = summary["poll_60s"]
        print(
            f"  poll every 60 s   median {p['median']:.3f} s   p95 {p['p95']:.3f} s"
            f"   ({p['pushes']} pushes)"
        )
        print(f"  ratio (median)    {p['median'] / w['median']:.0f}x")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps({"summary": summary, "watch": watched, "poll_60s": polled}, indent=2)
    )


if __name__ == "__main__":
    main()
