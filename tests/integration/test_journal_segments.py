"""The journal across segments and snapshots, on a real disk: rotation, snapshots that spare a
full replay, damage between segments, and SIGKILL at any moment losing nothing acknowledged."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from syncd.core.journal_state import Kind, fold
from syncd.errors import JournalCorrupt
from syncd.journal.store import Journal, segment_name, segments


def fill(state_dir: Path, count: int, **options: int) -> Journal:
    journal = Journal.open(state_dir, writer=True, warn=lambda _: None, **options)
    for i in range(count):
        journal.append(Kind.COMMIT, repo=f"r{i % 3}", commit=f"{i:040x}", previous=None)
    return journal


def names(state_dir: Path, pattern: str) -> list[str]:
    return sorted(p.name for p in (state_dir / "journal").glob(pattern))


def test_segments_rotate_and_are_named_by_their_first_record(tmp_path: Path) -> None:
    journal = fill(tmp_path, 40, segment_bytes=1000, snapshot_every=10_000)
    journal.close()
    found = segments(tmp_path / "journal")
    assert len(found) > 3
    assert found[0].path.name == segment_name(1) == "segment-000000000001.jsonl"
    for seg in found:
        first = json.loads(seg.path.read_bytes().split(b"\n", 1)[0])
        assert first["seq"] == seg.first_seq
        assert seg.path.name == segment_name(seg.first_seq)
    reopened = Journal.open(tmp_path, writer=True, warn=lambda _: None, segment_bytes=1000)
    assert [r.seq for r in reopened.records()] == list(range(1, 41))
    assert reopened.append(Kind.SOURCE_OK, repo="r0").seq == 41
    reopened.close()


def test_snapshots_are_written_kept_two_deep_and_fold_on_exactly(tmp_path: Path) -> None:
    journal = fill(tmp_path, 35, snapshot_every=10)
    full = fold(journal.records()).to_snapshot()
    assert names(tmp_path, "snapshot-*.json") == [
        "snapshot-000000000020.json",
        "snapshot-000000000030.json",
    ]
    journal.close()  # a clean close snapshots the rest
    assert names(tmp_path, "snapshot-*.json")[-1] == "snapshot-000000000035.json"
    for writer in (True, False):
        reopened = Journal.open(tmp_path, writer=writer, warn=lambda _: None)
        assert reopened.state.to_snapshot() == full
        reopened.close()


def test_a_reader_trusts_the_snapshot_and_a_writer_checks_everything(tmp_path: Path) -> None:
    fill(tmp_path, 30, segment_bytes=1000).close()
    first = segments(tmp_path / "journal")[0].path
    data = bytearray(first.read_bytes())
    data[40] ^= 0x01
    first.write_bytes(bytes(data))
    reader = Journal.open(tmp_path, writer=False, warn=lambda _: None)
    assert reader.state.last_seq == 30  # status stays quick: old segments are not re-read
    with pytest.raises(JournalCorrupt, match=rf"{first.name}: record seq 1 \(line 1\)"):
        Journal.open(tmp_path, writer=True, warn=lambda _: None)


def test_a_missing_middle_segment_is_named(tmp_path: Path) -> None:
    fill(tmp_path, 40, segment_bytes=1000).close()
    found = segments(tmp_path / "journal")
    found[1].path.unlink()
    with pytest.raises(JournalCorrupt, match=rf"{found[2].path.name}: starts at seq .*missing"):
        Journal.open(tmp_path, writer=True, warn=lambda _: None)


def test_records_cut_off_at_a_segment_boundary_are_caught_by_the_snapshot(tmp_path: Path) -> None:
    fill(tmp_path, 40, segment_bytes=1000).close()
    segments(tmp_path / "journal")[-1].path.unlink()
    with pytest.raises(JournalCorrupt, match="seq 40 was written: records were cut off"):
        Journal.open(tmp_path, writer=True, warn=lambda _: None)


def test_a_damaged_snapshot_is_skipped_with_a_warning(tmp_path: Path) -> None:
    journal = fill(tmp_path, 25, snapshot_every=10)
    full = fold(journal.records()).to_snapshot()
    journal.close()
    newest = tmp_path / "journal" / names(tmp_path, "snapshot-*.json")[-1]
    newest.write_bytes(newest.read_bytes().replace(b'"r1"', b'"r9"', 1))
    warnings: list[str] = []
    reopened = Journal.open(tmp_path, writer=True, warn=warnings.append)
    assert reopened.state.to_snapshot() == full
    assert any(newest.name in w and "unusable" in w for w in warnings), warnings
    reopened.close()


def test_a_snapshot_of_another_journal_is_refused(tmp_path: Path) -> None:
    fill(tmp_path / "a", 12, snapshot_every=10).close()
    fill(tmp_path / "b", 12, snapshot_every=10).close()
    b_journal = tmp_path / "b" / "journal"
    for snap in b_journal.glob("snapshot-*.json"):
        snap.unlink()
    source = tmp_path / "a" / "journal" / "snapshot-000000000012.json"
    (b_journal / source.name).write_bytes(source.read_bytes().replace(b"r0", b"rX"))
    # Edited, its checksum fails: skipped. Copied intact, it contradicts b's records: refused.
    Journal.open(tmp_path / "b", writer=True, warn=lambda _: None).close()
    for snap in b_journal.glob("snapshot-*.json"):
        snap.unlink()
    (b_journal / source.name).write_bytes(source.read_bytes())
    assert json.loads(source.read_bytes())["seq"] == 12
    with pytest.raises(JournalCorrupt, match="does not match record seq 12"):
        Journal.open(tmp_path / "b", writer=True, warn=lambda _: None)


APPENDER = """
import sys
from pathlib import Path
from syncd.core.journal_state import Kind
from syncd.journal.store import Journal

journal = Journal.open(Path(sys.argv[1]), writer=True, warn=lambda m: None,
                       segment_bytes=2000, snapshot_every=7)
while True:
    record = journal.append(Kind.COMMIT, repo="r", commit="c" * 40, previous=None)
    print(record.seq, flush=True)
"""


def test_sigkill_at_any_moment_loses_nothing_acknowledged(tmp_path: Path) -> None:
    rng = random.Random(20261130)
    acknowledged = 0
    for round_ in range(15):
        proc = subprocess.Popen(
            [sys.executable, "-c", APPENDER, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        first = proc.stdout.readline()  # started and appending
        assert first.strip(), proc.stderr.read() if proc.stderr else ""
        time.sleep(rng.uniform(0.0, 0.15))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        seen = [int(first)] + [int(line) for line in out.split()]
        acknowledged = max(acknowledged, seen[-1])
        journal = Journal.open(tmp_path, writer=True, warn=lambda _: None)
        try:
            last = journal.state.last_seq
            assert last >= acknowledged, (round_, last, acknowledged)
            assert [r.seq for r in journal.records()] == list(range(1, last + 1))
        finally:
            journal.close()
    assert len(segments(tmp_path / "journal")) > 2
    assert not list((tmp_path / "journal").glob("*.tmp"))  # half-written snapshots are swept
