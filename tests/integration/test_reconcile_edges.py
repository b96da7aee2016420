"""The corners of a pass that a review found: broken files of known stacks, two repos naming
one stack, open applies whose file goes away, reverts, approval beside dependencies, outputs
changing in another repo, and the journal of a recreate. moto over HTTP, real Git repos."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import yaml

from syncd.apply import Outcome
from syncd.core.journal_state import Kind, StackState
from tests.conftest import TOPIC_TEMPLATE, deployment, topic_stack
from tests.integration.conftest import Syncd
from tests.support.gitrepo import GitRepo
from tests.support.timing import PATIENCE


def wait_until_executing(s: Syncd, stack: str) -> None:
    """Until another thread's pass has journaled the execute of `stack`."""
    deadline = time.monotonic() + PATIENCE
    while not (a := s.state.stacks[stack].attempt) or not a.executing:
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.fixture
def other_repo(tmp_path: Path) -> GitRepo:
    return GitRepo(tmp_path / "git-other")


def test_a_deployment_file_too_broken_to_name_its_stack_keeps_that_stack(repo, aws, syncd):
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
    s = syncd({"r": repo}, defaults={"prune": True})
    assert s.sync().ok
    repo.commit({"deployments/app.yaml": "template-file-path: [never closed\n"})
    report = s.sync()
    # The file cannot say which stack it is; it is reported under the stack it last described.
    assert list(report.invalid) == ["app-prod"]
    assert "deployments/app.yaml" in report.invalid["app-prod"]
    assert set(s.state.stacks) == {"app-prod"}
    assert s.state.stacks["app-prod"].state is StackState.FAILED
    assert aws.proxy.count("DeleteStack") == 0
    assert aws.stack("app-prod")["StackStatus"] == "CREATE_COMPLETE"

    repo.commit({"deployments/app.yaml": deployment(Name="app") + "stack-name: app-prod\n"})
    # Fixed, and the same as deployed: in sync again, without a change set.
    assert s.sync().outcomes["app-prod"] is Outcome.IN_SYNC
    assert s.state.stacks["app-prod"].state is StackState.IN_SYNC
    assert aws.proxy.count("CreateChangeSet") == 1  # the first create only


def test_a_stack_another_repo_manages_is_refused_and_left_to_its_owner(
    repo, other_repo, aws, syncd
):
    topic_stack(repo, "shared", "from-r")
    topic_stack(other_repo, "shared", "from-other")
    s = syncd({"r": repo, "other": other_repo})
    assert s.sync("r").ok
    report = s.sync("other")
    assert report.invalid == {
        "shared": "deployments/shared.yaml: stack 'shared' is managed by repo 'r'"
    }
    assert aws.parameters("shared") == {"Name": "from-r"}
    assert aws.proxy.count("CreateChangeSet") == 1
    view = s.state.stacks["shared"]
    assert (view.repo, view.state, view.version) == ("r", StackState.IN_SYNC, 1)
    assert s.sync("other").skipped  # nothing moved: no new report, still nothing applied
    assert aws.proxy.count("CreateChangeSet") == 1
    s.restart()  # a new process reports the conflict again
    assert "managed by repo 'r'" in s.sync("other").invalid["shared"]
    assert aws.proxy.count("CreateChangeSet") == 1


def test_an_apply_open_when_its_file_is_removed_is_observed_then_pruned(repo, aws, syncd):
    topic_stack(repo, "s", "v1")
    s = syncd({"r": repo}, defaults={"prune": True})
    assert s.sync().ok
    aws.proxy.slow("s", polls=10_000)
    stop = threading.Event()
    s.restart(stop=stop)
    s.app.journal.subscribe(lambda r: stop.set() if r.kind is Kind.EXECUTING else None)
    repo.commit({"deployments/s.yaml": deployment(Name="v2")})
    assert s.sync().outcomes["s"] is Outcome.INTERRUPTED

    repo.commit({"deployments/s.yaml": None})  # while syncd is down, the file goes
    aws.proxy.reset()  # ... and the update finishes
    s.restart()
    report = s.sync()
    assert report.outcomes["s"] is Outcome.SUCCEEDED  # the delete
    assert aws.proxy.count("ExecuteChangeSet") == 0  # the open update was observed, not redone
    assert aws.stack("s") is None
    assert [(r.version, r.action, r.result.value) for r in s.state.history] == [
        (1, "create", "succeeded"),
        (2, "update", "succeeded"),
        (3, "delete", "succeeded"),  # the stack's absence is a new desired state
    ]


def test_reverting_a_failed_update_brings_the_stack_back_in_sync(repo, aws, syncd):
    topic_stack(repo, "s", "v1")
    s = syncd({"r": repo})
    assert s.sync().ok
    aws.proxy.fail("s", polls=1, reason="Access denied")
    repo.commit({"deployments/s.yaml": deployment(Name="v2")})
    assert s.sync().outcomes["s"] is Outcome.FAILED

    s.restart()  # the rolled-back stack looks healthy to CloudFormation; syncd still says failed
    assert s.state.stacks["s"].state is StackState.FAILED
    assert s.state.stacks["s"].stack_status == "UPDATE_ROLLBACK_COMPLETE"

    aws.proxy.calls.clear()
    repo.commit({"deployments/s.yaml": deployment(Name="v1")})  # git revert
    report = s.sync()
    # The rollback put v1 back, which is what the revert asks for, and a look confirms it: in
    # sync again, no change set, no new version (moto itself never undid v2; the proxy shows
    # the rollback's parameters, as CloudFormation would).
    assert report.outcomes["s"] is Outcome.IN_SYNC
    assert aws.proxy.calls == ["DescribeStacks"]
    view = s.state.stacks["s"]
    assert (view.state, view.version, view.failed_digest) == (StackState.IN_SYNC, 1, None)
    assert [(r.version, r.result.value) for r in s.state.history] == [
        (1, "succeeded"),
        (2, "failed"),
    ]
    assert s.kinds("s")[-1] is Kind.BACK_IN_SYNC


def test_fixing_a_broken_deployment_file_makes_no_change_set(repo, aws, syncd):
    topic_stack(repo, "s", "v1")
    s = syncd({"r": repo})
    assert s.sync().ok
    repo.commit({"deployments/s.yaml": "template-file-path: [unclosed\n"})
    report = s.sync()
    assert "s" in report.invalid and s.state.stacks["s"].state is StackState.FAILED
    aws.proxy.calls.clear()
    repo.commit({"deployments/s.yaml": deployment(Name="v1")})
    assert s.sync().outcomes["s"] is Outcome.IN_SYNC
    assert aws.proxy.calls == ["DescribeStacks"]  # the look that confirms it, no change set
    assert s.state.stacks["s"].state is StackState.IN_SYNC
    assert len(s.state.history) == 1


def test_a_revert_after_a_rollback_that_failed_is_not_called_in_sync(repo, aws, syncd):
    topic_stack(repo, "s", "v1")
    s = syncd({"r": repo})
    assert s.sync().ok
    aws.proxy.fail("s", polls=1, reason="Access denied")
    repo.commit({"deployments/s.yaml": deployment(Name="v2")})
    assert s.sync().outcomes["s"] is Outcome.FAILED
    aws.proxy.hold("s", "UPDATE_ROLLBACK_FAILED")  # the rollback itself failed
    s.restart()
    repo.commit({"deployments/s.yaml": deployment(Name="v1")})
    assert s.sync().outcomes["s"] is Outcome.BLOCKED  # looked at, and it needs a human
    assert s.state.stacks["s"].state is StackState.BLOCKED
    assert "UPDATE_ROLLBACK_FAILED" in s.state.stacks["s"].message


def test_a_stack_waiting_for_approval_holds_the_stacks_that_need_its_outputs(repo, aws, syncd):
    repo.commit(
        {
            "templates/topic.yaml": TOPIC_TEMPLATE,
            "deployments/network.yaml": deployment(Name="net"),
            "deployments/app.yaml": deployment(Name={"stack-output": "network.TopicName"}),
            "deployments/solo.yaml": deployment(Name="solo"),
        }
    )
    s = syncd({"r": repo}, repo_options={"r": {"stacks": {"network": {"approval": "manual"}}}})
    report = s.sync()
    assert report.outcomes == {
        "network": Outcome.AWAITING_APPROVAL,
        "app": Outcome.BLOCKED,
        "solo": Outcome.SUCCEEDED,
    }
    assert s.state.stacks["network"].state is StackState.AWAITING_APPROVAL
    assert "waits for stack network" in s.state.stacks["app"].message
    assert aws.proxy.count("ExecuteChangeSet") == 1  # solo only
    assert aws.stack("network")["StackStatus"] == "REVIEW_IN_PROGRESS"
    assert aws.stack("app") is None


def test_an_output_changed_by_another_repo_updates_the_stacks_that_read_it(
    repo, other_repo, aws, syncd
):
    topic_stack(other_repo, "network", "net-v1")
    repo.commit(
        {
            "templates/topic.yaml": TOPIC_TEMPLATE,
            "deployments/app.yaml": deployment(Name={"stack-output": "network.TopicName"}),
        }
    )
    s = syncd({"r": repo, "platform": other_repo})
    assert s.sync("platform").ok
    assert s.sync("r").ok
    assert aws.parameters("app") == {"Name": "net-v1"}
    assert s.sync("r").skipped

    other_repo.commit({"deployments/network.yaml": deployment(Name="net-v2")})
    assert s.sync("platform").outcomes["network"] is Outcome.SUCCEEDED
    report = s.sync("r")  # r's commit did not move, but an output it reads did
    assert not report.skipped
    assert report.outcomes["app"] is Outcome.SUCCEEDED
    assert aws.parameters("app") == {"Name": "net-v2"}
    assert s.state.stacks["app"].version == 2


def test_a_stack_whose_upstream_another_repo_is_applying_waits_for_it_to_settle(
    repo, other_repo, aws, syncd
):
    topic_stack(other_repo, "network", "net-v1")
    repo.commit(
        {
            "templates/topic.yaml": TOPIC_TEMPLATE,
            "deployments/app.yaml": deployment(Name={"stack-output": "network.TopicName"}),
        }
    )
    s = syncd({"r": repo, "platform": other_repo})
    assert s.sync("platform").ok and s.sync("r").ok
    aws.proxy.slow("network", polls=100_000)  # in progress until the proxy is reset
    other_repo.commit({"deployments/network.yaml": deployment(Name="net-v2")})
    platform = threading.Thread(target=s.sync, args=("platform",))
    platform.start()
    wait_until_executing(s, "network")
    # While network's update runs, a change to app must not read network's (old) output.
    repo.commit(
        {
            "deployments/app.yaml": deployment(Name={"stack-output": "network.TopicName"})
            + "tags: {t: '2'}\n"
        }
    )
    assert s.sync("r").outcomes["app"] is Outcome.BLOCKED
    assert "being applied by repo 'platform'" in s.state.stacks["app"].message
    assert not s.app.syncs["r"].waits_on_outputs()
    aws.proxy.reset()  # network's update completes
    platform.join(PATIENCE)
    assert not platform.is_alive()
    assert s.app.syncs["r"].waits_on_outputs()  # the daemon wakes r at once on this
    assert s.sync("r").outcomes["app"] is Outcome.SUCCEEDED
    assert aws.parameters("app") == {"Name": "net-v2"}
    assert not s.app.syncs["r"].waits_on_outputs()


def test_a_recreate_is_journaled_before_the_delete(repo, aws, syncd):
    topic_stack(repo, "s", "v1")
    aws.proxy.fail("s", polls=1)
    s = syncd({"r": repo}, defaults={"on_failure": "recreate"})
    assert s.sync().outcomes["s"] is Outcome.FAILED
    aws.proxy.calls.clear()
    repo.commit({"deployments/s.yaml": deployment(Name="v2")})
    assert s.sync().outcomes["s"] is Outcome.SUCCEEDED
    kinds = s.kinds("s")
    assert Kind.RECREATING in kinds
    assert kinds.index(Kind.RECREATING) < kinds.index(Kind.EXECUTING, kinds.index(Kind.RECREATING))
    assert aws.proxy.calls.index("DeleteStack") < aws.proxy.calls.index("CreateChangeSet")
    assert [(r.version, r.result.value) for r in s.state.history] == [
        (1, "failed"),
        (2, "succeeded"),
    ]


def test_an_approved_change_set_is_executed_and_a_stale_approval_refused(
    repo, aws, syncd, tmp_path
):
    from syncd.approvals import Approval, Approvals

    topic_stack(repo, "s", "v1")
    s = syncd({"r": repo}, defaults={"approval": "manual"})
    assert s.sync().outcomes["s"] is Outcome.AWAITING_APPROVAL
    first = s.state.stacks["s"].attempt.change_set
    assert aws.proxy.count("ExecuteChangeSet") == 0

    repo.commit({"deployments/s.yaml": deployment(Name="v2")})  # replaces the waiting one
    assert s.sync().outcomes["s"] is Outcome.AWAITING_APPROVAL
    second = s.state.stacks["s"].attempt.change_set
    assert second != first

    approvals = Approvals(tmp_path / "state")
    approvals.request(Approval("s", first, "alice@host"))  # approved what she saw earlier
    assert s.sync().outcomes["s"] is Outcome.REFUSED
    assert aws.proxy.count("ExecuteChangeSet") == 0
    assert s.state.stacks["s"].state is StackState.AWAITING_APPROVAL
    assert Kind.APPROVAL_REFUSED in s.kinds("s")

    approvals.request(Approval("s", second, "alice@host"))
    assert s.sync().outcomes["s"] is Outcome.SUCCEEDED
    assert aws.proxy.count("ExecuteChangeSet") == 1
    assert aws.parameters("s") == {"Name": "v2"}
    assert approvals.pending() == {}
    kinds = s.kinds("s")
    assert kinds.index(Kind.APPROVED) < kinds.index(Kind.EXECUTING, kinds.index(Kind.APPROVED))
    assert s.state.stacks["s"].state is StackState.IN_SYNC


def test_an_approval_of_a_stack_held_by_a_newer_commit_is_refused(repo, aws, syncd, tmp_path):
    from syncd.approvals import Approval, Approvals

    repo.commit(
        {
            "templates/topic.yaml": TOPIC_TEMPLATE,
            "deployments/net.yaml": deployment(Name="n1"),
            "deployments/app.yaml": deployment(Name={"stack-output": "net.TopicName"}),
        }
    )
    s = syncd({"r": repo}, repo_options={"r": {"stacks": {"app": {"approval": "manual"}}}})
    assert s.sync().outcomes == {"net": Outcome.SUCCEEDED, "app": Outcome.AWAITING_APPROVAL}
    seen = s.state.stacks["app"].attempt.change_set
    # The next commit changes net, which now needs approval too: app waits for it this pass.
    repo.commit(
        {
            "deployments/net.yaml": deployment(Name="n2") + "approval: manual\n",
        }
    )
    Approvals(tmp_path / "state").request(Approval("app", seen, "bob@host"))
    report = s.sync()
    assert report.outcomes["net"] is Outcome.AWAITING_APPROVAL
    assert report.outcomes["app"] is Outcome.REFUSED
    assert aws.proxy.count("ExecuteChangeSet") == 1  # net's first create only
    assert aws.stack("app")["StackStatus"] == "REVIEW_IN_PROGRESS"


def test_approving_a_change_set_deleted_meanwhile_is_a_failure_not_a_success(
    repo, aws, syncd, tmp_path
):
    from syncd.approvals import Approval, Approvals

    topic_stack(repo, "s", "v1")
    s = syncd({"r": repo})
    assert s.sync().ok
    s.restart()
    s.close()
    s = syncd({"r": repo}, defaults={"approval": "manual"})
    repo.commit({"deployments/s.yaml": deployment(Name="v2")})
    assert s.sync().outcomes["s"] is Outcome.AWAITING_APPROVAL
    waiting = s.state.stacks["s"].attempt.change_set
    aws.cfn.delete_change_set(ChangeSetName=waiting)  # someone tidies up by hand
    Approvals(tmp_path / "state").request(Approval("s", waiting, "carol@host"))
    assert s.sync().outcomes["s"] is Outcome.FAILED
    view = s.state.stacks["s"]
    assert view.state is StackState.FAILED and view.version == 1
    assert aws.parameters("s") == {"Name": "v1"}


def test_a_fix_back_to_what_was_applied_does_not_hide_a_drift(repo, aws, syncd):
    topic_stack(repo, "s", "v1")
    s = syncd({"r": repo})
    assert s.sync().ok
    aws.cfn.update_stack(  # changed by hand, then seen at start
        StackName="s",
        UsePreviousTemplate=True,
        Parameters=[{"ParameterKey": "Name", "ParameterValue": "hacked"}],
    )
    s.restart()
    assert s.state.stacks["s"].state is StackState.DRIFTED
    repo.commit({"deployments/s.yaml": "template-file-path: [unclosed\n"})
    s.sync()
    repo.commit({"deployments/s.yaml": deployment(Name="v1")})
    assert s.sync().outcomes["s"] in (Outcome.SUCCEEDED, Outcome.NO_CHANGES)
    assert aws.parameters("s") == {"Name": "v1"}  # brought back, not called in sync
    assert s.kinds("s")[-1] is Kind.RESULT


def test_a_stack_deleted_by_hand_is_not_called_back_in_sync(repo, aws, syncd):
    topic_stack(repo, "s", "v1")
    s = syncd({"r": repo})
    assert s.sync().ok
    repo.commit({"deployments/s.yaml": "template-file-path: [unclosed\n"})
    s.sync()
    aws.cfn.delete_stack(StackName="s")
    repo.commit({"deployments/s.yaml": deployment(Name="v1")})
    s.sync()
    assert aws.parameters("s") == {"Name": "v1"}  # the look found it gone: created again
    assert s.state.stacks["s"].state is StackState.IN_SYNC


def test_events_that_cannot_be_read_do_not_undo_a_success(repo, aws, syncd):
    topic_stack(repo, "s", "v1")
    s = syncd({"r": repo})
    assert s.sync().ok
    aws.proxy.error("DescribeStackEvents", 400, "AccessDenied", 1, "no events for you")
    repo.commit({"deployments/s.yaml": deployment(Name="v2")})
    assert s.sync().outcomes["s"] is Outcome.SUCCEEDED
    view = s.state.stacks["s"]
    assert (view.state, view.version, view.attempt) == (StackState.IN_SYNC, 2, None)


@pytest.mark.parametrize(
    "refused",
    [
        pytest.param("CreateChangeSet", id="busy-after-the-look"),  # an update began meanwhile
        pytest.param("ExecuteChangeSet", id="busy-at-execute"),  # not run: nothing to observe
    ],
)
def test_a_stack_refused_as_busy_is_blocked_then_applied(repo, aws, syncd, refused):
    topic_stack(repo, "s", "v1")
    s = syncd({"r": repo})
    assert s.sync().ok
    busy = "Stack:arn:aws:cloudformation:us-east-1:123456789012:stack/s/1 is in UPDATE_IN_PROGRESS"
    aws.proxy.error(refused, 400, "ValidationError", 1, busy + " state and can not be updated.")
    repo.commit({"deployments/s.yaml": deployment(Name="v2")})
    assert s.sync().outcomes["s"] is Outcome.BLOCKED
    assert "UPDATE_IN_PROGRESS" in s.state.stacks["s"].message
    assert s.sync().outcomes["s"] is Outcome.SUCCEEDED  # the next pass finds it idle
    assert aws.parameters("s") == {"Name": "v2"}


def test_a_reader_is_woken_when_its_upstream_settles_even_with_the_same_outputs(
    repo, other_repo, aws, syncd
):
    network = TOPIC_TEMPLATE.replace(
        "Resources:",
        "  Extra:\n    Type: String\nResources:\n  Note:\n    Type: AWS::SSM::Parameter\n"
        "    Properties:\n      Name: !Sub '/${AWS::StackName}/extra'\n      Type: String\n"
        "      Value: !Ref Extra\n",
    )
    other_repo.commit(
        {
            "templates/network.yaml": network,
            "deployments/network.yaml": deployment("templates/network.yaml", Name="n", Extra="1"),
        }
    )
    repo.commit(
        {
            "templates/topic.yaml": TOPIC_TEMPLATE,
            "deployments/app.yaml": deployment(Name={"stack-output": "network.TopicName"}),
        }
    )
    s = syncd({"r": repo, "platform": other_repo})
    assert s.sync("platform").ok and s.sync("r").ok
    outputs = dict(s.state.stacks["network"].outputs)
    aws.proxy.slow("network", polls=100_000)  # in progress until the proxy is reset
    # Extra only: network's outputs stay as they are.
    other_repo.commit(
        {"deployments/network.yaml": deployment("templates/network.yaml", Name="n", Extra="2")}
    )
    platform = threading.Thread(target=s.sync, args=("platform",))
    platform.start()
    wait_until_executing(s, "network")
    app = deployment(Name={"stack-output": "network.TopicName"})
    repo.commit({"deployments/app.yaml": app + "tags: {t: '3'}\n"})
    assert s.sync("r").outcomes["app"] is Outcome.BLOCKED
    aws.proxy.reset()  # network's update completes
    platform.join(PATIENCE)
    assert not platform.is_alive()
    assert s.state.stacks["network"].outputs == outputs  # settled, outputs unchanged
    assert s.app.syncs["r"].waits_on_outputs()  # its upstream settled: wake it
    assert s.sync("r").outcomes["app"].ok  # (moto sees a tag-only change set as no changes)
    assert s.state.stacks["app"].state is StackState.IN_SYNC
    assert not s.app.syncs["r"].waits_on_outputs()


# --- a repo writer reaching for a stack that is not its repo's, by the side paths ----------

OWNER = "syncd:repo"


def tags(aws, name):
    return {t["Key"]: t["Value"] for t in (aws.stack(name) or {}).get("Tags", [])}


def test_recreate_never_deletes_another_repos_failed_stack(repo, other_repo, aws, syncd):
    repo.commit(
        {"templates/topic.yaml": TOPIC_TEMPLATE, "deployments/shared.yaml": deployment(Name="a")}
    )
    aws.proxy.fail("shared", polls=1)  # repo ra's first create rolls back
    s = syncd({"ra": repo, "rb": other_repo}, repo_options={"rb": {"on_failure": "recreate"}})
    s.sync("ra")
    assert s.state.stacks["shared"].stack_status == "ROLLBACK_COMPLETE"  # as the proxy shows it
    other_repo.commit(
        {"templates/topic.yaml": TOPIC_TEMPLATE, "deployments/shared.yaml": deployment(Name="b")}
    )
    s.sync("rb")
    assert not [c for c in aws.proxy.log if c.action == "DeleteStack"]
    assert tags(aws, "shared") == {OWNER: "ra"}
    assert "belongs to repo 'ra'" in s.state.stacks["shared"].message


def test_a_stack_made_again_by_someone_else_under_the_same_name_is_not_taken(repo, aws, syncd):
    topic_stack(repo, "s", "v1")
    s = syncd({"r": repo})
    assert s.sync("r").ok
    aws.cfn.delete_stack(StackName="s")  # deleted outside syncd, then someone else's stack
    aws.cfn.create_stack(
        StackName="s",
        TemplateBody=TOPIC_TEMPLATE,
        Parameters=[{"ParameterKey": "Name", "ParameterValue": "theirs"}],
    )
    s.restart()
    repo.commit({"deployments/s.yaml": deployment(Name="v2")})
    s.sync("r")
    assert aws.parameters("s") == {"Name": "theirs"}
    assert "did not create it" in s.state.stacks["s"].message


def test_another_repos_journal_does_not_make_an_untagged_stack_this_repos(
    repo, other_repo, aws, syncd
):
    repo.commit(
        {"templates/topic.yaml": TOPIC_TEMPLATE, "deployments/legacy.yaml": deployment(Name="ra")}
    )
    s = syncd({"ra": repo, "rb": other_repo})
    assert s.sync("ra").ok
    aws.cfn.update_stack(  # as a syncd from before tags left it
        StackName="legacy",
        UsePreviousTemplate=True,
        Parameters=[{"ParameterKey": "Name", "ParameterValue": "ra-hand"}],
        Tags=[{"Key": "team", "Value": "a"}],
    )
    repo.commit({"deployments/legacy.yaml": None})  # ra lets it go (prune off: left alone)
    s.restart()
    s.sync("ra")
    other_repo.commit(
        {"templates/topic.yaml": TOPIC_TEMPLATE, "deployments/legacy.yaml": deployment(Name="rb")}
    )
    for _ in range(2):  # a refusal must not hand the stack to rb in the journal either
        s.sync("rb")
    assert aws.parameters("legacy") == {"Name": "ra-hand"}
    assert s.state.stacks["legacy"].repo == "ra"


def test_someone_elses_stack_in_review_is_not_taken_without_adopt(repo, aws, syncd):
    aws.cfn.create_change_set(  # their new stack, waiting for their review: nothing deployed
        StackName="pending",
        ChangeSetName="their-cs",
        ChangeSetType="CREATE",
        TemplateBody=TOPIC_TEMPLATE,
        Parameters=[{"ParameterKey": "Name", "ParameterValue": "theirs"}],
    )
    repo.commit(
        {"templates/topic.yaml": TOPIC_TEMPLATE, "deployments/pending.yaml": deployment(Name="me")}
    )
    s = syncd({"r": repo})
    s.sync("r")
    assert not [c for c in aws.proxy.log if c.action == "CreateChangeSet"]
    assert "did not create it" in s.state.stacks["pending"].message
