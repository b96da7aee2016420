"""Lose the host, restore from S3, carry on: the `syncd` command against moto's CloudFormation
and S3 over HTTP (through the fault proxy), with real Git repos."""

from __future__ import annotations

import json
import shutil
import signal
import time
from datetime import UTC, datetime

from tests.conftest import deployment, topic_stack, write_config
from tests.e2e.conftest import BUCKET, chain, deployed, json_out, key_file, run_syncd
from tests.support.timing import PATIENCE


def records_objects(s3):
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    keys = [o["Key"] for page in pages for o in page.get("Contents", []) if "/records/" in o["Key"]]
    return {k: s3.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys}


def test_lose_the_host_restore_and_carry_on_without_redeploying(tmp_path, repo, aws, backup):
    topic_stack(repo, "alpha", "a1")
    repo.commit({"deployments/beta.yaml": deployment(Name="b1")})
    config = write_config(
        tmp_path,
        [{"name": "r", "url": str(repo.bare)}],
        aws.endpoint,
        backup={"url": f"s3://{BUCKET}/prod/", "key_file": key_file(tmp_path), "interval": "1s"},
    )
    times = []
    for name in ("a2", "a3"):
        assert run_syncd("sync", "-c", str(config)).returncode == 0
        time.sleep(0.01)
        times.append(datetime.now(UTC).isoformat(timespec="milliseconds"))
        time.sleep(0.01)
        repo.commit({"deployments/alpha.yaml": deployment(Name=name)})
    assert run_syncd("sync", "-c", str(config)).returncode == 0
    history = json_out(run_syncd("history", "-c", str(config), "--format", "json"))
    rows = [(h["stack"], h["version"]) for h in history]
    assert sorted(rows[:2]) == [("alpha", 1), ("beta", 1)]  # applied side by side
    assert rows[2:] == [("alpha", 2), ("alpha", 3)]
    verified = run_syncd("journal", "verify", "--remote", "-c", str(config), "--format", "json")
    assert verified.returncode == 0, verified.stdout
    report = json_out(verified)
    assert report["remote"]["records"] == report["local"]["records"]

    # Every intent to execute was in S3 before its ExecuteChangeSet.
    objects = records_objects(backup)
    for index, event in enumerate(aws.proxy.events):
        if event != "ExecuteChangeSet":
            continue
        before = [e for e in aws.proxy.events[:index] if e.startswith("PUT ") and "/records/" in e]
        sent = b"".join(objects[e.split(f"/{BUCKET}/", 1)[1]] for e in before)
        assert sent.count(b'"kind":"executing"') >= aws.proxy.events[: index + 1].count(
            "ExecuteChangeSet"
        )

    shutil.rmtree(tmp_path / "state")  # the host is gone
    restored = run_syncd("restore", "-c", str(config), "--format", "json")
    assert restored.returncode == 0, restored.stderr
    assert json_out(run_syncd("history", "-c", str(config), "--format", "json")) == history
    aws.proxy.reset()
    result = run_syncd("sync", "-c", str(config), "--format", "json")
    assert result.returncode == 0, result.stderr
    assert {r["outcome"] for r in json_out(result)} == {"in_sync"}
    assert aws.proxy.count("CreateChangeSet") == 0 and aws.proxy.count("ExecuteChangeSet") == 0

    # Point in time: between version 2 and version 3 of alpha.
    again = run_syncd("restore", "--at", times[1], "--force", "-c", str(config))
    assert again.returncode == 0, again.stderr
    at = json_out(run_syncd("history", "-c", str(config), "--format", "json"))
    assert at == history[:3]
    assert list((tmp_path / "state").glob("journal.replaced-*"))


def test_restore_refuses_a_damaged_backup_and_verify_names_it(tmp_path, repo, aws, backup):
    topic_stack(repo, "alpha", "a1")
    config = write_config(
        tmp_path,
        [{"name": "r", "url": str(repo.bare)}],
        aws.endpoint,
        backup={"url": f"s3://{BUCKET}/prod/", "key_file": key_file(tmp_path)},
    )
    assert run_syncd("sync", "-c", str(config)).returncode == 0
    key, body = next(iter(records_objects(backup).items()))
    backup.put_object(Bucket=BUCKET, Key=key, Body=body.replace(b"a1", b"zz", 1))
    verify = run_syncd("journal", "verify", "--remote", "-c", str(config))
    assert verify.returncode == 1
    assert "remote: DAMAGED" in verify.stdout and "record seq" in verify.stdout
    shutil.rmtree(tmp_path / "state")
    refused = run_syncd("restore", "-c", str(config))
    assert refused.returncode == 1
    assert "the backup is damaged" in refused.stderr and "--partial" in refused.stderr
    assert not (tmp_path / "state" / "journal").exists()


def test_journal_verify_names_the_first_bad_local_record(tmp_path, repo, aws):
    topic_stack(repo, "alpha", "a1")
    config = write_config(tmp_path, [{"name": "r", "url": str(repo.bare)}], aws.endpoint)
    assert run_syncd("sync", "-c", str(config)).returncode == 0
    ok = run_syncd("journal", "verify", "-c", str(config))
    assert ok.returncode == 0 and ok.stdout.startswith("local: ok,"), ok.stdout
    segment = next((tmp_path / "state" / "journal").glob("segment-*.jsonl"))
    lines = segment.read_bytes().splitlines(keepends=True)
    lines[2], lines[3] = lines[3], lines[2]
    segment.write_bytes(b"".join(lines))
    bad = run_syncd("journal", "verify", "-c", str(config), "--format", "json")
    assert bad.returncode == 1
    problem = json_out(bad)["local"]["problem"]
    assert f"{segment.name}: record seq 4 (line 3): expected seq 3" in problem


def test_syncing_goes_on_while_s3_is_down_and_the_backlog_shows(tmp_path, repo, aws, backup):
    topic_stack(repo, "alpha", "a1")
    config = write_config(
        tmp_path,
        [{"name": "r", "url": str(repo.bare)}],
        aws.endpoint,
        backup={"url": f"s3://{BUCKET}/prod/", "key_file": key_file(tmp_path)},
    )
    assert run_syncd("sync", "-c", str(config)).returncode == 0
    aws.proxy.s3_down()
    repo.commit({"deployments/alpha.yaml": deployment(Name="a2")})
    result = run_syncd("sync", "-c", str(config))
    assert result.returncode == 0, result.stderr  # the stack was applied all the same
    assert aws.parameters("alpha") == {"Name": "a2"}
    assert "backup not up to date" in result.stderr
    status = run_syncd("status", "-c", str(config)).stdout
    assert "record(s) not yet in s3://syncd-backups/prod/, the oldest from 20" in status
    assert "failing since" in status
    aws.proxy.s3_up()
    done = run_syncd("backup", "-c", str(config), "--format", "json")
    assert done.returncode == 0, done.stderr
    assert json_out(done)["uploaded_records"] > 0
    assert "backup: all " in run_syncd("status", "-c", str(config)).stdout
    assert run_syncd("journal", "verify", "--remote", "-c", str(config)).returncode == 0


def test_the_daemon_mirrors_within_the_interval_and_flushes_on_sigterm(tmp_path, repo, aws, backup):
    from tests.e2e.conftest import running_daemon, wait_for

    topic_stack(repo, "alpha", "a1")
    config = write_config(
        tmp_path,
        [{"name": "r", "url": str(repo.bare), "poll_interval": "200ms"}],
        aws.endpoint,
        backup={"url": f"s3://{BUCKET}/prod/", "key_file": key_file(tmp_path), "interval": "500ms"},
    )
    with running_daemon("-c", str(config)) as daemon:
        wait_for(lambda: aws.stack("alpha"), what="the first create")
        wait_for(
            lambda: any(b'"kind":"result"' in body for body in records_objects(backup).values()),
            what="the result record in S3",
        )
        aws.proxy.s3_down()  # an outage: the daemon syncs on, the backlog waits on disk
        repo.commit({"deployments/alpha.yaml": deployment(Name="alphatwo")})
        wait_for(lambda: aws.parameters("alpha") == {"Name": "alphatwo"}, what="version 2")
        time.sleep(1.0)
        assert b'"Name":"alphatwo"' not in b"".join(records_objects(backup).values())
        aws.proxy.s3_up()
        wait_for(
            lambda: b'"Name":"alphatwo"' in b"".join(records_objects(backup).values()),
            what="the backlog flushed",
        )
        repo.commit({"deployments/alpha.yaml": deployment(Name="a3")})
        wait_for(lambda: aws.parameters("alpha") == {"Name": "a3"}, what="version 3")
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    stderr = daemon.stderr_text
    assert "mirror.failed" in stderr and "mirror.recovered" in stderr
    # After a clean stop, S3 holds every record the journal holds.
    verified = json_out(
        run_syncd("journal", "verify", "--remote", "-c", str(config), "--format", "json")
    )
    assert verified["ok"] and verified["remote"]["records"] == verified["local"]["records"]


def test_a_host_lost_mid_apply_is_restored_and_its_execute_observed_not_repeated(
    tmp_path, repo, aws, backup
):
    from tests.e2e.conftest import start_syncd, wait_for

    topic_stack(repo, "s", "s")
    config = write_config(
        tmp_path,
        [{"name": "r", "url": str(repo.bare)}],
        aws.endpoint,
        backup={"url": f"s3://{BUCKET}/prod/", "key_file": key_file(tmp_path)},
    )
    aws.proxy.slow("s", polls=100_000)  # the create "takes forever"
    proc = start_syncd("sync", "-c", str(config))
    wait_for(lambda: aws.proxy.count("ExecuteChangeSet") == 1, what="the execute call")
    proc.kill()  # the host dies mid-apply ...
    proc.wait(timeout=PATIENCE)
    shutil.rmtree(tmp_path / "state")  # ... and its disk with it
    aws.proxy.reset()  # CloudFormation finishes the create meanwhile

    assert run_syncd("restore", "-c", str(config)).returncode == 0
    status = json_out(run_syncd("status", "-c", str(config), "--format", "json"))
    assert [(r["stack"], r["state"]) for r in status] == [("s", "applying")]
    result = run_syncd("sync", "-c", str(config), "--format", "json")
    assert result.returncode == 0, result.stderr
    assert aws.proxy.count("ExecuteChangeSet") == 0 and aws.proxy.count("CreateChangeSet") == 0
    history = json_out(run_syncd("history", "-c", str(config), "--format", "json"))
    assert [(h["stack"], h["version"], h["result"]) for h in history] == [("s", 1, "succeeded")]


def forge_lineage(s3, stack: str, name: str = "99991231T000000000000Z-f0e0d0c0") -> str:
    """What a bucket writer can do without the key: a whole history of their own, with a
    valid hash chain, that sorts after every real lineage and says syncd deployed `stack`."""
    from syncd.core.journal_format import GENESIS

    records = deployed(stack)
    body = chain(records)
    prev = json.loads(body.splitlines()[-1])["hash"]
    base = f"prod/lineages/{name}/"
    s3.put_object(
        Bucket=BUCKET,
        Key=base + "lineage.json",
        Body=json.dumps({"id": name, "parent": None, "fork_seq": 0, "fork_hash": GENESIS}).encode(),
    )
    s3.put_object(Bucket=BUCKET, Key=base + "records/000000000001.jsonl", Body=body)
    checkpoint = {
        "seq": len(records),
        "hash": prev,
        "time": "2026-12-01T00:00:00.000Z",
        "mac": "0" * 64,
    }
    s3.put_object(
        Bucket=BUCKET,
        Key=base + f"checkpoints/{10**12 - len(records):012d}.json",
        Body=json.dumps(checkpoint).encode(),
    )
    return name


def test_a_forged_lineage_in_the_bucket_is_never_restored(tmp_path, repo, aws, backup):
    topic_stack(repo, "alpha", "a1")
    config = write_config(
        tmp_path,
        [{"name": "r", "url": str(repo.bare)}],
        aws.endpoint,
        backup={"url": f"s3://{BUCKET}/prod/", "key_file": key_file(tmp_path)},
        defaults={"prune": True},
    )
    assert run_syncd("sync", "-c", str(config)).returncode == 0
    aws.cfn.create_stack(  # a stack syncd never managed
        StackName="victim",
        TemplateBody="Resources:\n  T:\n    Type: AWS::SNS::Topic\n",
    )
    forged = forge_lineage(backup, "victim")
    shutil.rmtree(tmp_path / "state")  # the host is gone

    restored = run_syncd("restore", "-c", str(config), "--format", "json")
    assert restored.returncode == 0, restored.stderr
    report = json_out(restored)
    assert report["authenticated"] and report["lineage"] != forged
    assert any(forged in why and "none of its checkpoints" in why for why in report["skipped"])
    status = json_out(run_syncd("status", "-c", str(config), "--format", "json"))
    assert [row["stack"] for row in status] == ["alpha"]

    # Named on purpose, it is still refused; verify --remote says what it skipped.
    shutil.rmtree(tmp_path / "state")
    named = run_syncd("restore", "--lineage", forged, "-c", str(config))
    assert named.returncode != 0 and "cannot be authenticated" in named.stderr

    # Without the key, restore refuses unless told to take the bucket's word for it ...
    no_key = write_config(
        tmp_path,
        [{"name": "r", "url": str(repo.bare)}],
        aws.endpoint,
        backup={"url": f"s3://{BUCKET}/prod/"},
        defaults={"prune": True},
    )
    refused = run_syncd("restore", "-c", str(no_key))
    assert refused.returncode != 0 and "backup.key_file is not set" in refused.stderr
    taken = run_syncd("restore", "--unauthenticated", "-c", str(no_key), "--format", "json")
    assert taken.returncode == 0 and json_out(taken)["lineage"] == forged
    # ... and even then the forged history cannot delete a stack CloudFormation does not show
    # as syncd's: its "deployment file" is gone and prune is on, but the stack stays.
    run_syncd("sync", "-c", str(no_key))
    assert aws.stack("victim") is not None
    assert not [c for c in aws.proxy.log if c.action == "DeleteStack" and c.stack == "victim"]


def test_a_checkpoint_key_file_others_can_read_is_refused(tmp_path, repo, aws, backup):
    path = tmp_path / "open.key"
    path.write_text("k" * 40)
    path.chmod(0o644)
    config = write_config(
        tmp_path,
        [{"name": "r", "url": str(repo.bare)}],
        aws.endpoint,
        backup={"url": f"s3://{BUCKET}/prod/", "key_file": str(path)},
    )
    result = run_syncd("restore", "-c", str(config))
    assert result.returncode != 0 and "chmod 600" in result.stderr
