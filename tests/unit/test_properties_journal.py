"""Properties of the journal's reader (syncd.core.journal_format and
syncd.journal.store.check_segments) over bytes nobody planned for.

Whatever a segment holds, reading it gives the records it holds, a torn last line (only at the
very end, only where allowed), or Damage naming the file and the line: never another exception.
A valid journal reads back exactly as written, and each kind of damage (a changed byte, a cut,
an inserted, removed or repeated line) is found at the line where it is.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from syncd.core.journal_format import GENESIS, Damage, Verified, encode, verify
from syncd.core.journal_state import REQUIRED, DriftResult, JournalState, Kind, Record, Result
from syncd.errors import JournalCorrupt
from syncd.journal.store import check_segments, segment_name, segments
from tests.support.properties import JOURNAL_FIELDS, bounded_settings, hostile_bytes, json_values

# --- valid journals --------------------------------------------------------------------------


def record_data(kind: Kind) -> st.SearchStrategy[dict[str, Any]]:
    """A record's data as syncd would accept it: its required fields, and anything else."""
    required: dict[str, st.SearchStrategy[Any]] = {
        key: st.integers(0, 10**6) if types == (int,) else st.text(max_size=12)
        for key, types in REQUIRED[kind].items()
    }
    if kind is Kind.RESULT:
        required["result"] = st.sampled_from([r.value for r in Result])
    if kind is Kind.DRIFT_CHECKED:
        required["result"] = st.sampled_from([r.value for r in DriftResult])
    taken = {*required, *JOURNAL_FIELDS}  # their types are the fold's business (pending file)
    extra = st.dictionaries(
        st.text(max_size=8).filter(lambda k: k not in taken), json_values(max_leaves=6), max_size=3
    )
    return st.tuples(extra, st.fixed_dictionaries(required)).map(lambda d: {**d[0], **d[1]})


# Built once: a strategy made anew inside every draw costs more than the test itself.
_DATA = {kind: record_data(kind) for kind in Kind}
_TIMES = st.text(max_size=30) | st.just("2026-12-01T00:00:00.000Z")
_HOSTILE = hostile_bytes()


@st.composite
def records(draw: st.DrawFn, min_size: int = 1) -> list[tuple[str, Kind, dict[str, Any]]]:
    kinds = draw(st.lists(st.sampled_from(list(Kind)), min_size=min_size, max_size=12))
    return [(draw(_TIMES), kind, draw(_DATA[kind])) for kind in kinds]


def written(entries: list[tuple[str, Kind, dict[str, Any]]], first: int = 1) -> list[bytes]:
    lines = []
    prev = GENESIS
    for seq, (time, kind, data) in enumerate(entries, start=first):
        line, prev = encode(seq, time, kind.value, data, prev)
        lines.append(line)
    return lines


def line_at(data: bytes, offset: int) -> int:
    """The line (from 1) holding byte `offset`; a newline belongs to the line it ends."""
    return data.count(b"\n", 0, offset) + 1


def read(data: bytes, **options: Any) -> Verified | Damage:
    """verify's outcome, checked to be one of the two it may have."""
    try:
        result = verify(data, where="segment-1.jsonl", **options)
    except Damage as damage:
        assert damage.where == "segment-1.jsonl"
        assert 1 <= damage.line <= data.count(b"\n") + 1, damage
        assert damage.reason and "\n" not in str(damage), damage
        assert str(damage).startswith("segment-1.jsonl: "), damage
        return damage
    assert result.good_bytes + result.torn == len(data), result
    assert result.torn == 0 or b"\n" not in data[result.good_bytes :]
    return result


@bounded_settings(200)
@given(records(min_size=0))
def test_a_valid_journal_reads_back_exactly_as_written(entries: Any) -> None:
    lines = written(entries)
    result = verify(b"".join(lines), where="segment-1.jsonl")
    expected = [Record(seq, t, k, d) for seq, (t, k, d) in enumerate(entries, start=1)]
    assert list(result.records) == expected
    assert (result.last_seq, result.torn) == (len(entries), 0)
    assert result.good_bytes == sum(map(len, lines))
    state = JournalState()
    for record in result.records:
        state.apply(record)
    assert state.last_seq == len(entries)
    for line in lines:  # one line each, ASCII, canonical
        assert line.endswith(b"\n") and line.count(b"\n") == 1 and line.isascii()
        assert json.loads(line)["prev"] in {GENESIS} | {json.loads(x)["hash"] for x in lines}


# --- any bytes at all ------------------------------------------------------------------------


@bounded_settings(200)
@given(st.one_of(hostile_bytes(), st.lists(hostile_bytes(), max_size=4).map(b"\n".join)))
@example(b"[" * 100_000 + b"\n")
@example(b'{"seq":1,"prev":' + b"[" * 100_000 + b"\n")
def test_any_bytes_are_records_a_torn_tail_or_located_damage(data: bytes) -> None:
    for prev in (GENESIS, None):  # from the start, or mid-journal taking the first link on trust
        outcome = read(data, prev=prev)
        if isinstance(outcome, Verified):  # random bytes never make a record
            assert outcome.records == () and outcome.last_seq == 0
        strict = read(data, prev=prev, allow_torn=False)
        if isinstance(outcome, Verified) and outcome.torn:
            assert isinstance(strict, Damage) and "cut short" in strict.reason


@bounded_settings(100)
@given(
    st.lists(json_values(max_leaves=6), max_size=4),
    st.lists(st.sampled_from(list(Kind)) | st.text(max_size=5), max_size=4),
)
def test_records_with_a_good_hash_and_any_data_are_kept_or_damage(
    datas: list[Any], kinds: list[Any]
) -> None:
    """Whoever can write the journal can compute a hash: a record's data is checked all the
    same, so what the fold may meet is a record of its kind or Damage at its line."""
    prev = GENESIS
    lines = []
    for seq, (data, kind) in enumerate(zip(datas, kinds, strict=False), start=1):
        line, prev = encode(seq, "t", getattr(kind, "value", kind), data, prev)
        lines.append(line)
    outcome = read(b"".join(lines))
    if isinstance(outcome, Damage):
        assert outcome.seq == outcome.line  # hash and order are right: it is the content
        assert outcome.reason.startswith(("unknown kind", "its "))


# --- damage is found where it is ------------------------------------------------------------


@bounded_settings(200)
@given(records(), st.data())
def test_a_changed_byte_is_damage_at_its_line_or_a_torn_last_line(entries: Any, data: Any) -> None:
    good = b"".join(written(entries))
    at = data.draw(st.integers(0, len(good) - 1), label="at")
    mask = data.draw(st.integers(1, 255), label="mask")
    changed = bytearray(good)
    changed[at] ^= mask
    outcome = read(bytes(changed))
    if at == len(good) - 1:  # the last newline: the last record is now a torn write
        assert isinstance(outcome, Verified)
        assert outcome.last_seq == len(entries) - 1
        assert outcome.torn == len(good) - outcome.good_bytes
    else:
        assert isinstance(outcome, Damage)
        assert outcome.line == line_at(good, at)


@bounded_settings(200)
@given(records(), st.data())
def test_a_cut_is_a_torn_tail_where_allowed_and_damage_where_not(entries: Any, data: Any) -> None:
    lines = written(entries)
    good = b"".join(lines)
    at = data.draw(st.integers(0, len(good) - 1), label="cut at")
    cut = good[:at]
    complete = cut.count(b"\n")
    outcome = read(cut)
    assert isinstance(outcome, Verified)
    assert outcome.last_seq == complete
    assert outcome.good_bytes == sum(map(len, lines[:complete]))
    assert outcome.torn == at - outcome.good_bytes
    strict = read(cut, allow_torn=False)
    if outcome.torn:
        assert isinstance(strict, Damage) and strict.line == complete + 1
    else:
        assert isinstance(strict, Verified) and strict.last_seq == complete


@bounded_settings(200)
@given(records(), st.data())
def test_an_inserted_removed_or_repeated_line_is_damage_at_that_line(
    entries: Any, data: Any
) -> None:
    lines = written(entries)
    n = len(lines)
    how = data.draw(st.sampled_from(["insert", "remove", "repeat", "swap"]), label="how")
    if how == "insert":
        at = data.draw(st.integers(0, n), label="at")
        junk = data.draw(st.one_of(_HOSTILE, st.sampled_from(lines)), label="line")
        inserted = junk.replace(b"\n", b"") + b"\n"
        new = [*lines[:at], inserted, *lines[at:]]
        # a copy of the line it lands before is that line, repeated: the second one is wrong
        expected = at + 2 if lines[at : at + 1] == [inserted] else at + 1
    elif how == "remove":
        at = data.draw(st.integers(0, n - 1), label="at")
        new = lines[:at] + lines[at + 1 :]
        expected = at + 1 if at < n - 1 else None  # the last one: a shorter journal
    elif how == "repeat":
        at = data.draw(st.integers(0, n - 1), label="at")
        new = [*lines[: at + 1], lines[at], *lines[at + 1 :]]
        expected = at + 2
    else:
        if n < 2:
            return
        at = data.draw(st.integers(0, n - 2), label="at")
        new = [*lines[:at], lines[at + 1], lines[at], *lines[at + 2 :]]
        expected = at + 1
    outcome = read(b"".join(new))
    if expected is None:
        assert isinstance(outcome, Verified) and outcome.last_seq == n - 1
    else:
        assert isinstance(outcome, Damage), (how, at)
        assert outcome.line == expected, (how, at, outcome)


# --- segments on disk -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("segments")


def write_segments(folder: Path, lines: list[bytes], cuts: list[int]) -> list[Path]:
    """The lines split into segment files at `cuts` (line indexes), as the store names them."""
    for old in folder.iterdir():
        old.unlink()
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(lines)}), len(lines)]
    paths = []
    for start, end in itertools.pairwise(bounds):
        path = folder / segment_name(start + 1)
        path.write_bytes(b"".join(lines[start:end]))
        paths.append(path)
    return paths


@bounded_settings(100)
@given(records(), st.lists(st.integers(0, 12), max_size=4), st.data())
def test_segments_read_back_and_damage_names_the_segment_and_line(
    folder: Path, entries: Any, cuts: list[int], data: Any
) -> None:
    lines = written(entries)
    paths = write_segments(folder, lines, cuts)
    checked = check_segments(segments(folder), keep_after=0)
    assert [r.seq for r in checked.records] == list(range(1, len(lines) + 1))
    assert (checked.last_seq, checked.torn) == (len(lines), 0)

    victim = data.draw(st.sampled_from(paths), label="segment")
    body = victim.read_bytes()
    if not body:
        return
    at = data.draw(st.integers(0, len(body) - 1), label="at")
    changed = bytearray(body)
    changed[at] ^= data.draw(st.integers(1, 255), label="mask")
    victim.write_bytes(bytes(changed))
    last = victim == paths[-1]
    try:
        checked = check_segments(segments(folder), keep_after=0)
    except JournalCorrupt as exc:
        message = str(exc)
        assert message.startswith(f"{victim}: "), message
        assert f"line {line_at(body, at)})" in message or f"line {line_at(body, at)}:" in message
        assert not (last and at == len(body) - 1), message
    else:  # only the last segment's last newline makes a torn tail
        assert last and at == len(body) - 1
        assert checked.torn > 0 and checked.last_seq == len(lines) - 1


@bounded_settings(100)
@given(st.lists(hostile_bytes(), min_size=1, max_size=3))
@example([b"[" * 100_000 + b"\n"])
def test_any_segment_files_are_checked_or_refused_naming_one(
    folder: Path, contents: list[bytes]
) -> None:
    paths = []
    for old in folder.iterdir():
        old.unlink()
    for i, content in enumerate(contents):
        path = folder / segment_name(1 + i)
        path.write_bytes(content)
        paths.append(path)
    try:
        checked = check_segments(segments(folder), keep_after=0)
    except JournalCorrupt as exc:
        assert any(str(exc).startswith(f"{p}: ") for p in paths), exc
        assert "\n" not in str(exc)
    else:
        assert checked.records == () and checked.last_seq == 0
