"""The dashboard's journal and stack pages over a real journal on disk: hostile values escaped,
records added since a view read incrementally, and a damaged journal shown as damaged."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from syncd.core.config import HttpConfig
from syncd.core.journal_state import Kind
from syncd.journal.store import Journal
from syncd.web.dashboard import Dashboard

EVIL = "<script>alert(1)</script>"


def app_of(journal: Journal, state_dir: Path) -> Any:
    config = SimpleNamespace(
        repos=[], backup=SimpleNamespace(url=None), state_dir=state_dir, http=HttpConfig()
    )
    return SimpleNamespace(
        journal=journal, config=config, mirror=None, outboxes=[], syncs={}, cfn="not read"
    )


def version(journal: Journal, stack: str, n: int) -> None:
    journal.append(
        Kind.VERSION,
        repo="r",
        stack=stack,
        version=n,
        commit="c" * 40,
        digest="d",
        action="update",
        parameters={"P": EVIL},
    )
    journal.append(Kind.RESULT, stack=stack, result="failed", message=f"no: {EVIL}")


def test_the_journal_page_escapes_and_says_when_the_journal_is_damaged(tmp_path: Path) -> None:
    state = tmp_path / "state"
    journal = Journal.open(state, writer=True)
    try:
        version(journal, EVIL, 1)
        dashboard = Dashboard(lambda: app_of(journal, state))
        answer = dashboard.answer("/journal", None)
        html = answer.body.decode()
        assert answer.code == 200 and "<script>alert" not in html
        assert "verified</span> 2 records, hash chain intact" in html
        # Damage a record on disk: the page still answers, and says where.
        segment = next((state / "journal").glob("segment-*.jsonl"))
        segment.write_bytes(segment.read_bytes().replace(b'"version":1', b'"version":7'))
        fresh = Dashboard(lambda: app_of(journal, state))
        answer = fresh.answer("/journal", None)
        assert answer.code == 200 and "damaged</span>" in answer.body.decode()
        assert "does not match its hash" in answer.body.decode()
    finally:
        journal.close()


def test_a_stack_page_reads_only_what_was_added_since_it_was_last_viewed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    journal = Journal.open(state, writer=True, segment_bytes=2000)  # many small segments
    try:
        for n in range(1, 6):
            version(journal, "db", n)
        dashboard = Dashboard(lambda: app_of(journal, state))
        first = dashboard.answer("/stacks/db", None).body.decode()
        assert "Version 5: update" in first and "<script>alert" not in first
        whole = []
        journal.records = lambda after=0: whole.append(after) or iter(())  # type: ignore[method-assign]
        version(journal, "db", 6)
        again = dashboard.answer("/stacks/db", None).body.decode()
        assert "Version 6: update" in again and whole == []  # the new records only
        assert again.count('href="/stacks/db?version=') == 6
    finally:
        journal.close()


def test_commit_summaries_from_a_mirror(tmp_path: Path) -> None:
    from syncd.sources.git import commit_summaries
    from tests.support.gitrepo import GitRepo

    repo = GitRepo(tmp_path / "repo")
    sha = repo.commit({"a.txt": "a"}, message=f"a subject {EVIL}\n\nand a body")
    found = commit_summaries(repo.bare, [sha, "0" * 40, "not-a-sha"])
    assert found[sha] == {"subject": f"a subject {EVIL}", "author": "test"}
    assert found["0" * 40] == {} and found["not-a-sha"] == {}
    assert commit_summaries(tmp_path / "nothing.git", [sha]) == {sha: {}}


def test_the_overview_shows_the_backups_backlog_and_since_when_it_fails(tmp_path: Path) -> None:
    from syncd.journal.mirror import Cursor

    state = tmp_path / "state"
    journal = Journal.open(state, writer=True)
    try:
        for stack in ("db", "web"):
            version(journal, stack, 1)
        times = [r.time for r in journal.records()]
        mirror = SimpleNamespace(cursor=Cursor(seq=1))  # only the first record is in S3
        app = app_of(journal, state)
        app.config.backup = SimpleNamespace(url="s3://backups/syncd/")
        app.mirror = mirror
        dashboard = Dashboard(lambda: app)

        def backup_line() -> str:
            answer = dashboard.answer("/", None)
            assert answer.code == 200
            html = answer.body.decode()
            start = html.index('<p class="backup">Backup to <code>s3://backups/syncd/</code>:')
            return html[start : html.index("</p>", start)]

        line = backup_line()
        assert f'3 record(s) not yet there, the oldest from <time datetime="{times[1]}"' in line
        assert "failing" not in line
        # Its uploads fail: since when, and why, written out.
        mirror.cursor = Cursor(
            seq=3, error="AccessDenied: not allowed", error_since="2026-12-02T09:15:00Z"
        )
        line = backup_line()
        assert f'1 record(s) not yet there, the oldest from <time datetime="{times[3]}"' in line
        assert '<span class="state failed">failed</span> failing since' in line
        assert '<time datetime="2026-12-02T09:15:00Z"' in line
        assert "2026-12-02 09:15:00 UTC</time>: AccessDenied: not allowed" in line
        # Caught up: every record is there.
        mirror.cursor = Cursor(seq=4)
        assert backup_line().endswith("every record is there.")
    finally:
        journal.close()
