"""The journal on local disk: append-only segments, each record fsynced before syncd acts on it.

`state_dir/journal/` holds `segment-<first seq>.jsonl` files (the record format and its checks
are in `syncd.core.journal_format`) and `snapshot-<seq>.json` files: the folded state at that
record, so that start-up and `status` fold only the records after it. A segment is closed and a
new one started when it passes `segment_bytes`; a snapshot is written every `snapshot_every`
records and at a clean close.

Hazards: a crash mid-write leaves a torn last line, which `open` drops with a warning (the record
was never acknowledged: `append` returns only after fsync). Any other damage raises
`JournalCorrupt` naming the segment and record: syncd must not guess at history. A writer checks
the whole chain at open; a reader (`status`, `history`) trusts the newest snapshot and checks
only what follows it. Snapshots are derived data: a damaged one is skipped with a warning. New
files are made durable by an fsync of the folder too. Only one process may write:
`open(writer=True)` takes an exclusive lock on `state_dir/syncd.lock`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TypeVar

from syncd.core.journal_format import GENESIS, Damage, encode, verify
from syncd.core.journal_state import HistoryRow, JournalState, Kind, Record, fold
from syncd.errors import JournalCorrupt, StateLocked

SEGMENT_BYTES = 4 * 1024 * 1024
SNAPSHOT_EVERY = 1000
SNAPSHOTS_KEPT = 2
_SEGMENT = re.compile(r"^segment-(\d+)\.jsonl$")
_SNAPSHOT = re.compile(r"^snapshot-(\d+)\.json$")


def segment_name(first_seq: int) -> str:
    return f"segment-{first_seq:012d}.jsonl"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Segment:
    path: Path
    first_seq: int


def segments(directory: Path) -> list[Segment]:
    """The segment files in order of their first record."""
    found = []
    if directory.is_dir():
        for path in directory.iterdir():
            if m := _SEGMENT.match(path.name):
                found.append(Segment(path, int(m.group(1))))
    return sorted(found, key=lambda s: s.first_seq)


@dataclass(frozen=True)
class Checked:
    """What a check of the segments found: where the chain ends, the records kept, the hash at
    the marked seq, and the torn tail of the last segment."""

    last_seq: int
    last_hash: str
    good_bytes: int  # of the last segment
    torn: int
    records: tuple[Record, ...] = ()
    marked_hash: str | None = None


def check_segments(
    found: list[Segment],
    *,
    keep_after: int | None = None,
    mark: int | None = None,
    trust_start: bool = False,
) -> Checked:
    """Verify the chain through `found`; keep the records after seq `keep_after`; report the
    hash of record `mark`. A segment must start right after the one before it; only the last
    may end torn. `trust_start`: `found` begins mid-journal and its first link is taken on trust.
    """
    seq = found[0].first_seq - 1 if found and trust_start else 0
    prev: str | None = None if trust_start else GENESIS
    kept: list[Record] = []
    marked = GENESIS if mark == 0 else None
    good_bytes = torn = 0
    for index, seg in enumerate(found):
        last = index == len(found) - 1
        where = str(seg.path)
        if seg.first_seq != seq + 1:
            raise JournalCorrupt(
                f"{where}: starts at seq {seg.first_seq}, but the record before it is seq {seq}: "
                + ("a segment is missing" if seg.first_seq > seq + 1 else "segments overlap")
            )
        data = seg.path.read_bytes()
        if not data and not last:
            raise JournalCorrupt(f"{where}: empty, but later segments follow it")
        try:
            result = verify(
                data,
                where=where,
                after_seq=seq,
                prev=prev,
                allow_torn=last,
                keep_after=keep_after,
                mark=mark,
            )
        except Damage as exc:
            raise JournalCorrupt(str(exc)) from None
        kept.extend(result.records)
        marked = result.marked_hash or marked
        seq, prev = result.last_seq, result.last_hash
        good_bytes, torn = result.good_bytes, result.torn
    return Checked(seq, prev or GENESIS, good_bytes, torn, tuple(kept), marked)


@dataclass(frozen=True)
class Snapshot:
    path: Path
    seq: int
    hash: str
    state: dict[str, Any]


def read_snapshots(directory: Path, warn: Callable[[str], None]) -> list[Snapshot]:
    """Every intact snapshot, newest first; a damaged one is skipped with a warning."""
    found = []
    if not directory.is_dir():
        return []
    for path in directory.iterdir():
        m = _SNAPSHOT.match(path.name)
        if not m:
            continue
        try:
            doc = json.loads(path.read_bytes())
            body = {k: doc[k] for k in ("seq", "hash", "state")}
            if doc["check"] != _snapshot_check(body) or doc["seq"] != int(m.group(1)):
                raise ValueError("its checksum does not match")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            warn(f"journal snapshot {path} is unusable ({exc}); folding from the records instead")
            continue
        found.append(Snapshot(path, doc["seq"], doc["hash"], doc["state"]))
    return sorted(found, key=lambda s: s.seq, reverse=True)


def _snapshot_check(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()


class Journal:
    """The append-only record of everything syncd did; `state` is its fold."""

    def __init__(
        self,
        directory: Path,
        state: JournalState,
        last_hash: str,
        lock_file: IO[bytes] | None,
        *,
        current: Segment | None = None,
        segment_bytes: int = SEGMENT_BYTES,
        snapshot_every: int = SNAPSHOT_EVERY,
        clock: Callable[[], str] = utc_now,
    ) -> None:
        self.directory = directory
        self.state = state
        self._last_hash = last_hash
        self._lock = threading.Lock()
        self._lock_file = lock_file
        self._clock = clock
        self._current = current
        # (first seq of the segment, bytes of it) holding acknowledged records only: what a
        # reader beside the writer (the mirror) may take; a line past it may yet be undone.
        self._acked = (current.first_seq, current.path.stat().st_size) if current else (0, 0)
        self._segment_bytes = segment_bytes
        self._snapshot_every = snapshot_every
        self._snapshot_seq = state.last_seq
        self._file: IO[bytes] | None = None
        self._broken = ""  # set when a failed write could not be undone: no more appends
        self._listeners: list[Callable[[Record], None]] = []

    @classmethod
    def open(
        cls,
        state_dir: Path,
        *,
        writer: bool,
        warn: Callable[[str], None] = print,
        segment_bytes: int = SEGMENT_BYTES,
        snapshot_every: int = SNAPSHOT_EVERY,
    ) -> Journal:
        """Read the journal (creating it for a writer); a writer holds the state_dir lock."""
        directory = state_dir / "journal"
        lock_file = None
        if writer:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            _make_private(state_dir)
            lock_file = lock_state_dir(state_dir)
        try:
            state, last_hash, current = _load(directory, writer=writer, warn=warn)
        except BaseException:
            if lock_file is not None:
                lock_file.close()
            raise
        return cls(
            directory,
            state,
            last_hash,
            lock_file,
            current=current,
            segment_bytes=segment_bytes,
            snapshot_every=snapshot_every,
        )

    @property
    def last_hash(self) -> str:
        return self._last_hash

    def acknowledged(self) -> tuple[int, int]:
        """(first seq of the newest segment, its length in acknowledged records): bytes after
        that are not a record yet. Earlier segments are acknowledged whole."""
        with self._lock:
            return self._acked

    def subscribe(self, listener: Callable[[Record], None]) -> None:
        """Call `listener` with every record appended from now on (under the journal's lock)."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[Record], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def append(self, kind: Kind, **data: Any) -> Record:
        """Write one record and fsync it; only then is it acknowledged and folded in."""
        if self._lock_file is None:
            raise RuntimeError("journal opened read-only")
        with self._lock:
            seq = self.state.last_seq + 1
            time = self._clock()
            line, digest = encode(seq, time, kind.value, data, self._last_hash)
            if self._broken:
                raise JournalCorrupt(f"{self.directory}: {self._broken}; restart syncd")
            f, path = self._writable(seq)
            good = f.tell()
            try:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            except OSError as exc:
                self._undo(f, good, exc)
                raise JournalCorrupt(
                    f"{path}: record seq {seq} could not be written ({exc}); "
                    "it was not acknowledged and nothing acted on it"
                ) from exc
            self._last_hash = digest
            assert self._current is not None
            self._acked = (self._current.first_seq, f.tell())
            record = Record(seq, time, kind, data)
            self.state.apply(record)
            if seq - self._snapshot_seq >= self._snapshot_every:
                self._write_snapshot()
            for listener in self._listeners:
                listener(record)
            return record

    def _undo(self, f: IO[bytes], good: int, exc: OSError) -> None:
        """A failed write (disk full, I/O error) may have left part of the line: cut it off,
        so that the file still ends at the last acknowledged record. If even that fails, no
        record may follow it: the next start finds a torn tail, never a gap."""
        try:
            f.truncate(good)
            f.seek(good)
            os.fsync(f.fileno())
        except OSError as second:
            self._broken = f"a failed write ({exc}) could not be undone ({second})"

    def _writable(self, seq: int) -> tuple[IO[bytes], Path]:
        """The open segment for record `seq`: a new one when the current one is full."""
        if self._current is not None and self._file is None:
            self._file = open(self._current.path, "ab")  # noqa: SIM115 - kept open for appends
        if self._current is None or (
            self._file is not None and self._file.tell() >= self._segment_bytes
        ):
            if self._file is not None:
                self._file.close()
            self._current = Segment(self.directory / segment_name(seq), seq)
            self._file = open(self._current.path, "ab")  # noqa: SIM115 - kept open for appends
            # A new file's directory entry must be durable too, or a crash can lose it.
            fsync_dir(self.directory)
        assert self._file is not None
        return self._file, self._current.path

    def snapshot(self) -> None:
        """Write a snapshot of the state now (a clean stop does, so the next start is quick)."""
        with self._lock:
            if self._lock_file is not None and self.state.last_seq > self._snapshot_seq:
                self._write_snapshot()

    def _write_snapshot(self) -> None:
        """Atomically: a temporary file, fsynced, renamed, and the folder fsynced. A failure
        costs only speed at the next start, so it is not an error of the append."""
        seq = self.state.last_seq
        body = {"seq": seq, "hash": self._last_hash, "state": self.state.to_snapshot()}
        doc = {**body, "check": _snapshot_check(body)}
        path = self.directory / f"snapshot-{seq:012d}.json"
        tmp = path.with_suffix(".tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(json.dumps(doc, separators=(",", ":")).encode())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            fsync_dir(self.directory)
        except OSError:
            tmp.unlink(missing_ok=True)
            return
        self._snapshot_seq = seq
        older = sorted(p for p in self.directory.glob("snapshot-*.json") if p != path)
        for old in older[: max(0, len(older) - (SNAPSHOTS_KEPT - 1))]:
            old.unlink(missing_ok=True)

    def full_history(self) -> list[HistoryRow]:
        """Every history row, from every record on disk (the state keeps the latest few)."""
        return fold(self.records(), history_limit=None).history

    def records(self, after: int = 0) -> Iterator[Record]:
        """Every record on disk after seq `after`, in order (reads and checks every file)."""
        return iter(check_segments(segments(self.directory), keep_after=after).records)

    def records_after(self, seq: int) -> list[Record]:
        """The records after seq `seq`, reading only the segments that can hold them (their
        chain checked from the first of those, whose link to the ones before is trusted)."""
        found = segments(self.directory)
        start = max((i for i, s in enumerate(found) if s.first_seq <= seq + 1), default=0)
        if not found[start:]:
            return []
        return list(check_segments(found[start:], keep_after=seq, trust_start=True).records)

    def close(self) -> None:
        if self._lock_file is not None and not self._broken:
            self.snapshot()
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
            if self._lock_file is not None:
                self._lock_file.close()
                self._lock_file = None


T = TypeVar("T")


def read_steady(build: Callable[[], T]) -> T:
    """`build()`, again when the journal's state it walked changed size under it: readers on
    other threads (/metrics, the pages, systemd's status line) read the state without the
    journal's lock, which is held through each append's fsync, and a worker may append meanwhile."""
    for _ in range(4):
        try:
            return build()
        except RuntimeError as exc:
            if "changed size during iteration" not in str(exc):
                raise
    return build()


def _load(
    directory: Path, *, writer: bool, warn: Callable[[str], None]
) -> tuple[JournalState, str, Segment | None]:
    """The folded state, the last hash, and the segment to append to.

    A writer checks every segment; a reader only those holding records after the snapshot."""
    if writer:  # a snapshot a crash left half-written
        for tmp in directory.glob("snapshot-*.tmp"):
            tmp.unlink(missing_ok=True)
    found = segments(directory)
    snapshots = read_snapshots(directory, warn)
    base = snapshots[0] if snapshots else None
    scope = found
    if not writer and base is not None:
        # The segment holding the record right after the snapshot, and every later one.
        start = max((i for i, s in enumerate(found) if s.first_seq <= base.seq + 1), default=0)
        scope = found[start:]
    checked = check_segments(
        scope,
        keep_after=base.seq if base else 0,
        mark=base.seq if base else None,
        trust_start=scope is not found and bool(scope) and scope[0].first_seq > 1,
    )
    if base is not None:
        _check_snapshot(directory, base, checked)
    state = JournalState.from_snapshot(base.state) if base else JournalState()
    for record in checked.records:
        state.apply(record)
    if checked.torn:
        last = found[-1]
        warn(
            f"journal {last.path}: dropped a torn last record ({checked.torn} bytes) left by a "
            "crash; it was never acknowledged"
        )
        if writer:
            with open(last.path, "r+b") as f:
                f.truncate(checked.good_bytes)
                f.flush()
                os.fsync(f.fileno())
    return state, checked.last_hash, (found[-1] if found else None)


def _check_snapshot(directory: Path, base: Snapshot, checked: Checked) -> None:
    """The snapshot must describe a record the segments hold, with the same hash."""
    if base.seq > checked.last_seq:
        raise JournalCorrupt(
            f"{directory}: the records end at seq {checked.last_seq}, but {base.path.name} "
            f"shows that seq {base.seq} was written: records were cut off"
        )
    if checked.marked_hash != base.hash:
        raise JournalCorrupt(
            f"{base.path}: does not match record seq {base.seq} of the segments "
            "(one of them was changed, or the snapshot belongs to another journal)"
        )


def verify_journal(state_dir: Path, warn: Callable[[str], None]) -> Checked:
    """Check every record of every segment, and the newest snapshot against them; raise
    JournalCorrupt at the first problem. Safe beside a running daemon (it only reads)."""
    directory = state_dir / "journal"
    snapshots = read_snapshots(directory, warn)
    base = snapshots[0] if snapshots else None
    checked = check_segments(segments(directory), keep_after=None, mark=base.seq if base else None)
    if base is not None:
        _check_snapshot(directory, base, checked)
    return checked


def _make_private(state_dir: Path) -> None:
    """A state_dir made before (with a looser umask) is closed to other users: it holds the
    journal, and Git mirrors whose remotes may carry credentials."""
    with contextlib.suppress(OSError):  # not ours to change (e.g. a systemd StateDirectory)
        if state_dir.stat().st_mode & 0o077:
            state_dir.chmod(0o700)


def fsync_dir(directory: Path) -> None:
    """Make a folder's entries (a new or renamed file) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class LockHolder:
    """Whether state_dir's lock is held, and by which pid when the kernel confirms it."""

    held: bool
    pid: int | None = None  # only a pid /proc/locks shows holding this very file


def lock_holder(state_dir: Path) -> LockHolder:
    """Who holds state_dir's lock; takes nothing, writes nothing. The pid written in the file is
    believed only if /proc/locks shows that process holding a lock on this file: anyone who can
    write the file could name any process for `syncd approve` to signal."""
    path = state_dir / "syncd.lock"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, OSError):
        return LockHolder(False)
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return LockHolder(False)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = f.read(32).decode(errors="replace").strip()
            pid = int(text) if text.isdigit() else None
            confirmed = pid is not None and pid in _flock_holders(info)
            return LockHolder(True, pid if confirmed else None)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return LockHolder(False)


def _flock_holders(info: os.stat_result) -> set[int]:
    """The pids /proc/locks shows holding a flock on the file `info` describes."""
    wanted = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    holders: set[int] = set()
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return holders
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 12345 08:01:1234567 0 EOF" (a "->" after the id: waiting)
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted:
            with contextlib.suppress(ValueError):
                holders.add(int(fields[4]))
    return holders


def lock_state_dir(state_dir: Path) -> IO[bytes]:
    """Take the state_dir's writer lock (StateLocked when another process has it)."""
    path = state_dir / "syncd.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:  # ELOOP: a symbolic link, which would be followed to its target
        raise StateLocked(f"{path} cannot be used as the lock: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise StateLocked(f"{path} is not a regular file; remove it")
    f = os.fdopen(fd, "r+b")  # held for the life of the process
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        owner = f.read().decode(errors="replace").strip() or "unknown"
        f.close()
        raise StateLocked(
            f"another syncd (pid {owner}) is using {state_dir}; stop it, or use its running "
            "daemon instead of a second process"
        ) from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()).encode())
    f.flush()
    return f
