"""Real Git repositories for tests: a bare "server" repo and a working clone that pushes to it."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "GIT_TERMINAL_PROMPT": "0",
}


def git(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    env = {**os.environ, **_ENV, **(env or {})}
    out = subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


class GitRepo:
    """`bare` is what syncd follows; `work` is a clone to edit, commit and push from."""

    def __init__(self, root: Path, branch: str = "main") -> None:
        self.bare = root / "remote.git"
        self.work = root / "work"
        self.branch = branch
        self.bare.mkdir(parents=True)
        git("init", "--quiet", "--bare", "--initial-branch", branch, cwd=self.bare)
        # Let tests delete the followed branch on the "server" (a bare repo refuses by default).
        git("config", "receive.denyDeleteCurrent", "ignore", cwd=self.bare)
        self.work.mkdir()
        git("init", "--quiet", "--initial-branch", branch, cwd=self.work)
        git("remote", "add", "origin", str(self.bare), cwd=self.work)

    def write(self, files: dict[str, str | None]) -> None:
        """Write (or, with None, delete) files in the working clone."""
        for path, text in files.items():
            target = self.work / path
            if text is None:
                target.unlink()
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)

    def commit(
        self,
        files: dict[str, str | None],
        message: str = "change",
        push: bool = True,
        signed_by: Any = None,
    ) -> str:
        """`signed_by`: a key of tests.support.signing that signs the commit."""
        self.write(files)
        git("add", "--all", cwd=self.work)
        args = ["commit", "--quiet", "--allow-empty", "-m", message]
        if signed_by is not None:
            options = signed_by.sign_options()
            env = signed_by.env() if hasattr(signed_by, "env") else None
            git(*options, *args, "-S", cwd=self.work, env=env)
        else:
            git(*args, cwd=self.work)
        if push:
            self.push()
        return self.head()

    def push(self, force: bool = False) -> None:
        args = ["push", "--quiet", "origin", f"HEAD:refs/heads/{self.branch}"]
        if force:
            args.insert(1, "--force")
        git(*args, cwd=self.work)

    def head(self) -> str:
        return git("rev-parse", "HEAD", cwd=self.work)

    def rewrite_last(self, files: dict[str, str | None], message: str = "rewritten") -> str:
        """Amend the last commit and force-push it (history rewritten on the server)."""
        self.write(files)
        git("add", "--all", cwd=self.work)
        git("commit", "--quiet", "--amend", "-m", message, cwd=self.work)
        self.push(force=True)
        return self.head()

    def delete_branch(self) -> None:
        git("push", "--quiet", "origin", f":refs/heads/{self.branch}", cwd=self.work)


# Ports for servers a test starts, below Linux's ephemeral range (32768 and up): a port handed out
# here and closed until the server binds it is never taken meanwhile by another process's
# outgoing connection or bind to port 0. Each pytest-xdist worker (up to 8) has its own block, so
# workers do not pick the same port; it is entered at a random place, so two suites at once
# seldom do (a port is checked free when picked, so only a pick-to-bind race remains).
_PORT_BLOCK = 1500
_FIRST_PORT = 20000
_next_port: list[int] = []


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A loopback TCP port that is free now, for a server the test is about to start."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    base = _FIRST_PORT + (int(worker) % 8 if worker.isdigit() else 0) * _PORT_BLOCK
    if base + _PORT_BLOCK > _ephemeral_start():  # a host with a wider ephemeral range
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    if not _next_port:
        _next_port.append(random.randrange(_PORT_BLOCK))
    for _ in range(_PORT_BLOCK):
        port = base + _next_port[0] % _PORT_BLOCK
        _next_port[0] += 1
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port in {base}-{base + _PORT_BLOCK - 1}")


@contextmanager
def git_daemon(base: Path) -> Iterator[str]:
    """`git daemon` serving every repo under `base` on loopback; yields git://127.0.0.1:PORT."""
    port = free_port()
    proc = subprocess.Popen(
        [
            "git",
            "daemon",
            "--reuseaddr",
            "--export-all",
            f"--base-path={base}",
            "--listen=127.0.0.1",
            f"--port={port}",
            "--informative-errors",
            str(base),
        ],
        env={**os.environ, **_ENV},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("git daemon did not start") from None
                time.sleep(0.02)
        yield f"git://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
