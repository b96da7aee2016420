"""`syncd sync` and `syncd rollback` while a daemon runs: ask it, and follow the journal.

Only the process that holds state_dir's lock writes the journal and applies its stacks. While
`syncd run` holds it, these commands leave an ask, `state_dir/asks/<id>.json` ({action: sync |
rollback, repo, stacks, by, deadline, version, commit}), and wake the daemon with SIGUSR1:

    command                       daemon main loop             repo worker
    send ask, SIGUSR1  ─────────▶ take: journal ASKED,  ─────▶ before its next pass: each
    follow the journal             remove the file, wake        rollback asked; then the pass;
      ASKED? ANSWERED? ◀────────────────────────────────────── journal ANSWERED per ask

Once ASKED is journaled the ask is durable: a daemon killed before answering answers it after
its restart, unless its deadline (the command's --wait) has passed: a rollback asked an hour
ago must not run by surprise, so a late one is answered "expired" and nothing is done. A sync
ask runs the repo's whole pass (as a poll would), its answer names the stacks asked for.

An ask, like any file in state_dir written by someone other than the daemon, is untrusted: read
with `read_request` (regular files only, bounded), checked field by field before it is journaled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from syncd.apply import Outcome
from syncd.core.journal_state import JournalState, Kind, Record
from syncd.core.text import bounded
from syncd.errors import SyncdError, UsageError
from syncd.journal.store import Journal
from syncd.reconcile import PassReport, RepoSync
from syncd.requests import MAX_SUSPEND_BYTES, leave, read_request

ACTIONS = ("sync", "rollback")


@dataclass(frozen=True)
class Ask:
    action: str  # sync | rollback
    repo: str
    stacks: tuple[str, ...] = ()  # sync: the stacks to report (() = all); rollback: the one
    by: str = ""
    deadline: str = ""  # ISO 8601 UTC: answered "expired" (nothing done) when taken later
    version: int | None = None  # rollback: the version whose desired state is applied again
    commit: str | None = None  # rollback: the commit that version was applied from
    id: str = ""  # the file's name without .json; set when it is sent

    def as_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "repo": self.repo,
            "stacks": list(self.stacks),
            "by": self.by,
            "deadline": self.deadline,
            "version": self.version,
            "commit": self.commit,
        }


def deadline_in(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(timespec="seconds")


def _parse(doc: Any, id: str) -> Ask:
    if not isinstance(doc, dict) or doc.get("action") not in ACTIONS:
        raise ValueError("not a sync or rollback ask")
    stacks = doc.get("stacks")
    if not (isinstance(stacks, list) and all(isinstance(v, str) for v in stacks)):
        raise ValueError("its stacks are not a list of names")
    repo, by, deadline = (doc.get(k) for k in ("repo", "by", "deadline"))
    if not (isinstance(repo, str) and isinstance(by, str) and isinstance(deadline, str)):
        raise ValueError("a field is missing or of the wrong type")
    datetime.fromisoformat(deadline)  # ValueError if it is not a time
    version, commit = doc.get("version"), doc.get("commit")
    if doc["action"] == "rollback" and not (
        len(stacks) == 1
        and isinstance(version, int)
        and not isinstance(version, bool)
        and isinstance(commit, str)
    ):
        raise ValueError("a rollback names one stack, a version and a commit")
    return Ask(
        doc["action"],
        repo,
        tuple(stacks),
        bounded(by, 200),
        deadline,
        version if doc["action"] == "rollback" else None,
        bounded(commit, 64) if isinstance(commit, str) and doc["action"] == "rollback" else None,
        id,
    )


class AskBox:
    """The folder of asks waiting for the daemon."""

    def __init__(self, state_dir: Path) -> None:
        self.folder = state_dir / "asks"

    def send(self, ask: Ask) -> Ask:
        """Leave `ask` for the daemon."""
        return dataclasses.replace(ask, id=leave(self.folder, ask.as_json()))

    def path(self, ask: Ask) -> Path:
        return self.folder / f"{ask.id}.json"

    def withdraw(self, ask: Ask) -> None:
        self.path(ask).unlink(missing_ok=True)

    def take(self, journal: Journal, repos: Collection[str], log: Any) -> set[str]:
        """Journal every ask waiting (ASKED) and remove its file; an ask that is not valid is
        logged and removed. Returns the repos asked for."""
        concerned: set[str] = set()
        if not self.folder.is_dir():
            return concerned
        for path in sorted(self.folder.glob("*.json")):
            try:
                ask = _parse(json.loads(read_request(path, MAX_SUSPEND_BYTES)), path.stem)
            except FileNotFoundError:  # withdrawn by its command meanwhile
                continue
            except (OSError, ValueError) as exc:  # json's errors are ValueErrors
                log.warning("ask.unreadable", file=str(path), error=str(exc)[:200])
                _remove(path)
                continue
            if ask.repo not in repos:
                log.warning("ask.refused", action=ask.action, by=ask.by, reason="unknown repo")
            else:
                journal.append(Kind.ASKED, request=ask.id, **ask.as_json())
                log.info(f"ask.{ask.action}", repo=ask.repo, by=ask.by, stacks=list(ask.stacks))
                concerned.add(ask.repo)
            _remove(path)
        return concerned


def _remove(path: Path) -> None:
    # One that is not ours to remove (a folder) is left, and logged each time it is read.
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def open_asks(state: JournalState, repo: str) -> list[Ask]:
    """The asks journaled for `repo` and not answered yet, oldest first."""
    view = state.repos.get(repo)
    asks = []
    for request, d in (view.asked if view is not None else {}).items():
        version = d.get("version")
        asks.append(
            Ask(
                str(d["action"]),
                repo,
                tuple(str(s) for s in d.get("stacks") or ()),
                str(d.get("by", "")),
                str(d["deadline"]),
                version if isinstance(version, int) else None,
                d.get("commit") if isinstance(d.get("commit"), str) else None,
                request,
            )
        )
    return asks


def serve(sync: RepoSync, now: datetime | None = None) -> PassReport:
    """One pass of a daemon's repo worker, answering what was asked of it: the rollbacks
    first, then the pass, then an ANSWERED record for each ask (an ask that came in while the
    pass ran is answered by the next one)."""
    journal = sync.journal
    asks = open_asks(journal.state, sync.repo.name)
    now = now or datetime.now(UTC)
    late = [a for a in asks if _expired(a.deadline, now)]
    for ask in late:
        _answer(journal, ask, error="expired: the daemon took it after its deadline; ask again")
    asks = [a for a in asks if a not in late]
    for ask in (a for a in asks if a.action == "rollback"):
        _rollback(sync, ask)
    syncs = [a for a in asks if a.action == "sync"]
    try:
        report = sync.run_pass(full=bool(syncs))  # what a standalone `sync` does
    except Exception as exc:
        for ask in syncs:
            _answer(journal, ask, error=f"the pass failed: {type(exc).__name__}: {exc}"[:500])
        raise
    for ask in syncs:
        _answer(journal, ask, report=report)
    return report


def _expired(deadline: str, now: datetime) -> bool:
    """Whether an ask's deadline has passed; one that is not a time (a journal written by hand)
    has. A time without a zone is taken as UTC."""
    try:
        at = datetime.fromisoformat(deadline)
    except ValueError:
        return True
    return (at if at.tzinfo else at.replace(tzinfo=UTC)) < now


def _rollback(sync: RepoSync, ask: Ask) -> None:
    stack = ask.stacks[0]
    assert ask.version is not None and ask.commit is not None  # _parse saw to it
    try:
        outcome = sync.rollback(stack, ask.version, ask.commit, ask.by)
    except SyncdError as exc:  # UsageError too: the commit is gone, it no longer describes it
        _answer(sync.journal, ask, error=str(exc), refused=isinstance(exc, UsageError))
        return
    except Exception as exc:  # a bug: answered, or every pass would try this rollback again
        _answer(sync.journal, ask, error=f"the rollback failed: {type(exc).__name__}: {exc}"[:500])
        raise
    row = next((h for h in reversed(sync.journal.state.history) if h.stack == stack), None)
    version = row.version if row and row.rollback_of == ask.version else None
    _answer(
        sync.journal,
        ask,
        report=PassReport(sync.repo.name, ask.commit, {stack: outcome}),
        version=version,
    )


def _answer(
    journal: Journal,
    ask: Ask,
    *,
    report: PassReport | None = None,
    error: str | None = None,
    refused: bool = False,
    version: int | None = None,
) -> None:
    wanted = set(ask.stacks)
    outcomes = {
        n: o.value
        for n, o in (report.outcomes if report else {}).items()
        if not wanted or n in wanted
    }
    invalid = {
        n: r for n, r in (report.invalid if report else {}).items() if not wanted or n in wanted
    }
    journal.append(
        Kind.ANSWERED,
        repo=ask.repo,
        request=ask.id,
        error=error,
        source_error=report.source_error if report else None,
        commit=report.commit if report else None,
        outcomes=outcomes,
        invalid=invalid,
        **({"version": version, "refused": refused} if ask.action == "rollback" else {}),
    )


_OUTCOMES = {o.value for o in Outcome}


@dataclass(frozen=True)
class Answer:
    """What the daemon journaled for one ask."""

    ask: Ask
    taken: bool = False  # ASKED is in the journal
    record: Mapping[str, Any] | None = None  # the ANSWERED record's data

    def report(self) -> PassReport:
        """The answer as the report a standalone pass would have made."""
        d = self.record or {}
        return PassReport(
            self.ask.repo,
            d.get("commit"),
            {n: Outcome(v) for n, v in (d.get("outcomes") or {}).items() if v in _OUTCOMES},
            dict(d.get("invalid") or {}),
            d.get("source_error"),
        )


def answers(asks: Iterable[Ask], records: Iterable[Record]) -> dict[str, Answer]:
    """Each ask's answer so far, from the journal's records."""
    found = {a.id: Answer(a) for a in asks}
    for record in records:
        request = record.data.get("request")
        if request not in found:
            continue
        if record.kind is Kind.ASKED:
            found[request] = dataclasses.replace(found[request], taken=True)
        elif record.kind is Kind.ANSWERED:
            found[request] = dataclasses.replace(found[request], taken=True, record=record.data)
    return found


TAKE_SECONDS = 15.0  # how long a command waits for the daemon to take an ask (it looks every 5 s)


def ask_daemon(state_dir: Path, asks: list[Ask], pid: int | None, seen: int) -> list[Answer]:
    """Send the asks, wake the daemon, and follow the journal (records after seq `seen`) until
    each is answered or its deadline passes. Raises SyncdError if the daemon does not take them
    in time (they are withdrawn) or stops before answering (the ask stays journaled: it answers
    after its restart if the deadline allows)."""
    import signal

    from syncd.journal.store import lock_holder

    box = AskBox(state_dir)
    sent = [box.send(a) for a in asks]
    if pid is not None:
        with contextlib.suppress(OSError):  # else the daemon finds them within its loop period
            os.kill(pid, signal.SIGUSR1)
    take_by = time.monotonic() + TAKE_SECONDS
    deadline = max(datetime.fromisoformat(a.deadline) for a in sent)
    withdrawn = False
    while True:
        gone = {a.id for a in sent if not box.path(a).exists()}  # before the journal is read
        journal = Journal.open(state_dir, writer=False, warn=lambda m: None)
        try:
            found = answers(sent, journal.records_after(seen))
        finally:
            journal.close()
        if all(f.record is not None for f in found.values()):
            return list(found.values())
        untaken = [f.ask for f in found.values() if not f.taken]
        if untaken and withdrawn:
            raise SyncdError(
                f"the daemon holding {state_dir} did not take the request within "
                f"{TAKE_SECONDS:g} s (is it stuck? see its log); the request is withdrawn"
            )
        if any(a.id in gone for a in untaken):
            raise SyncdError("the daemon refused the request (see its log)")
        if untaken and time.monotonic() > take_by:
            for ask in untaken:
                box.withdraw(ask)
            withdrawn = True  # one more look: it may have taken them as they went
            continue
        if not lock_holder(state_dir).held:
            raise SyncdError(
                "the daemon stopped before it answered; a daemon started before "
                f"{deadline.isoformat(timespec='seconds')} answers what it took"
            )
        if datetime.now(UTC) > deadline:
            raise SyncdError(
                "no answer before the deadline (--wait); the daemon goes on with what it "
                "took: see `syncd status` and `syncd history`"
            )
        time.sleep(0.2)
