"""syncd.core.journal_format: every changed, removed, reordered or inserted record is found, and
the first bad one is named."""

from __future__ import annotations

import re

import pytest

from syncd.core.journal_format import GENESIS, Damage, chain_hash, encode, verify
from syncd.core.journal_state import Kind


def journal(n: int, first: int = 1, prev: str = GENESIS) -> tuple[list[bytes], str]:
    lines = []
    for seq in range(first, first + n):
        line, prev = encode(
            seq,
            f"2026-11-30T00:00:{seq % 60:02d}.000Z",
            Kind.COMMIT.value,
            {"repo": "r", "commit": f"{seq:040x}", "note": "é ünïcode"},
            prev,
        )
        lines.append(line)
    return lines, prev


def line_of(data: bytes, offset: int) -> int:
    return data[:offset].count(b"\n") + 1


def test_a_clean_journal_verifies_and_says_where_it_ends() -> None:
    lines, last = journal(5)
    result = verify(b"".join(lines), where="seg")
    assert [r.seq for r in result.records] == [1, 2, 3, 4, 5]
    assert (result.last_seq, result.last_hash, result.torn) == (5, last, 0)
    assert result.good_bytes == len(b"".join(lines))
    assert verify(b"", where="seg").last_hash == GENESIS


def test_lines_are_ascii_canonical_json() -> None:
    lines, _ = journal(1)
    assert lines[0].isascii() and lines[0].endswith(b"\n") and lines[0].count(b"\n") == 1
    assert b'", "' not in lines[0] and b'": ' not in lines[0]


def test_every_single_bit_flip_is_found_on_its_own_line() -> None:
    data = b"".join(journal(4)[0])
    for offset in range(len(data)):
        for bit in range(8):
            damaged = bytearray(data)
            damaged[offset] ^= 1 << bit
            with pytest.raises(Damage) as caught:
                verify(bytes(damaged), where="seg", allow_torn=False)
            assert caught.value.line == line_of(data, offset), (offset, bit, caught.value)


def test_a_torn_last_line_is_returned_not_damage() -> None:
    lines, _ = journal(3)
    data = b"".join(lines)
    for cut in range(1, len(lines[-1])):
        result = verify(data[:-cut], where="seg")
        assert result.last_seq == 2 and result.torn == len(lines[-1]) - cut
        assert result.good_bytes == len(lines[0]) + len(lines[1])
        with pytest.raises(Damage, match="line 3: cut short"):
            verify(data[:-cut], where="seg", allow_torn=False)


@pytest.mark.parametrize(
    ("edit", "line", "reason"),
    [
        (lambda ls: ls[:2] + ls[3:], 3, "expected seq 3: a record is missing before it"),
        (lambda ls: [ls[0], ls[2], ls[1], *ls[3:]], 2, "expected seq 2: a record is missing"),
        (lambda ls: [*ls[:3], ls[2], *ls[3:]], 4, "expected seq 4: out of order"),
        (lambda ls: ls[1:], 1, "expected seq 1: a record is missing"),
    ],
    ids=["removed", "reordered", "duplicated", "first-removed"],
)
def test_removed_reordered_and_inserted_records_are_named(edit, line, reason) -> None:
    lines, _ = journal(5)
    with pytest.raises(Damage) as caught:
        verify(b"".join(edit(lines)), where="segment-1")
    assert caught.value.line == line
    assert reason in str(caught.value)
    assert str(caught.value).startswith("segment-1: record seq")


def test_a_forged_record_with_a_recomputed_hash_breaks_the_chain_after_it() -> None:
    lines, _ = journal(4)
    forged, _ = encode(2, "2026-11-30T00:00:02.000Z", "commit", {"repo": "evil"}, "f" * 64)
    with pytest.raises(Damage, match=r"seq 2 .*chain broken"):
        verify(b"".join([lines[0], forged, *lines[2:]]), where="seg")
    # Forged with the right prev: record 2 verifies, but record 3 no longer follows it.
    first = verify(lines[0], where="seg").last_hash
    forged, _ = encode(
        2, "2026-11-30T00:00:02.000Z", "commit", {"repo": "evil", "commit": "0" * 40}, first
    )
    with pytest.raises(Damage, match=r"seq 3 .*chain broken"):
        verify(b"".join([lines[0], forged, *lines[2:]]), where="seg")


def test_verify_continues_a_chain_across_segments() -> None:
    _, h = journal(3)
    second, end = journal(2, first=4, prev=h)
    result = verify(b"".join(second), where="seg-4", after_seq=3, prev=h)
    assert (result.last_seq, result.last_hash) == (5, end)
    with pytest.raises(Damage, match="chain broken"):
        verify(b"".join(second), where="seg-4", after_seq=3, prev=GENESIS)
    with pytest.raises(Damage, match="expected seq 3"):
        verify(b"".join(second), where="seg-4", after_seq=2, prev=h)


def test_an_unknown_kind_is_damage() -> None:
    line, _ = encode(1, "t", "teleported", {}, GENESIS)
    with pytest.raises(Damage, match="unknown kind 'teleported'"):
        verify(line, where="seg")


def test_records_are_kept_only_after_keep_after() -> None:
    lines, last = journal(3)
    result = verify(b"".join(lines), where="seg", keep_after=None)
    assert result.records == () and (result.last_seq, result.last_hash) == (3, last)
    assert [r.seq for r in verify(b"".join(lines), where="seg", keep_after=1).records] == [2, 3]


def test_mark_returns_the_hash_of_one_record() -> None:
    lines, last = journal(3)
    two = verify(b"".join(lines[:2]), where="seg").last_hash
    assert verify(b"".join(lines), where="seg", mark=2).marked_hash == two
    assert verify(b"".join(lines), where="seg", mark=3).marked_hash == last
    assert verify(b"".join(lines), where="seg", mark=0).marked_hash == GENESIS
    assert verify(b"".join(lines), where="seg", mark=7).marked_hash is None


def test_a_reader_may_start_mid_journal_trusting_the_first_link() -> None:
    lines, last = journal(4)
    two = verify(b"".join(lines[:2]), where="seg").last_hash
    result = verify(b"".join(lines[2:]), where="seg", after_seq=2, prev=None, mark=2)
    assert (result.last_seq, result.last_hash, result.marked_hash) == (4, last, two)
    with pytest.raises(Damage, match=r"seq 4 .*chain broken"):
        verify(
            b"".join([lines[2], lines[3][:-1].replace(b'"prev":"', b'"prev":"0') + b"\n"]),
            where="seg",
            after_seq=2,
            prev=None,
        )


def test_a_line_is_exactly_the_canonical_json_of_the_record() -> None:
    import json

    data = {
        "stack": "s",
        "hash": "x" * 64,
        "prev": {"hash": '","prev":"'},
        "é": [1, None, True, 2.5],
    }
    line, digest = encode(7, "2026-11-30T00:00:07.000Z", "observed", data, "a" * 64)
    expected = {
        "seq": 7,
        "time": "2026-11-30T00:00:07.000Z",
        "kind": "observed",
        "data": data,
        "prev": "a" * 64,
        "hash": digest,
    }
    assert line == json.dumps(expected, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    assert digest == chain_hash("a" * 64, 7, "2026-11-30T00:00:07.000Z", "observed", data)
    result = verify(line, where="seg", after_seq=6, prev="a" * 64)
    assert result.records[0].data == data


@pytest.mark.parametrize(
    ("kind", "data", "problem"),
    [
        ("result", {"result": "succeeded"}, "its result record has no 'stack'"),
        ("version", {"repo": "r", "stack": "s"}, "its version record has no 'version'"),
        ("result", {"stack": "s", "result": "won"}, "unknown result 'won'"),
        ("blocked", {"stack": ["s"], "reason": "x"}, "a 'stack' of the wrong type"),
        ("observed", ["not", "an", "object"], "its data is not an object"),
        (
            "suspended",
            {"repo": "r", "stack": "s", "by": "a"},
            "its suspended record has no 'reason'",
        ),
        (
            "suspended",
            {"repo": "r", "stack": None, "reason": "", "by": "a"},
            "'stack' of the wrong",
        ),
        ("resumed", {"repo": "r", "stack": "s"}, "its resumed record has no 'by'"),
        ("resumed", {"repo": 1, "stack": "", "by": "a"}, "a 'repo' of the wrong type"),
        # Fields the fold reads with a default are checked too (found by a property test).
        ("observed", {"stack": "s", "outputs": 1}, "'outputs' of the wrong type"),
        ("observed", {"stack": "s", "stack_status": 7}, "a 'stack_status' of the wrong type"),
        (
            "version",
            {"repo": "r", "stack": "s", "version": 1, "commit": "c", "digest": "d"}
            | {"action": "create", "parameters": None},
            "a 'parameters' of the wrong type",
        ),
        ("result", {"stack": "s", "result": "failed", "message": ["x"]}, "'message' of the"),
    ],
)
def test_a_record_with_a_valid_hash_but_missing_fields_is_located_damage(
    kind: str, data: object, problem: str
) -> None:
    # Whoever can write the journal can compute a hash: the fields are checked too, so that
    # `status` meets a located damage, not a KeyError.
    lines, last = journal(2)
    bad, _ = encode(3, "2026-11-30T00:00:03.000Z", kind, data, last)
    with pytest.raises(Damage, match=rf"seq 3 \(line 3\): .*{re.escape(problem)}"):
        verify(b"".join([*lines, bad]), where="seg")
