"""The journal's record format and its verification: one place, used for local segments, S3
objects and restores alike.

Pure. A record is one line of canonical JSON (sorted keys, no spaces, ASCII):
`{"data","hash","kind","prev","seq","time"}`. `hash` is SHA-256 over the previous record's hash
and this record's body, `{"data","kind","seq","time"}`: the record's checksum and its link in
the chain at once. The check hashes the line's own bytes less its `hash` and `prev` fields (which
is the body, byte for byte, when the line is as written), so any changed byte shows without
serialising the record again; a removed, reordered or inserted record breaks `seq` or `prev`.
The newline ends a record: a last line without one is a torn write, never acknowledged.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from syncd.core.journal_state import Kind, Record, schema_problem

GENESIS = "0" * 64


class Damage(Exception):
    """A record that cannot be trusted: `seq` (when it could be read) or `line` says which."""

    def __init__(self, where: str, line: int, seq: int | None, reason: str) -> None:
        self.where = where
        self.line = line
        self.seq = seq
        self.reason = reason
        name = f"record seq {seq} (line {line})" if seq is not None else f"line {line}"
        super().__init__(f"{where}: {name}: {reason}")


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _body(seq: int, time: str, kind: str, data: Any) -> bytes:
    d, k, t = _dumps(data), _dumps(kind), _dumps(time)
    return f'{{"data":{d},"kind":{k},"seq":{seq},"time":{t}}}'.encode()


def chain_hash(prev: str, seq: int, time: str, kind: str, data: Any) -> str:
    return hashlib.sha256(prev.encode() + _body(seq, time, kind, data)).hexdigest()


def encode(seq: int, time: str, kind: str, data: Any, prev: str) -> tuple[bytes, str]:
    """The record's line (with its newline) and its hash. The line is the canonical JSON of
    {data, hash, kind, prev, seq, time}; built from parts so `data` is serialised once."""
    d, k, t = _dumps(data), _dumps(kind), _dumps(time)
    body = f'{{"data":{d},"kind":{k},"seq":{seq},"time":{t}}}'.encode()
    digest = hashlib.sha256(prev.encode() + body).hexdigest()
    line = f'{{"data":{d},"hash":"{digest}","kind":{k},"prev":"{prev}","seq":{seq},"time":{t}}}'
    return line.encode() + b"\n", digest


def _hashed_body(raw: bytes) -> bytes | None:
    """The bytes the record's hash covers: its line without the hash and prev fields (which,
    with the keys in order, sit after `data` and after `kind`). None if the layout is wrong."""
    h = raw.rfind(b',"hash":"')
    p = raw.rfind(b',"prev":"')
    if h < 0 or p < h + 74 or raw[h + 73 : h + 74] != b'"' or raw[p + 73 : p + 74] != b'"':
        return None
    return raw[:h] + raw[h + 74 : p] + raw[p + 74 :]


@dataclass(frozen=True)
class Verified:
    """A run of good records: their end (`last_seq`, `last_hash`), the bytes they take, and the
    length of a torn tail after them (0 when the data ends cleanly)."""

    records: tuple[Record, ...]
    last_seq: int
    last_hash: str
    good_bytes: int
    torn: int
    marked_hash: str | None = None  # the hash of record `mark`, when it was passed


def verify(
    data: bytes,
    *,
    where: str,
    after_seq: int = 0,
    prev: str | None = GENESIS,
    allow_torn: bool = True,
    keep_after: int | None = 0,
    mark: int | None = None,
) -> Verified:
    """Check every record in `data`, which must follow record `after_seq` (hash `prev`).

    Raises Damage at the first bad record. A last line without its newline is a torn write:
    returned as `torn` when `allow_torn`, else damage. Records after seq `keep_after` are
    returned (None: none, for a cheap pass over history already folded). `prev=None` takes the
    first record's own link on trust (a reader starting mid-journal). `mark` asks for the hash
    of one record (or of `after_seq`'s, the link the data starts from)."""
    records: list[Record] = []
    seq = after_seq
    offset = 0
    marked = prev if mark == after_seq else None
    for number, raw, complete in _lines(data):
        if not complete:
            if allow_torn:
                return Verified(tuple(records), seq, prev or GENESIS, offset, len(raw), marked)
            raise Damage(where, number, None, "cut short (no newline at its end)")
        if prev is None:
            prev = _stored_prev(raw)
            marked = prev if mark == after_seq else marked
        record, digest = parse(raw, where=where, line=number, expect_seq=seq + 1, prev=prev)
        if keep_after is not None and record.seq > keep_after:
            records.append(record)
        seq, prev = record.seq, digest
        if seq == mark:
            marked = digest
        offset += len(raw) + 1
    return Verified(tuple(records), seq, prev or GENESIS, offset, 0, marked)


def _stored_prev(raw: bytes) -> str:
    try:
        return str(json.loads(raw)["prev"])
    except (ValueError, KeyError, TypeError, RecursionError):
        return ""  # parse() reports the line as unreadable


def parse(raw: bytes, *, where: str, line: int, expect_seq: int, prev: str) -> tuple[Record, str]:
    """One line (without its newline) as a record and its hash, or Damage saying why not."""
    try:
        obj = json.loads(raw)
        seq, time, kind, data = obj["seq"], obj["time"], obj["kind"], obj["data"]
        stored_prev, stored_hash = obj["prev"], obj["hash"]
    except (ValueError, KeyError, TypeError) as exc:
        raise Damage(where, line, None, f"unreadable ({exc})") from None
    except RecursionError:  # json.loads recurses: a line of a few thousand `[` is damage too
        raise Damage(where, line, None, "unreadable (nested too deeply)") from None
    if not isinstance(seq, int) or not isinstance(stored_hash, str):
        raise Damage(where, line, None, "unreadable (seq or hash of the wrong type)")
    if seq != expect_seq:
        what = "a record is missing before it" if seq > expect_seq else "out of order"
        raise Damage(where, line, seq, f"expected seq {expect_seq}: {what}")
    if stored_prev != prev:
        raise Damage(where, line, seq, "does not follow the record before it (chain broken)")
    body = _hashed_body(raw)
    digest = hashlib.sha256(prev.encode() + body).hexdigest() if body is not None else ""
    if digest != stored_hash:
        raise Damage(where, line, seq, "its content does not match its hash")
    try:
        known = Kind(kind)
    except ValueError:
        raise Damage(where, line, seq, f"unknown kind {kind!r}") from None
    problem = schema_problem(known, data)
    if problem is not None or not isinstance(time, str):
        raise Damage(where, line, seq, problem or "its time is not text")
    return Record(seq, time, known, data), digest


def _lines(data: bytes) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, bytes without newline, whether a newline ended it)."""
    start = 0
    number = 0
    while start < len(data):
        number += 1
        end = data.find(b"\n", start)
        if end < 0:
            yield number, data[start:], False
            return
        yield number, data[start:end], True
        start = end + 1
