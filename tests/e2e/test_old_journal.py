"""A journal, and its S3 backup, written before stacks had keys and targets read and restore
unchanged: `status`, `history` and `journal verify` give what the old version printed.

The fixture (tests/data/journal-before-targets/, see its README.md) was written by syncd 129ab59,
the version before targets: two stacks of one repo (`network`, and `app` reading its output),
two versions each, mirrored to S3 with a backup key. The new version adds `name`, `account` and
`region` to status rows; for a journal without `target` records they are the bare name and
None (`place_of`: nothing says where the default target is)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_config
from tests.e2e.conftest import BUCKET, REPO_ROOT, json_out, run_syncd

FIXTURE = REPO_ROOT / "tests" / "data" / "journal-before-targets"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
NEW_STATUS_FIELDS = {"name", "account", "region"}


def key_copy(tmp_path: Path) -> str:
    """The fixture's key, readable by its owner only (git does not keep the mode)."""
    path = tmp_path / "backup.key"
    shutil.copyfile(FIXTURE / "backup.key", path)
    path.chmod(0o600)
    return str(path)


def config_for(tmp_path: Path, endpoint: str | None = None, **top: Any) -> str:
    # The repo is never fetched: status, history, verify and restore read the journal alone.
    repos = [{"name": EXPECTED["repo"], "url": str(tmp_path / "not-fetched.git")}]
    return str(write_config(tmp_path, repos, endpoint, **top))


def journal_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def segments(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.glob("segment-*.jsonl")))


def assert_reads_as_before(config: str) -> None:
    status = run_syncd("status", "-c", config, "--format", "json")
    assert status.returncode == 0, status.stderr
    rows = json_out(status)
    assert [r["stack"] for r in rows] == [r["stack"] for r in EXPECTED["status"]]
    for row, old in zip(rows, EXPECTED["status"], strict=True):
        assert set(row) == set(old) | NEW_STATUS_FIELDS
        assert {k: row[k] for k in old} == old
        assert (row["name"], row["account"], row["region"]) == (old["stack"], None, None)

    for stack, old in EXPECTED["history"].items():
        history = run_syncd("history", stack, "-c", config, "--format", "json")
        assert history.returncode == 0, history.stderr
        assert json_out(history) == old

    verify = run_syncd("journal", "verify", "-c", config, "--format", "json")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    local = json_out(verify)["local"]
    assert (local["records"], local["last_hash"], local["problem"]) == (
        EXPECTED["verify"]["local"]["records"],
        EXPECTED["verify"]["local"]["last_hash"],
        None,
    )
    text = run_syncd("journal", "verify", "-c", config)
    assert (text.returncode, text.stdout) == (0, EXPECTED["verify_text"])


@pytest.mark.parametrize("snapshots", [True, False], ids=["with-snapshots", "records-only"])
def test_an_old_journal_reads_unchanged(tmp_path, snapshots):
    journal = tmp_path / "state" / "journal"
    shutil.copytree(FIXTURE / "journal", journal)
    if not snapshots:  # the records alone, folded by the new code
        for path in journal.glob("snapshot-*.json"):
            path.unlink()
    before = journal_files(journal)
    assert_reads_as_before(config_for(tmp_path))
    assert journal_files(journal) == before  # reading wrote nothing


def test_an_old_backup_restores_unchanged(tmp_path, aws, backup):
    url = EXPECTED["backup_url"]
    assert url.startswith(f"s3://{BUCKET}/")
    prefix = url.removeprefix(f"s3://{BUCKET}/")
    objects = FIXTURE / "backup"
    for path in sorted(p for p in objects.rglob("*") if p.is_file()):
        key = prefix + path.relative_to(objects).as_posix()
        backup.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())

    config = config_for(tmp_path, aws.endpoint, backup={"url": url, "key_file": key_copy(tmp_path)})
    restored = run_syncd("restore", "-c", config, "--format", "json")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    (lineage,) = (p.name for p in (objects / "lineages").iterdir())
    report = json_out(restored)
    assert (report["lineage"], report["records"], report["authenticated"]) == (
        lineage,
        EXPECTED["verify"]["local"]["records"],
        True,
    )
    assert (report["damage"], report["skipped"], report["unsigned_tail"]) == (None, [], 0)
    assert segments(tmp_path / "state" / "journal") == segments(FIXTURE / "journal")
    assert_reads_as_before(config)
    remote = run_syncd("journal", "verify", "--remote", "-c", config, "--format", "json")
    assert remote.returncode == 0, remote.stdout + remote.stderr
    assert json_out(remote)["remote"]["records"] == EXPECTED["verify"]["local"]["records"]
