"""Helpers for end-to-end tests: run the real `syncd` command as a separate process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest

from syncd.core.journal_format import GENESIS, encode
from tests.support.timing import PATIENCE

REPO_ROOT = Path(__file__).resolve().parents[2]


def syncd_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env.update(extra)
    return env


def run_syncd(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Any:
    """Run `syncd ARGS` (as `python -m syncd`) and return the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", "syncd", *args],
        capture_output=True,
        text=True,
        env=env or syncd_env(),
        timeout=timeout,
        cwd=REPO_ROOT,
    )


def start_syncd(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "syncd", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or syncd_env(),
        cwd=REPO_ROOT,
    )


@contextmanager
def running_daemon(*args: str, env: dict[str, str] | None = None) -> Iterator[Any]:
    """`syncd run ARGS` for the block; afterwards it is stopped (killed if still running) and
    its stderr is in `.stderr_text`."""
    proc = start_syncd("run", *args, env=env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr_text = proc.stderr.read() if proc.stderr else ""  # type: ignore[attr-defined]
        proc.wait()


def own_port(config: Path) -> Path:
    """The quick start's config with its listener on a free port (two suites may run at once)."""
    from tests.support.gitrepo import free_port

    text = config.read_text().replace("127.0.0.1:9280", f"127.0.0.1:{free_port()}")
    config.write_text(text)
    return config


def json_out(result: Any) -> Any:
    assert result.stdout, result.stderr
    return json.loads(result.stdout)


def wait_for(
    predicate: Callable[[], Any], timeout: float = PATIENCE, what: str = "condition"
) -> Any:
    """Poll `predicate` (reads of files the daemon writes) until it is truthy, or fail after
    `timeout` seconds, never fewer than PATIENCE: a busy machine is slow, not broken."""
    timeout = max(timeout, PATIENCE)
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def journal_records(state_dir: Path) -> list[dict[str, Any]]:
    path = state_dir / "journal" / "segment-000000000001.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            break  # a line being written right now
    return records


# --- the S3 backup -------------------------------------------------------------------------

BUCKET = "syncd-backups"


@pytest.fixture
def backup(aws: Any) -> Any:
    """The backup bucket in moto's S3, and a client to look into it (or forge it)."""
    s3 = boto3.client("s3", endpoint_url=aws.emulator.url, region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    return s3


def key_file(tmp_path: Path) -> str:
    """The key that signs the backup: on the host (and in the operator's safe), not in S3."""
    path = tmp_path / "backup.key"
    if not path.exists():
        path.write_text("k" * 40)
        path.chmod(0o600)
    return str(path)


FORGED_AT = "2026-12-01T00:00:00.000Z"


def chain(records: list[tuple[str, dict[str, Any]]]) -> bytes:
    """Journal records with a valid hash chain (anyone can compute one: it has no key)."""
    prev, lines = GENESIS, []
    for seq, (kind, data) in enumerate(records, start=1):
        line, prev = encode(seq, FORGED_AT, kind, data, prev)
        lines.append(line)
    return b"".join(lines)


def deployed(stack: str) -> list[tuple[str, dict[str, Any]]]:
    """What a forger writes: a history in which syncd deployed `stack`."""
    return [
        ("commit", {"repo": "r", "commit": "f" * 40, "previous": None, "forced": False}),
        (
            "version",
            {
                "repo": "r",
                "stack": stack,
                "version": 1,
                "commit": "f" * 40,
                "digest": "d" * 64,
                "action": "create",
                "deployment_file": f"deployments/{stack}.yaml",
                "template_file": "templates/topic.yaml",
                "parameters": {},
                "tags": {},
                "dependencies": [],
            },
        ),
        ("executing", {"stack": stack, "change_set": "arn:forged"}),
        (
            "result",
            {
                "stack": stack,
                "result": "succeeded",
                "stack_status": "CREATE_COMPLETE",
                "message": "",
                "outputs": {},
                "retryable": False,
            },
        ),
    ]
