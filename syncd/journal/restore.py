"""Reading the journal back from S3: `journal verify --remote` and `restore`.

A lineage's records are read in order from its objects (a whole-segment object where there is
one, the records objects after it), each checked with the same code as the local journal, the
chain continued from object to object and, for a lineage that forked from another, from the
parent's record at the fork. Reading stops at the first damage, a gap, or (for `--at`) the last
record at or before the time asked for. Deleted objects are seen when the bucket keeps versions.

`restore` writes what it read as local segments, one per object read (so the segments that later
go back to S3 are the ones already there), plus an empty segment to append to. Restoring to an
earlier point than S3 holds starts a new lineage, so the old history stays as it was.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from syncd.core.journal_format import GENESIS, Damage, Verified, verify
from syncd.errors import SyncdError
from syncd.journal.mirror import Cursor, Lineage, write_atomically
from syncd.journal.store import Journal, lock_state_dir, segment_name, segments


class RemoteStore(Protocol):
    url: str

    def get(self, key: str) -> bytes | None: ...
    def keys(self, under: str, start_after: str | None = None) -> Iterator[str]: ...
    def folders(self, under: str) -> list[str]: ...
    def deleted(self, under: str) -> list[str] | None: ...


class RestoreError(SyncdError):
    """The backup cannot be restored as asked (damaged, missing, or the journal not empty)."""


@dataclass
class Piece:
    """The verified bytes of one object (cut at `--at` or the fork), and what they hold."""

    key: str
    data: bytes
    first_seq: int
    last_seq: int
    whole_segment: bool


@dataclass
class RemoteRead:
    lineage: Lineage
    pieces: list[Piece] = field(default_factory=list)
    last_seq: int = 0
    last_hash: str = GENESIS
    last_time: str | None = None
    end_of_backup: bool = True  # False when reading stopped early (--at, damage)
    damage: str | None = None
    deleted: list[str] | None = None  # None: the bucket keeps no versions, so unknown

    @property
    def records(self) -> int:
        return self.last_seq


def lineages(store: RemoteStore) -> list[str]:
    return store.folders("lineages/")


def read_lineage_doc(store: RemoteStore, lineage_id: str) -> Lineage:
    raw = store.get(f"lineages/{lineage_id}/lineage.json")
    if raw is None:
        raise RestoreError(f"{store.url}lineages/{lineage_id}/lineage.json is missing")
    try:
        return Lineage(**json.loads(raw))
    except (ValueError, TypeError) as exc:
        raise RestoreError(f"{store.url}lineages/{lineage_id}/lineage.json: {exc}") from None


def read_remote(
    store: RemoteStore, lineage_id: str | None = None, *, at: str | None = None
) -> RemoteRead:
    """Read and check a lineage (the newest when not named), up to `at` if given."""
    names = lineages(store)
    if not names:
        raise RestoreError(f"no journal backup under {store.url}")
    lineage_id = lineage_id or names[-1]
    if lineage_id not in names:
        raise RestoreError(f"no lineage {lineage_id!r} under {store.url}; there are: {names}")
    chain = [read_lineage_doc(store, lineage_id)]
    while chain[0].parent:
        chain.insert(0, read_lineage_doc(store, chain[0].parent))
    result = RemoteRead(lineage=chain[-1])
    deleted: list[str] = []
    for index, lineage in enumerate(chain):
        found = store.deleted(f"lineages/{lineage.id}/")
        if found is None:
            result.deleted = None
        elif result.deleted is not None or index == 0:
            deleted += found
            result.deleted = deleted
        limit = chain[index + 1].fork_seq if index + 1 < len(chain) else None
        if lineage.parent and (result.last_seq, result.last_hash) != (
            lineage.fork_seq,
            lineage.fork_hash,
        ):
            result.damage = result.damage or (
                f"lineage {lineage.id} forks from {lineage.parent} at seq {lineage.fork_seq}, "
                f"which the backup does not hold as recorded"
            )
        if result.damage or not result.end_of_backup:
            break
        _read_one(store, lineage, result, limit=limit, at=at)
    if result.deleted:
        result.damage = result.damage or (
            f"objects were deleted from the backup: {', '.join(result.deleted[:5])}"
            + (" ..." if len(result.deleted) > 5 else "")
        )
    return result


def _read_one(
    store: RemoteStore, lineage: Lineage, result: RemoteRead, *, limit: int | None, at: str | None
) -> None:
    base = f"lineages/{lineage.id}/"
    by_first: dict[int, tuple[str, bool]] = {}
    for key in store.keys(base + "records/"):
        by_first.setdefault(_first_seq(key), (key, False))
    for key in store.keys(base + "segments/"):
        by_first[_first_seq(key)] = (key, True)  # a whole segment wins over its batches
    while limit is None or result.last_seq < limit:
        want = result.last_seq + 1
        if want not in by_first:
            later = sorted(s for s in by_first if s > want)
            if later:
                result.damage = (
                    f"{store.url}{by_first[later[0]][0]}: starts at seq {later[0]}, but the "
                    f"backup holds nothing for seq {want}: an object is missing"
                )
            if limit is not None and result.last_seq < limit:
                result.damage = result.damage or (
                    f"lineage {lineage.id} ends at seq {result.last_seq}, "
                    f"before its fork at {limit}"
                )
            return
        key, whole = by_first[want]
        data = store.get(key) or b""
        where = f"{store.url}{key}"
        try:
            checked = verify(
                data,
                where=where,
                after_seq=result.last_seq,
                prev=result.last_hash,
                allow_torn=False,
            )
        except Damage as exc:
            # Keep the good records before the damaged one (for --partial), then stop.
            result.damage = str(exc)
            result.end_of_backup = False
            good = b"".join(data.splitlines(keepends=True)[: exc.line - 1])
            checked = verify(good, where=where, after_seq=result.last_seq, prev=result.last_hash)
            if checked.records:
                _keep(result, key, good, want, checked, whole=False)
            return
        if not checked.records:
            result.damage = f"{where}: empty"
            return
        keep = len(checked.records)
        for i, record in enumerate(checked.records):
            if (limit is not None and record.seq > limit) or (at is not None and record.time > at):
                keep = i
                break
        if keep == len(checked.records):
            _keep(result, key, data, want, checked, whole=whole)
        elif keep:
            piece = b"".join(data.splitlines(keepends=True)[:keep])
            cut = verify(piece, where=where, after_seq=result.last_seq, prev=result.last_hash)
            _keep(result, key, piece, want, cut, whole=False)
        if keep < len(checked.records):  # cut at the fork (the child goes on) or at --at
            if limit is None or checked.records[keep].seq <= limit:
                result.end_of_backup = False
            return


def _keep(
    result: RemoteRead, key: str, data: bytes, first: int, checked: Verified, *, whole: bool
) -> None:
    result.pieces.append(Piece(key, data, first, checked.last_seq, whole))
    result.last_seq, result.last_hash = checked.last_seq, checked.last_hash
    result.last_time = checked.records[-1].time


def _first_seq(key: str) -> int:
    return int(key.rsplit("/", 1)[1].split(".", 1)[0])


def normalise_time(text: str) -> str:
    """An ISO 8601 time as the journal writes times (UTC, milliseconds, Z), for comparison."""
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise RestoreError(
            f"--at {text!r} is not an ISO 8601 time like 2026-11-30T12:00:00Z"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def restore(
    store: RemoteStore,
    state_dir: Path,
    *,
    at: str | None = None,
    force: bool = False,
    partial: bool = False,
    lineage_id: str | None = None,
) -> RemoteRead:
    """Rebuild `state_dir/journal` from the backup; returns what was read."""
    state_dir.mkdir(parents=True, exist_ok=True)
    lock = lock_state_dir(state_dir)  # no daemon may run on the state being rebuilt
    try:
        read = _restore_locked(store, state_dir, at, force, partial, lineage_id)
    finally:
        lock.close()
    journal = Journal.open(state_dir, writer=True, warn=lambda _: None)  # checks it all again
    journal.close()  # and writes a snapshot, so the first start is quick
    return read


def _restore_locked(
    store: RemoteStore,
    state_dir: Path,
    at: str | None,
    force: bool,
    partial: bool,
    lineage_id: str | None,
) -> RemoteRead:
    journal_dir = state_dir / "journal"
    if segments(journal_dir) and not force:
        raise RestoreError(
            f"{journal_dir} already holds a journal; restore replaces it only with --force "
            "(the old one is kept beside it)"
        )
    read = read_remote(store, lineage_id, at=at)
    if read.damage and not partial:
        raise RestoreError(
            f"the backup is damaged: {read.damage}. Nothing was restored; --partial restores "
            f"the {read.last_seq} records before the damage"
        )
    if not read.pieces and read.last_seq == 0:
        raise RestoreError(
            f"the backup under {store.url} holds no record" + (f" before {at}" if at else "")
        )
    if journal_dir.exists():
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        aside = state_dir / f"journal.replaced-{stamp}"
        journal_dir.rename(aside)
        mirror_file = state_dir / "mirror.json"
        if mirror_file.exists():
            mirror_file.rename(state_dir / f"mirror.replaced-{stamp}.json")
    _write_local(journal_dir, read)
    continues = not read.damage and read.end_of_backup
    if continues:
        lineage = read.lineage
        sealed = max((p.first_seq for p in read.pieces if p.whole_segment), default=0)
    else:  # an earlier point than S3 holds: a new line of history, the old one untouched
        lineage = Lineage(
            Lineage.new_id(),
            parent=read.lineage.id,
            fork_seq=read.last_seq,
            fork_hash=read.last_hash,
        )
        sealed = read.last_seq
    write_atomically(journal_dir / "lineage.json", lineage.document())
    cursor = Cursor(
        lineage=lineage.id,
        seq=read.last_seq,
        hash=read.last_hash,
        sealed=sealed,
        lineage_uploaded=continues,
    )
    write_atomically(state_dir / "mirror.json", json.dumps(asdict(cursor), indent=1).encode())
    return read


def _write_local(journal_dir: Path, read: RemoteRead) -> None:
    tmp = journal_dir.with_name(journal_dir.name + ".restoring")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for piece in read.pieces:
        _write_file(tmp / segment_name(piece.first_seq), piece.data)
    _write_file(tmp / segment_name(read.last_seq + 1), b"")  # appends go to a new segment
    _fsync(tmp)
    tmp.rename(journal_dir)
    _fsync(journal_dir.parent)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def verify_remote(store: RemoteStore, local: Journal | None = None) -> RemoteRead:
    """Check the newest lineage; against a local journal too, so a cut-off tail shows."""
    read = read_remote(store, local_lineage(local) if local else None)
    if local is not None and not read.damage:
        cursor = Cursor.load(local.directory.parent / "mirror.json")
        if cursor.lineage == read.lineage.id and cursor.seq > read.last_seq:
            read.damage = (
                f"the backup ends at seq {read.last_seq}, but seq {cursor.seq} was uploaded: "
                "records were cut off"
            )
    return read


def local_lineage(journal: Journal) -> str | None:
    path = journal.directory / "lineage.json"
    return str(json.loads(path.read_bytes())["id"]) if path.exists() else None
