"""The journal's mirror in S3: new records uploaded within `backup.interval`, never overwritten.

Layout under `backup.url`, one folder per lineage (a journal's line of descent: a restore to an
earlier point starts a new one, so two histories never share keys):

    lineages/<id>/lineage.json                     {id, parent, fork_seq, fork_hash}
    lineages/<id>/records/<first seq>.jsonl        the record lines first..n, byte for byte
    lineages/<id>/segments/<first>-<last>.jsonl    a closed local segment, whole (fast restores)
    lineages/<id>/checkpoints/<10^12 - seq>.json   {seq, hash, time, mac}: what a cycle left in S3

A cycle uploads only what is new: the bytes after the cursor (`state_dir/mirror.json`, written
atomically after each upload), up to the end of their local segment, as one object. So a cycle's
cost grows with the new records, not with the journal. Every put is conditional: when the key
exists (S3 stored an earlier attempt though the client saw an error), the object is read back;
if it is what syncd meant to write, or the start of it, the cursor moves past it and only the
rest is sent; anything else is another journal's and the mirror stops with an error.

A checkpoint is written after each cycle that sent records; its key sorts the newest first, so
a restore finds it with one listing and knows where the records must reach: a cut-off tail of
records shows. While S3 fails, syncing goes on: the backlog stays in the local journal, its
age shows in the cursor file (for `status`) and the log, and the next cycle sends it in order.
`flush` runs a cycle at once: the applier calls it before ExecuteChangeSet so the intent is in
S3 first.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import structlog

from syncd.core.journal_format import GENESIS, Damage, verify
from syncd.core.journal_state import Kind
from syncd.errors import AwsError, JournalCorrupt, ObjectExists, SyncdError
from syncd.journal.auth import BackupKey
from syncd.journal.store import Journal, Segment, fsync_dir, segments

BATCH_LIMIT = 8 * 1024 * 1024  # bytes in one records object at most


class ObjectStore(Protocol):
    url: str

    def put_new(self, key: str, data: bytes) -> None: ...
    def get(self, key: str) -> bytes | None: ...


class MirrorConflict(SyncdError):
    """The bucket holds a different journal at our key: the mirror will not overwrite it."""


CHECKPOINT_BASE = 10**12


def key_for(lineage: str, kind: str, first_seq: int) -> str:
    return f"lineages/{lineage}/{kind}/{first_seq:012d}.jsonl"


def segment_key(lineage: str, first_seq: int, last_seq: int) -> str:
    return f"lineages/{lineage}/segments/{first_seq:012d}-{last_seq:012d}.jsonl"


def checkpoint_key(lineage: str, seq: int) -> str:
    return f"lineages/{lineage}/checkpoints/{CHECKPOINT_BASE - seq:012d}.json"


@dataclass(frozen=True)
class Lineage:
    """Which line of history this journal is: a fork continues its parent up to `fork_seq`."""

    id: str
    parent: str | None = None
    fork_seq: int = 0
    fork_hash: str = GENESIS

    @staticmethod
    def new_id() -> str:
        # Sortable by creation time (to the microsecond): the newest lineage is the last name.
        return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(4)

    def document(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()


def lineage_of(journal_dir: Path) -> Lineage:
    """The journal's lineage, made (durably) the first time it is asked for."""
    path = journal_dir / "lineage.json"
    if path.exists():
        return Lineage(**json.loads(path.read_bytes()))
    lineage = Lineage(Lineage.new_id())
    write_atomically(path, lineage.document())
    return lineage


@dataclass
class Cursor:
    """How far the mirror got, persisted in `state_dir/mirror.json`."""

    lineage: str = ""
    url: str = ""  # the backup.url it describes: another URL starts from the beginning
    seq: int = 0  # the last record in S3
    hash: str = GENESIS
    segment: int = 0  # the local segment (first seq) holding record seq + 1 ...
    offset: int = 0  # ... at this byte offset
    sealed: int = 0  # the newest closed segment uploaded whole
    lineage_uploaded: bool = False
    last_success: str | None = None
    error: str | None = None
    error_since: str | None = None

    @classmethod
    def load(cls, path: Path) -> Cursor:
        try:
            return cls(**json.loads(path.read_bytes()))
        except FileNotFoundError:
            return cls()
        except (ValueError, TypeError) as exc:
            raise JournalCorrupt(f"{path}: unreadable mirror cursor ({exc})") from None


@dataclass
class Mirror:
    """Copies new journal records to the object store; one cycle at a time."""

    journal: Journal
    store: ObjectStore
    state_dir: Path
    interval: float = 5.0
    key: BackupKey | None = None  # signs each checkpoint (syncd.journal.auth)
    log: Any = field(default_factory=lambda: structlog.get_logger("syncd.mirror"))
    clock: Callable[[], str] = field(
        default=lambda: datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )

    def __post_init__(self) -> None:
        self.path = self.state_dir / "mirror.json"
        self.lineage = lineage_of(self.journal.directory)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._healthy = True  # this process's own view: a saved error says nothing about now
        self.cursor = self._load_cursor()

    def _load_cursor(self) -> Cursor:
        cursor = Cursor.load(self.path)
        if cursor.lineage != self.lineage.id or cursor.url != self.store.url:
            # A new journal, one restored to a fork, or another bucket: from the beginning.
            cursor = Cursor(
                lineage=self.lineage.id,
                url=self.store.url,
                seq=self.lineage.fork_seq,
                hash=self.lineage.fork_hash,
                sealed=self.lineage.fork_seq,
            )
        return cursor

    # --- the loop -----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Cycle every `interval` until `stop`; then one last cycle, so a clean stop leaves
        nothing behind when S3 answers."""
        with self._lock:  # another mirror (before a reload) may have moved it since
            self.cursor = self._load_cursor()
        while not stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if stop.is_set():
                break  # woken to stop: one cycle, the last (S3 may be slow to answer)
            self._cycle_logged()
        self._cycle_logged()

    def wake(self) -> None:
        """Cycle now, rather than at the end of the interval (`run` checks its stop then)."""
        self._wake.set()

    def _cycle_logged(self) -> None:
        with contextlib.suppress(Exception):  # recorded in the cursor and logged by cycle()
            self.cycle()

    def flush(self, *, when_healthy: bool = False) -> bool:
        """Upload everything now; True when the journal is wholly in S3. `when_healthy`: not
        while this process's last cycle failed (S3 is down: the loop retries; an apply must not
        wait on S3's timeouts for every intent)."""
        if when_healthy and not self._healthy:
            return False
        try:
            self.cycle()
        except Exception:  # recorded and logged by cycle(); the apply goes on
            return False
        return True

    # --- one cycle ----------------------------------------------------------------------------

    def cycle(self) -> int:
        """Upload every record not yet in S3, in order; returns how many were sent."""
        with self._lock:
            sent = 0
            try:
                if not self.cursor.lineage_uploaded:
                    self._put(f"lineages/{self.lineage.id}/lineage.json", self.lineage.document())
                    self.cursor.lineage_uploaded = True
                while self.journal.state.last_seq > self.cursor.seq:
                    moved = self._send_batch()
                    sent += moved
                    if not moved:
                        break
                if sent:
                    self._send_checkpoint()
                self._send_sealed_segments()
            except Exception as exc:
                self._failed(exc)
                raise
            self._healthy = True
            if self.cursor.error:
                self.log.info("mirror.recovered", after=self.cursor.error)
            if self.journal.state.backup_failing is not None:
                self._journal(Kind.BACKUP_OK)
            self.cursor.error = self.cursor.error_since = None
            self.cursor.last_success = self.clock()
            self._save()
            if sent:
                self.log.debug("mirror.uploaded", records=sent, seq=self.cursor.seq)
            return sent

    def _send_batch(self) -> int:
        seg, offset, data, is_last = self._pending()
        if not data:
            return 0
        first = self.cursor.seq + 1
        try:
            batch = verify(
                data,
                where=f"{seg.path} from byte {offset}",
                after_seq=self.cursor.seq,
                prev=self.cursor.hash,
                allow_torn=is_last,
            )
        except Damage as exc:
            raise JournalCorrupt(str(exc)) from None
        if not batch.good_bytes:
            return 0
        body = data[: batch.good_bytes]
        key = key_for(self.lineage.id, "records", first)
        stored = self._put(key, body, prefix_ok=True)
        if stored < len(body):  # an earlier attempt stored the start of this batch
            part = verify(
                body[:stored], where=key, after_seq=self.cursor.seq, prev=self.cursor.hash
            )
            self._advance(seg, offset + stored, part.last_seq, part.last_hash)
            return part.last_seq - first + 1
        self._advance(seg, offset + len(body), batch.last_seq, batch.last_hash)
        return batch.last_seq - first + 1

    def _send_checkpoint(self) -> None:
        doc = {"seq": self.cursor.seq, "hash": self.cursor.hash, "time": self.clock()}
        if self.key is not None:
            doc["mac"] = self.key.sign(doc, asdict(self.lineage))
        key = checkpoint_key(self.lineage.id, self.cursor.seq)
        try:
            self.store.put_new(key, json.dumps(doc, sort_keys=True).encode())
        except ObjectExists:  # an earlier attempt stored it: the same seq and hash, or trouble
            existing = json.loads(self.store.get(key) or b"{}")
            if (existing.get("seq"), existing.get("hash")) != (doc["seq"], doc["hash"]):
                raise MirrorConflict(f"{key} already holds another journal's checkpoint") from None

    def _pending(self) -> tuple[Segment, int, bytes, bool]:
        """The acknowledged local bytes after the cursor, up to the end of their segment (and
        the batch limit)."""
        acked_segment, acked_bytes = self.journal.acknowledged()
        found = segments(self.journal.directory)
        want = self.cursor.seq + 1
        index = max((i for i, s in enumerate(found) if s.first_seq <= want), default=-1)
        if index < 0:
            raise JournalCorrupt(f"{self.journal.directory}: no segment holds record {want}")
        seg = found[index]
        is_last = index == len(found) - 1
        if self.cursor.segment == seg.first_seq:
            offset = self.cursor.offset
        else:  # first time in this segment (or after a restore): find the record's line
            offset = _offset_of(seg, want)
        # In the segment being written, only what the journal has acknowledged (fsynced): a
        # line after that may still be undone, and must never reach S3.
        size = acked_bytes - offset if seg.first_seq == acked_segment else BATCH_LIMIT
        with open(seg.path, "rb") as f:
            f.seek(offset)
            data = f.read(max(0, min(size, BATCH_LIMIT)))
            if len(data) == BATCH_LIMIT:  # keep whole records only (one record may be longer)
                cut = data.rfind(b"\n") + 1
                data = data[:cut] if cut else data + f.readline()
        if not data and not is_last:  # the segment is done: the next starts at `want`
            nxt = found[index + 1]
            self.cursor.segment, self.cursor.offset = nxt.first_seq, 0
            return self._pending()
        return seg, offset, data, is_last

    def _advance(self, seg: Segment, offset: int, seq: int, digest: str) -> None:
        self.cursor.seq, self.cursor.hash = seq, digest
        self.cursor.segment, self.cursor.offset = seg.first_seq, offset
        self._save()

    def _send_sealed_segments(self) -> None:
        """A closed segment whose records are all in S3 is uploaded whole, once: a restore
        then reads one object per segment instead of one per cycle."""
        found = segments(self.journal.directory)
        for seg, nxt in itertools.pairwise(found):
            if seg.first_seq <= self.cursor.sealed or nxt.first_seq - 1 > self.cursor.seq:
                continue
            key = segment_key(self.lineage.id, seg.first_seq, nxt.first_seq - 1)
            self._put(key, seg.path.read_bytes())
            self.cursor.sealed = seg.first_seq
            self._save()

    def _put(self, key: str, data: bytes, *, prefix_ok: bool = False) -> int:
        """Store `data` at `key`; returns how many of its bytes S3 holds there (all of them,
        unless an earlier attempt stored a shorter batch under the same key)."""
        try:
            self.store.put_new(key, data)
            return len(data)
        except ObjectExists:
            existing = self.store.get(key)
        if existing == data:
            return len(data)
        if existing is not None and prefix_ok and existing and data.startswith(existing):
            return len(existing)
        raise MirrorConflict(
            f"{key} already holds different data: another journal writes to this backup.url "
            "(two hosts with one state?); the mirror will not overwrite it"
        )

    def _failed(self, exc: Exception) -> None:
        self._healthy = False
        message = str(exc) if isinstance(exc, SyncdError) else f"{type(exc).__name__}: {exc}"
        if self.cursor.error != message:
            # S3 trouble is a warning (the backlog waits on disk); anything else is a bug or a
            # damaged journal, and the backup stops until someone looks.
            log = self.log.warning if isinstance(exc, AwsError) else self.log.error
            log(
                "mirror.failed",
                error=message,
                backlog=self.journal.state.last_seq - self.cursor.seq,
                failing_since=self.cursor.error_since or self.clock(),
            )
        self.cursor.error = message
        self.cursor.error_since = self.cursor.error_since or self.clock()
        self._save()
        if self.journal.state.backup_failing is None and _older_than(
            self.cursor.error_since, self.clock(), FAILING_AFTER
        ):
            self._journal(Kind.BACKUP_FAILING, error=message, since=self.cursor.error_since)

    def _journal(self, kind: Kind, **data: Any) -> None:
        """Record that the backup fails, or works again (for `status` and the events of
        syncd.outbox); a journal that cannot take it (read-only, broken) is only logged."""
        try:
            self.journal.append(kind, **data)
        except Exception as exc:
            self.log.warning("mirror.health_not_journaled", kind=kind.value, error=str(exc))

    def _save(self) -> None:
        write_atomically(self.path, json.dumps(asdict(self.cursor), indent=1).encode())


# A backup is reported failing (journaled, so an event) once it has failed this long in a row:
# one failed upload, retried at the next cycle, is not news.
FAILING_AFTER = 60.0


def _older_than(stamp: str | None, now: str, seconds: float) -> bool:
    """Whether ISO time `stamp` is at least `seconds` before `now`."""
    try:
        since = datetime.fromisoformat((stamp or "").replace("Z", "+00:00"))
        at = datetime.fromisoformat(now.replace("Z", "+00:00"))
    except ValueError:
        return bool(stamp)
    return (at - since).total_seconds() >= seconds


def backlog(journal: Journal, cursor: Cursor) -> tuple[int, str | None]:
    """How many records are not yet in S3, and the time of the oldest of them."""
    waiting = journal.state.last_seq - cursor.seq
    if waiting <= 0:
        return 0, None
    want = cursor.seq + 1
    found = segments(journal.directory)
    holder = [s for s in found if s.first_seq <= want]
    if not holder:
        return waiting, None
    seg = holder[-1]
    try:
        offset = cursor.offset if cursor.segment == seg.first_seq else _offset_of(seg, want)
        with open(seg.path, "rb") as f:
            f.seek(offset)
            line = f.readline()
        return waiting, str(json.loads(line)["time"])
    except (OSError, ValueError, KeyError, JournalCorrupt):
        return waiting, None


def _offset_of(seg: Segment, seq: int) -> int:
    """Byte offset of record `seq`'s line in `seg` (it must be there)."""
    data = seg.path.read_bytes()
    offset = 0
    for _ in range(seq - seg.first_seq):
        end = data.find(b"\n", offset)
        if end < 0:
            raise JournalCorrupt(f"{seg.path}: record {seq} is not where it should be")
        offset = end + 1
    return offset


def write_atomically(path: Path, data: bytes) -> None:
    """Write a whole file or nothing: a temporary file, fsynced, renamed, folder fsynced."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
