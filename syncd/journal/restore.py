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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from syncd.core.journal_format import GENESIS, Damage, verify
from syncd.errors import ObjectTooLarge, SyncdError
from syncd.journal.auth import BackupKey
from syncd.journal.mirror import Cursor, Lineage, checkpoint_key, write_atomically
from syncd.journal.store import Journal, fsync_dir, lock_state_dir, segment_name, segments


class RemoteStore(Protocol):
    url: str

    def get(self, key: str) -> bytes | None: ...
    def keys(self, under: str, start_after: str | None = None) -> Iterator[str]: ...
    def folders(self, under: str) -> list[str]: ...
    def first_key(self, under: str) -> str | None: ...
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
    lineage: Lineage  # the lineage asked for (the newest when none was named)
    newest: bool = True  # whether it is the newest lineage in the bucket
    pieces: list[Piece] = field(default_factory=list)
    holder: str = ""  # the lineage holding the last record read (a fork continues from it)
    last_seq: int = 0
    last_hash: str = GENESIS
    last_time: str | None = None
    end_of_backup: bool = True  # False when reading stopped early (--at, damage)
    damage: str | None = None
    deleted: list[str] | None = None  # None: the bucket keeps no versions, so unknown
    marked_hash: str | None = None  # the hash of the record `mark` asked for
    # With a backup key: lineages passed over because they could not be authenticated, and
    # how many records after the newest signed checkpoint were left out.
    skipped: list[str] = field(default_factory=list)
    unsigned_tail: int = 0
    authenticated: bool = False

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
        lineage = Lineage(**json.loads(raw))
    except (ValueError, TypeError) as exc:
        raise RestoreError(f"{store.url}lineages/{lineage_id}/lineage.json: {exc}") from None
    if lineage.id != lineage_id:  # a lineage copied under another (newer-sorting) name
        raise RestoreError(
            f"{store.url}lineages/{lineage_id}/lineage.json names lineage {lineage.id!r}, "
            "not the folder it is in"
        )
    return lineage


def read_remote(
    store: RemoteStore,
    lineage_id: str | None = None,
    *,
    at: str | None = None,
    mark: int | None = None,
    key: BackupKey | None = None,
) -> RemoteRead:
    """Read and check a lineage (the newest when not named), up to `at` if given; `mark`
    asks for the hash of one record (to compare with what the local mirror sent).

    With `key`, only a lineage with a checkpoint signed with it is read (the newest such when
    none is named; newer ones are listed in `skipped`), and only its records up to the newest
    signed checkpoint they reach and match (`unsigned_tail` counts those left out)."""
    names = lineages(store)
    if not names:
        raise RestoreError(f"no journal backup under {store.url}")
    skipped: list[str] = []
    if key is None:
        newest = names[-1]
    else:
        newest, skipped = _newest_signed(store, names, key)
    lineage_id = lineage_id or newest
    if lineage_id not in names:
        raise RestoreError(f"no lineage {lineage_id!r} under {store.url}; there are: {names}")
    if key is not None and lineage_id != newest:
        why = _unsigned(store, lineage_id, key)
        if why:
            raise RestoreError(f"lineage {lineage_id} cannot be authenticated: {why}")
    # With a key, the whole chain is read (even for --at) and cut where a signed checkpoint
    # vouches for it; the newest checkpoint object, whatever it holds, proves nothing.
    read = _read_chain(store, lineage_id, at=None if key else at, mark=mark, signed=bool(key))
    read.newest = lineage_id == newest
    read.skipped = skipped
    if key is not None:
        _keep_signed(store, read, key, at)
    return read


def _keep_signed(store: RemoteStore, read: RemoteRead, key: BackupKey, at: str | None) -> None:
    """Cut what was read back to the newest signed checkpoint it reaches (the newest of all,
    unless damage stopped reading before it), and check that the record there is the one the
    checkpoint names: then the chain authenticates every record kept."""
    read.authenticated = True  # what is kept below is authenticated, if only nothing
    newest_read = read.last_seq
    for checkpoint in _signed_checkpoints(store, read.lineage, key, up_to=read.last_seq):
        if _cut(read, checkpoint["seq"]) == checkpoint["hash"]:
            if at is not None:
                _cut(read, checkpoint["seq"], at)
            read.unsigned_tail = newest_read - checkpoint["seq"]
            return
        # The records up to this signed checkpoint are not the ones it names: something before
        # it was rewritten. An older checkpoint may still vouch for the records before that.
        read.damage = (
            f"record seq {checkpoint['seq']} is not the one its signed checkpoint names: "
            "the records before it were rewritten"
        )
    _cut(read, 0)  # nothing read is vouched for by a signed checkpoint
    read.unsigned_tail = newest_read
    read.damage = read.damage or (
        f"lineage {read.lineage.id}: no checkpoint signed with backup.key_file vouches for "
        "its records"
    )


def _newest_signed(store: RemoteStore, names: list[str], key: BackupKey) -> tuple[str, list[str]]:
    """The newest lineage whose newest checkpoint `key` verifies, and the newer ones skipped."""
    skipped: list[str] = []
    for name in reversed(names):
        why = _unsigned(store, name, key)
        if why is None:
            return name, skipped
        skipped.append(f"lineage {name}: {why}")
    raise RestoreError(
        f"no lineage under {store.url} is signed with backup.key_file: " + "; ".join(skipped[:5])
    )


def _unsigned(store: RemoteStore, name: str, key: BackupKey) -> str | None:
    """Why lineage `name` cannot be authenticated with `key`, or None when it can."""
    try:
        lineage = read_lineage_doc(store, name)
    except RestoreError as exc:
        return str(exc)
    if next(_signed_checkpoints(store, lineage, key), None) is None:
        return "none of its checkpoints is signed with this key"
    return None


def _signed_checkpoints(
    store: RemoteStore, lineage: Lineage, key: BackupKey, *, up_to: int | None = None
) -> Iterator[dict[str, Any]]:
    """The lineage's checkpoints that `key` verifies, newest first (at or before `up_to`).
    Objects that are unreadable, unsigned, or not where their seq belongs are passed over: an
    object added to the bucket can neither vouch for records nor hide the ones that do."""
    for object_key in store.keys(f"lineages/{lineage.id}/checkpoints/"):  # newest first
        try:
            checkpoint = _checkpoint(store, object_key)
        except RestoreError:
            continue
        if up_to is not None and checkpoint["seq"] > up_to:
            continue
        if object_key != checkpoint_key(lineage.id, checkpoint["seq"]):
            continue
        if key.verify(checkpoint, asdict(lineage)):
            yield checkpoint


def _cut(read: RemoteRead, seq: int, at: str | None = None) -> str:
    """Keep only the records up to `seq` (a signed checkpoint) and, with `at`, at or before
    it; returns the hash of the last record kept. Anything cut makes the restore a fork (a new
    lineage), so no history is continued from two places."""
    kept: list[Piece] = []
    last: tuple[int, str, str | None] = (0, GENESIS, None)
    for piece in read.pieces:
        lines = piece.data.splitlines(keepends=True)
        checked = verify(piece.data, where=piece.key, after_seq=piece.first_seq - 1, prev=None)
        keep = 0
        for record in checked.records:
            if record.seq > seq or (at is not None and record.time > at):
                break
            keep += 1
        if keep:
            part = piece if keep == len(lines) else None
            data = piece.data if part else b"".join(lines[:keep])
            tail = verify(data, where=piece.key, after_seq=piece.first_seq - 1, prev=None)
            kept.append(part or Piece(piece.key, data, piece.first_seq, tail.last_seq, False))
            last = (tail.last_seq, tail.last_hash, checked.records[keep - 1].time)
        if keep < len(lines):
            break
    if last[0] < read.last_seq:
        read.end_of_backup = False
        read.pieces = kept
        read.last_seq, read.last_hash, read.last_time = last
    return read.last_hash


def _read_chain(
    store: RemoteStore,
    lineage_id: str,
    *,
    at: str | None,
    mark: int | None,
    signed: bool = False,
) -> RemoteRead:
    names = lineages(store)
    chain = [read_lineage_doc(store, lineage_id)]
    while chain[0].parent:
        if any(x.id == chain[0].parent for x in chain):
            raise RestoreError(f"{store.url}: lineage {chain[0].id} descends from itself")
        chain.insert(0, read_lineage_doc(store, chain[0].parent))
    result = RemoteRead(lineage=chain[-1], newest=lineage_id == names[-1])
    checkpoint = None if signed else _newest_checkpoint(store, chain[-1].id)
    marks = {m for m in (mark, checkpoint["seq"] if checkpoint else None) if m is not None}
    marked: dict[int, str] = {}
    deleted: list[str] = []
    for index, lineage in enumerate(chain):
        if index > 0:
            if result.damage or not result.end_of_backup:
                break  # stopped in an ancestor (damage, or --at before this fork)
            if (result.last_seq, result.last_hash) != (lineage.fork_seq, lineage.fork_hash):
                result.damage = (
                    f"lineage {lineage.id} forks from {lineage.parent} at seq "
                    f"{lineage.fork_seq}, which the backup does not hold as recorded"
                )
                break
        found = store.deleted(f"lineages/{lineage.id}/")
        if found is None or (index > 0 and result.deleted is None):
            result.deleted = None
        else:
            deleted += found
            result.deleted = deleted
        limit = chain[index + 1].fork_seq if index + 1 < len(chain) else None
        _read_one(store, lineage, result, limit=limit, at=at, marks=marks, marked=marked)
    if result.deleted:
        result.damage = result.damage or (
            f"objects were deleted from the backup: {', '.join(result.deleted[:5])}"
            + (" ..." if len(result.deleted) > 5 else "")
        )
    if checkpoint is not None and not result.damage and result.end_of_backup:
        # Read to the end (not stopped by --at): the records must reach the newest checkpoint.
        seq, digest = checkpoint["seq"], checkpoint["hash"]
        if result.last_seq < seq:
            result.damage = (
                f"the newest checkpoint of lineage {chain[-1].id} says records up to seq {seq} "
                f"were uploaded, but the records end at seq {result.last_seq}: "
                "records were cut off"
            )
        elif marked.get(seq) != digest:
            result.damage = (
                f"record seq {seq} in the backup is not the one its checkpoint describes: "
                "the records after it were replaced"
            )
    result.marked_hash = marked.get(mark) if mark is not None else None
    return result


def _newest_checkpoint(store: RemoteStore, lineage_id: str) -> dict[str, Any] | None:
    key = store.first_key(f"lineages/{lineage_id}/checkpoints/")  # the newest sorts first
    return None if key is None else _checkpoint(store, key)


def _checkpoint(store: RemoteStore, key: str) -> dict[str, Any]:
    try:
        doc = json.loads(store.get(key) or b"")
        return {
            "seq": int(doc["seq"]),
            "hash": str(doc["hash"]),
            "time": str(doc["time"]),
            "mac": doc.get("mac"),
            "key": key,
        }
    except (ValueError, KeyError, TypeError, AttributeError):
        raise RestoreError(f"{store.url}{key}: unreadable checkpoint") from None


def _plan(store: RemoteStore, lineage: Lineage, start: int) -> list[tuple[str, bool]]:
    """The objects to read, in order, from seq `start`: a whole segment wherever one starts,
    else the records object starting there (records objects follow each other without gaps:
    each ends where the next starts). A gap ends the plan; reading then names it."""
    base = f"lineages/{lineage.id}/"
    segs: dict[int, tuple[str, int]] = {}
    for key in store.keys(base + "segments/"):
        first_text, _, last_text = key.rsplit("/", 1)[1].split(".", 1)[0].partition("-")
        segs[int(first_text)] = (key, int(last_text or first_text))
    recs = {_first_seq(key): key for key in store.keys(base + "records/")}
    starts = sorted(recs)
    plan: list[tuple[str, bool]] = []
    want = start
    while True:
        if want in segs:
            seg_key, seg_last = segs[want]
            plan.append((seg_key, True))
            want = seg_last + 1
        elif want in recs:
            plan.append((recs[want], False))
            later = [s for s in starts if s > want]
            if not later:
                return plan
            want = later[0]
        else:
            later = [s for s in (*segs, *recs) if s > want]
            if later:  # something starts after a gap: read it, so that the gap is named
                want = min(later)
                plan.append((segs[want][0] if want in segs else recs[want], want in segs))
            return plan


def _read_one(
    store: RemoteStore,
    lineage: Lineage,
    result: RemoteRead,
    *,
    limit: int | None,
    at: str | None,
    marks: set[int],
    marked: dict[int, str],
) -> None:
    plan = _plan(store, lineage, result.last_seq + 1)
    # Downloads run ahead, a few at a time; records are checked strictly in order.
    with ThreadPoolExecutor(max_workers=8) as pool:
        bodies = [pool.submit(store.get, key) for key, _ in plan]
        try:
            for (key, whole), body in zip(plan, bodies, strict=True):
                if limit is not None and result.last_seq >= limit:
                    break
                try:
                    data = body.result() or b""
                except ObjectTooLarge as exc:  # damage like any other: restore stops before it
                    result.damage, result.end_of_backup = str(exc), False
                    break
                if not _take(key, whole, data, lineage, result, limit, at, marks, marked, store):
                    break
        finally:
            for future in bodies:
                future.cancel()
    stopped_early = result.damage is not None or not result.end_of_backup  # damage or --at
    if not stopped_early and limit is not None and result.last_seq < limit:
        result.damage = (
            f"lineage {lineage.id} ends at seq {result.last_seq}, before its fork at {limit}"
        )


def _take(
    key: str,
    whole: bool,
    data: bytes,
    lineage: Lineage,
    result: RemoteRead,
    limit: int | None,
    at: str | None,
    marks: set[int],
    marked: dict[int, str],
    store: RemoteStore,
) -> bool:
    """Check one object's records after what was read so far; keep those within `limit` and
    `at`. False when reading must stop (damage, --at, the fork point inside it)."""
    where = f"{store.url}{key}"
    want = result.last_seq + 1
    try:
        checked = verify(
            data, where=where, after_seq=result.last_seq, prev=result.last_hash, allow_torn=False
        )
    except Damage as exc:
        # Keep the good records before the damaged one (for --partial), then stop.
        result.damage = str(exc)
        result.end_of_backup = False
        good = b"".join(data.splitlines(keepends=True)[: exc.line - 1])
        _keep_part(good, where, key, want, lineage, result, marks, marked)
        return False
    if not checked.records:
        result.damage = f"{where}: empty"
        return False
    keep = len(checked.records)
    for i, record in enumerate(checked.records):
        if (limit is not None and record.seq > limit) or (at is not None and record.time > at):
            keep = i
            break
    piece = data if keep == len(checked.records) else b"".join(data.splitlines(True)[:keep])
    _keep_part(piece, where, key, want, lineage, result, marks, marked, whole=whole)
    if keep < len(checked.records):  # cut at the fork (the child goes on) or at --at
        if limit is None or checked.records[keep].seq <= limit:
            result.end_of_backup = False
        return False
    return True


def _keep_part(
    data: bytes,
    where: str,
    key: str,
    first: int,
    lineage: Lineage,
    result: RemoteRead,
    marks: set[int],
    marked: dict[int, str],
    *,
    whole: bool = False,
) -> None:
    if not data:
        return
    for m in marks:
        if m == result.last_seq:
            marked[m] = result.last_hash
    checked = verify(data, where=where, after_seq=result.last_seq, prev=result.last_hash)
    for m in marks:
        if result.last_seq < m <= checked.last_seq:
            marked[m] = (
                verify(
                    data,
                    where=where,
                    after_seq=result.last_seq,
                    prev=result.last_hash,
                    mark=m,
                    keep_after=None,
                ).marked_hash
                or ""
            )
    result.pieces.append(Piece(key, data, first, checked.last_seq, whole))
    result.last_seq, result.last_hash = checked.last_seq, checked.last_hash
    result.last_time = checked.records[-1].time
    result.holder = lineage.id


def _first_seq(key: str) -> int:
    return int(key.rsplit("/", 1)[1].split(".", 1)[0].partition("-")[0])


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
    key: BackupKey | None = None,
) -> RemoteRead:
    """Rebuild `state_dir/journal` from the backup; returns what was read. With `key`, only
    what it authenticates (see `read_remote`)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    lock = lock_state_dir(state_dir)  # no daemon may run on the state being rebuilt
    try:
        read = _restore_locked(store, state_dir, at, force, partial, lineage_id, key)
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
    key: BackupKey | None,
) -> RemoteRead:
    journal_dir = state_dir / "journal"
    if segments(journal_dir) and not force:
        raise RestoreError(
            f"{journal_dir} already holds a journal; restore replaces it only with --force "
            "(the old one is kept beside it)"
        )
    read = read_remote(store, lineage_id, at=at, key=key)
    if read.damage and not partial:
        raise RestoreError(
            f"the backup is damaged: {read.damage}. Nothing was restored; --partial restores "
            f"the {read.last_seq} records before the damage"
        )
    if not read.pieces and read.last_seq == 0:
        raise RestoreError(
            f"the backup under {store.url} holds no record" + (f" before {at}" if at else "")
        )
    # The newest lineage, read to its end, goes on as it is; anything else (an earlier point,
    # the records before damage, an older lineage) starts a new lineage from what was read,
    # so no history in S3 is ever continued from two places.
    continues = not read.damage and read.end_of_backup and read.newest
    if continues:
        lineage = read.lineage
    else:
        lineage = Lineage(
            Lineage.new_id(),
            parent=read.holder or read.lineage.id,
            fork_seq=read.last_seq,
            fork_hash=read.last_hash,
        )
    if journal_dir.exists():
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        journal_dir.rename(state_dir / f"journal.replaced-{stamp}")
        mirror_file = state_dir / "mirror.json"
        if mirror_file.exists():
            mirror_file.rename(state_dir / f"mirror.replaced-{stamp}.json")
    last_local = _write_local(journal_dir, read, lineage)
    cursor = Cursor(
        lineage=lineage.id,
        url=store.url,
        seq=read.last_seq,
        hash=read.last_hash,
        # Nothing restored is sent again: the whole segments and the records objects are there.
        sealed=last_local if continues else read.last_seq,
        lineage_uploaded=continues,
    )
    write_atomically(state_dir / "mirror.json", json.dumps(asdict(cursor), indent=1).encode())
    return read


def _write_local(journal_dir: Path, read: RemoteRead, lineage: Lineage) -> int:
    """Write the pieces as segments: each whole-segment object as one segment (as it was), the
    records objects between them together, then an empty segment for the next appends; and
    the lineage, inside the folder before it takes its place, so a crash leaves all or
    nothing. Returns the first seq of the last segment that holds records."""
    tmp = journal_dir.with_name(journal_dir.name + ".restoring")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    groups: list[tuple[int, list[bytes]]] = []
    gathering = False  # whether the last group takes the next records object too
    for piece in read.pieces:
        if gathering and not piece.whole_segment:
            groups[-1][1].append(piece.data)
        else:
            groups.append((piece.first_seq, [piece.data]))
        gathering = not piece.whole_segment
    for first, parts in groups:
        _write_file(tmp / segment_name(first), b"".join(parts))
    _write_file(tmp / segment_name(read.last_seq + 1), b"")  # appends go to a new segment
    _write_file(tmp / "lineage.json", lineage.document())
    fsync_dir(tmp)
    tmp.rename(journal_dir)
    fsync_dir(journal_dir.parent)
    return groups[-1][0] if groups else 0


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def verify_remote(
    store: RemoteStore, local: Journal | None = None, key: BackupKey | None = None
) -> RemoteRead:
    """Check the newest lineage (the local journal's, given one): every record, the chain, the
    newest checkpoint; and against the mirror's cursor, that S3 holds what was sent, with the
    same hash."""
    cursor = Cursor.load(local.directory.parent / "mirror.json") if local else None
    lineage = local_lineage(local) if local else None
    mark = cursor.seq if cursor and cursor.lineage == lineage and cursor.seq else None
    read = read_remote(store, lineage, mark=mark, key=key)
    if cursor is not None and mark is not None and not read.damage:
        if read.last_seq < cursor.seq:
            read.damage = (
                f"the backup ends at seq {read.last_seq}, but seq {cursor.seq} was uploaded: "
                "records were cut off"
            )
        elif read.marked_hash != cursor.hash:
            read.damage = (
                f"record seq {cursor.seq} in the backup is not the one this host uploaded: "
                "the backup was rewritten"
            )
    return read


def local_lineage(journal: Journal) -> str | None:
    path = journal.directory / "lineage.json"
    return str(json.loads(path.read_bytes())["id"]) if path.exists() else None
