"""The reliability campaigns' scene: moto behind the faulty proxy, a Git repository of N stacks
and a committer that keeps pushing, the `syncd run` process, and readers of the journal, of
moto and of the S3 mirror that never go through the proxy.

- `World`: moto's server in its own process (syncd's emulator, one request at a time) and a
  `faults.FaultyProxy` in front of it, paced; the backup bucket is made in moto directly.
- `StackRepo`: a bare repository (what syncd follows) and a clone that commits and pushes. Its
  stacks share pace.py's template (an SSM parameter, output `Value` = `Upstream>name`): roots
  s01... and c1 take a value, c2... take the previous link's output (`stack-output`).
  `expected()` is what moto must show once the last commit is applied.
- `Daemon`: `syncd run` with `NOTIFY_SOCKET` (READY=1, as systemd would see it) and
  `http.listen` (`/readyz` answers 200 once every repo's first pass is done); each start is a
  `Run` with those two times.
- `on_disk`, `JournalTail`: the journal's complete records (seq -> hash), and new records as they
  are appended; `s3_records`: what the mirror put in S3.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import servers
import yaml
from faults import FaultyProxy
from pace import TEMPLATE

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = BENCH_DIR.parent
BUCKET = "syncd-campaign"
BACKUP_URL = f"s3://{BUCKET}/journal/"
REPO_NAME = "campaign"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


# -- moto and the proxy ---------------------------------------------------------------------------
@dataclass
class World:
    moto: subprocess.Popen[bytes]
    moto_url: str
    proxy: FaultyProxy

    def _client(self, service: str) -> Any:
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.moto_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def parameters(self) -> dict[str, str]:
        """Each stack's `Upstream` parameter as moto holds it (not through the proxy)."""
        out: dict[str, str] = {}
        for page in self._client("cloudformation").get_paginator("describe_stacks").paginate():
            for stack in page["Stacks"]:
                if stack["StackStatus"] == "DELETE_COMPLETE":
                    continue
                params = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}
                out[stack["StackName"]] = params.get("Upstream", "")
        return out

    def s3_records(self) -> dict[int, str]:
        """seq -> hash of every record the mirror put in S3 (every lineage)."""
        s3 = self._client("s3")
        out: dict[int, str] = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="journal/"):
            for item in page.get("Contents", []):
                if "/records/" not in item["Key"]:
                    continue
                data = s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
                out.update(_parse_lines(data))
        return out

    def stop(self) -> None:
        self.proxy.stop()
        self.moto.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.moto.wait(timeout=30)


def start_world(change_set: float, op_low: float, op_high: float, seed: int) -> World:
    moto, moto_url = servers.start_moto(patched=True, serial=True)
    proxy = FaultyProxy(moto_url, seed=seed).start()
    proxy.pace_between(change_set, op_low, op_high)
    world = World(moto, moto_url, proxy)
    world._client("s3").create_bucket(Bucket=BUCKET)
    return world


# -- the repository -------------------------------------------------------------------------------
def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", "-c", "user.name=campaign", "-c", "user.email=campaign@localhost", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )
    return proc.stdout.strip()


class StackRepo:
    """N stacks: roots s01.. and c1 take values; c2.. read the previous link's output."""

    def __init__(self, root: Path, stacks: int, chain: int) -> None:
        self.bare, self.work = root / "origin.git", root / "work"
        independent = stacks - chain
        self.chain = [f"c{i}" for i in range(1, chain + 1)]
        self.roots = [f"s{i:02d}" for i in range(1, independent + 1)] + self.chain[:1]
        self.names = self.roots + self.chain[1:]
        self.values: dict[str, str] = {}
        self.counter = 0
        self.commits: list[tuple[float, str]] = []  # (monotonic, sha)
        self.lock = threading.Lock()

    def create(self) -> str:
        git(self.bare.parent, "init", "-q", "--bare", "-b", "main", str(self.bare))
        git(self.bare.parent, "clone", "-q", str(self.bare), str(self.work))
        (self.work / "templates").mkdir()
        (self.work / "deployments").mkdir()
        (self.work / "templates" / "pace.yaml").write_text(TEMPLATE)
        for name in self.chain[1:]:
            upstream = self.chain[self.chain.index(name) - 1]
            self._write(name, {"stack-output": f"{upstream}.Value"})
        return self.change(self.roots, message="the first commit")

    def _write(self, name: str, upstream: Any) -> None:
        doc = {"template-file-path": "templates/pace.yaml", "parameters": {"Upstream": upstream}}
        (self.work / "deployments" / f"{name}.yaml").write_text(yaml.safe_dump(doc))

    def change(self, stacks: list[str], message: str = "") -> str:
        """New values for these root stacks, committed and pushed; returns the commit."""
        with self.lock:
            self.counter += 1
            for name in stacks:
                self.values[name] = f"{name}-g{self.counter}"
                self._write(name, self.values[name])
            git(self.work, "add", "-A")
            git(self.work, "commit", "-q", "-m", message or f"g{self.counter}: {' '.join(stacks)}")
            git(self.work, "push", "-q", "origin", "HEAD:main")
            sha = git(self.work, "rev-parse", "HEAD")
            self.commits.append((time.monotonic(), sha))
            return sha

    def last_commit(self) -> str:
        with self.lock:
            return self.commits[-1][1]

    def expected(self) -> dict[str, str]:
        """Each stack's `Upstream` once the last commit is applied: a link takes its
        upstream's output, `${Upstream}>${AWS::StackName}`."""
        with self.lock:
            out = {name: self.values[name] for name in self.roots}
        for upstream, name in zip(self.chain, self.chain[1:], strict=False):
            out[name] = f"{out[upstream]}>{upstream}"
        return out


class Committer(threading.Thread):
    """Pushes new values for 1..3 root stacks every `every` seconds (drawn at random)."""

    def __init__(self, repo: StackRepo, rng: random.Random, every: tuple[float, float]) -> None:
        super().__init__(name="committer", daemon=True)
        self.repo, self.rng, self.every = repo, rng, every
        self.stop = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stop.wait(self.rng.uniform(*self.every)):
            picked = self.rng.sample(self.repo.roots, self.rng.randint(1, 3))
            try:
                self.repo.change(sorted(picked))
            except subprocess.CalledProcessError as exc:  # reported, never fatal
                self.errors.append(f"{exc}: {exc.stderr}")


def write_config(
    path: Path,
    state_dir: Path,
    repo: StackRepo,
    proxy_url: str,
    http_port: int,
    manual: tuple[str, ...] = (),
) -> Path:
    """syncd's config; the `manual` stacks wait for approval after their change set."""
    doc: dict[str, Any] = {
        "state_dir": str(state_dir),
        # pace.py's time scale: wait_poll 5 s / 20 (operations of seconds stand for minutes)
        "aws": {"region": "us-east-1", "endpoint_url": proxy_url, "wait_poll": "250ms"},
        "backup": {"url": BACKUP_URL, "interval": "1s"},
        "http": {"listen": f"127.0.0.1:{http_port}"},
        "repos": [
            {
                "name": REPO_NAME,
                "url": str(repo.bare),
                "branch": "main",
                "poll_interval": "1s",
                "watch": True,
            }
        ],
    }
    if manual:
        doc["repos"][0]["stacks"] = {name: {"approval": "manual"} for name in manual}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# -- the daemon -----------------------------------------------------------------------------------
def syncd_env(proxy_url: str, **extra: str) -> dict[str, str]:
    """Only the proxy reachable (as pace.py's peers), this checkout on the path."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "NOTIFY_", "WATCHDOG_", "SYNCD_"))
    }
    env.update(
        CREDENTIALS,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONPATH=str(PROJECT_ROOT),
    )
    env.update(extra)
    return env


def syncd(config: Path, *args: str, env: dict[str, str], timeout: float = 300) -> Any:
    """A `syncd` command (not the daemon); returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", "syncd", *args, "-c", str(config)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@dataclass
class Run:
    """One start of `syncd run`: times are seconds after the spawn (None: not seen)."""

    proc: subprocess.Popen[bytes]
    spawned: float  # monotonic
    spawned_wall: float = field(default_factory=time.time)  # to compare with record times
    ready: float | None = None  # READY=1 on NOTIFY_SOCKET
    first_pass: float | None = None  # /readyz answered 200
    ended: float | None = None
    exit_code: int | None = None
    ready_event: threading.Event = field(default_factory=threading.Event)


class Daemon:
    """`syncd run -c CONFIG`, started and stopped as often as asked; its stderr (JSON log
    lines) is appended to `log`."""

    def __init__(self, config: Path, log: Path, proxy_url: str, http_port: int) -> None:
        self.config, self.log, self.http_port = config, log, http_port
        self.notify_path = log.parent / "notify.sock"
        self.notify_path.unlink(missing_ok=True)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self.notify_path))
        self._sock.settimeout(0.2)
        self.env = syncd_env(proxy_url, NOTIFY_SOCKET=str(self.notify_path))
        self.runs: list[Run] = []
        self.current: Run | None = None
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read_notify, daemon=True)
        self._reader.start()

    def start(self) -> Run:
        with open(self.log, "ab") as log:
            log.write(f"\n=== start {len(self.runs) + 1} at {time.time():.3f}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                [sys.executable, "-m", "syncd", "run", "-c", str(self.config)],
                cwd=PROJECT_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        run = Run(proc, time.monotonic())
        self.runs.append(run)
        self.current = run
        threading.Thread(target=self._poll_ready, args=(run,), daemon=True).start()
        return run

    def alive(self) -> bool:
        return self.current is not None and self.current.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL now (from any thread); `reap` waits for it."""
        if self.current is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.current.proc.pid, signal.SIGKILL)

    def reap(self, timeout: float = 30) -> Run:
        run = self.current
        assert run is not None
        run.exit_code = run.proc.wait(timeout=timeout)
        run.ended = time.monotonic() - run.spawned
        return run

    def stop(self, timeout: float = 120) -> int | None:
        """SIGTERM and wait; a daemon that does not stop in time is killed (None)."""
        if self.current is None or self.current.proc.poll() is not None:
            return self.current.proc.returncode if self.current else None
        self.current.proc.send_signal(signal.SIGTERM)
        try:
            return self.reap(timeout).exit_code
        except subprocess.TimeoutExpired:
            self.kill()
            self.reap()
            return None

    def wait_ready(self, run: Run, timeout: float) -> bool:
        return run.ready_event.wait(timeout)

    def close(self) -> None:
        if self.alive():
            self.kill()
            self.reap()
        self._closed.set()
        self._sock.close()
        self.notify_path.unlink(missing_ok=True)

    def _read_notify(self) -> None:
        while not self._closed.is_set():
            try:
                message = self._sock.recv(4096).decode(errors="replace")
            except (TimeoutError, OSError):
                continue
            run = self.current
            if run is not None and "READY=1" in message.splitlines() and run.ready is None:
                run.ready = time.monotonic() - run.spawned
                run.ready_event.set()

    def _poll_ready(self, run: Run) -> None:
        url = f"http://127.0.0.1:{self.http_port}/readyz"
        while run.proc.poll() is None and run.first_pass is None:
            try:
                with urllib.request.urlopen(url, timeout=0.5) as resp:
                    if resp.status == 200:
                        run.first_pass = time.monotonic() - run.spawned
                        return
            except OSError:
                pass
            time.sleep(0.05)


# -- the journal ----------------------------------------------------------------------------------
def _parse_lines(data: bytes) -> dict[int, str]:
    """seq -> hash of each complete line (a last line without its newline is not a record)."""
    out: dict[int, str] = {}
    for line in data.split(b"\n")[:-1]:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            record = json.loads(line)
            out[int(record["seq"])] = str(record["hash"])
    return out


def segment_paths(state_dir: Path) -> list[Path]:
    return sorted((state_dir / "journal").glob("segment-*.jsonl"))


def on_disk(state_dir: Path) -> tuple[dict[int, str], int]:
    """The journal's complete records (seq -> hash), and the bytes of a torn last line."""
    records: dict[int, str] = {}
    torn = 0
    paths = segment_paths(state_dir)
    for path in paths:
        data = path.read_bytes()
        records.update(_parse_lines(data))
        if path == paths[-1] and data and not data.endswith(b"\n"):
            torn = len(data) - (data.rfind(b"\n") + 1)
    return records, torn


def records_of(state_dir: Path) -> list[dict[str, Any]]:
    """Every complete record, parsed, in order."""
    out: list[dict[str, Any]] = []
    for path in segment_paths(state_dir):
        for line in path.read_bytes().split(b"\n")[:-1]:
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


class JournalTail(threading.Thread):
    """Calls every listener with each record appended (kind, data), a few ms after it is."""

    def __init__(self, state_dir: Path, every: float = 0.004) -> None:
        super().__init__(name="journal-tail", daemon=True)
        self.state_dir, self.every = state_dir, every
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self.stop = threading.Event()
        self._offsets: dict[Path, int] = {}

    def run(self) -> None:
        self.skip_to_end()
        while not self.stop.wait(self.every):
            for path in segment_paths(self.state_dir)[-2:]:
                offset = self._offsets.get(path, 0)
                try:
                    with open(path, "rb") as f:
                        f.seek(offset)
                        data = f.read()
                except OSError:
                    continue
                end = data.rfind(b"\n") + 1
                if not end:
                    continue
                self._offsets[path] = offset + end
                for line in data[:end].split(b"\n")[:-1]:
                    try:
                        record = json.loads(line)
                    except ValueError:
                        continue
                    for listener in list(self.listeners):
                        listener(str(record.get("kind")), record.get("data") or {})

    def skip_to_end(self) -> None:
        for path in segment_paths(self.state_dir):
            data = path.read_bytes()
            self._offsets[path] = data.rfind(b"\n") + 1


def fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path
