"""The benchmark's workload: N small stacks in a real Git repository, plus each peer's inputs.

`make_workload(root, n)` writes, under `root`:

- `repo/` - a Git repository (branch `main`, one commit) in syncd's layout
  (docs/deployment-files.md):
  `templates/stack-NN.yaml` (an AWS::SNS::Topic and an AWS::SSM::Parameter, one parameter, one
  output; both resource types are cheap in moto) and `deployments/stack-NN.yaml`
  (`template-file-path`, `parameters`, `tags`).
- `sceptre/` - a sceptre project for the same stacks: `config/config.yaml`, one stack config per
  stack under `config/bench/`, and `templates/` holding byte-for-byte copies of the repo's
  templates.
- `awscli-deploy.sh` - a bash loop of `aws cloudformation deploy`, one per stack.

Every peer gets the same template bytes, parameter values and tags; only their packaging differs.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Description: syncd benchmark stack {nn}
Parameters:
  Env:
    Type: String
    Default: dev
Resources:
  Topic:
    Type: AWS::SNS::Topic
    Properties:
      TopicName: !Sub "bench-${{Env}}-{nn}"
  Setting:
    Type: AWS::SSM::Parameter
    Properties:
      Name: !Sub "/bench/${{Env}}/{nn}/topic"
      Type: String
      Value: !Ref Topic
Outputs:
  TopicArn:
    Value: !Ref Topic
"""


@dataclass
class Stack:
    """One stack's desired state, as every peer receives it."""

    name: str  # stack-NN
    template_path: str  # templates/stack-NN.yaml, relative to the repo root
    deployment_path: str  # deployments/stack-NN.yaml
    parameters: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class Workload:
    root: Path
    repo: Path
    sceptre_dir: Path
    awscli_script: Path
    stacks: list[Stack]


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


def make_workload(root: Path, n: int, env: str = "bench", peer_inputs: bool = True) -> Workload:
    """Create the repo, the sceptre project and the aws CLI loop for `n` stacks under `root`.

    `env` is every stack's `Env` parameter (it names the stacks' SNS topics and SSM parameters,
    so workloads deployed side by side need different values); `peer_inputs=False` writes the
    repo alone (no sceptre project, no aws CLI loop; their paths in the Workload do not exist).
    """
    if root.exists():
        shutil.rmtree(root)
    repo = root / "repo"
    (repo / "templates").mkdir(parents=True)
    (repo / "deployments").mkdir()

    stacks: list[Stack] = []
    for i in range(1, n + 1):
        nn = f"{i:02d}"
        stack = Stack(
            name=f"stack-{nn}",
            template_path=f"templates/stack-{nn}.yaml",
            deployment_path=f"deployments/stack-{nn}.yaml",
            parameters={"Env": env},
            tags={"team": "bench", "owner": f"svc-{nn}"},
        )
        stacks.append(stack)
        (repo / stack.template_path).write_text(TEMPLATE.format(nn=nn))
        deployment = {
            "template-file-path": stack.template_path,
            "parameters": stack.parameters,
            "tags": stack.tags,
        }
        (repo / stack.deployment_path).write_text(yaml.safe_dump(deployment, sort_keys=False))

    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", f"{n} benchmark stacks")

    sceptre_dir, awscli_script = root / "sceptre", root / "awscli-deploy.sh"
    if peer_inputs:
        _make_sceptre_project(sceptre_dir, repo, stacks)
        _make_awscli_script(awscli_script, repo, stacks)
    return Workload(root, repo, sceptre_dir, awscli_script, stacks)


def _make_sceptre_project(project: Path, repo: Path, stacks: list[Stack]) -> Path:
    """A sceptre 4 project: stack group `bench`, one stack config per stack.

    sceptre names a stack `<project_code>-<group>-<file stem>`, here `sb-bench-stack-NN`.
    The endpoint is not in the project (sceptre has no setting for it): the runner sets
    AWS_ENDPOINT_URL for the sceptre process, which botocore honours.
    """
    (project / "config" / "bench").mkdir(parents=True)
    (project / "templates").mkdir()
    (project / "config" / "config.yaml").write_text(
        yaml.safe_dump({"project_code": "sb", "region": "us-east-1"})
    )
    for stack in stacks:
        shutil.copyfile(repo / stack.template_path, project / "templates" / f"{stack.name}.yaml")
        config = {
            "template_path": f"{stack.name}.yaml",
            "parameters": stack.parameters,
            "stack_tags": stack.tags,
        }
        (project / "config" / "bench" / f"{stack.name}.yaml").write_text(
            yaml.safe_dump(config, sort_keys=False)
        )
    return project


def _make_awscli_script(path: Path, repo: Path, stacks: list[Stack]) -> Path:
    """A bash loop of `aws cloudformation deploy`, one stack after the other.

    The endpoint comes from $BENCH_ENDPOINT. moto refuses a CreateChangeSet that changes
    nothing with a ValidationError "No updates are to be performed." (real CloudFormation makes
    a FAILED change set instead, which `--no-fail-on-empty-changeset` accepts), so the loop
    counts that message as success; any other failure is printed to stderr and makes the
    script exit 1 once the loop is done.
    """
    lines = [
        "#!/usr/bin/env bash",
        "# Generated by bench/workload.py: one `aws cloudformation deploy` per stack.",
        "set -u",
        f"cd {shlex.quote(str(repo))}",
        "failed=0",
        "deploy() {",
        "  local name=$1; shift",
        '  if ! out=$(aws cloudformation deploy --endpoint-url "$BENCH_ENDPOINT" \\',
        '        --no-fail-on-empty-changeset --stack-name "$name" "$@" 2>&1); then',
        '    if ! grep -q "No updates are to be performed" <<<"$out"; then',
        '      echo "deploy $name failed: $out" >&2',
        "      failed=1",
        "    fi",
        "  fi",
        "}",
    ]
    for s in stacks:
        params = " ".join(shlex.quote(f"{k}={v}") for k, v in s.parameters.items())
        tags = " ".join(shlex.quote(f"{k}={v}") for k, v in s.tags.items())
        lines.append(
            f"deploy {s.name} --template-file {shlex.quote(s.template_path)}"
            f" --parameter-overrides {params} --tags {tags}"
        )
    lines.append('exit "$failed"')
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o755)
    return path


def read_deployment(repo: Path, deployment_path: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """(template body, parameters, tags) of one deployment file, as a plain tool would read it."""
    doc = yaml.safe_load((repo / deployment_path).read_text())
    body = (repo / doc["template-file-path"]).read_text()
    params = {str(k): str(v) for k, v in (doc.get("parameters") or {}).items()}
    tags = {str(k): str(v) for k, v in (doc.get("tags") or {}).items()}
    return body, params, tags
