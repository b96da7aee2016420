"""The journal on local disk: append-only, each record fsynced before syncd acts on it.

One JSON object a line in `state_dir/journal/segment-000001.jsonl`:
`{"seq", "time", "kind", "data", "prev", "hash"}`, where `hash` is SHA-256 over the previous
record's hash and this record's canonical body. The chain makes any changed, removed, reordered or
inserted record visible; the mirror to S3 (next) uploads records as they are.

Hazards: a crash mid-write leaves a torn last line, which `open` drops with a warning (the record
was never acknowledged, since `append` returns only after fsync). Any other damage raises
`JournalCorrupt` naming the segment and record: syncd must not guess at history. Only one process
may write: `open(writer=True)` takes an exclusive lock on `state_dir/syncd.lock`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from syncd.core.journal_state import JournalState, Kind, Record
from syncd.errors import JournalCorrupt, StateLocked

GENESIS = "0" * 64
SEGMENT = "segment-000001.jsonl"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _body(seq: int, time: str, kind: str, data: Any) -> bytes:
    return json.dumps(
        {"seq": seq, "time": time, "kind": kind, "data": data},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()


def chain_hash(prev: str, seq: int, time: str, kind: str, data: Any) -> str:
    return hashlib.sha256(prev.encode() + _body(seq, time, kind, data)).hexdigest()


class Journal:
    """The append-only record of everything syncd did; `state` is its fold."""

    def __init__(
        self,
        directory: Path,
        records: list[Record],
        last_hash: str,
        lock_file: IO[bytes] | None,
        clock: Callable[[], str] = utc_now,
    ) -> None:
        self.directory = directory
        self.path = directory / SEGMENT
        self.state = JournalState()
        for record in records:
            self.state.apply(record)
        self._last_hash = last_hash
        self._lock = threading.Lock()
        self._lock_file = lock_file
        self._clock = clock
        self._file: IO[bytes] | None = None
        self._broken = ""  # set when a failed write could not be undone: no more appends
        self._listeners: list[Callable[[Record], None]] = []

    @classmethod
    def open(cls, state_dir: Path, *, writer: bool, warn: Callable[[str], None] = print) -> Journal:
        """Read the journal (creating it for a writer); a writer holds the state_dir lock."""
        directory = state_dir / "journal"
        lock_file = None
        if writer:
            directory.mkdir(parents=True, exist_ok=True)
            lock_file = _lock(state_dir)
        path = directory / SEGMENT
        records, last_hash, good_bytes, torn = _read(path)
        if torn:
            warn(
                f"journal {path}: dropped a torn last record ({torn} bytes) left by a crash; "
                "it was never acknowledged"
            )
            if writer:
                with open(path, "r+b") as f:
                    f.truncate(good_bytes)
                    f.flush()
                    os.fsync(f.fileno())
        return cls(directory, records, last_hash, lock_file)

    def subscribe(self, listener: Callable[[Record], None]) -> None:
        """Call `listener` with every record appended from now on (under the journal's lock)."""
        self._listeners.append(listener)

    def append(self, kind: Kind, **data: Any) -> Record:
        """Write one record and fsync it; only then is it acknowledged and folded in."""
        if self._lock_file is None:
            raise RuntimeError("journal opened read-only")
        with self._lock:
            seq = self.state.last_seq + 1
            time = self._clock()
            digest = chain_hash(self._last_hash, seq, time, kind.value, data)
            line = json.dumps(
                {
                    "seq": seq,
                    "time": time,
                    "kind": kind.value,
                    "data": data,
                    "prev": self._last_hash,
                    "hash": digest,
                },
                sort_keys=True,
                separators=(",", ":"),
            )
            if self._broken:
                raise JournalCorrupt(f"{self.path}: {self._broken}; restart syncd")
            f = self._writable()
            good = f.tell()
            try:
                f.write(line.encode() + b"\n")
                f.flush()
                os.fsync(f.fileno())
            except OSError as exc:
                self._undo(f, good, exc)
                raise JournalCorrupt(
                    f"{self.path}: record seq {seq} could not be written ({exc}); "
                    "it was not acknowledged and nothing acted on it"
                ) from exc
            self._last_hash = digest
            record = Record(seq, time, kind, data)
            self.state.apply(record)
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

    def records(self) -> Iterator[Record]:
        """Every record on disk, in order (reads the file again)."""
        records, _, _, _ = _read(self.path)
        return iter(records)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
            if self._lock_file is not None:
                self._lock_file.close()
                self._lock_file = None

    def _writable(self) -> IO[bytes]:
        if self._file is None:
            created = not self.path.exists()
            self._file = open(self.path, "ab")  # noqa: SIM115 - kept open for appends
            if created:
                # A new file's directory entry must be durable too, or a crash can lose it.
                _fsync_dir(self.directory)
        return self._file


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lock(state_dir: Path) -> IO[bytes]:
    path = state_dir / "syncd.lock"
    f = open(path, "a+b")  # noqa: SIM115 - held for the life of the process
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


def _read(path: Path) -> tuple[list[Record], str, int, int]:
    """Records, the last hash, the length of the good prefix, and the torn tail's length."""
    if not path.exists():
        return [], GENESIS, 0, 0
    data = path.read_bytes()
    records: list[Record] = []
    prev = GENESIS
    offset = 0
    lines = data.split(b"\n")
    for index, raw in enumerate(lines):
        last = index == len(lines) - 1
        if last and raw == b"":
            break
        try:
            obj = json.loads(raw)
            seq, time, kind, body = obj["seq"], obj["time"], obj["kind"], obj["data"]
            stored_prev, stored_hash = obj["prev"], obj["hash"]
        except (ValueError, KeyError, TypeError) as exc:
            if last:  # no newline after it: a write the crash cut short
                return records, prev, offset, len(raw)
            raise JournalCorrupt(
                f"{path}: record {index + 1} (line {index + 1}) is unreadable: {exc}"
            ) from exc
        where = f"{path}: record seq {seq} (line {index + 1})"
        if last:
            # A complete-looking line without its newline was never acknowledged either.
            return records, prev, offset, len(raw)
        if seq != len(records) + 1:
            raise JournalCorrupt(f"{where}: expected seq {len(records) + 1}")
        if stored_prev != prev:
            raise JournalCorrupt(f"{where}: does not follow the record before it")
        if chain_hash(prev, seq, time, kind, body) != stored_hash:
            raise JournalCorrupt(f"{where}: its content does not match its hash")
        try:
            records.append(Record(seq, time, Kind(kind), body))
        except ValueError as exc:
            raise JournalCorrupt(f"{where}: unknown kind {kind!r}") from exc
        prev = stored_hash
        offset += len(raw) + 1
    return records, prev, offset, 0
