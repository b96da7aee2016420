"""The journal and its S3 mirror: appends per second, bytes per mirror cycle, restore time, and
the recovery point when the host is killed.

    python bench/journal.py [--records 100000] [--runs 3] [--kills 10] [--interval 2]

Against moto's S3 in its own process (`moto_server` on 127.0.0.1), so that moto does not share
this process's interpreter. Prints medians of `--runs` (and of `--kills` for the recovery point)
and writes them to bench/results/journal.json. Targets (issue 3): one new record costs under
64 KiB of upload on a journal of 100,000; restoring 100,000 records takes under 10 s; the newest
record in S3 when the host dies is younger than `backup.interval`, and no intent to execute is
ever missing from S3.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))

import boto3  # noqa: E402
from servers import start_moto  # noqa: E402

from syncd.core.journal_format import GENESIS, encode  # noqa: E402
from syncd.core.journal_state import Kind  # noqa: E402
from syncd.journal.mirror import Mirror  # noqa: E402
from syncd.journal.restore import read_remote, restore  # noqa: E402
from syncd.journal.store import SEGMENT_BYTES, Journal, segment_name  # noqa: E402
from syncd.s3 import S3Store  # noqa: E402

RESULTS = BENCH_DIR / "results" / "journal.json"
BUCKET = "bench-backups"


def s3_client(url: str):  # type: ignore[no-untyped-def]
    return boto3.client("s3", endpoint_url=url, region_name="us-east-1")


class CountingStore(S3Store):
    """The real S3 store, counting the bytes it uploads."""

    uploaded = 0

    def put_new(self, key: str, data: bytes) -> None:
        super().put_new(key, data)
        self.uploaded += len(data)


def record_data(i: int) -> dict[str, object]:
    """A record the size of a typical VERSION record (parameters, tags, a commit)."""
    return {
        "repo": "platform",
        "stack": f"stack-{i % 50:02d}",
        "version": i // 50 + 1,
        "commit": f"{i:040x}",
        "digest": f"{i:064x}",
        "action": "update",
        "deployment_file": f"deployments/stack-{i % 50:02d}.yaml",
        "template_file": f"templates/stack-{i % 50:02d}.yaml",
        "parameters": {"Env": "prod", "VpcId": "vpc-0123456789abcdef0"},
        "tags": {"team": "platform", "cost-center": "1234"},
        "dependencies": ["network"],
    }


def write_journal(state: Path, count: int) -> None:
    """A journal of `count` records, written straight into segments (building it is not what
    is measured; opening it checks every record)."""
    directory = state / "journal"
    directory.mkdir(parents=True)
    prev, seq = GENESIS, 0
    while seq < count:
        first = seq + 1
        chunk = bytearray()
        while seq < count and len(chunk) < SEGMENT_BYTES:
            seq += 1
            line, prev = encode(
                seq, f"2026-11-30T00:00:00.{seq % 1000:03d}Z", "version", record_data(seq), prev
            )
            chunk += line
        (directory / segment_name(first)).write_bytes(bytes(chunk))


def appends_per_second(tmp: Path, n: int = 2000) -> float:
    journal = Journal.open(tmp / "appends", writer=True, warn=lambda _: None)
    started = time.perf_counter()
    for i in range(n):
        journal.append(Kind.VERSION, **record_data(i))
    elapsed = time.perf_counter() - started
    journal.close()
    shutil.rmtree(tmp / "appends")
    return n / elapsed


def mirror_and_restore(tmp: Path, url: str, records: int, run: int) -> dict[str, float]:
    state = tmp / f"state-{run}"
    write_journal(state, records)
    opened = time.perf_counter()
    journal = Journal.open(state, writer=True, warn=lambda _: None)
    open_seconds = time.perf_counter() - opened
    store = CountingStore(
        boto3.Session(region_name="us-east-1"), f"s3://{BUCKET}/run{run}/", endpoint_url=url
    )
    mirror = Mirror(journal, store, state)
    started = time.perf_counter()
    mirror.cycle()
    first_cycle = time.perf_counter() - started
    store.uploaded = 0
    journal.append(Kind.SOURCE_OK, repo="platform")
    started = time.perf_counter()
    mirror.cycle()
    one_cycle = time.perf_counter() - started
    one_bytes = store.uploaded
    journal.close()
    shutil.rmtree(state)
    started = time.perf_counter()
    read = restore(store, state)
    restore_seconds = time.perf_counter() - started
    assert read.last_seq == records + 1 and read.damage is None, read.damage
    shutil.rmtree(state)
    return {
        "open_seconds": open_seconds,
        "first_mirror_seconds": first_cycle,
        "one_record_cycle_bytes": one_bytes,
        "one_record_cycle_seconds": one_cycle,
        "restore_seconds": restore_seconds,
    }


HOST = """
import random, sys, threading, time
from pathlib import Path
import boto3
from syncd.core.journal_state import Kind
from syncd.journal.mirror import Mirror
from syncd.journal.store import Journal
from syncd.s3 import S3Store

state, url, endpoint, interval = Path(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
journal = Journal.open(state, writer=True, warn=lambda m: None)
store = S3Store(boto3.Session(region_name="us-east-1"), url, endpoint_url=endpoint)
mirror = Mirror(journal, store, state, interval=interval)
threading.Thread(target=mirror.run, args=(threading.Event(),), daemon=True).start()
print("up", flush=True)
i = 0
while True:  # a busy daemon: a record every 20-80 ms, an intent to execute every 10th
    i += 1
    if i % 10 == 0:
        journal.append(Kind.EXECUTING, stack=f"s{i}", change_set=f"arn:{i}")
        mirror.flush(when_healthy=True)  # what the applier does before ExecuteChangeSet
    else:
        journal.append(Kind.SOURCE_OK, repo=f"r{i}")
    time.sleep(random.uniform(0.02, 0.08))
"""


def recovery_point(tmp: Path, url: str, interval: float, kill: int) -> dict[str, float]:
    state = tmp / f"host-{kill}"
    prefix = f"s3://{BUCKET}/host{kill}/"
    env = {**os.environ, "PYTHONPATH": str(BENCH_DIR.parent)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOST, str(state), prefix, url, str(interval)],
        stdout=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"up"
    time.sleep(interval * 2 + random.uniform(0, interval))
    proc.send_signal(signal.SIGKILL)
    killed_at = datetime.now(UTC)
    proc.wait()
    store = S3Store(boto3.Session(region_name="us-east-1"), prefix, endpoint_url=url)
    remote = read_remote(store)
    local = Journal.open(state, writer=False, warn=lambda _: None)
    records = list(local.records())
    intents = [r.seq for r in records if r.kind is Kind.EXECUTING]
    missing_intents = sum(1 for seq in intents if seq > remote.last_seq)
    newest = datetime.fromisoformat((remote.last_time or "").replace("Z", "+00:00"))
    return {
        "age_of_newest_in_s3_seconds": (killed_at - newest).total_seconds(),
        "records_not_in_s3": len(records) - remote.last_seq,
        "intents_not_in_s3": missing_intents,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--interval", type=float, default=2.0, help="backup.interval (s)")
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    moto, url = start_moto()
    tmp = Path(tempfile.mkdtemp(prefix="syncd-bench-journal-"))
    try:
        s3_client(url).create_bucket(Bucket=BUCKET)
        appends = [appends_per_second(tmp) for _ in range(args.runs)]
        print(f"appends with fsync: {statistics.median(appends):,.0f} records/s (median)")
        runs = []
        for run in range(args.runs):
            figures = mirror_and_restore(tmp, url, args.records, run)
            runs.append(figures)
            print(
                f"run {run + 1}/{args.runs}: "
                + ", ".join(f"{k} {v:,.2f}" for k, v in figures.items())
            )
        kills = []
        for kill in range(args.kills):
            figures = recovery_point(tmp, url, args.interval, kill)
            kills.append(figures)
            print(
                f"kill {kill + 1}/{args.kills}: "
                + ", ".join(f"{k} {v:,.2f}" for k, v in figures.items())
            )
    finally:
        moto.terminate()
        moto.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    def med(rows: list[dict[str, float]], key: str) -> float:
        return float(statistics.median(r[key] for r in rows))

    summary = {
        "records": args.records,
        "appends_per_second": statistics.median(appends),
        "open_seconds": med(runs, "open_seconds"),
        "first_mirror_seconds": med(runs, "first_mirror_seconds"),
        "one_record_cycle_bytes": med(runs, "one_record_cycle_bytes"),
        "one_record_cycle_seconds": med(runs, "one_record_cycle_seconds"),
        "restore_seconds": med(runs, "restore_seconds"),
        "interval_seconds": args.interval,
        "recovery_point_median_seconds": med(kills, "age_of_newest_in_s3_seconds"),
        "recovery_point_max_seconds": max(k["age_of_newest_in_s3_seconds"] for k in kills),
        "intents_not_in_s3_total": sum(k["intents_not_in_s3"] for k in kills),
    }
    print()
    print(f"journal of {args.records:,} records, median of {args.runs} runs, {args.kills} kills")
    print(f"  appends with fsync            {summary['appends_per_second']:>10,.0f} /s")
    print(f"  writer open (checks all)      {summary['open_seconds']:>10.2f} s")
    print(f"  first mirror (everything)     {summary['first_mirror_seconds']:>10.2f} s")
    print(
        f"  cycle with 1 new record       {summary['one_record_cycle_bytes']:>10,.0f} bytes "
        f"({summary['one_record_cycle_seconds'] * 1000:.0f} ms)   target < 65,536 bytes"
    )
    print(f"  restore from S3               {summary['restore_seconds']:>10.2f} s   target < 10 s")
    print(
        f"  recovery point (median / max) {summary['recovery_point_median_seconds']:>10.2f} / "
        f"{summary['recovery_point_max_seconds']:.2f} s   target < {args.interval:g} s "
        "(backup.interval)"
    )
    print(f"  intents missing from S3       {summary['intents_not_in_s3_total']:>10}   target 0")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"summary": summary, "runs": runs, "kills": kills}, indent=2))


if __name__ == "__main__":
    main()
