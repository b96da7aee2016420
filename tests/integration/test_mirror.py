"""The journal's S3 mirror and restore against moto's S3 over HTTP, through the fault proxy
(errors, outages, and uploads that S3 stores though the client is told they failed)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from syncd.core.journal_state import Kind, fold
from syncd.errors import AwsError, JournalCorrupt
from syncd.journal.mirror import Mirror, MirrorConflict, key_for
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
        f"syncd/{key_for(mirror.lineage.id, 'segments', s.first_seq)}" for s in found[:-1]
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
    assert "records/000000000005.jsonl: starts at seq 5" in damage and "missing" in damage


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
