"""Make this fixture: a journal, and its S3 backup, written by whatever syncd is on PYTHONPATH.

    mkdir /tmp/oldfix-run && cd /tmp/oldfix-run
    PYTHONPATH=/tmp/bench-main /work/main/.venv/bin/python \
        /work/main/tests/data/journal-before-targets/make_fixture.py [OUT]

OUT defaults to this script's folder. Everything else (the Git repos, the state_dir, moto) lives
in a fresh /tmp/oldfix-* folder, removed at the end unless KEEP=1 is set.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import boto3
import yaml

import syncd
from syncd.emulator import start_emulator

HERE = Path(__file__).resolve().parent
BUCKET = "syncd-backups"
PREFIX = "prod/"
REPO = "infra"

NETWORK_TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Parameters:
  Value:
    Type: String
Resources:
  Param:
    Type: AWS::SSM::Parameter
    Properties:
      Name: !Sub "/${AWS::StackName}/x"
      Type: String
      Value: !Ref Value
Outputs:
  SomeOutput:
    Value: !Ref Value
"""

APP_TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Parameters:
  Upstream:
    Type: String
Resources:
  Param:
    Type: AWS::SSM::Parameter
    Properties:
      Name: !Sub "/${AWS::StackName}/x"
      Type: String
      Value: !Ref Upstream
"""

GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_AUTHOR_NAME": "fixture",
    "GIT_AUTHOR_EMAIL": "fixture@example.com",
    "GIT_COMMITTER_NAME": "fixture",
    "GIT_COMMITTER_EMAIL": "fixture@example.com",
    "GIT_TERMINAL_PROMPT": "0",
}


def git(*args: str, cwd: Path) -> str:
    env = {**os.environ, **GIT_ENV}
    done = subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)
    return done.stdout.decode().strip()


def commit(work: Path, files: dict[str, str], message: str) -> str:
    for path, text in files.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_text(text)
    git("add", "--all", cwd=work)
    git("commit", "--quiet", "-m", message, cwd=work)
    git("push", "--quiet", "origin", "HEAD:refs/heads/main", cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


def network(value: str) -> str:
    return yaml.safe_dump(
        {"template-file-path": "templates/network.yaml", "parameters": {"Value": value}}
    )


APP = yaml.safe_dump(
    {
        "template-file-path": "templates/app.yaml",
        "parameters": {"Upstream": {"stack-output": "network.SomeOutput"}},
    }
)


def syncd_cmd(scratch: Path, config: Path, *args: str, ok: bool = True) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "syncd", *args, "-c", str(config)],
        cwd=scratch,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if ok and done.returncode != 0:
        raise SystemExit(f"syncd {' '.join(args)}: exit {done.returncode}\n{done.stderr}")
    return done.stdout


def main() -> None:
    out = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else HERE
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    for var in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        os.environ.pop(var, None)
    print(f"syncd from {syncd.__file__}", file=sys.stderr)
    scratch = Path(tempfile.mkdtemp(prefix="oldfix-", dir="/tmp"))
    emulator = start_emulator()
    try:
        bare, work = scratch / "remote.git", scratch / "work"
        bare.mkdir()
        git("init", "--quiet", "--bare", "--initial-branch", "main", cwd=bare)
        work.mkdir()
        git("init", "--quiet", "--initial-branch", "main", cwd=work)
        git("remote", "add", "origin", str(bare), cwd=work)

        s3 = boto3.client("s3", endpoint_url=emulator.url, region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        key = scratch / "backup.key"
        key.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
        key.chmod(0o600)
        config = scratch / "syncd.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "state_dir": str(scratch / "state"),
                    "aws": {
                        "region": "us-east-1",
                        "endpoint_url": emulator.url,
                        "wait_poll": "200ms",
                    },
                    "backup": {
                        "url": f"s3://{BUCKET}/{PREFIX}",
                        "interval": "500ms",
                        "key_file": str(key),
                    },
                    "repos": [{"name": REPO, "url": str(bare)}],
                }
            )
        )

        files = {
            "templates/network.yaml": NETWORK_TEMPLATE,
            "templates/app.yaml": APP_TEMPLATE,
            "deployments/network.yaml": network("one"),
            "deployments/app.yaml": APP,
        }
        commit(work, files, "network and app")
        syncd_cmd(scratch, config, "sync")
        commit(work, {"deployments/network.yaml": network("two")}, "network: two")
        syncd_cmd(scratch, config, "sync")
        syncd_cmd(scratch, config, "journal", "verify", "--remote")  # the mirror is flushed

        expected: dict[str, Any] = {
            "repo": REPO,
            "backup_url": f"s3://{BUCKET}/{PREFIX}",
            "status": json.loads(syncd_cmd(scratch, config, "status", "--format", "json")),
            "history": {
                stack: json.loads(syncd_cmd(scratch, config, "history", stack, "--format", "json"))
                for stack in ("network", "app")
            },
            "verify": json.loads(
                syncd_cmd(scratch, config, "journal", "verify", "--format", "json")
            ),
            "verify_text": syncd_cmd(scratch, config, "journal", "verify"),
        }

        for name in ("journal", "backup"):
            shutil.rmtree(out / name, ignore_errors=True)
        (out / "journal").mkdir(parents=True)
        for path in sorted((scratch / "state" / "journal").iterdir()):  # segments, snapshots,
            if path.is_file() and not path.name.endswith(".lock"):  # lineage.json
                shutil.copyfile(path, out / "journal" / path.name)
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX)
        for page in pages:
            for obj in page.get("Contents", []):
                target = out / "backup" / obj["Key"][len(PREFIX) :]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read())
        shutil.copyfile(key, out / "backup.key")
        (out / "expected.json").write_text(json.dumps(expected, indent=2, sort_keys=True) + "\n")
        print(f"written to {out}", file=sys.stderr)
    finally:
        emulator.stop()
        if os.environ.get("KEEP") != "1":
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            print(f"kept {scratch}", file=sys.stderr)


if __name__ == "__main__":
    main()
