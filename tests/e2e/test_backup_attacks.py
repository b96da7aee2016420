"""A bucket writer against an authenticated backup: rewritten records, an added checkpoint
object, a lineage folder copied under a newer name, and (without a key) a forged open create.
The `syncd` command against moto's CloudFormation and S3, with real Git repos."""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC, datetime

from syncd.core.journal_format import GENESIS
from tests.conftest import deployment, topic_stack, write_config
from tests.e2e.conftest import BUCKET, chain, deployed, json_out, key_file, run_syncd


def keys(s3, under: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=under)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def keyed_config(tmp_path, repo, aws):
    return write_config(
        tmp_path,
        [{"name": "r", "url": str(repo.bare)}],
        aws.endpoint,
        backup={"url": f"s3://{BUCKET}/prod/", "key_file": key_file(tmp_path)},
    )


def stacks_in_status(config) -> list[str]:
    rows = json_out(run_syncd("status", "-c", str(config), "--format", "json"))
    return [row["stack"] for row in rows]


def test_records_rewritten_before_a_signed_checkpoint_are_never_restored(
    tmp_path, repo, aws, backup
):
    topic_stack(repo, "alpha", "a1")
    config = keyed_config(tmp_path, repo, aws)
    assert run_syncd("sync", "-c", str(config)).returncode == 0
    records = [k for k in keys(backup, "prod/lineages/") if "/records/000000000001" in k]
    checkpoints = [k for k in keys(backup, "prod/lineages/") if "/checkpoints/" in k]
    signed = json.loads(backup.get_object(Bucket=BUCKET, Key=checkpoints[0])["Body"].read())
    forged = deployed("victim")
    forged += [("source_ok", {"repo": "r"})] * (signed["seq"] - len(forged))
    backup.put_object(Bucket=BUCKET, Key=records[0], Body=chain(forged))  # a new version
    shutil.rmtree(tmp_path / "state")

    plain = run_syncd("restore", "-c", str(config))
    assert plain.returncode == 1 and "signed checkpoint" in plain.stderr
    partial = run_syncd("restore", "--partial", "-c", str(config))
    assert partial.returncode != 0  # nothing before the damage is vouched for
    assert not (tmp_path / "state" / "journal").exists() or "victim" not in stacks_in_status(config)


def test_an_object_added_among_the_checkpoints_does_not_block_a_restore(
    tmp_path, repo, aws, backup
):
    topic_stack(repo, "alpha", "a1")
    config = keyed_config(tmp_path, repo, aws)
    assert run_syncd("sync", "-c", str(config)).returncode == 0
    lineage = keys(backup, "prod/lineages/")[0].split("/")[2]
    # Sorts first (newest), holds junk: adding an object is what Object Lock does not stop.
    junk = f"prod/lineages/{lineage}/checkpoints/000000000000.json"
    backup.put_object(Bucket=BUCKET, Key=junk, Body=b"junk")
    shutil.rmtree(tmp_path / "state")
    restored = run_syncd("restore", "-c", str(config), "--format", "json")
    assert restored.returncode == 0, restored.stderr
    assert json_out(restored)["authenticated"] and stacks_in_status(config) == ["alpha"]
    verified = run_syncd("journal", "verify", "--remote", "-c", str(config))
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_lineage_folder_copied_under_a_newer_name_is_skipped(tmp_path, repo, aws, backup):
    topic_stack(repo, "alpha", "a1")
    config = keyed_config(tmp_path, repo, aws)
    assert run_syncd("sync", "-c", str(config)).returncode == 0
    time.sleep(0.05)
    cut = datetime.now(UTC).isoformat(timespec="milliseconds")
    time.sleep(0.05)
    repo.commit({"deployments/beta.yaml": deployment(Name="b")})
    assert run_syncd("sync", "-c", str(config)).returncode == 0
    shutil.rmtree(tmp_path / "state")  # back to before beta: a new lineage, which goes on
    assert run_syncd("restore", "--at", cut, "-c", str(config)).returncode == 0
    repo.commit({"deployments/gamma.yaml": deployment(Name="g")})
    assert run_syncd("sync", "-c", str(config)).returncode == 0
    old = keys(backup, "prod/lineages/")[0].split("/")[2]
    copy = "99991231T000000000000Z-00000000"  # sorts after every real lineage
    for key in [
        f"prod/lineages/{old}/lineage.json",
        keys(backup, f"prod/lineages/{old}/checkpoints/")[0],
    ]:
        backup.copy_object(
            Bucket=BUCKET,
            Key=key.replace(f"/{old}/", f"/{copy}/"),
            CopySource={"Bucket": BUCKET, "Key": key},
        )
    shutil.rmtree(tmp_path / "state")
    restored = json_out(run_syncd("restore", "-c", str(config), "--format", "json"))
    assert restored["lineage"] not in (old, copy)
    assert any(copy in why and "not the folder it is in" in why for why in restored["skipped"])
    assert stacks_in_status(config) == ["alpha", "beta", "gamma"]  # the newest real lineage


def test_a_forged_open_create_never_deletes_someone_elses_stack_in_review(
    tmp_path, repo, aws, backup
):
    topic_stack(repo, "alpha", "a1")
    no_key = write_config(
        tmp_path,
        [{"name": "r", "url": str(repo.bare)}],
        aws.endpoint,
        backup={"url": f"s3://{BUCKET}/prod/"},
    )
    aws.cfn.create_change_set(  # someone else's new stack, waiting for their review
        StackName="victim",
        ChangeSetName="their-cs",
        ChangeSetType="CREATE",
        TemplateBody="Resources:\n  T:\n    Type: AWS::SNS::Topic\n",
        Tags=[{"Key": "syncd:repo", "Value": "someone-else"}],
    )
    their_change_set = ("change_set", {"stack": "victim", "arn": "their-cs", "name": "their-cs"})
    forged = [*deployed("victim")[:2], their_change_set]
    name = "99991231T000000000000Z-f0e0d0c0"
    base = f"prod/lineages/{name}/"
    doc = {"id": name, "parent": None, "fork_seq": 0, "fork_hash": GENESIS}
    backup.put_object(Bucket=BUCKET, Key=base + "lineage.json", Body=json.dumps(doc).encode())
    backup.put_object(Bucket=BUCKET, Key=base + "records/000000000001.jsonl", Body=chain(forged))
    taken = run_syncd("restore", "--unauthenticated", "-c", str(no_key))
    assert taken.returncode == 0, taken.stderr
    run_syncd("sync", "-c", str(no_key))
    assert aws.stack("victim") is not None
    assert not [c for c in aws.proxy.log if c.action == "DeleteStack" and c.stack == "victim"]
