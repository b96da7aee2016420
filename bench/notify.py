"""Notifications: does a receiver that never answers slow an apply, and does one that is down for
a minute get every event afterwards, once each?

    python bench/notify.py [--rounds 15] [--stacks 10] [--down 60]

Two `syncd run` daemons (this checkout) on moto's server (syncd's patched emulator), each with
a repository of N stacks (`stack_prefix` a- and b-) and `watch: true`:

- A has no receivers;
- B has a CloudEvents webhook and GitHub commit statuses that both go to a server that accepts
  the connection, reads the request and never answers (each send waits out its 10 s timeout,
  then is tried again with back-off).

Part 1, in turns: a commit that changes every stack of A, then one of B; the time from the push
to the last `result` record of that commit in the daemon's journal. Medians, and B / A (the
target: under 1.05).

Part 2, down for a while: B's webhook is pointed (by SIGHUP) at a receiver that answers 503 for
`--down` seconds while commits keep coming, then 200. Then every event of those commits must
arrive, each id once: figures are the events the journal gives, those received, and duplicates.

Writes bench/results/notify.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))

import scene  # noqa: E402
from servers import start_moto  # noqa: E402

from syncd.core.events import EventFold  # noqa: E402
from syncd.core.journal_state import Kind, Record  # noqa: E402

RESULTS = BENCH_DIR / "results" / "notify.json"
WORK = BENCH_DIR / ".work" / "notify"


class Silent(threading.Thread):
    """Accepts connections, reads what comes, never answers."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self.held: list[socket.socket] = []

    def run(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            self.connections += 1
            self.held.append(conn)  # kept open, never answered


class Receiver:
    """Answers `code` (503 while down), keeps every event it accepted."""

    def __init__(self) -> None:
        self.code = 200
        self.ids: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if owner.code == 200:
                    owner.ids.append(json.loads(body)["id"])
                self.send_response(owner.code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def make_repo(root: Path, stacks: int) -> scene.StackRepo:
    root.mkdir(parents=True)
    repo = scene.StackRepo(root, stacks, chain=1)
    repo.create()
    return repo


def config(root: Path, repo: scene.StackRepo, moto: str, prefix: str, notify: Any) -> Path:
    entry: dict[str, Any] = {
        "name": "r",
        "url": str(repo.bare),
        "poll_interval": "1h",
        "watch": True,
        "stack_prefix": prefix,
    }
    doc: dict[str, Any] = {
        "state_dir": str(root / "state"),
        "aws": {"region": "us-east-1", "endpoint_url": moto, "wait_poll": "250ms"},
        "repos": [entry],
    }
    if notify is not None:
        (root / "token").write_text("t0ken\n")
        entry["notify"] = {
            "commit_status": {
                "forge": "github",
                "repository": "o/r",
                "api_url": notify,
                "token_file": str(root / "token"),
            },
            "webhooks": [{"name": "events", "url": notify, "timeout": "10s"}],
        }
    path = root / "syncd.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def records(state: Path) -> list[dict[str, Any]]:
    return scene.records_of(state)


def results_of(state: Path, commit: str) -> int:
    """How many stacks of `commit` have a result record."""
    versions = {
        (r["data"]["stack"], r["data"]["version"])
        for r in records(state)
        if r["kind"] == "version" and r["data"]["commit"] == commit
    }
    done = {
        (r["data"]["stack"], r["data"].get("version"))
        for r in records(state)
        if r["kind"] == "result" and r["data"].get("commit") == commit
    }
    return len(versions & done)


def apply_time(repo: scene.StackRepo, state: Path, stacks: int) -> float:
    start = time.monotonic()
    commit = repo.change(repo.roots)
    while results_of(state, commit) < stacks:
        if time.monotonic() - start > 300:
            raise SystemExit(f"{state}: commit {commit[:12]} not applied in 300 s")
        time.sleep(0.02)
    return time.monotonic() - start


def start(path: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "syncd", "run", "-c", str(path)],
        cwd=scene.PROJECT_ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def events_due(state: Path, after_seq: int) -> set[str]:
    """The ids of the events the journal gives after `after_seq` (the lineage aside)."""
    fold = EventFold()
    out = set()
    for r in records(state):
        record = Record(r["seq"], r["time"], Kind(r["kind"]), r["data"])
        event = fold.event(record)
        if event is not None and r["seq"] > after_seq:
            out.add(str(r["seq"]))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--stacks", type=int, default=10)
    parser.add_argument("--down", type=float, default=60.0, help="seconds the receiver is down")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    root = scene.fresh_dir(WORK)
    moto, moto_url = start_moto(patched=True)
    silent = Silent()
    silent.start()
    env = scene.syncd_env(moto_url)
    daemons: list[subprocess.Popen[bytes]] = []
    try:
        repo_a = make_repo(root / "a", args.stacks)
        repo_b = make_repo(root / "b", args.stacks)
        conf_a = config(root / "a", repo_a, moto_url, "a-", None)
        conf_b = config(root / "b", repo_b, moto_url, "b-", silent.url)
        daemons = [start(conf_a, env, root / "a.log"), start(conf_b, env, root / "b.log")]
        first_a, first_b = repo_a.last_commit(), repo_b.last_commit()
        deadline = time.monotonic() + 300
        while (
            results_of(root / "a" / "state", first_a) < args.stacks
            or results_of(root / "b" / "state", first_b) < args.stacks
        ):
            if time.monotonic() > deadline:
                raise SystemExit("the first deploy did not converge")
            time.sleep(0.1)
        times: dict[str, list[float]] = {"a": [], "b": []}
        for n in range(args.rounds):
            times["a"].append(apply_time(repo_a, root / "a" / "state", args.stacks))
            times["b"].append(apply_time(repo_b, root / "b" / "state", args.stacks))
            print(f"round {n + 1}: A {times['a'][-1]:.2f} s, B {times['b'][-1]:.2f} s", flush=True)
        med_a, med_b = statistics.median(times["a"]), statistics.median(times["b"])
        print(
            f"apply of {args.stacks} stacks, median: no receivers {med_a:.2f} s, "
            f"receivers that never answer {med_b:.2f} s, ratio {med_b / med_a:.3f}; "
            f"the silent server took {silent.connections} connections",
            flush=True,
        )

        # Part 2: B's webhook down for a while, then back.
        receiver = Receiver()
        receiver.code = 503
        doc = yaml.safe_load(conf_b.read_text())
        del doc["repos"][0]["notify"]["commit_status"]
        doc["repos"][0]["notify"]["webhooks"] = [
            {"name": "events", "url": receiver.url, "timeout": "10s"}
        ]
        conf_b.write_text(yaml.safe_dump(doc))
        state_b = root / "b" / "state"
        progress = json.loads((state_b / "notify" / "events.json").read_text())
        daemons[1].send_signal(1)  # SIGHUP: the webhook now goes to the receiver
        time.sleep(2)
        start_seq = progress["seq"]
        down_until = time.monotonic() + args.down
        commits = 0
        while time.monotonic() < down_until:
            apply_time(repo_b, state_b, args.stacks)
            commits += 1
        receiver.code = 200
        print(f"receiver back after {args.down:.0f} s down, {commits} commits applied meanwhile")
        due = events_due(state_b, start_seq)
        deadline = time.monotonic() + 600
        while len(set(receiver.ids)) < len(due) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)
        got = [i.rsplit("-", 1)[1] for i in receiver.ids]
        missing = due - set(got)
        duplicates = len(got) - len(set(got))
        print(
            f"events due {len(due)}, received {len(set(got))}, missing {len(missing)}, "
            f"duplicates {duplicates}",
            flush=True,
        )
        RESULTS.write_text(
            json.dumps(
                {
                    "stacks": args.stacks,
                    "rounds": args.rounds,
                    "apply_seconds": times,
                    "median_no_receivers": med_a,
                    "median_silent_receivers": med_b,
                    "ratio": med_b / med_a,
                    "silent_connections": silent.connections,
                    "down_seconds": args.down,
                    "commits_while_down": commits,
                    "events_due": len(due),
                    "events_received": len(set(got)),
                    "missing": len(missing),
                    "duplicates": duplicates,
                },
                indent=1,
            )
        )
        return 0 if not missing and med_b / med_a < 1.05 else 1
    finally:
        for proc in daemons:
            proc.terminate()
        for proc in daemons:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        moto.terminate()
        os.sync()


if __name__ == "__main__":
    raise SystemExit(main())
