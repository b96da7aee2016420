"""`syncd sync` at CloudFormation's pace: change sets that take a second to compute, stack
operations that take seconds, busy stacks that refuse work, and throttling, all played by the
fault proxy in front of moto's server.

The scene (as in the issue that asked for it): 40 independent stacks and a chain of three that
pass outputs along (c1 -> c2 -> c3). What is asserted is what does not depend on this machine's
speed: how many calls each stack cost, that nothing was refused as busy, that each output was
read only after its stack settled, and that the independent stacks were not queued behind
each other. Wall times are printed; bench/pace.py compares them with peers.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Aws, write_config
from tests.e2e.conftest import run_syncd
from tests.support.gitrepo import GitRepo

CHAIN_TEMPLATE = """\
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
Outputs:
  Value:
    Value: !Sub "${Upstream}>${AWS::StackName}"
"""

# Each test runs `syncd sync` over 43 stacks at CloudFormation's pace (15-30 s, more when
# throttled): more room than the suite's 120 s default on a slow CI machine.
pytestmark = pytest.mark.timeout(400)

INDEPENDENT = 40
CHAIN = ("c1", "c2", "c3")
STACKS = INDEPENDENT + len(CHAIN)
CHANGE_SET_S = 1.0
OPERATION_S = 3.0


def files(generation: str) -> dict[str, str]:
    out = {"templates/chain.yaml": CHAIN_TEMPLATE}
    for i in range(INDEPENDENT):
        out[f"deployments/s{i:02d}.yaml"] = _deployment(f"{generation}-s{i:02d}")
    out["deployments/c1.yaml"] = _deployment(generation)
    out["deployments/c2.yaml"] = _deployment({"stack-output": "c1.Value"})
    out["deployments/c3.yaml"] = _deployment({"stack-output": "c2.Value"})
    return out


def _deployment(upstream: Any) -> str:
    return yaml.safe_dump(
        {"template-file-path": "templates/chain.yaml", "parameters": {"Upstream": upstream}}
    )


def sync(config: Path, aws: Aws) -> tuple[float, Any]:
    started = time.monotonic()
    result = run_syncd("sync", "-c", str(config), timeout=380)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    return elapsed, result


def check_chain(aws: Aws, generation: str) -> None:
    """Each link's parameter is its upstream's output as it is now: read after it settled."""
    assert aws.parameters("c1") == {"Upstream": generation}
    assert aws.parameters("c2") == {"Upstream": aws.outputs("c1")["Value"]}
    assert aws.parameters("c3") == {"Upstream": aws.outputs("c2")["Value"]}
    assert aws.outputs("c3")["Value"] == f"{generation}>c1>c2>c3"


def check_schedule(aws: Aws, calls_per_stack: float) -> None:
    log = list(aws.proxy.log)
    per_stack = len(log) / STACKS
    by_action = Counter(c.action for c in log)
    print(f"{len(log)} calls, {per_stack:.1f} per stack: {dict(by_action)}")
    assert per_stack <= calls_per_stack, by_action
    assert aws.proxy.refused_busy == []
    assert not getattr(aws.proxy, "refused_early", [])
    executes = {c.stack: c.at for c in log if c.action == "ExecuteChangeSet"}
    assert len(executes) == STACKS
    # Not queued: most independent stacks had their operations running at the same time. With
    # a concurrency of 4 (the old behaviour) at most 4 would overlap; the count is not "all 40"
    # because a loaded machine may take longer than one operation to create 40 change sets.
    independent = sorted(executes[f"s{i:02d}"] for i in range(INDEPENDENT))
    assert most_overlapping(independent, OPERATION_S) >= INDEPENDENT // 2, independent
    # The chain started each link after the one before had ended (its operation's time).
    assert executes["c2"] - executes["c1"] >= OPERATION_S
    assert executes["c3"] - executes["c2"] >= OPERATION_S


def most_overlapping(starts: list[float], duration: float) -> int:
    """The most operations of `duration` seconds, started at sorted `starts`, running at once."""
    return max(
        sum(1 for later in starts[i:] if later < start + duration) for i, start in enumerate(starts)
    )


@pytest.fixture
def paced(tmp_path: Path, repo: GitRepo, aws: Aws) -> Path:
    aws.proxy.pace(change_set=CHANGE_SET_S, operation=OPERATION_S)
    return write_config(
        tmp_path, [{"name": "r", "url": str(repo.bare)}], aws.endpoint, aws={"wait_poll": "5s"}
    )


def test_first_deploy_and_update_at_cloudformation_pace(repo, aws, paced):
    repo.commit(files("g1"))
    elapsed, _ = sync(paced, aws)
    print(f"first deploy: {elapsed:.1f} s (critical path {3 * (CHANGE_SET_S + OPERATION_S)} s)")
    check_schedule(aws, calls_per_stack=8)
    check_chain(aws, "g1")

    aws.proxy.log.clear()
    aws.proxy.calls.clear()
    repo.commit(files("g2"))
    elapsed, _ = sync(paced, aws)
    print(f"update of every stack: {elapsed:.1f} s")
    check_schedule(aws, calls_per_stack=8)
    check_chain(aws, "g2")


def test_long_operations_cost_no_more_calls_per_stack(tmp_path, repo, aws):
    # Time scaled by 20: 3 s operations looked at every 250 ms at most stand for 60 s
    # operations looked at every 5 s (the default aws.wait_poll).
    aws.proxy.pace(change_set=CHANGE_SET_S, operation=OPERATION_S)
    config = write_config(
        tmp_path, [{"name": "r", "url": str(repo.bare)}], aws.endpoint, aws={"wait_poll": "250ms"}
    )
    repo.commit(files("g1"))
    sync(config, aws)
    check_schedule(aws, calls_per_stack=10)
    check_chain(aws, "g1")


def test_thirty_percent_of_calls_throttled_still_converges(repo, aws, paced):
    aws.proxy.throttle_rate(0.3, seed=7)
    repo.commit(files("g1"))
    elapsed, _ = sync(paced, aws)
    throttled = len(aws.proxy.throttled)
    print(f"with 30 % throttled: {elapsed:.1f} s, {throttled} throttled replies")
    assert throttled > 0.2 * len(aws.proxy.log)
    check_chain(aws, "g1")
    assert aws.proxy.refused_busy == []
    status = run_syncd("status", "--format", "json", "-c", str(paced))
    assert {row["state"] for row in yaml.safe_load(status.stdout)} == {"in_sync"}
