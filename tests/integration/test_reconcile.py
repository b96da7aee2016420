"""A reconcile pass against moto's server over HTTP (through the fault proxy) and real Git repos."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from syncd import reconcile
from syncd.app import App, open_app
from syncd.apply import Outcome
from syncd.configfile import load_config
from syncd.core.journal_state import Kind, StackState, status_rows
from syncd.reconcile import PassReport, observe_world
from tests.conftest import TOPIC_TEMPLATE, Aws, deployment, topic_stack, write_config
from tests.e2e.conftest import run_syncd
from tests.support.gitrepo import GitRepo

PLAIN_TEMPLATE = """\
Resources:
  Topic:
    Type: AWS::SNS::Topic
"""

CONSUMER_TEMPLATE = """\
Parameters:
  Upstream:
    Type: String
Resources:
  Param:
    Type: AWS::SSM::Parameter
    Properties:
      Name: !Sub "/${AWS::StackName}/upstream"
      Type: String
      Value: !Ref Upstream
"""


class Harness:
    """Opens syncd's real App on a config, as `syncd sync` does, and can reopen it (restart)."""

    def __init__(self, tmp_path: Path, repo: GitRepo, endpoint: str, **config: Any) -> None:
        repo_cfg = {"name": "r", "url": str(repo.bare), "poll_interval": "1h"}
        repo_cfg.update(config.pop("repo_options", {}))
        self.config_path = write_config(tmp_path, [repo_cfg], endpoint, **config)
        self.app: App | None = None
        self.open()

    def open(self, stop: threading.Event | None = None) -> App:
        self.close()
        self.app = open_app(load_config(self.config_path), stop=stop)
        observe_world(self.app.world, self.app.journal)
        return self.app

    def sync(self) -> PassReport:
        assert self.app is not None
        return self.app.syncs["r"].run_pass()

    def close(self) -> None:
        if self.app is not None:
            self.app.close()
            self.app = None

    @property
    def state(self) -> Any:
        assert self.app is not None
        return self.app.journal.state


@pytest.fixture
def harness(tmp_path: Path, repo: GitRepo, aws: Aws) -> Iterator[Any]:
    made: list[Harness] = []

    def make(**config: Any) -> Harness:
        h = Harness(tmp_path, repo, aws.endpoint, **config)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def test_fifty_stacks_then_one_change_then_no_deployment_input(repo, aws, harness):
    files = {"templates/topic.yaml": TOPIC_TEMPLATE}
    files.update({f"deployments/s{i:02d}.yaml": deployment(Name=f"t{i}") for i in range(50)})
    repo.commit(files)
    h = harness(concurrency=8)

    report = h.sync()
    assert report.ok
    assert len(report.outcomes) == 50
    assert set(report.outcomes.values()) == {Outcome.SUCCEEDED}
    for i in range(50):
        assert aws.stack(f"s{i:02d}")["StackStatus"] == "CREATE_COMPLETE"
    assert {v.version for v in h.state.stacks.values()} == {1}
    assert aws.proxy.count("CreateChangeSet") == 50
    assert aws.proxy.count("ExecuteChangeSet") == 50

    aws.proxy.reset()
    rows_before = len(h.state.history)
    repo.commit({"deployments/s07.yaml": deployment(Name="t7-new")})
    report = h.sync()
    assert report.ok
    assert report.outcomes["s07"] is Outcome.SUCCEEDED
    assert {n for n, o in report.outcomes.items() if o is not Outcome.IN_SYNC} == {"s07"}
    assert aws.proxy.count("CreateChangeSet") == 1
    assert aws.proxy.count("ExecuteChangeSet") == 1
    assert aws.parameters("s07") == {"Name": "t7-new"}
    new_rows = h.state.history[rows_before:]
    assert [(r.stack, r.version, r.action, r.result.value) for r in new_rows] == [
        ("s07", 2, "update", "succeeded")
    ]

    aws.proxy.reset()
    commit = repo.commit({"README.md": "nothing that deploys\n"})
    report = h.sync()
    assert report.ok
    assert report.commit == commit
    assert aws.proxy.count() == 0, aws.proxy.calls
    assert len(h.state.history) == rows_before + 1
    assert h.state.repos["r"].commit == commit

    report = h.sync()  # nothing new at all
    assert report.skipped
    assert aws.proxy.count() == 0


def test_stack_output_orders_stacks_and_feeds_parameters(repo, aws, harness):
    repo.commit(
        {
            "templates/topic.yaml": TOPIC_TEMPLATE,
            "templates/consumer.yaml": CONSUMER_TEMPLATE,
            # "app" sorts before "net": only the dependency can put net first.
            "deployments/app.yaml": yaml.safe_dump(
                {
                    "template-file-path": "templates/consumer.yaml",
                    "parameters": {"Upstream": {"stack-output": "net.TopicName"}},
                }
            ),
            "deployments/net.yaml": deployment(Name="first"),
        }
    )
    h = harness(repo_options={"stack_prefix": "p-"})
    assert h.sync().ok
    assert aws.parameters("p-app") == {"Upstream": "first"}
    created = [r.stack for r in h.state.history]
    assert created.index("p-net") < created.index("p-app")

    repo.commit({"deployments/net.yaml": deployment(Name="second")})
    report = h.sync()
    assert report.outcomes == {"p-net": Outcome.SUCCEEDED, "p-app": Outcome.SUCCEEDED}
    assert aws.parameters("p-app") == {"Upstream": "second"}
    assert h.state.stacks["p-app"].version == 2


def test_a_bad_deployment_file_fails_alone(repo, aws, harness):
    repo.commit(
        {
            "templates/topic.yaml": TOPIC_TEMPLATE,
            "deployments/good.yaml": deployment(Name="good"),
            "deployments/bad.yaml": deployment(Name="bad", Nope="x"),
            "deployments/broken.yaml": "template-file-path: [unclosed\n",
        }
    )
    h = harness()
    report = h.sync()
    assert not report.ok
    assert report.outcomes == {"good": Outcome.SUCCEEDED}
    assert "deployments/bad.yaml" in report.invalid["bad"]
    assert "Nope" in report.invalid["bad"]
    assert "deployments/broken.yaml" in report.invalid["broken"]
    assert h.state.stacks["bad"].state is StackState.FAILED
    assert "deployments/bad.yaml" in h.state.stacks["bad"].message
    assert aws.stack("bad") is None


@pytest.mark.parametrize("with_parameters", [True, False])
def test_a_change_that_changes_nothing_is_no_changes(repo, aws, harness, with_parameters):
    # With parameters, CloudFormation refuses the change set at once; without, the change set
    # FAILs with "didn't contain changes". Both are an outcome, not an error.
    template = TOPIC_TEMPLATE if with_parameters else PLAIN_TEMPLATE
    params = {"Name": "same"} if with_parameters else {}
    repo.commit(
        {
            "templates/t.yaml": template,
            "deployments/s.yaml": deployment("templates/t.yaml", **params),
        }
    )
    h = harness()
    assert h.sync().ok
    repo.commit({"templates/t.yaml": template + "\n# a comment only\n"})
    report = h.sync()
    assert report.outcomes["s"] is Outcome.NO_CHANGES
    assert report.ok
    assert [r.result.value for r in h.state.history] == ["succeeded", "no_changes"]
    view = h.state.stacks["s"]
    assert (view.version, view.state) == (2, StackState.IN_SYNC)
    assert aws.proxy.count("ExecuteChangeSet") == 1


def test_prune_deletes_only_when_asked_and_a_rename_is_delete_plus_create(repo, aws, harness):
    repo.commit(
        {
            "templates/topic.yaml": TOPIC_TEMPLATE,
            "deployments/keep.yaml": deployment(Name="keep"),
            "deployments/gone.yaml": deployment(Name="gone"),
            "deployments/old.yaml": deployment(Name="old"),
        }
    )
    h = harness(
        repo_options={"prune": False, "stacks": {"gone": {"prune": True}, "old": {"prune": True}}}
    )
    assert h.sync().ok
    repo.commit({"deployments/gone.yaml": None})
    (repo.work / "deployments/old.yaml").rename(repo.work / "deployments/new.yaml")
    repo.commit({"deployments/keep.yaml": None})
    report = h.sync()
    assert report.ok, report
    assert aws.stack("gone") is None and aws.stack("old") is None
    assert aws.stack("new")["StackStatus"] == "CREATE_COMPLETE"
    assert aws.stack("keep")["StackStatus"] == "CREATE_COMPLETE"  # prune off: left alone
    assert "gone" not in h.state.stacks
    assert h.state.stacks["keep"].removed
    assert "prune is off" in h.state.stacks["keep"].message
    deletes = [(r.stack, r.result.value) for r in h.state.history if r.action == "delete"]
    assert sorted(deletes) == [("gone", "succeeded"), ("old", "succeeded")]


def test_start_notices_stacks_deleted_or_changed_while_down(repo, aws, harness):
    repo.commit(
        {
            "templates/topic.yaml": TOPIC_TEMPLATE,
            "deployments/a.yaml": deployment(Name="a"),
            "deployments/b.yaml": deployment(Name="b"),
            "deployments/c.yaml": deployment(Name="c"),
        }
    )
    h = harness()
    assert h.sync().ok
    h.close()
    aws.cfn.delete_stack(StackName="a")
    aws.cfn.update_stack(
        StackName="b",
        TemplateBody=TOPIC_TEMPLATE,
        Parameters=[{"ParameterKey": "Name", "ParameterValue": "hand-edited"}],
    )
    aws.proxy.reset()
    h.open()
    assert h.state.stacks["a"].state is StackState.DRIFTED
    assert h.state.stacks["b"].state is StackState.DRIFTED
    assert h.state.stacks["c"].state is StackState.IN_SYNC
    report = h.sync()
    assert report.outcomes == {"a": Outcome.SUCCEEDED, "b": Outcome.SUCCEEDED, "c": Outcome.IN_SYNC}
    assert aws.stack("a")["StackStatus"] == "CREATE_COMPLETE"
    assert aws.parameters("b") == {"Name": "b"}
    assert aws.proxy.count("CreateChangeSet") == 2
    # The desired state did not change: the same version is applied again.
    assert (h.state.stacks["a"].version, h.state.stacks["b"].version) == (1, 1)


def test_templates_over_the_inline_limit_go_through_s3(repo, aws, harness):
    big = TOPIC_TEMPLATE + "Metadata:\n  Padding: " + "x" * 60_000 + "\n"
    repo.commit({"templates/topic.yaml": big, "deployments/big.yaml": deployment(Name="big")})
    h = harness()
    report = h.sync()
    assert report.outcomes["big"] is Outcome.BLOCKED  # a config problem: no version, no call
    assert "aws.template_bucket" in h.state.stacks["big"].message
    assert h.state.history == []
    assert aws.proxy.count() == 1  # only the start's DescribeStacks

    s3 = boto3.client("s3", endpoint_url=aws.emulator.url, region_name="us-east-1")
    s3.create_bucket(Bucket="templates-bucket")
    h.close()
    h2 = harness(aws={"template_bucket": "s3://templates-bucket/syncd/"})
    report = h2.sync()
    assert report.outcomes["big"] is Outcome.SUCCEEDED, h2.state.stacks["big"].message
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="templates-bucket")["Contents"]]
    assert len(keys) == 1 and keys[0].startswith("syncd/big/")


def test_waits_for_in_progress_and_survives_throttling(repo, aws, harness):
    topic_stack(repo, "s", "s")
    aws.proxy.slow("s", polls=3)
    aws.proxy.throttle("CreateChangeSet", 2)
    aws.proxy.throttle("DescribeStacks", 2)
    h = harness()
    report = h.sync()
    assert report.outcomes["s"] is Outcome.SUCCEEDED
    assert h.state.stacks["s"].stack_status == "CREATE_COMPLETE"
    assert aws.proxy.count("CreateChangeSet") == 3  # two throttled, one accepted
    assert aws.proxy.count("ExecuteChangeSet") == 1


def test_a_stack_busy_with_someone_else_is_blocked_then_applied(repo, aws, harness):
    topic_stack(repo, "s", "v1")
    h = harness()
    assert h.sync().ok
    aws.proxy.hold("s", "UPDATE_IN_PROGRESS")
    repo.commit({"deployments/s.yaml": deployment(Name="v2")})
    report = h.sync()
    assert report.outcomes["s"] is Outcome.BLOCKED
    view = h.state.stacks["s"]
    assert view.state is StackState.BLOCKED
    assert "UPDATE_IN_PROGRESS" in view.message
    assert aws.proxy.count("CreateChangeSet") == 1  # only the first create

    aws.proxy.release("s")
    report = h.sync()  # same commit: a blocked stack is retried
    assert report.outcomes["s"] is Outcome.SUCCEEDED
    assert aws.parameters("s") == {"Name": "v2"}


def test_a_failed_create_is_reported_and_recreated_only_when_asked(repo, aws, harness):
    topic_stack(repo, "s", "v1")
    aws.proxy.fail("s", polls=1, reason="Topic limit exceeded")
    h = harness()
    report = h.sync()
    assert report.outcomes["s"] is Outcome.FAILED
    view = h.state.stacks["s"]
    assert view.state is StackState.FAILED
    assert "ROLLBACK_COMPLETE" in view.message and "Topic limit exceeded" in view.message
    assert h.state.history[-1].result.value == "failed"

    aws.proxy.reset()  # counters only would be nicer, but the ROLLBACK_COMPLETE must stay:
    aws.proxy.hold("s", "ROLLBACK_COMPLETE")
    assert h.sync().skipped  # on_failure keep: nothing to do until a new commit
    assert aws.proxy.count() == 0

    repo.commit({"deployments/s.yaml": deployment(Name="v2")})
    report = h.sync()
    assert report.outcomes["s"] is Outcome.BLOCKED
    assert "on_failure: recreate" in h.state.stacks["s"].message

    aws.proxy.release("s")
    aws.cfn.delete_stack(StackName="s")
    aws.proxy.fail("s", polls=1)
    h.close()
    h2 = harness(defaults={"on_failure": "recreate"})
    assert h2.sync().outcomes["s"] is Outcome.FAILED
    aws.proxy.calls.clear()
    repo.commit({"deployments/s.yaml": deployment(Name="v3")})
    report = h2.sync()
    assert report.outcomes["s"] is Outcome.SUCCEEDED, h2.state.stacks["s"].message
    assert "DeleteStack" in aws.proxy.calls
    assert aws.parameters("s") == {"Name": "v3"}


def test_a_failed_update_keeps_the_last_good_version(repo, aws, harness):
    topic_stack(repo, "s", "v1")
    h = harness()
    assert h.sync().ok
    aws.proxy.fail("s", polls=2, reason="Access denied")
    repo.commit({"deployments/s.yaml": deployment(Name="v2")})
    report = h.sync()
    assert report.outcomes["s"] is Outcome.FAILED
    view = h.state.stacks["s"]
    assert (view.version, view.state, view.stack_status) == (
        1,
        StackState.FAILED,
        "UPDATE_ROLLBACK_COMPLETE",
    )
    assert "Access denied" in view.message
    assert [(r.version, r.result.value) for r in h.state.history] == [
        (1, "succeeded"),
        (2, "failed"),
    ]


def test_stop_while_waiting_then_restart_observes_and_never_executes_twice(repo, aws, harness):
    topic_stack(repo, "s", "v1")
    aws.proxy.slow("s", polls=10_000)
    stop = threading.Event()
    h = harness()
    h.open(stop=stop)
    h.app.journal.subscribe(lambda r: stop.set() if r.kind is Kind.EXECUTING else None)
    report = h.sync()
    assert report.outcomes["s"] is Outcome.INTERRUPTED
    assert h.state.stacks["s"].attempt.executing
    h.close()

    aws.proxy.reset()  # the operation "finishes" while syncd is down
    h.open()
    report = h.sync()
    assert report.outcomes["s"] is Outcome.SUCCEEDED
    assert aws.proxy.count("ExecuteChangeSet") == 0
    assert aws.proxy.count("CreateChangeSet") == 0
    assert [(r.version, r.result.value) for r in h.state.history] == [(1, "succeeded")]


def test_a_change_set_recorded_but_never_executed_is_executed_once_after_restart(
    repo, aws, harness
):
    topic_stack(repo, "s", "v1")
    stop = threading.Event()
    h = harness()
    h.open(stop=stop)

    class Crash(Exception):
        pass

    def crash_after_change_set(record):
        if record.kind is Kind.CHANGE_SET:
            raise Crash()  # the process "dies" right after the record is on disk

    h.app.journal.subscribe(crash_after_change_set)
    with pytest.raises(Crash):
        h.sync()
    h.close()
    assert aws.proxy.count("ExecuteChangeSet") == 0

    h.open()
    report = h.sync()
    assert report.outcomes["s"] is Outcome.SUCCEEDED
    assert aws.proxy.count("CreateChangeSet") == 1  # the recorded change set was reused
    assert aws.proxy.count("ExecuteChangeSet") == 1


def test_an_aws_refusal_fails_that_stack_alone(repo, aws, harness):
    repo.commit(
        {
            "templates/topic.yaml": TOPIC_TEMPLATE,
            "deployments/a.yaml": deployment(Name="a"),
            "deployments/b.yaml": deployment(Name="b"),
        }
    )
    # A 5xx is retried by botocore itself; a refusal is not, and fails that stack alone.
    aws.proxy.error("CreateChangeSet", 500, "InternalFailure", times=1)
    aws.proxy.error("CreateChangeSet", 400, "InsufficientCapabilitiesException", times=1)
    h = harness(concurrency=1)
    report = h.sync()
    # "a" goes first (concurrency 1): its 500 is retried, and the retry meets the refusal.
    assert report.outcomes == {"a": Outcome.FAILED, "b": Outcome.SUCCEEDED}
    assert "InsufficientCapabilitiesException" in h.state.stacks["a"].message
    assert aws.proxy.calls.count("CreateChangeSet") == 3
    assert aws.stack("b")["StackStatus"] == "CREATE_COMPLETE"


def test_a_broken_template_never_reads_as_a_removed_stack(repo, aws, harness):
    # The deployment file names its stack explicitly; its template then goes missing. The stack
    # must be reported failed under its own name, and prune must not take it for removed.
    repo.commit(
        {
            "templates/topic.yaml": TOPIC_TEMPLATE,
            "deployments/app.yaml": yaml.safe_dump(
                {
                    "template-file-path": "templates/topic.yaml",
                    "stack-name": "app-prod",
                    "parameters": {"Name": "app"},
                }
            ),
        }
    )
    h = harness(defaults={"prune": True})
    assert h.sync().ok
    repo.commit({"templates/topic.yaml": None})
    report = h.sync()
    assert "app-prod" in report.invalid and "templates/topic.yaml" in report.invalid["app-prod"]
    assert aws.stack("app-prod")["StackStatus"] == "CREATE_COMPLETE"
    assert aws.proxy.count("DeleteStack") == 0
    assert h.state.stacks["app-prod"].state is StackState.FAILED
    assert set(h.state.stacks) == {"app-prod"}


def test_a_crash_right_after_the_version_record_creates_one_change_set(repo, aws, harness):
    topic_stack(repo, "s", "v1")
    h = harness()

    class Crash(Exception):
        pass

    def crash_after_version(record):
        if record.kind is Kind.VERSION:
            raise Crash()

    h.app.journal.subscribe(crash_after_version)
    with pytest.raises(Crash):
        h.sync()
    h.close()
    h.open()
    assert h.sync().outcomes["s"] is Outcome.SUCCEEDED
    assert aws.proxy.count("CreateChangeSet") == 1
    assert aws.proxy.count("DescribeChangeSet") >= 2  # looked for it by name, then waited
    assert [(r.version, r.result.value) for r in h.state.history] == [(1, "succeeded")]


def test_a_change_set_name_taken_already_is_looked_up_not_fatal(repo, aws, harness):
    # AWS refuses a second change set of the same name (moto does not; the proxy plays AWS).
    topic_stack(repo, "s", "v1")
    aws.proxy.error("CreateChangeSet", 400, "AlreadyExistsException", times=1)
    h = harness()
    assert h.sync().outcomes["s"] is Outcome.SUCCEEDED
    assert aws.proxy.count("CreateChangeSet") == 2
    assert aws.stack("s")["StackStatus"] == "CREATE_COMPLETE"


def test_role_arn_is_assumed_for_cloudformation(repo, aws, harness):
    topic_stack(repo, "s", "v1")
    h = harness(aws={"role_arn": "arn:aws:iam::123456789012:role/syncd-deployer"})
    assert h.sync().outcomes["s"] is Outcome.SUCCEEDED
    # moto's STS hands out credentials for the role; CloudFormation was called with them.
    [gateway] = h.app.cfn.by_place.values()
    creds = gateway._cfn._request_signer._credentials.get_frozen_credentials()
    assert creds.access_key != "testing"


def test_a_deleted_branch_prunes_nothing(repo, aws, harness):
    topic_stack(repo, "s", "v1")
    h = harness(defaults={"prune": True})
    assert h.sync().ok
    repo.delete_branch()
    report = h.sync()
    assert report.source_error and "is gone" in report.source_error
    assert aws.stack("s")["StackStatus"] == "CREATE_COMPLETE"
    assert aws.proxy.count("DeleteStack") == 0
    assert "is gone" in h.state.repos["r"].error
    assert h.state.stacks["s"].state is StackState.IN_SYNC


def test_a_pass_that_crashes_never_leaves_status_in_sync(repo, aws, harness, monkeypatch):
    repo.commit(
        {"templates/topic.yaml": TOPIC_TEMPLATE, "deployments/a.yaml": deployment(Name="a1")}
    )
    h = harness()
    assert h.sync().ok
    assert [r["state"] for r in status_rows(h.state)] == ["in_sync"]

    # A commit meets a bug in syncd (here: loading deployment files raises): the pass fails ...
    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("a bug\x1b[2J" + "x" * 5000)

    monkeypatch.setattr(reconcile, "load_stacks", broken)
    repo.commit({"deployments/a.yaml": deployment(Name="a2")})
    for _ in range(3):
        with pytest.raises(RuntimeError):
            h.sync()
    # ... and is journaled once (not once a pass), bounded; status shows the stack stale.
    failed = [r for r in h.app.journal.records() if r.kind is Kind.PASS_FAILED]
    assert len(failed) == 1 and len(failed[0].data["message"]) <= 500
    (row,) = status_rows(h.state)
    assert row["state"] == "stale" and "RuntimeError: a bug" in row["message"]
    status = run_syncd("status", "-c", str(h.config_path))
    assert status.returncode == 1
    assert "\x1b" not in status.stdout and "stale" in status.stdout

    monkeypatch.undo()  # fixed: the next pass applies the commit and clears it
    assert h.sync().ok
    assert aws.parameters("a") == {"Name": "a2"}
    assert [r["state"] for r in status_rows(h.state)] == ["in_sync"]
