"""Suspend, resume and drift-accept requests: `syncd suspend`/`resume`/`drift accept` ask, the
daemon journals them.

A request is a file, `state_dir/requests/<id>.json` ({action, repo, stacks, reason, by}),
written atomically by whoever asks while a daemon holds the state_dir (only the lock holder may
write the journal). The daemon reads every request at start and in its main loop (at least
every 5 s, at once on SIGUSR1), journals a SUSPENDED, RESUMED or DRIFT_ACCEPTED record for each
stack (or, for a suspend or resume, one with stack "" for the whole repo), removes the file and
wakes the repo's worker. Requests are
answered in the order they were made (the id starts with the time). Any other process that
takes the lock (`syncd sync`, or `suspend`/`resume` without a daemon) journals those still
waiting first, so a suspension asked for while a `syncd sync` ran is never skipped by the next.

`read_request` is the one safe way to read a file someone left in state_dir (approvals too).
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import stat
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from syncd.core.journal_state import JournalState, Kind, Record
from syncd.core.text import bounded
from syncd.errors import UsageError
from syncd.journal.store import Journal

MAX_REQUEST_BYTES = 4096  # an approval
MAX_SUSPEND_BYTES = 256 * 1024  # a suspend or resume may name many stacks
ACTIONS = ("suspend", "resume", "drift_accept")  # drift_accept: `syncd drift accept`


def read_request(path: Path, limit: int = MAX_REQUEST_BYTES) -> bytes:
    """A request file's bytes: a regular file only (a FIFO planted here would block the
    daemon's loop, a symbolic link would be followed anywhere), and a small one."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"{path} is not a regular file")
        return f.read(limit + 1)[:limit]


@dataclass(frozen=True)
class Request:
    action: str  # suspend | resume
    repo: str
    stacks: tuple[str, ...]  # () = the whole repo
    reason: str
    by: str
    id: str = ""  # the file's name without .json; set when it is sent

    def as_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "repo": self.repo,
            "stacks": list(self.stacks),
            "reason": self.reason,
            "by": self.by,
        }


def _parse(doc: Any, id: str) -> Request:
    if not isinstance(doc, dict) or doc.get("action") not in ACTIONS:
        raise ValueError("not a suspend, resume or drift accept request")
    stacks, repo, reason, by = (doc.get(k) for k in ("stacks", "repo", "reason", "by"))
    if not (isinstance(stacks, list) and all(isinstance(v, str) for v in stacks)):
        raise ValueError("its stacks are not a list of names")
    if not (isinstance(repo, str) and isinstance(reason, str) and isinstance(by, str)):
        raise ValueError("a field is missing or of the wrong type")
    return Request(doc["action"], repo, tuple(stacks), bounded(reason), bounded(by, 200), id)


def leave(folder: Path, doc: dict[str, Any]) -> str:
    """Write `doc` into `folder` for the daemon, atomically (it never reads half a file), under
    a new id that starts with the time (so requests are read in the order they were made);
    returns the id."""
    body = json.dumps(doc).encode()
    if len(body) > MAX_SUSPEND_BYTES:
        raise UsageError(f"the request is over {MAX_SUSPEND_BYTES} bytes: name fewer stacks")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    id = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}"
    path = folder / f"{id}.json"
    tmp = path.with_name(f"{id}.tmp")
    tmp.write_bytes(body)
    os.replace(tmp, path)
    return id


class Requests:
    def __init__(self, state_dir: Path) -> None:
        self.folder = state_dir / "requests"

    def send(self, request: Request) -> Request:
        """Leave `request` for the daemon."""
        return dataclasses.replace(request, id=leave(self.folder, request.as_json()))

    def path(self, request: Request) -> Path:
        return self.folder / f"{request.id}.json"

    def pending(self) -> tuple[list[Request], list[Path]]:
        """The requests waiting, oldest first, and the files that are not requests."""
        found: list[Request] = []
        bad: list[Path] = []
        if not self.folder.is_dir():
            return found, bad
        for path in sorted(self.folder.glob("*.json")):
            try:
                found.append(_parse(json.loads(read_request(path, MAX_SUSPEND_BYTES)), path.stem))
            except FileNotFoundError:
                continue
            except (OSError, ValueError):  # json's errors are ValueErrors
                bad.append(path)
        return found, bad

    def done(self, request: Request) -> None:
        self.path(request).unlink(missing_ok=True)


def problem(request: Request, state: JournalState, repos: Collection[str]) -> str | None:
    """Why the request cannot be journaled (the repo is not in the config, a stack is not
    that repo's in the journal), or None."""
    if request.repo not in repos:
        return f"no repo {request.repo!r} in the config"
    for stack in request.stacks:
        view = state.stacks.get(stack)
        if view is None or view.repo != request.repo:
            return f"no stack {stack!r} of repo {request.repo!r} in the journal"
    return None


def record(journal: Journal, request: Request) -> list[Record]:
    """Journal the request: one record per stack, or one for the whole repo."""
    kind = {"suspend": Kind.SUSPENDED, "drift_accept": Kind.DRIFT_ACCEPTED}.get(
        request.action, Kind.RESUMED
    )
    extra = {"reason": request.reason} if kind is not Kind.RESUMED else {}
    if request.id:  # what `syncd suspend` follows the journal for
        extra["request"] = request.id
    return [
        journal.append(kind, repo=request.repo, stack=stack, by=request.by, **extra)
        for stack in request.stacks or ("",)
    ]


def deliver(state_dir: Path, journal: Journal, repos: Collection[str], log: Any) -> set[str]:
    """Journal every request waiting and remove it (a request that cannot be journaled is
    logged and removed too); returns the repos whose stacks a request named."""
    box = Requests(state_dir)
    found, bad = box.pending()
    for path in bad:
        try:
            path.unlink(missing_ok=True)
        except OSError:  # not ours to remove (a folder): left, and not reported every time
            continue
        log.warning("request.unreadable", file=str(path))
    concerned: set[str] = set()
    for request in found:
        why = problem(request, journal.state, repos)
        if why is None:
            record(journal, request)
            concerned.add(request.repo)
            log.info(
                f"request.{request.action}",
                repo=request.repo,
                stacks=list(request.stacks) or None,
                by=request.by,
                reason=request.reason or None,
            )
        else:
            log.warning("request.refused", action=request.action, by=request.by, reason=why)
        box.done(request)
    return concerned
