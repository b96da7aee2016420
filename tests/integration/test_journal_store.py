"""`syncd.journal.store` on a real disk: durability, torn tails, damage, the lock, threads."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from syncd.core.journal_format import GENESIS, chain_hash
from syncd.core.journal_state import Kind, Record
from syncd.errors import JournalCorrupt, StateLocked
from syncd.journal import store
from syncd.journal.store import Journal, segment_name
from tests.support.timing import PATIENCE

SEGMENT = segment_name(1)

ROOT = Path(__file__).resolve().parents[2]

# One apply from commit to result, then a source error: enough for a non-trivial fold.
HISTORY: list[tuple[Kind, dict[str, Any]]] = [
    (
        Kind.COMMIT,
        {"repo": "app", "commit": "c1" * 20, "previous": None, "forced": False, "changes": []},
    ),
    (
        Kind.VERSION,
        {
            "repo": "app",
            "stack": "web",
            "version": 1,
            "commit": "c1" * 20,
            "digest": "d1",
            "action": "create",
            "template_file": "templates/web.yaml",
            "parameters": {"Size": "2"},
            "tags": {"team": "ops"},
            "dependencies": [],
        },
    ),
    (
        Kind.CHANGE_SET,
        {"stack": "web", "version": 1, "arn": "arn:cs/1", "name": "syncd-web-1", "changes": []},
    ),
    (Kind.EXECUTING, {"stack": "web", "version": 1}),
    (
        Kind.RESULT,
        {
            "stack": "web",
            "version": 1,
            "result": "succeeded",
            "stack_status": "CREATE_COMPLETE",
            "message": "",
            "outputs": {"Url": "https://example.com/ünïcode ✓"},
            "retryable": False,
        },
    ),
    (Kind.SOURCE_ERROR, {"repo": "app", "message": "cannot fetch https://***@host/x.git"}),
]


class Warnings(list[str]):
    def __call__(self, message: str) -> None:
        self.append(message)


def segment(state_dir: Path) -> Path:
    return state_dir / "journal" / SEGMENT


def write_history(state_dir: Path, count: int = len(HISTORY)) -> list[Record]:
    """Append HISTORY, then stop as a crash would: without the snapshot a clean close writes
    (the damage tests below edit segments, which a snapshot would rightly contradict)."""
    journal = Journal.open(state_dir, writer=True, warn=Warnings())
    try:
        return [journal.append(kind, **data) for kind, data in HISTORY[:count]]
    finally:
        journal.close()
        for snapshot in (state_dir / "journal").glob("snapshot-*.json"):
            snapshot.unlink()


def lines_of(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return data[:-1].split(b"\n")


def serialise(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


# --- append, reopen, fold ------------------------------------------------------------------


def test_append_then_reopen_gives_the_same_records_and_state(tmp_path: Path) -> None:
    warnings = Warnings()
    journal = Journal.open(tmp_path, writer=True, warn=warnings)
    appended = [journal.append(kind, **data) for kind, data in HISTORY]
    assert [r.seq for r in appended] == list(range(1, len(HISTORY) + 1))
    assert [(r.kind, dict(r.data)) for r in appended] == HISTORY
    assert list(journal.records()) == appended
    live_state = journal.state
    assert live_state.last_seq == len(HISTORY)
    assert live_state.stacks["web"].version == 1
    assert live_state.repos["app"].error is not None
    journal.close()

    for writer in (True, False):
        again = Journal.open(tmp_path, writer=writer, warn=warnings)
        try:
            assert list(again.records()) == appended
            assert again.state == live_state
        finally:
            again.close()
    assert warnings == []


def test_seq_continues_across_reopens(tmp_path: Path) -> None:
    first = write_history(tmp_path, 2)
    journal = Journal.open(tmp_path, writer=True, warn=Warnings())
    third = journal.append(Kind.SOURCE_OK, repo="app")
    journal.close()
    assert [r.seq for r in first] == [1, 2]
    assert third.seq == 3
    reopened = Journal.open(tmp_path, writer=False, warn=Warnings())
    assert [r.seq for r in reopened.records()] == [1, 2, 3]


def test_each_record_is_written_and_fsynced_before_append_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = segment(tmp_path)
    real_fsync = os.fsync
    synced: list[tuple[str, bytes | None]] = []

    def spy(fd: int) -> None:
        name = os.readlink(f"/proc/self/fd/{fd}")
        content = Path(name).read_bytes() if Path(name).is_file() else None
        synced.append((name, content))
        real_fsync(fd)

    monkeypatch.setattr(store.os, "fsync", spy)
    journal = Journal.open(tmp_path, writer=True, warn=Warnings())
    try:
        for kind, data in HISTORY:
            synced.clear()
            record = journal.append(kind, **data)
            # on disk, as the test reads it now
            lines = lines_of(path)
            assert len(lines) == record.seq
            on_disk = json.loads(lines[-1])
            assert (on_disk["seq"], on_disk["kind"], on_disk["data"]) == (
                record.seq,
                kind.value,
                data,
            )
            assert on_disk["time"] == record.time
            # and fsynced with that line in it before append returned
            segment_syncs = [content for name, content in synced if name == str(path)]
            assert segment_syncs, synced
            assert segment_syncs[-1] == path.read_bytes()
            if record.seq == 1:  # the new file's directory entry is made durable too
                assert str(path.parent) in [name for name, _ in synced]
    finally:
        journal.close()


def test_records_are_hash_chained_over_their_canonical_body(tmp_path: Path) -> None:
    write_history(tmp_path)
    prev = GENESIS
    for line in lines_of(segment(tmp_path)):
        obj = json.loads(line)
        assert set(obj) == {"seq", "time", "kind", "data", "prev", "hash"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", obj["time"])
        body = serialise({k: obj[k] for k in ("seq", "time", "kind", "data")})
        expected = hashlib.sha256(prev.encode() + body).hexdigest()
        assert obj["prev"] == prev
        assert obj["hash"] == expected
        assert chain_hash(prev, obj["seq"], obj["time"], obj["kind"], obj["data"]) == expected
        prev = obj["hash"]


def test_reader_of_a_missing_journal_is_empty_and_creates_nothing(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path, writer=False, warn=Warnings())
    assert list(journal.records()) == []
    assert journal.state.last_seq == 0
    assert not (tmp_path / "journal").exists()


# --- torn last record ----------------------------------------------------------------------

TORN_TAILS: dict[str, Callable[[bytes], bytes]] = {
    "partial-json": lambda line: line[: len(line) // 2],
    "one-byte": lambda line: line[:1],
    "complete-without-newline": lambda line: line,
    "zeros": lambda line: b"\0" * len(line),
}


@pytest.fixture(params=sorted(TORN_TAILS))
def torn(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, list[Record], bytes]:
    """A journal whose last record was cut short by a crash: (state_dir, the good records,
    the good bytes)."""
    records = write_history(tmp_path)
    path = segment(tmp_path)
    lines = lines_of(path)
    good = b"".join(line + b"\n" for line in lines[:-1])
    path.write_bytes(good + TORN_TAILS[request.param](lines[-1]))
    return tmp_path, records[:-1], good


def test_torn_tail_is_dropped_with_a_warning_and_truncated_for_a_writer(
    torn: tuple[Path, list[Record], bytes],
) -> None:
    state_dir, good_records, good_bytes = torn
    path = segment(state_dir)
    warnings = Warnings()
    journal = Journal.open(state_dir, writer=True, warn=warnings)
    try:
        assert len(warnings) == 1
        assert "torn" in warnings[0]
        assert str(path) in warnings[0]
        assert path.read_bytes() == good_bytes
        assert list(journal.records()) == good_records
        assert journal.state.last_seq == len(good_records)

        added = journal.append(Kind.SOURCE_OK, repo="app")
        assert added.seq == len(good_records) + 1
    finally:
        journal.close()

    warnings.clear()
    again = Journal.open(state_dir, writer=True, warn=warnings)
    try:
        assert warnings == []
        assert list(again.records()) == [*good_records, added]
        again.append(Kind.SOURCE_OK, repo="app")
    finally:
        again.close()
    lines = lines_of(path)
    assert len(lines) == len(good_records) + 2
    assert json.loads(lines[-2])["prev"] == json.loads(lines[-3])["hash"]
    assert json.loads(lines[-1])["prev"] == json.loads(lines[-2])["hash"]


def test_torn_tail_is_dropped_but_left_on_disk_for_a_reader(
    torn: tuple[Path, list[Record], bytes],
) -> None:
    state_dir, good_records, _ = torn
    path = segment(state_dir)
    before = path.read_bytes()
    warnings = Warnings()
    journal = Journal.open(state_dir, writer=False, warn=warnings)
    assert len(warnings) == 1
    assert "torn" in warnings[0]
    assert list(journal.records()) == good_records
    assert journal.state.last_seq == len(good_records)
    assert path.read_bytes() == before
    with pytest.raises(RuntimeError):
        journal.append(Kind.SOURCE_OK, repo="app")
    assert path.read_bytes() == before


# --- any other damage ----------------------------------------------------------------------


def _change_field(index: int, field: str, value: Any) -> Callable[[list[bytes]], list[bytes]]:
    def damage(lines: list[bytes]) -> list[bytes]:
        obj = json.loads(lines[index])
        if field.startswith("data."):
            obj["data"][field.removeprefix("data.")] = value
        else:
            obj[field] = value
        lines[index] = serialise(obj)
        return lines

    return damage


def _remove(lines: list[bytes]) -> list[bytes]:
    del lines[2]
    return lines


def _swap(lines: list[bytes]) -> list[bytes]:
    lines[2], lines[3] = lines[3], lines[2]
    return lines


def _insert_copy(lines: list[bytes]) -> list[bytes]:
    lines.insert(2, lines[1])
    return lines


def _insert_forged(lines: list[bytes]) -> list[bytes]:
    """A record that chains correctly onto record 2, placed before the real record 3."""
    prev = json.loads(lines[1])["hash"]
    time = json.loads(lines[1])["time"]
    data = {"repo": "app"}
    forged = {
        "seq": 3,
        "time": time,
        "kind": "source_ok",
        "data": data,
        "prev": prev,
        "hash": chain_hash(prev, 3, time, "source_ok", data),
    }
    lines.insert(2, serialise(forged))
    return lines


def _renumber_last(lines: list[bytes]) -> list[bytes]:
    """The last record given seq 9 and a hash that matches it: only its number is wrong."""
    obj = json.loads(lines[-1])
    obj["seq"] = 9
    obj["hash"] = chain_hash(obj["prev"], 9, obj["time"], obj["kind"], obj["data"])
    lines[-1] = serialise(obj)
    return lines


def _replace_line(index: int, text: bytes) -> Callable[[list[bytes]], list[bytes]]:
    def damage(lines: list[bytes]) -> list[bytes]:
        lines[index] = text
        return lines

    return damage


def _cut_middle(lines: list[bytes]) -> list[bytes]:
    lines[2] = lines[2][:40]
    return lines


DAMAGE: list[Any] = [
    # (id, damage, the line the message must name); each also with a torn tail after it
    ("changed-data", _change_field(2, "data.arn", "arn:cs/evil"), r"line 3\b"),
    ("changed-time", _change_field(2, "time", "2020-01-01T00:00:00.000Z"), r"line 3\b"),
    ("changed-kind", _change_field(2, "kind", "observed"), r"line 3\b"),
    ("changed-seq", _change_field(2, "seq", 9), r"line 3\b"),
    ("changed-prev", _change_field(2, "prev", "f" * 64), r"line 3\b"),
    ("changed-hash", _change_field(2, "hash", "f" * 64), r"line [34]\b"),
    ("changed-first", _change_field(0, "data.repo", "evil"), r"line 1\b"),
    ("changed-last-complete", _change_field(5, "data.message", "evil"), r"line 6\b"),
    ("renumbered-last", _renumber_last, r"line 6\b"),
    ("removed", _remove, r"line 3\b"),
    ("swapped", _swap, r"line 3\b"),
    ("inserted-copy", _insert_copy, r"line 3\b"),
    ("inserted-forged", _insert_forged, r"line [34]\b"),
    ("garbage", _replace_line(2, b"this is not json"), r"line 3\b"),
    ("empty-line", _replace_line(2, b""), r"line 3\b"),
    ("json-not-object", _replace_line(2, b"[1, 2, 3]"), r"line 3\b"),
    ("cut-middle", _cut_middle, r"line 3\b"),
]
TORN_TAIL = b'{"seq":7,"ti'


@pytest.mark.parametrize("writer", [True, False], ids=["writer", "reader"])
@pytest.mark.parametrize("tail", [b"", TORN_TAIL], ids=["", "torn-tail"])
@pytest.mark.parametrize(("damage", "names"), [pytest.param(d, n, id=i) for i, d, n in DAMAGE])
def test_damage_anywhere_else_raises_journal_corrupt_naming_file_and_record(
    tmp_path: Path,
    damage: Callable[[list[bytes]], list[bytes]],
    names: str,
    tail: bytes,
    writer: bool,
) -> None:
    write_history(tmp_path)
    path = segment(tmp_path)
    lines = damage(lines_of(path))
    data = b"".join(line + b"\n" for line in lines) + tail
    path.write_bytes(data)

    warnings = Warnings()
    with pytest.raises(JournalCorrupt) as caught:
        Journal.open(tmp_path, writer=writer, warn=warnings)
    message = str(caught.value)
    assert str(path) in message
    assert re.search(names, message), message
    assert path.read_bytes() == data  # a damaged journal is never "repaired" in place


def test_records_rereads_and_sees_later_damage(tmp_path: Path) -> None:
    write_history(tmp_path)
    journal = Journal.open(tmp_path, writer=False, warn=Warnings())
    path = segment(tmp_path)
    path.write_bytes(b"".join(line + b"\n" for line in _swap(lines_of(path))))
    with pytest.raises(JournalCorrupt, match=re.escape(str(path))):
        list(journal.records())


# --- one writer ----------------------------------------------------------------------------

HOLDER = """
import sys
from pathlib import Path
from syncd.core.journal_state import Kind
from syncd.journal.store import Journal

journal = Journal.open(Path(sys.argv[1]), writer=True, warn=lambda message: None)
journal.append(Kind.SOURCE_OK, repo="held")
print("ready", flush=True)
sys.stdin.read()
journal.close()
print("closed", flush=True)
"""


@pytest.fixture
def held(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding `tmp_path` as the journal's writer until its stdin closes."""
    write_history(tmp_path, 2)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        line = proc.stdout.readline()
        assert line == "ready\n", (line, proc.stderr.read() if proc.stderr else "")
        yield proc
    finally:
        if proc.poll() is None:
            proc.stdin.close()
            proc.wait(timeout=30)


def test_second_writer_is_refused_while_another_process_holds_the_state_dir(
    tmp_path: Path, held: subprocess.Popen[str]
) -> None:
    with pytest.raises(StateLocked) as caught:
        Journal.open(tmp_path, writer=True, warn=Warnings())
    assert str(held.pid) in str(caught.value)
    assert str(tmp_path) in str(caught.value)

    # A reader still works, and sees what the other process wrote.
    before = segment(tmp_path).read_bytes()
    reader = Journal.open(tmp_path, writer=False, warn=Warnings())
    records = list(reader.records())
    assert [r.seq for r in records] == [1, 2, 3]
    assert records[-1].data == {"repo": "held"}
    with pytest.raises(RuntimeError):
        reader.append(Kind.SOURCE_OK, repo="reader")
    reader.close()
    assert segment(tmp_path).read_bytes() == before

    # Once the other process is gone, the lock is free again.
    assert held.stdin is not None and held.stdout is not None
    held.stdin.close()
    assert held.stdout.readline() == "closed\n"
    assert held.wait(timeout=30) == 0
    journal = Journal.open(tmp_path, writer=True, warn=Warnings())
    try:
        assert journal.append(Kind.SOURCE_OK, repo="next").seq == 4
    finally:
        journal.close()


def test_lock_is_exclusive_within_a_process_and_released_by_close(tmp_path: Path) -> None:
    first = Journal.open(tmp_path, writer=True, warn=Warnings())
    with pytest.raises(StateLocked):
        Journal.open(tmp_path, writer=True, warn=Warnings())
    first.append(Kind.SOURCE_OK, repo="app")
    first.close()
    second = Journal.open(tmp_path, writer=True, warn=Warnings())
    try:
        assert second.append(Kind.SOURCE_OK, repo="app").seq == 2
    finally:
        second.close()


def test_append_on_a_read_only_journal_raises(tmp_path: Path) -> None:
    write_history(tmp_path, 1)
    before = segment(tmp_path).read_bytes()
    reader = Journal.open(tmp_path, writer=False, warn=Warnings())
    with pytest.raises(RuntimeError, match="read-only"):
        reader.append(Kind.SOURCE_OK, repo="app")
    assert segment(tmp_path).read_bytes() == before
    assert reader.state.last_seq == 1


def test_append_after_close_raises(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path, writer=True, warn=Warnings())
    journal.append(Kind.SOURCE_OK, repo="app")
    journal.close()
    with pytest.raises(RuntimeError):
        journal.append(Kind.SOURCE_OK, repo="app")
    assert len(lines_of(segment(tmp_path))) == 1


# --- threads -------------------------------------------------------------------------------


def test_concurrent_appends_make_one_valid_chain(tmp_path: Path) -> None:
    threads_n, per_thread = 8, 200
    journal = Journal.open(tmp_path, writer=True, warn=Warnings())
    heard: list[int] = []
    journal.subscribe(lambda record: heard.append(record.seq))
    returned: list[list[Record]] = [[] for _ in range(threads_n)]
    errors: list[BaseException] = []
    start = threading.Barrier(threads_n)

    def work(t: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                returned[t].append(journal.append(Kind.SOURCE_OK, repo=f"r{t}", i=i))
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    journal.close()
    assert errors == []

    total = threads_n * per_thread
    assert heard == list(range(1, total + 1))
    assert sorted(r.seq for rs in returned for r in rs) == list(range(1, total + 1))
    for t, records in enumerate(returned):
        assert [r.data["i"] for r in records] == list(range(per_thread)), t
        assert [r.seq for r in records] == sorted(r.seq for r in records)

    reopened = Journal.open(tmp_path, writer=False, warn=Warnings())  # verifies the chain
    on_disk = list(reopened.records())
    assert [r.seq for r in on_disk] == list(range(1, total + 1))
    assert on_disk == sorted((r for rs in returned for r in rs), key=lambda r: r.seq)
    assert reopened.state.last_seq == total
    assert len(lines_of(segment(tmp_path))) == total


def test_a_failed_write_is_undone_and_the_journal_stays_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import syncd.journal.store as store

    journal = Journal.open(tmp_path, writer=True, warn=lambda _: None)
    journal.append(Kind.SOURCE_OK, repo="a")
    size = segment(tmp_path).stat().st_size
    real_fsync = os.fsync
    calls = {"n": 0}

    def failing_fsync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(store.os, "fsync", failing_fsync)
    with pytest.raises(JournalCorrupt, match="record seq 2 could not be written"):
        journal.append(Kind.SOURCE_OK, repo="b")
    assert segment(tmp_path).stat().st_size == size  # the partial line was cut off
    assert journal.state.last_seq == 1  # not acknowledged, not folded in
    record = journal.append(Kind.SOURCE_OK, repo="c")
    assert record.seq == 2
    journal.close()
    reopened = Journal.open(tmp_path, writer=False, warn=lambda _: None)
    assert [r.data["repo"] for r in reopened.records()] == ["a", "c"]


def test_a_failed_write_that_cannot_be_undone_stops_all_appends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import syncd.journal.store as store

    journal = Journal.open(tmp_path, writer=True, warn=lambda _: None)
    journal.append(Kind.SOURCE_OK, repo="a")

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(store.os, "fsync", broken_fsync)
    with pytest.raises(JournalCorrupt):
        journal.append(Kind.SOURCE_OK, repo="b")
    monkeypatch.undo()
    with pytest.raises(JournalCorrupt, match="could not be undone"):
        journal.append(Kind.SOURCE_OK, repo="c")


def test_a_symlinked_lock_file_is_refused_and_its_target_untouched(tmp_path):
    from syncd.errors import StateLocked

    state = tmp_path / "state"
    state.mkdir()
    target = tmp_path / "precious"
    target.write_text("keep me")
    (state / "syncd.lock").symlink_to(target)
    with pytest.raises(StateLocked, match=r"syncd\.lock cannot be used as the lock"):
        Journal.open(state, writer=True)
    assert target.read_text() == "keep me"


def test_the_lock_holder_pid_is_believed_only_when_the_kernel_confirms_it(tmp_path):
    import os

    from syncd.journal.store import LockHolder, lock_holder, lock_state_dir

    state = tmp_path / "state"
    state.mkdir()
    assert not lock_holder(state).held
    held = lock_state_dir(state)  # this process: the file names it, /proc/locks agrees
    try:
        assert lock_holder(state) == LockHolder(True, os.getpid())
        held.seek(0)
        held.truncate()
        held.write(b"1")  # a forged pid: init must not be signalled
        held.flush()
        found = lock_holder(state)
        assert found.held and found.pid is None
    finally:
        held.close()
    assert not lock_holder(state).held


def test_a_fifo_among_approval_requests_is_skipped_without_blocking(tmp_path):
    import os
    import threading

    from syncd.approvals import Approval, Approvals

    approvals = Approvals(tmp_path)
    approvals.request(Approval("app", "arn:cs", "ops@host"))
    os.mkfifo(tmp_path / "approvals" / "evil.json")
    (tmp_path / "approvals" / "link.json").symlink_to(tmp_path / "approvals" / "app.json")
    result: list[object] = []
    reader = threading.Thread(target=lambda: result.append(approvals.pending()), daemon=True)
    reader.start()
    reader.join(PATIENCE)  # a read blocked on the fifo would never end
    assert result == [{"app": Approval("app", "arn:cs", "ops@host")}]
