"""Shared fixtures: moto's server on loopback (with the fault proxy in front), real Git repos,
and config files. Servers start once per session and are reset between tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from syncd.emulator import EMULATOR_CREDENTIALS, Emulator, start_emulator
from tests.support.cfn_proxy import FaultProxy
from tests.support.gitrepo import GitRepo

os.environ.update(EMULATOR_CREDENTIALS)
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
for _var in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
    os.environ.pop(_var, None)
# The `syncd` commands the tests run read syncd's compiled modules rather than compile its
# source at each start (about 0.1-0.25 s each), even where the machine sets
# PYTHONDONTWRITEBYTECODE: the first command writes them (git-ignored `__pycache__`).
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    em = start_emulator()
    yield em
    em.stop()


@pytest.fixture(scope="session")
def _proxy(emulator: Emulator) -> Iterator[FaultProxy]:
    proxy = FaultProxy(emulator.url).start()
    yield proxy
    proxy.stop()


@dataclass
class Aws:
    """The AWS side of a test: syncd talks to `endpoint` (the fault proxy in front of moto);
    the test inspects moto directly through `cfn` and counts calls through `proxy`."""

    endpoint: str
    emulator: Emulator
    proxy: FaultProxy
    cfn: Any

    def stack(self, name: str) -> dict[str, Any] | None:
        try:
            stacks = self.cfn.describe_stacks(StackName=name)["Stacks"]
        except self.cfn.exceptions.ClientError:
            return None
        return stacks[0] if stacks and stacks[0]["StackStatus"] != "DELETE_COMPLETE" else None

    def outputs(self, name: str) -> dict[str, str]:
        stack = self.stack(name) or {}
        return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}

    def parameters(self, name: str) -> dict[str, str]:
        stack = self.stack(name) or {}
        return {p["ParameterKey"]: p["ParameterValue"] for p in stack.get("Parameters", [])}


@pytest.fixture
def aws(emulator: Emulator, _proxy: FaultProxy) -> Aws:
    emulator.reset()
    _proxy.reset()
    cfn = boto3.client("cloudformation", endpoint_url=emulator.url, region_name="us-east-1")
    return Aws(_proxy.url, emulator, _proxy, cfn)


@pytest.fixture
def prompt_trap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every way git or ssh could ask for a credential points at a script that records being
    called; returns the record (which must stay absent)."""
    called = tmp_path / "prompted"
    prompt = tmp_path / "prompt.sh"
    prompt.write_text(f'#!/bin/sh\necho "$0 $*" >> {called}\nexit 1\n')
    prompt.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text(f'[credential]\n\thelper = "!{prompt}"\n')
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_ASKPASS", str(prompt))
    monkeypatch.setenv("SSH_ASKPASS", str(prompt))
    monkeypatch.setenv("GIT_TERMINAL_PROMPT", "1")
    return called


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    return GitRepo(tmp_path / "git")


TOPIC_TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Parameters:
  Name:
    Type: String
Resources:
  Topic:
    Type: AWS::SNS::Topic
    Properties:
      TopicName: !Ref Name
Outputs:
  TopicArn:
    Value: !Ref Topic
  TopicName:
    Value: !GetAtt Topic.TopicName
"""


def deployment(template: str = "templates/topic.yaml", **params: Any) -> str:
    doc: dict[str, Any] = {"template-file-path": template}
    if params:
        doc["parameters"] = params
    return yaml.safe_dump(doc)


def write_config(
    tmp_path: Path,
    repos: list[dict[str, Any]],
    endpoint: str | None = None,
    **top: Any,
) -> Path:
    """A config file in tmp_path; `endpoint` is the fault proxy (or moto) URL."""
    config: dict[str, Any] = {
        "state_dir": str(tmp_path / "state"),
        "aws": {"region": "us-east-1", "wait_poll": "200ms"},
        "repos": repos,
    }
    if endpoint:
        config["aws"]["endpoint_url"] = endpoint
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key].update(value)
        else:
            config[key] = value
    path = tmp_path / "syncd.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def topic_stack(repo: Any, stack: str, name: str) -> str:
    """Commit (and push) the topic template and one deployment file for `stack`."""
    return str(
        repo.commit(
            {
                "templates/topic.yaml": TOPIC_TEMPLATE,
                f"deployments/{stack}.yaml": deployment(Name=name),
            }
        )
    )
