"""How `syncd suspend`/`resume` read a running daemon's answer back from the journal: the row
they print comes from the same journal state in which they saw the request recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from syncd.cli.operate import _ask_daemon
from syncd.core.journal_state import Kind
from syncd.journal.store import Journal
from syncd.requests import Request, deliver


class Log:
    def info(self, event: str, **kw: Any) -> None:
        pass

    warning = info


def test_a_resume_recorded_while_the_command_reads_the_journal_is_shown_resumed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = Journal.open(tmp_path, writer=True, warn=lambda m: None)
    try:
        daemon.append(Kind.INVALID, repo="r", stack="s", commit="c" * 40, file="f", reason="x")
        daemon.append(Kind.SUSPENDED, repo="r", stack="s", reason="hold", by="t@h")
        seen = daemon.state.last_seq
        read_records = Journal.records_after
        taken: list[int] = []

        def daemon_records_it_now(self: Journal, seq: int) -> list[Any]:
            # The daemon takes the request after the command read the state, before it reads
            # the records: the worst moment.
            if not taken:
                taken.append(len(deliver(tmp_path, daemon, ["r"], Log())))
            return read_records(self, seq)

        monkeypatch.setattr(Journal, "records_after", daemon_records_it_now)
        asked = Request("resume", "r", ("s",), "", "t@h")
        rows = _ask_daemon(tmp_path, [asked], None, seen)
    finally:
        daemon.close()
    assert taken == [1]
    assert [(r["stack"], r["result"]) for r in rows] == [("s", "resumed")]
    assert "suspended" not in rows[0]["message"], rows
