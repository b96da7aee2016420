"""The backup key: what a checkpoint's signature covers, and which key files are refused."""

from __future__ import annotations

import pytest

from syncd.errors import ConfigError
from syncd.journal.auth import BackupKey

LINEAGE = {"id": "20261202T000000000000Z-aa", "parent": None, "fork_seq": 0, "fork_hash": "0" * 64}
CHECKPOINT = {"seq": 7, "hash": "ab" * 32, "time": "2026-12-02T00:00:00.000Z"}


def test_a_signed_checkpoint_verifies_only_for_its_lineage_and_record():
    key = BackupKey(b"s" * 32)
    signed = dict(CHECKPOINT, mac=key.sign(CHECKPOINT, LINEAGE))
    assert key.verify(signed, LINEAGE)
    assert not BackupKey(b"t" * 32).verify(signed, LINEAGE)  # another key
    assert not key.verify(dict(signed, seq=8), LINEAGE)  # a later record claimed
    assert not key.verify(dict(signed, hash="cd" * 32), LINEAGE)  # another record
    assert not key.verify(signed, dict(LINEAGE, id="99991231T000000000000Z-ff"))  # copied over
    assert not key.verify(signed, dict(LINEAGE, fork_seq=3))  # another fork point
    assert not key.verify(CHECKPOINT, LINEAGE)  # unsigned


@pytest.mark.parametrize(
    ("content", "mode", "problem"),
    [
        ("k" * 40, 0o644, "chmod 600"),
        ("short", 0o600, "at least 32"),
        (None, 0o600, "cannot read it"),
    ],
)
def test_a_key_file_that_is_missing_short_or_readable_by_others_is_refused(
    tmp_path, content, mode, problem
):
    path = tmp_path / "backup.key"
    if content is not None:
        path.write_text(content)
        path.chmod(mode)
    with pytest.raises(ConfigError, match=problem):
        BackupKey.load(path)


def test_a_good_key_file_loads(tmp_path):
    path = tmp_path / "backup.key"
    path.write_text("k" * 40 + "\n")
    path.chmod(0o600)
    assert BackupKey.load(path).verify(
        dict(CHECKPOINT, mac=BackupKey(b"k" * 40).sign(CHECKPOINT, LINEAGE)), LINEAGE
    )
