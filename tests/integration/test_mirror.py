"""The journal's S3 mirror and restore against moto's S3 over HTTP, through the fault proxy
(errors, outages, and uploads that S3 stores though the client is told they failed)."""

from __future__ import annotations

import itertools
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from syncd.core.journal_format import encode, verify
from syncd.core.journal_state import Kind, fold
from syncd.errors import AwsError, JournalCorrupt
from syncd.journal.mirror import Mirror, MirrorConflict, key_for, segment_key
from syncd.journal.restore import RestoreError, read_remote, restore, verify_remote
from syncd.journal.store import Journal, segments
from syncd.s3 import S3Store
from tests.conftest import Aws

BUCKET = "backups"
URL = f"s3://{BUCKET}/syncd/"


@pytest.fixture
def s3(aws: Aws) -> Any:
    client = boto3.client("s3", endpoint_url=aws.emulator.url, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def store(aws: Aws, s3: Any) -> S3Store:
    return S3Store(boto3.Session(region_name="us-east-1"), URL, endpoint_url=aws.endpoint)


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal.open(tmp_path / "state", writer=True, warn=lambda _: None)
    yield j
    j.close()


def add(journal: Journal, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        journal.append(Kind.COMMIT, repo="r", commit=f"{i:040x}", previous=None)


def objects(s3: Any, under: str = "syncd/") -> dict[str, bytes]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=under)
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    return {k: s3.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys}


def record_objects(s3: Any) -> dict[str, bytes]:
    return {k: v for k, v in objects(s3).items() if "/records/" in k}


def local_bytes(journal: Journal) -> bytes:
    return b"".join(s.path.read_bytes() for s in segments(journal.directory))


def test_a_cycle_sends_only_the_new_records(journal, store, s3, tmp_path) -> None:
    mirror = Mirror(journal, store, tmp_path / "state")
    add(journal, 5)
    assert mirror.cycle() == 5
    add(journal, 1, start=5)
    assert mirror.cycle() == 1
    assert mirror.cycle() == 0
    records = record_objects(s3)
    lineage = mirror.lineage.id
    assert sorted(records) == [
        f"syncd/{key_for(lineage, 'records', 1)}",
        f"syncd/{key_for(lineage, 'records', 6)}",
    ]
    last_line = local_bytes(journal).splitlines(keepends=True)[-1]
    assert records[f"syncd/{key_for(lineage, 'records', 6)}"] == last_line
    assert b"".join(records[k] for k in sorted(records)) == local_bytes(journal)
    assert mirror.cursor.seq == 6 and mirror.cursor.error is None


def test_an_upload_stored_though_the_client_saw_an_error_is_neither_lost_nor_duplicated(
    journal, store, s3, aws, tmp_path
) -> None:
    mirror = Mirror(journal, store, tmp_path / "state")
    add(journal, 3)
    mirror.cycle()
    add(journal, 2, start=3)
    aws.proxy.s3_error("PUT", times=1, status=500, code="InternalError", store=True)
    aws.proxy.s3_error("PUT", times=3, status=500, code="InternalError", store=False)
    with pytest.raises(AwsError):
        mirror.cycle()  # the first try was stored, botocore's retries were refused
    assert mirror.cursor.error and mirror.cursor.seq == 3
    add(journal, 2, start=5)  # more records arrive during the outage
    mirror.cycle()
    records = record_objects(s3)
    assert len(records) == 3  # 1-3, the stored 4-5, then 6-7: nothing sent twice
    assert b"".join(records[k] for k in sorted(records)) == local_bytes(journal)
    assert mirror.cursor.seq == 7 and mirror.cursor.error is None


def test_while_s3_is_down_the_journal_goes_on_and_the_backlog_is_flushed_in_order(
    journal, store, s3, aws, tmp_path
) -> None:
    mirror = Mirror(journal, store, tmp_path / "state")
    add(journal, 2)
    mirror.cycle()
    aws.proxy.s3_down()
    for round_ in range(3):
        add(journal, 2, start=2 + 2 * round_)  # syncing goes on: appends never wait on S3
        assert not mirror.flush()
    assert mirror.cursor.error and mirror.cursor.error_since
    assert not mirror.flush(when_healthy=True)  # an apply does not wait on a known outage
    assert mirror.cursor.seq == 2
    aws.proxy.s3_up()
    assert mirror.flush()
    assert mirror.cursor.seq == 8 and mirror.cursor.error is None
    records = record_objects(s3)
    assert b"".join(records[k] for k in sorted(records)) == local_bytes(journal)


def test_a_backup_failing_for_a_minute_is_journaled_once_and_so_is_its_recovery(
    journal, store, aws, tmp_path
) -> None:
    now = [datetime(2026, 12, 2, 10, 0, tzinfo=UTC)]
    clock = lambda: now[0].isoformat(timespec="milliseconds").replace("+00:00", "Z")  # noqa: E731
    mirror = Mirror(journal, store, tmp_path / "state", clock=clock)
    add(journal, 1)
    aws.proxy.s3_down()
    for seconds in (0, 30, 59):  # failing, but not for a minute yet: no news
        now[0] = datetime(2026, 12, 2, 10, 0, seconds, tzinfo=UTC)
        assert not mirror.flush()
    assert journal.state.backup_failing is None
    for seconds in (60, 90):
        now[0] = datetime(2026, 12, 2, 10, 1, seconds - 60, tzinfo=UTC)
        assert not mirror.flush()
    kinds = [r.kind for r in journal.records()]
    assert kinds.count(Kind.BACKUP_FAILING) == 1
    assert journal.state.backup_failing is not None
    assert journal.state.backup_failing["since"] == "2026-12-02T10:00:00.000Z"
    aws.proxy.s3_up()
    assert mirror.flush() or mirror.flush()  # the recovery record itself goes in the next one
    kinds = [r.kind for r in journal.records()]
    assert kinds.count(Kind.BACKUP_OK) == 1 and journal.state.backup_failing is None
    assert mirror.flush() and mirror.cursor.seq == journal.state.last_seq


def test_another_journal_at_the_same_key_is_never_overwritten(journal, store, s3, tmp_path):
    mirror = Mirror(journal, store, tmp_path / "state")
    add(journal, 2)
    key = f"syncd/{key_for(mirror.lineage.id, 'records', 1)}"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"someone else's journal\n")
    with pytest.raises(MirrorConflict, match="will not overwrite"):
        mirror.cycle()
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"someone else's journal\n"


def test_closed_segments_are_uploaded_whole_once(tmp_path, store, s3) -> None:
    journal = Journal.open(tmp_path / "state", writer=True, warn=lambda _: None, segment_bytes=800)
    mirror = Mirror(journal, store, tmp_path / "state")
    for _ in range(4):
        add(journal, 3)
        mirror.cycle()
    found = segments(journal.directory)
    uploaded = {k for k in objects(s3) if "/segments/" in k}
    assert uploaded == {
        f"syncd/{segment_key(mirror.lineage.id, s.first_seq, n.first_seq - 1)}"
        for s, n in itertools.pairwise(found)
    }
    # Each batch stays inside one segment, so restore can switch between the two kinds.
    for key, body in record_objects(s3).items():
        first = int(key.rsplit("/", 1)[1].split(".")[0])
        owner = max((s for s in found if s.first_seq <= first), key=lambda s: s.first_seq)
        assert body in owner.path.read_bytes()
    journal.close()


def test_restore_rebuilds_the_journal_byte_for_byte(tmp_path, store, s3) -> None:
    state = tmp_path / "state"
    journal = Journal.open(state, writer=True, warn=lambda _: None, segment_bytes=900)
    mirror = Mirror(journal, store, state)
    for _ in range(5):
        add(journal, 4)
        mirror.cycle()
    before = local_bytes(journal)
    folded = journal.state.to_snapshot()
    journal.close()
    shutil.rmtree(state)

    read = restore(store, state)
    assert read.last_seq == 20 and read.damage is None
    restored = Journal.open(state, writer=True, warn=lambda _: None)
    assert local_bytes(restored) == before
    assert restored.state.to_snapshot() == folded
    # It carries on in the same lineage: the mirror sends only what is new.
    add(restored, 1)
    mirror = Mirror(restored, store, state)
    assert mirror.cycle() == 1
    restored.close()


def test_restore_at_a_time_starts_a_new_lineage_and_keeps_the_old_one(tmp_path, store, s3):
    state = tmp_path / "state"
    clock = iter(f"2026-11-30T10:00:{i:02d}.000Z" for i in range(60))
    journal = Journal.open(state, writer=True, warn=lambda _: None)
    journal._clock = lambda: next(clock)
    add(journal, 10)
    Mirror(journal, store, state).cycle()
    journal.close()

    read = restore(store, state, at="2026-11-30T10:00:04.000Z", force=True)
    assert read.last_seq == 5  # the records at or before the time (seconds 0..4)
    assert list((tmp_path / "state").glob("journal.replaced-*"))  # the old one kept beside
    forked = Journal.open(state, writer=True, warn=lambda _: None)
    assert forked.state.last_seq == 5
    add(forked, 2, start=100)
    Mirror(forked, store, state).cycle()
    forked.close()
    old, new = sorted(store.folders("lineages/"))
    assert read_remote(store, old).last_seq == 10  # untouched
    newest = read_remote(store)
    assert newest.lineage.id == new and newest.lineage.parent == old
    assert newest.last_seq == 7 and newest.damage is None


def test_a_damaged_backup_is_refused_or_restored_up_to_the_damage(tmp_path, store, s3) -> None:
    state = tmp_path / "state"
    journal = Journal.open(state, writer=True, warn=lambda _: None)
    mirror = Mirror(journal, store, state)
    for start in (0, 3, 6):
        add(journal, 3, start=start)
        mirror.cycle()
    journal.close()
    key = f"syncd/{key_for(mirror.lineage.id, 'records', 4)}"
    body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    s3.put_object(Bucket=BUCKET, Key=key, Body=body.replace(b"0000000004", b"0000000005", 1))

    with pytest.raises(RestoreError, match=r"records/000000000004.jsonl: record seq 5"):
        restore(store, tmp_path / "fresh")
    assert not (tmp_path / "fresh" / "journal").exists()
    read = restore(store, tmp_path / "fresh", partial=True)
    assert read.last_seq == 4  # seq 4 is good; seq 5, in the same object, is not
    assert Journal.open(tmp_path / "fresh", writer=False).state.last_seq == 4


def test_an_object_larger_than_syncd_writes_is_not_read_and_stops_a_restore_before_it(
    tmp_path, store, s3, monkeypatch
) -> None:
    import syncd.s3

    monkeypatch.setattr(syncd.s3, "MAX_OBJECT_BYTES", 4096)  # 16 MiB in use: the same path
    state = tmp_path / "state"
    journal = Journal.open(state, writer=True, warn=lambda _: None)
    mirror = Mirror(journal, store, state)
    for start in (0, 3, 6):
        add(journal, 3, start=start)
        mirror.cycle()
    journal.close()
    key = f"syncd/{key_for(mirror.lineage.id, 'records', 4)}"
    body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    s3.put_object(Bucket=BUCKET, Key=key, Body=body + b"\n" * 5000)  # a bucket writer's

    expected = f"{store.url}{key.removeprefix('syncd/')}: 5,"
    with pytest.raises(RestoreError, match=re.escape(expected)):
        restore(store, tmp_path / "fresh")
    read = restore(store, tmp_path / "fresh", partial=True)
    assert read.last_seq == 3  # the objects before it
    assert "more than any object syncd writes (4,096): not read" in (read.damage or "")


def test_verify_remote_names_a_missing_object_and_a_cut_off_tail(
    journal, store, s3, tmp_path
) -> None:
    mirror = Mirror(journal, store, tmp_path / "state")
    for start in (0, 2, 4):
        add(journal, 2, start=start)
        mirror.cycle()
    assert verify_remote(store, journal).damage is None
    lineage = mirror.lineage.id
    last = f"syncd/{key_for(lineage, 'records', 5)}"
    kept = s3.get_object(Bucket=BUCKET, Key=last)["Body"].read()
    s3.delete_object(Bucket=BUCKET, Key=last)
    assert "records were cut off" in (verify_remote(store, journal).damage or "")
    s3.put_object(Bucket=BUCKET, Key=last, Body=kept)
    s3.delete_object(Bucket=BUCKET, Key=f"syncd/{key_for(lineage, 'records', 3)}")
    damage = verify_remote(store, journal).damage or ""
    assert "records/000000000005.jsonl: record seq 5 (line 1): expected seq 3" in damage


def test_with_versioning_a_deleted_tail_shows_without_the_local_journal(
    journal, store, s3, tmp_path
) -> None:
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    mirror = Mirror(journal, store, tmp_path / "state")
    add(journal, 2)
    mirror.cycle()
    add(journal, 2, start=2)
    mirror.cycle()
    s3.delete_object(Bucket=BUCKET, Key=f"syncd/{key_for(mirror.lineage.id, 'records', 3)}")
    read = read_remote(store)
    assert read.last_seq == 2
    assert "objects were deleted from the backup" in (read.damage or "")


def test_a_restore_never_replaces_a_journal_without_force(journal, store, s3, tmp_path) -> None:
    add(journal, 1)
    Mirror(journal, store, tmp_path / "state").cycle()
    with pytest.raises(Exception, match="another syncd"):
        restore(store, tmp_path / "state")  # the journal is open here: the lock says no
    journal.close()
    with pytest.raises(RestoreError, match="--force"):
        restore(store, tmp_path / "state")


def test_a_reader_sees_damage_in_a_restored_journal_as_in_any_other(tmp_path, store, s3) -> None:
    state = tmp_path / "state"
    journal = Journal.open(state, writer=True, warn=lambda _: None)
    add(journal, 3)
    Mirror(journal, store, state).cycle()
    expected = fold(journal.records()).to_snapshot()
    journal.close()
    shutil.rmtree(state)
    restore(store, state)
    assert Journal.open(state, writer=False).state.to_snapshot() == expected
    seg = segments(state / "journal")[0].path
    seg.write_bytes(seg.read_bytes().replace(b'"r"', b'"x"', 1))
    with pytest.raises(JournalCorrupt):
        Journal.open(state, writer=True, warn=lambda _: None)


MIRRORING = """
import sys
from pathlib import Path
import boto3
from syncd.core.journal_state import Kind
from syncd.journal.mirror import Mirror
from syncd.journal.store import Journal
from syncd.s3 import S3Store

state, url, endpoint = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
journal = Journal.open(state, writer=True, warn=lambda m: None, segment_bytes=3000)
store = S3Store(boto3.Session(region_name="us-east-1"), url, endpoint_url=endpoint)
mirror = Mirror(journal, store, state)
while True:
    for _ in range(3):
        record = journal.append(Kind.COMMIT, repo="r", commit="c" * 40, previous=None)
        print("acked", record.seq, flush=True)
    mirror.cycle()
    print("mirrored", mirror.cursor.seq, flush=True)
"""


def test_sigkill_during_appends_and_uploads_loses_nothing_and_the_backup_verifies(
    tmp_path, store, s3, aws
) -> None:
    import random
    import signal
    import subprocess
    import sys
    import time

    state = tmp_path / "state"
    rng = random.Random(11)
    acked = mirrored = 0
    for round_ in range(12):
        proc = subprocess.Popen(
            [sys.executable, "-c", MIRRORING, str(state), URL, aws.endpoint],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        # Killed after some progress (lines it printed: on a busy machine too, most rounds
        # kill after an upload), a moment later: in an append or an upload.
        lines = [proc.stdout.readline() for _ in range(rng.randint(1, 12))]
        assert lines[0].startswith("acked"), proc.stderr
        time.sleep(rng.uniform(0, 0.05))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        for line in [*lines, *out.splitlines()]:
            parts = line.split()
            if len(parts) != 2 or not parts[1].isdigit():
                continue  # a line the kill cut short
            what, seq = parts
            if what == "acked":
                acked = max(acked, int(seq))
            else:
                mirrored = max(mirrored, int(seq))
        journal = Journal.open(state, writer=True, warn=lambda _: None)
        try:
            assert journal.state.last_seq >= acked, round_
            remote = verify_remote(store, journal)
            assert remote.damage is None, (round_, remote.damage)
            assert remote.last_seq >= mirrored  # what the mirror said it sent is there
        finally:
            journal.close()
    assert mirrored > 0
    journal = Journal.open(state, writer=True, warn=lambda _: None)
    Mirror(journal, store, state).cycle()  # picks up where the killed ones left off
    assert read_remote(store).last_seq == journal.state.last_seq
    first_seqs = [int(k.rsplit("/", 1)[1].split(".")[0]) for k in record_objects(s3)]
    assert len(first_seqs) == len(set(first_seqs))
    journal.close()


def test_every_flipped_byte_in_a_backup_object_is_named(journal, store, s3, tmp_path) -> None:
    import random

    mirror = Mirror(journal, store, tmp_path / "state")
    for start in range(0, 12, 3):
        add(journal, 3, start=start)
        mirror.cycle()
    rng = random.Random(7)
    records = record_objects(s3)
    for _ in range(25):
        key = rng.choice(sorted(records))
        body = bytearray(records[key])
        offset = rng.randrange(len(body))
        body[offset] ^= 1 << rng.randrange(8)
        s3.put_object(Bucket=BUCKET, Key=key, Body=bytes(body))
        damage = read_remote(store).damage or ""
        line = body[:offset].count(b"\n") + 1
        first = int(key.rsplit("/", 1)[1].split(".")[0])
        assert key.split("/", 1)[1] in damage, damage
        assert f"line {line}" in damage or f"seq {first + line - 1}" in damage, (line, damage)
        s3.put_object(Bucket=BUCKET, Key=key, Body=records[key])
    assert read_remote(store).damage is None


def test_sse_and_the_kms_key_are_asked_for_on_every_object(journal, s3, aws, tmp_path) -> None:
    store = S3Store(
        boto3.Session(region_name="us-east-1"),
        URL,
        endpoint_url=aws.endpoint,
        sse="aws:kms",
        kms_key_id="alias/syncd-backups",
    )
    add(journal, 2)
    Mirror(journal, store, tmp_path / "state").cycle()
    keys = list(objects(s3))
    assert keys
    for key in keys:
        head = s3.head_object(Bucket=BUCKET, Key=key)
        assert head["ServerSideEncryption"] == "aws:kms"
        assert head["SSEKMSKeyId"].endswith("alias/syncd-backups")


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda lines: [lines[1], lines[0], *lines[2:]], "record seq 5 (line 1): expected seq 4"),
        (lambda lines: [*lines[:-1], lines[-1][:-9]], "line 3: cut short"),
        (lambda lines: lines[:1] + lines[2:], "record seq 6 (line 2): expected seq 5"),
        (lambda lines: [*lines, lines[-1]], "record seq 6 (line 4): expected seq 7"),
    ],
    ids=["reordered", "truncated", "record-removed", "record-inserted"],
)
def test_reordered_truncated_or_edited_objects_are_named(
    journal, store, s3, tmp_path, edit, expected
) -> None:
    mirror = Mirror(journal, store, tmp_path / "state")
    for start in (0, 3, 6):
        add(journal, 3, start=start)
        mirror.cycle()
    key = f"syncd/{key_for(mirror.lineage.id, 'records', 4)}"
    lines = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().splitlines(keepends=True)
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"".join(edit(lines)))
    damage = verify_remote(store, journal).damage or ""
    assert f"records/000000000004.jsonl: {expected}" in damage, damage


def timed_journal(state: Path, start: int = 0) -> Journal:
    """A journal whose records are one second apart, from 10:00:<start>."""
    clock = iter(
        f"2026-11-30T10:{(start + i) // 60:02d}:{(start + i) % 60:02d}.000Z" for i in range(600)
    )
    journal = Journal.open(state, writer=True, warn=lambda _: None)
    journal._clock = lambda: next(clock)
    return journal


def test_a_restore_before_an_earlier_fork_forks_from_the_right_lineage(tmp_path, store, s3):
    state = tmp_path / "state"
    journal = timed_journal(state)
    add(journal, 10)  # seconds 0..9
    Mirror(journal, store, state).cycle()
    journal.close()
    restore(store, state, at="2026-11-30T10:00:06.000Z", force=True)  # keeps 0..6: 7 records
    forked = timed_journal(state, start=100)
    add(forked, 3, start=50)
    Mirror(forked, store, state).cycle()
    forked.close()
    # Back to before the first fork: the new lineage forks from the root, not from the fork.
    read = restore(store, state, at="2026-11-30T10:00:02.000Z", force=True)
    assert read.last_seq == 3
    again = Journal.open(state, writer=True, warn=lambda _: None)
    add(again, 1, start=90)
    Mirror(again, store, state).cycle()
    again.close()
    newest = read_remote(store)
    assert newest.damage is None and newest.last_seq == 4
    root = sorted(store.folders("lineages/"))[0]
    assert newest.lineage.parent == root and newest.lineage.fork_seq == 3
    assert verify_remote(store, Journal.open(state, writer=False)).damage is None


def test_restoring_an_older_lineage_continues_in_a_new_one(tmp_path, store, s3) -> None:
    state = tmp_path / "state"
    journal = timed_journal(state)
    add(journal, 5)
    Mirror(journal, store, state).cycle()
    journal.close()
    restore(store, state, at="2026-11-30T10:00:01.000Z", force=True)
    fork = Journal.open(state, writer=True, warn=lambda _: None)
    add(fork, 1, start=40)
    Mirror(fork, store, state).cycle()  # the fork is in S3 now, and the newest lineage
    fork.close()
    old = sorted(store.folders("lineages/"))[0]
    read = restore(store, state, lineage_id=old, force=True)  # "go back to what we had"
    assert read.last_seq == 5
    resumed = Journal.open(state, writer=True, warn=lambda _: None)
    add(resumed, 2, start=20)
    Mirror(resumed, store, state).cycle()
    resumed.close()
    newest = read_remote(store)  # a disaster restore takes the lineage in use
    assert newest.last_seq == 7 and newest.damage is None
    assert newest.lineage.parent == old and newest.lineage.fork_seq == 5


def test_a_new_backup_url_gets_the_whole_journal(journal, s3, aws, tmp_path) -> None:
    first = S3Store(boto3.Session(region_name="us-east-1"), URL, endpoint_url=aws.endpoint)
    add(journal, 4)
    Mirror(journal, first, tmp_path / "state").cycle()
    moved = S3Store(
        boto3.Session(region_name="us-east-1"), f"s3://{BUCKET}/moved/", endpoint_url=aws.endpoint
    )
    add(journal, 1, start=4)
    Mirror(journal, moved, tmp_path / "state").cycle()
    assert read_remote(moved).last_seq == 5 and read_remote(moved).damage is None


def test_a_cut_off_tail_is_caught_by_the_checkpoint(journal, store, s3, tmp_path) -> None:
    mirror = Mirror(journal, store, tmp_path / "state")
    for start in (0, 3):
        add(journal, 3, start=start)
        mirror.cycle()
    s3.delete_object(Bucket=BUCKET, Key=f"syncd/{key_for(mirror.lineage.id, 'records', 4)}")
    damage = read_remote(store).damage or ""
    assert "says records up to seq 6 were uploaded, but the records end at seq 3" in damage


def test_a_rewritten_tail_is_caught_against_the_host(journal, store, s3, tmp_path) -> None:
    from syncd.journal.mirror import checkpoint_key

    mirror = Mirror(journal, store, tmp_path / "state")
    add(journal, 3)
    mirror.cycle()
    add(journal, 2, start=3)
    mirror.cycle()
    # Someone replaces records 4-5 with a validly chained tail of their own, checkpoint and all.
    s3.delete_object(Bucket=BUCKET, Key=f"syncd/{key_for(mirror.lineage.id, 'records', 4)}")
    prefix_hash = verify(b"".join(local_bytes(journal).splitlines(True)[:3]), where="x").last_hash
    line, _ = encode(4, "2026-11-30T23:59:59.000Z", "source_ok", {"repo": "evil"}, prefix_hash)
    s3.put_object(Bucket=BUCKET, Key=f"syncd/{key_for(mirror.lineage.id, 'records', 4)}", Body=line)
    s3.delete_object(Bucket=BUCKET, Key=f"syncd/{checkpoint_key(mirror.lineage.id, 5)}")
    assert read_remote(store).damage is None  # on its own, the backup looks whole
    damage = verify_remote(store, journal).damage or ""
    assert "seq 4, but seq 5 was uploaded: records were cut off" in damage or "rewritten" in damage


def test_the_mirror_never_sends_bytes_the_journal_has_not_acknowledged(
    journal, store, s3, tmp_path
) -> None:
    mirror = Mirror(journal, store, tmp_path / "state")
    add(journal, 2)
    segment = segments(journal.directory)[-1].path
    with open(segment, "ab") as f:  # a write in flight: on disk, not yet fsynced or acked
        f.write(b'{"data":{},"hash":"' + b"0" * 64 + b'"')
    mirror.cycle()
    assert b"".join(record_objects(s3).values()).count(b"\n") == 2
    assert mirror.cursor.seq == 2


def test_a_failure_saved_by_an_earlier_process_does_not_hold_back_intents(
    journal, store, s3, tmp_path
) -> None:
    first = Mirror(journal, store, tmp_path / "state")
    first.cursor.error = "yesterday's outage"
    first.cursor.error_since = "2026-11-29T00:00:00.000Z"
    first._save()
    add(journal, 1)
    later = Mirror(journal, store, tmp_path / "state")
    assert later.flush(when_healthy=True)  # this process has not seen S3 fail
    assert later.cursor.seq == 1 and later.cursor.error is None


def test_a_damaged_local_journal_stops_the_mirror_loudly(journal, store, s3, tmp_path) -> None:
    mirror = Mirror(journal, store, tmp_path / "state")
    add(journal, 2)
    mirror.cycle()
    add(journal, 1, start=2)
    segment = segments(journal.directory)[-1].path
    data = bytearray(segment.read_bytes())
    data[-20] ^= 1
    segment.write_bytes(bytes(data))
    assert not mirror.flush()
    assert "does not match its hash" in (mirror.cursor.error or "")
    assert not mirror.flush(when_healthy=True)
