"""syncd, sceptre and a parallel boto3 loop side by side at CloudFormation's pace.

    python bench/pace.py [--stacks 50] [--runs 3] [--change-set 1] [--operation 3]
                         [--throttle 0.3] [--peers syncd,sceptre,boto3] [--time-scale 20]
                         [--syncd-calls-per-second N]

moto answers at once; CloudFormation takes seconds to compute a change set and minutes to run a
stack operation, refuses work on a stack that is busy, and throttles. This benchmark puts the
test suite's timing layer (`tests.support.cfn_proxy.FaultProxy` with `pace(change_set,
operation)`) between every peer and one moto server, and deploys the scene of
tests/e2e/test_pace.py at N stacks: N - 3 independent stacks and a chain c1 -> c2 -> c3 whose
parameter `Upstream` is the previous link's output `Value` (sceptre: `!stack_output`; syncd:
`stack-output:` in the deployment file; the boto3 loop reads the output once the upstream has
settled). The chain's critical path is 3 x (change_set + operation) seconds.

For each run and each peer (runs interleaved, as in peers.py): reset moto, time the **first
deploy** (generation g1), check against moto directly (not through the proxy) that every stack
is *_COMPLETE with its g1 parameter and that each link took its upstream's g1 output; then time
the **update** (every stack's parameter changed: generation g2) and check the same. Reported
per peer and phase, as medians over the runs: wall time, its ratio to syncd's and to the
critical path, CloudFormation calls (total and per stack, from `FaultProxy.log`, throttled and
refused calls included), calls refused because the stack was busy (`refused_busy`), and with
`--throttle` the Throttling replies. Written to bench/results/pace.json (pace-throttled.json
with `--throttle`), with every run's figures and where the time went (first call, when each
chain link started and executed, the spread of the independent stacks' starts).

Time scale: 1 s change sets and 3 s operations stand for CloudFormation's tens of seconds and
minutes; each peer's own poll intervals are divided by `--time-scale` (default 20) to match:
syncd's `aws.wait_poll` 5 s -> 250 ms; the boto3 waiters' 30 s -> 1.5 s; sceptre's 4 s status
poll (a `time.sleep(4)` in sceptre.plan.actions) -> 0.2 s, through a shim of `time` in that
module alone. Retry back-off after throttling is not scaled for anyone.

Not modelled by the proxy (tests/support/cfn_proxy.py): CreateStack and UpdateStack (sceptre's
calls) are instant there; `PacedProxy` below paces them like an ExecuteChangeSet, so sceptre's
stacks are busy for `operation` seconds too (sceptre makes no change sets, so its chain has no
change-set time: its critical path is 3 x operation).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(PROJECT_ROOT))  # tests.support.cfn_proxy and syncd from this checkout

import runners  # noqa: E402
import servers  # noqa: E402
import yaml  # noqa: E402

from tests.support.cfn_proxy import FaultProxy, _Frame, _Op, _q  # noqa: E402

WORK_DIR = BENCH_DIR / ".work"
PACE_DIR = WORK_DIR / "pace"
RESULTS_DIR = BENCH_DIR / "results"
PHASES = ("first_deploy", "update")
GENERATIONS = {"first_deploy": "g1", "update": "g2"}
CHAIN = ("c1", "c2", "c3")
UPSTREAM = {"c2": "c1", "c3": "c2"}
SUBPROCESS_TIMEOUT_S = 900
CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"]
SYNCD_WAIT_POLL_S = 5.0  # syncd's default aws.wait_poll

# test_pace.py's template, for every stack: an SSM parameter and one output that names the chain.
TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
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


# -- the timing layer ---------------------------------------------------------------------------
class PacedProxy(FaultProxy):
    """FaultProxy whose `pace` also covers CreateStack and UpdateStack (sceptre's calls): after
    moto accepts one, the stack shows CREATE_/UPDATE_IN_PROGRESS for `operation` seconds (no
    outputs during a create, the earlier parameters and outputs during an update), exactly as
    the proxy plays an ExecuteChangeSet, and refuses other changes meanwhile. The operation is
    registered before the reply leaves the proxy, so no look can see it finished early."""

    def _forward(self, h: Any, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        if b"Action=CreateStack&" not in body + b"&" and b"Action=UpdateStack&" not in body + b"&":
            return super()._forward(h, body)
        params = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        action, stack = params.get("Action"), params.get("StackName", "")
        if self._pace is None or action not in ("CreateStack", "UpdateStack") or not stack:
            return super()._forward(h, body)
        kind = "CREATE" if action == "CreateStack" else "UPDATE"
        before = self._snapshot(h, stack) if kind == "UPDATE" else None
        started = dt.datetime.now(dt.UTC)
        status, headers, data = super()._forward(h, body)
        window = (started, dt.datetime.now(dt.UTC))
        if status == 200:
            stack_id = ET.fromstring(data).findtext(f".//{_q('StackId')}") or ""
            with self._lock:
                self._pace_direct(stack, kind, stack_id, before, self.clock(), window)
        return status, headers, data

    def _pace_direct(
        self,
        stack: str,
        kind: str,
        stack_id: str,
        before: ET.Element | None,
        now: float,
        window: tuple[dt.datetime, dt.datetime],
    ) -> None:
        assert self._pace is not None
        st = self._stack(stack)
        st.op, st.sticky, st.script, st.before = None, None, [], before
        if stack_id:
            st.stack_id = stack_id
        busy = f"{kind}_IN_PROGRESS"
        frame = _Frame(
            busy,
            rolled_back=kind == "UPDATE" and before is not None,
            no_outputs=kind == "CREATE",
        )
        steps: list[Any] = [
            (now, frame, ((None, busy, "User Initiated"),)),
            (now + self._pace[1], None, ((None, f"{kind}_COMPLETE", ""),)),
        ]
        st.quiet.append(window)
        st.op = _Op(st.stack_id, now, window[1], steps)
        self._advance(now)


# -- the scene ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scene:
    stacks: int

    @property
    def independent(self) -> list[str]:
        return [f"s{i:02d}" for i in range(1, self.stacks - len(CHAIN) + 1)]

    @property
    def names(self) -> list[str]:
        return [*self.independent, *CHAIN]

    def value(self, name: str, generation: str) -> str | None:
        """The `Upstream` parameter given as such (None: the upstream link's output)."""
        if name in UPSTREAM:
            return None
        return generation if name == CHAIN[0] else f"{generation}-{name}"


@dataclass
class Bench:
    scene: Scene
    proxy_url: str
    moto_url: str
    change_set_s: float
    operation_s: float
    scale: float
    ctx: runners.Context  # for runners' subprocess environment and the sceptre venv

    @property
    def critical_path_s(self) -> float:
        return len(CHAIN) * (self.change_set_s + self.operation_s)


def make_context(proxy_url: str) -> runners.Context:
    return runners.Context(workload=None, proxy_url=proxy_url, work_dir=WORK_DIR)  # type: ignore[arg-type]


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


def run_logged(cmd: list[str], env: dict[str, str], log: Path) -> tuple[float, str]:
    """Run `cmd` with stdout and stderr to `log`; return (wall seconds, stdout). PeerFailed on a
    non-zero exit or a timeout."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S
        )
    except subprocess.TimeoutExpired as exc:
        raise runners.PeerFailed(f"timed out after {SUBPROCESS_TIMEOUT_S} s") from exc
    except OSError as exc:
        raise runners.PeerFailed(f"cannot start {cmd[0]}: {exc}") from exc
    elapsed = time.perf_counter() - start
    log.write_text(f"$ {' '.join(cmd)}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    if proc.returncode != 0:
        raise runners.PeerFailed(
            f"exit {proc.returncode} (log {log}): {runners.tail(proc.stderr or proc.stdout)}"
        )
    return elapsed, proc.stdout


# -- the peers ----------------------------------------------------------------------------------
class PacePeer:
    name = "?"
    description = "?"
    extra: dict[str, Any]  # figures of the last deploy, beside the harness's own

    def __init__(self) -> None:
        self.extra = {}

    def prepare(self, b: Bench) -> None:
        """Untimed set-up, once."""

    def version(self, b: Bench) -> str:
        return "?"

    def stack_name(self, name: str) -> str:
        return name

    def deploy(self, b: Bench, run: int, phase: str) -> float:
        """Bring every stack to this phase's generation; return the wall seconds."""
        raise NotImplementedError


class SyncdPeer(PacePeer):
    name = "syncd"
    description = "`syncd sync -c CONFIG` subprocess; stack-output: in the deployment files"

    def __init__(self, command: list[str] | None, calls_per_second: float | None) -> None:
        super().__init__()
        self.runner = runners.Syncd(command)
        self.calls_per_second = calls_per_second  # None: syncd's default (20)

    def version(self, b: Bench) -> str:
        return self.runner.version(b.ctx)

    def deploy(self, b: Bench, run: int, phase: str) -> float:
        run_dir = PACE_DIR / f"syncd-run{run}"
        repo, config = run_dir / "repo", run_dir / "syncd.yaml"
        if phase == "first_deploy":
            if run_dir.exists():
                shutil.rmtree(run_dir)
            (repo / "templates").mkdir(parents=True)
            (repo / "deployments").mkdir()
            (repo / "templates" / "pace.yaml").write_text(TEMPLATE)
            git(repo, "init", "-q", "-b", "main")
            wait_poll_ms = max(1, round(1000 * SYNCD_WAIT_POLL_S / b.scale))
            aws: dict[str, Any] = {
                "region": "us-east-1",
                "endpoint_url": b.proxy_url,
                "wait_poll": f"{wait_poll_ms}ms",
            }
            if self.calls_per_second:
                aws["calls_per_second"] = self.calls_per_second
            config_doc = {
                "state_dir": str(run_dir / "state"),
                "aws": aws,
                "repos": [
                    {
                        "name": "bench",
                        "url": str(repo),
                        "branch": "main",
                        "deployments": ["deployments/*.yaml"],
                    }
                ],
            }
            config.write_text(yaml.safe_dump(config_doc, sort_keys=False))
        generation = GENERATIONS[phase]
        for name in b.scene.names:
            value = b.scene.value(name, generation)
            upstream: Any = (
                value if value is not None else {"stack-output": f"{UPSTREAM[name]}.Value"}
            )
            doc = {
                "template-file-path": "templates/pace.yaml",
                "parameters": {"Upstream": upstream},
            }
            (repo / "deployments" / f"{name}.yaml").write_text(yaml.safe_dump(doc))
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"{len(b.scene.names)} stacks, generation {generation}")
        cmd = [*self.runner.command(), "sync", "-c", str(config)]
        seconds, _ = run_logged(cmd, self.runner.env(b.ctx), run_dir / f"{phase}.log")
        return seconds


# sceptre's entry point with `time` in sceptre.plan.actions (its 4 s status poll, its 2 s change
# set poll) replaced by a shim whose sleep() is divided by the time scale; argv[1] is the scale.
SCEPTRE_SHIM = """\
import sys, time, types
scale = float(sys.argv.pop(1))
import sceptre.plan.actions as actions
shim = types.ModuleType("time")
shim.__dict__.update({k: v for k, v in vars(time).items() if not k.startswith("__")})
shim.sleep = lambda seconds: time.sleep(seconds / scale)
actions.time = shim
from sceptre.cli import cli
sys.argv[0] = "sceptre"
sys.exit(cli())
"""


class SceptrePeer(PacePeer):
    name = "sceptre"
    description = "`sceptre launch -y` (its own threads per dependency batch; !stack_output)"

    def __init__(self) -> None:
        super().__init__()
        self.runner = runners.Sceptre()

    def prepare(self, b: Bench) -> None:
        self.runner.prepare(b.ctx)

    def version(self, b: Bench) -> str:
        return self.runner.version(b.ctx)

    def stack_name(self, name: str) -> str:
        return f"pace-bench-{name}"  # <project_code>-<group>-<file stem>

    def deploy(self, b: Bench, run: int, phase: str) -> float:
        project = PACE_DIR / f"sceptre-run{run}"
        if phase == "first_deploy":
            if project.exists():
                shutil.rmtree(project)
            (project / "config" / "bench").mkdir(parents=True)
            (project / "templates").mkdir()
            (project / "templates" / "pace.yaml").write_text(TEMPLATE)
            (project / "config" / "config.yaml").write_text(
                yaml.safe_dump({"project_code": "pace", "region": "us-east-1"})
            )
        generation = GENERATIONS[phase]
        for name in b.scene.names:
            value = b.scene.value(name, generation)
            lines = ["template_path: pace.yaml"]
            if value is None:
                lines += [
                    "dependencies:",
                    f"  - bench/{UPSTREAM[name]}.yaml",
                    "parameters:",
                    f"  Upstream: !stack_output bench/{UPSTREAM[name]}.yaml::Value",
                ]
            else:
                lines += ["parameters:", f"  Upstream: {json.dumps(value)}"]
            (project / "config" / "bench" / f"{name}.yaml").write_text("\n".join(lines) + "\n")
        python = self.runner.venv_dir(b.ctx) / "bin" / "python"
        cmd = [str(python), "-c", SCEPTRE_SHIM, str(b.scale), "--no-colour"]
        cmd += ["--dir", str(project), "launch", "-y", "bench"]
        seconds, _ = run_logged(cmd, b.ctx.env(), PACE_DIR / f"sceptre-run{run}-{phase}.log")
        return seconds


class Boto3Peer(PacePeer):
    name = "boto3-loop"
    description = (
        "boto3 in a subprocess: every ready stack at once (a thread each), change set + "
        "execute, boto3's waiters; chain links after their upstream"
    )

    def version(self, b: Bench) -> str:
        import boto3

        return f"boto3 {boto3.__version__}"

    def deploy(self, b: Bench, run: int, phase: str) -> float:
        generation = GENERATIONS[phase]
        spec = {
            "endpoint": b.proxy_url,
            "scale": b.scale,
            "template": TEMPLATE,
            "independent": {n: b.scene.value(n, generation) for n in b.scene.independent},
            "chain": list(CHAIN),
            "chain_head": b.scene.value(CHAIN[0], generation),
        }
        path = PACE_DIR / f"boto3-run{run}-{phase}.json"
        path.write_text(json.dumps(spec, indent=1))
        cmd = [sys.executable, str(Path(__file__).resolve()), "--boto3-worker", str(path)]
        seconds, out = run_logged(cmd, b.ctx.env(), path.with_suffix(".log"))
        self.extra = json.loads(out.strip().splitlines()[-1])  # the loop's own in-process time
        return seconds


def boto3_worker(spec_path: Path) -> int:
    """The boto3 loop itself (run as `pace.py --boto3-worker SPEC`): one paginated
    DescribeStacks to know what exists, then a thread per independent stack and one for the
    chain; each stack: CreateChangeSet -> waiter change_set_create_complete -> ExecuteChangeSet
    -> waiter stack_create_complete / stack_update_complete; a chain link's parameter is its
    upstream's output, read (DescribeStacks) once the upstream's waiter has returned. The
    waiters' delays are boto3's defaults divided by the time scale; botocore retries in
    `standard` mode with 10 attempts (the default 5 fail a few calls under 30 % throttling)."""
    from concurrent.futures import ThreadPoolExecutor

    import boto3
    from botocore.config import Config

    spec = json.loads(spec_path.read_text())
    started = time.perf_counter()
    scale = float(spec["scale"])
    threads = len(spec["independent"]) + 1
    cfn = boto3.session.Session().client(
        "cloudformation",
        endpoint_url=spec["endpoint"],
        region_name="us-east-1",
        config=Config(
            max_pool_connections=threads + 4, retries={"mode": "standard", "max_attempts": 10}
        ),
    )
    live = {
        s["StackName"]
        for page in cfn.get_paginator("describe_stacks").paginate()
        for s in page["Stacks"]
        if s["StackStatus"] not in ("DELETE_COMPLETE", "REVIEW_IN_PROGRESS")
    }

    def wait(waiter_name: str, **kwargs: Any) -> None:
        waiter = cfn.get_waiter(waiter_name)
        delay = waiter.config.delay / scale
        attempts = int(waiter.config.max_attempts * scale)
        waiter.wait(**kwargs, WaiterConfig={"Delay": delay, "MaxAttempts": attempts})

    def deploy(name: str, value: str) -> None:
        kind = "UPDATE" if name in live else "CREATE"
        cs = cfn.create_change_set(
            StackName=name,
            ChangeSetName=f"pace-{time.time_ns()}",
            ChangeSetType=kind,
            TemplateBody=spec["template"],
            Parameters=[{"ParameterKey": "Upstream", "ParameterValue": value}],
            Capabilities=CAPABILITIES,
        )
        wait("change_set_create_complete", ChangeSetName=cs["Id"])
        cfn.execute_change_set(ChangeSetName=cs["Id"])
        wait(
            "stack_create_complete" if kind == "CREATE" else "stack_update_complete", StackName=name
        )

    def chain() -> None:
        value = spec["chain_head"]
        for i, link in enumerate(spec["chain"]):
            deploy(link, value)
            if i + 1 < len(spec["chain"]):
                stack = cfn.describe_stacks(StackName=link)["Stacks"][0]
                outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
                value = outputs["Value"]

    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = [pool.submit(deploy, n, v) for n, v in spec["independent"].items()]
        futures.append(pool.submit(chain))
        for future in futures:
            future.result()
    print(json.dumps({"in_process_s": round(time.perf_counter() - started, 3)}))
    return 0


def make_peers(
    names: list[str], syncd_cmd: list[str] | None, calls_per_second: float | None
) -> list[PacePeer]:
    table: dict[str, PacePeer] = {
        "syncd": SyncdPeer(syncd_cmd, calls_per_second),
        "sceptre": SceptrePeer(),
        "boto3": Boto3Peer(),
    }
    unknown = [n for n in names if n not in table]
    if unknown:
        raise SystemExit(f"unknown peer(s) {unknown}; choose from {list(table)}")
    return [table[n] for n in names]


# -- one measurement ----------------------------------------------------------------------------
def reset_moto(moto_url: str) -> None:
    req = urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")
    with urllib.request.urlopen(req, timeout=30):
        pass


def check(b: Bench, peer: PacePeer, phase: str) -> None:
    """Against moto directly: every stack settled with this generation's parameter, and each
    chain link's parameter is its upstream's output as it is now (read after it settled)."""
    import boto3

    cfn = boto3.client(
        "cloudformation",
        endpoint_url=b.moto_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    live = {
        s["StackName"]: s
        for page in cfn.get_paginator("describe_stacks").paginate()
        for s in page["Stacks"]
    }
    generation, problems = GENERATIONS[phase], []
    params: dict[str, str | None] = {}
    outputs: dict[str, str | None] = {}
    for name in b.scene.names:
        stack = live.get(peer.stack_name(name))
        if stack is None:
            problems.append(f"{name}: missing")
            continue
        if stack["StackStatus"] not in ("CREATE_COMPLETE", "UPDATE_COMPLETE"):
            problems.append(f"{name}: {stack['StackStatus']}")
        p = {x["ParameterKey"]: x.get("ParameterValue") for x in stack.get("Parameters", [])}
        o = {x["OutputKey"]: x.get("OutputValue") for x in stack.get("Outputs", [])}
        params[name], outputs[name] = p.get("Upstream"), o.get("Value")
        want = b.scene.value(name, generation)
        if want is None:
            want = outputs.get(UPSTREAM[name])
        if params[name] != want:
            problems.append(f"{name}: Upstream={params[name]!r}, expected {want!r}")
    expected = ">".join([generation, *(peer.stack_name(c) for c in CHAIN)])
    if outputs.get(CHAIN[-1]) != expected:
        problems.append(f"{CHAIN[-1]}: Value={outputs.get(CHAIN[-1])!r}, expected {expected!r}")
    if problems:
        raise runners.PeerFailed(f"{len(problems)} problem(s): " + "; ".join(problems[:5]))


CHANGES = {"CreateChangeSet", "CreateStack", "UpdateStack"}
STARTS_OPERATION = {"ExecuteChangeSet", "CreateStack", "UpdateStack"}


def timeline(log: list[Any], t0: float, b: Bench, peer: PacePeer) -> dict[str, Any]:
    """Where the time went, from the proxy's log (seconds after the peer was started)."""
    first: dict[str, float] = {}
    executed: dict[str, float] = {}
    for call in log:
        if call.stack is None:
            continue
        if call.action in CHANGES:
            first.setdefault(call.stack, call.at - t0)
        if call.action in STARTS_OPERATION:
            executed[call.stack] = call.at - t0  # the last attempt: the one that went through
    starts = [first[s] for s in map(peer.stack_name, b.scene.independent) if s in first]
    chain = {}
    for link in CHAIN:
        name = peer.stack_name(link)
        chain[link] = {
            "first_change_call_s": _r(first.get(name)),
            "operation_started_s": _r(executed.get(name)),
        }
    lags = []  # how long each downstream link started after its upstream's operation ended
    for link, upstream in UPSTREAM.items():
        up_end = executed.get(peer.stack_name(upstream))
        down = first.get(peer.stack_name(link))
        if up_end is not None and down is not None:
            lags.append(down - (up_end + b.operation_s))
    return {
        "first_call_s": _r(min((c.at for c in log), default=t0) - t0),
        "last_call_s": _r(max((c.at for c in log), default=t0) - t0),
        "independent_first_start_s": _r(min(starts, default=None)),
        "independent_start_spread_s": _r(max(starts) - min(starts) if starts else None),
        "chain": chain,
        "chain_link_lag_s": [_r(x) for x in lags],
    }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def measure(
    peer: PacePeer, b: Bench, proxy: PacedProxy, run: int, phase: str, throttle: float
) -> dict[str, Any]:
    if phase == "first_deploy":
        reset_moto(b.moto_url)
    proxy.reset()
    proxy.pace(change_set=b.change_set_s, operation=b.operation_s)
    if throttle:
        proxy.throttle_rate(throttle, seed=1 + 2 * run + PHASES.index(phase))
    t0 = proxy.clock()
    peer.extra = {}
    seconds = peer.deploy(b, run, phase)
    log = list(proxy.log)
    with (PACE_DIR / f"{peer.name}-run{run}-{phase}.calls.tsv").open("w") as calls:
        calls.write("seconds\taction\tstack\n")  # every call, seconds after the peer started
        calls.writelines(f"{c.at - t0:.3f}\t{c.action}\t{c.stack or ''}\n" for c in log)
    n = len(b.scene.names)
    record = {
        "seconds": round(seconds, 3),
        "calls": len(log),
        "calls_per_stack": round(len(log) / n, 2),
        "refused_busy": len(proxy.refused_busy),
        "refused_early": len(proxy.refused_early),
        "throttled": len(proxy.throttled),
        "by_action": dict(sorted(Counter(c.action for c in log).items())),
        "refused_busy_by_action": dict(Counter(a for a, _ in proxy.refused_busy)),
        "timeline": timeline(log, t0, b, peer),
        **peer.extra,
    }
    check(b, peer, phase)
    return record


# -- summary ------------------------------------------------------------------------------------
SUMMED = ("seconds", "calls", "calls_per_stack", "refused_busy", "refused_early", "throttled")


def summarise(runs: list[dict[str, Any]], b: Bench) -> dict[str, Any]:
    out: dict[str, Any] = {
        f"{key}_median": round(statistics.median(r[key] for r in runs), 3) for key in SUMMED
    }
    out["ratio_to_critical_path"] = round(out["seconds_median"] / b.critical_path_s, 2)
    out["runs_s"] = [r["seconds"] for r in runs]
    out["by_action_last_run"] = runs[-1]["by_action"]
    return out


def ratio(value: float, base: float | None) -> float | None:
    return round(value / base, 2) if base else None


def print_table(results: dict[str, Any], b: Bench, runs: int, throttle: float) -> None:
    n = len(b.scene.names)
    print()
    print(
        f"{n} stacks ({n - len(CHAIN)} independent + a chain of {len(CHAIN)}), change sets "
        f"{b.change_set_s:g} s, operations {b.operation_s:g} s, critical path "
        f"{b.critical_path_s:g} s, polls / {b.scale:g}"
        + (f", {throttle:.0%} of calls throttled" if throttle else "")
        + f"; median of {runs} run(s)"
    )
    cols = f"{'wall s':>7} {'xsyncd':>7} {'xpath':>6} {'calls/st':>8} {'xsyncd':>7} {'busy':>5}"
    if throttle:
        cols += f" {'thr':>5}"
    half = len(cols)
    print(f"{'':<11}" + "   ".join(f"{p.replace('_', ' '):-^{half}}" for p in PHASES))
    print(f"{'peer':<11}" + "   ".join([cols] * len(PHASES)))
    for name, res in results.items():
        summary = res.get("summary")
        if summary is None:
            print(f"{name:<11}{res['status'][:150]}")
            continue
        cells = []
        for phase in PHASES:
            s, r = summary[phase], res.get("ratio_vs_syncd", {}).get(phase, {})
            cell = (
                f"{s['seconds_median']:7.2f} {_x(r.get('seconds'), 7)} "
                f"{s['ratio_to_critical_path']:5.2f}x {s['calls_per_stack_median']:8.2f} "
                f"{_x(r.get('calls'), 7)} {s['refused_busy_median']:5.0f}"
            )
            if throttle:
                cell += f" {s['throttled_median']:5.0f}"
            cells.append(cell)
        print(f"{name:<11}" + "   ".join(cells))
    print()
    print(
        "wall s = subprocess wall time (interpreter start included); xsyncd = ratio to syncd; "
        "xpath = ratio to the chain's critical path; calls/st = CloudFormation calls per stack "
        "at the proxy (throttled and refused ones included); busy = calls refused on a busy "
        "stack" + ("; thr = Throttling replies" if throttle else "")
    )


def _x(value: float | None, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width - 1}.2f}x"


# -- main ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stacks", type=int, default=50, help="stacks, chain of 3 included")
    parser.add_argument("--runs", type=int, default=3, help="runs per peer; medians reported")
    parser.add_argument("--change-set", type=float, default=1.0, help="seconds a change set takes")
    parser.add_argument("--operation", type=float, default=3.0, help="seconds an operation takes")
    parser.add_argument("--throttle", type=float, default=0.0, help="fraction of calls throttled")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=20.0,
        help="each peer's own poll intervals are divided by this (default 20)",
    )
    parser.add_argument("--peers", default="syncd,sceptre,boto3", help="comma-separated subset")
    parser.add_argument("--syncd-cmd", default=None, help="command that runs syncd")
    parser.add_argument(
        "--syncd-calls-per-second",
        type=float,
        default=None,
        help="syncd's aws.calls_per_second (default: syncd's own, 20)",
    )
    parser.add_argument("--output", type=Path, default=None, help="JSON results file")
    parser.add_argument("--boto3-worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.boto3_worker:
        return boto3_worker(args.boto3_worker)
    if args.stacks < len(CHAIN) + 1:
        raise SystemExit(f"--stacks must be at least {len(CHAIN) + 1}")
    output = args.output or RESULTS_DIR / ("pace-throttled.json" if args.throttle else "pace.json")

    started = time.perf_counter()
    peers = make_peers(
        [p.strip() for p in args.peers.split(",") if p.strip()],
        args.syncd_cmd.split() if args.syncd_cmd else None,
        args.syncd_calls_per_second,
    )
    PACE_DIR.mkdir(parents=True, exist_ok=True)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    moto, moto_url = servers.start_moto(patched=True, serial=True)
    proxy = PacedProxy(moto_url)
    proxy.start()
    print(f"moto at {moto_url} (own process, serial), pacing proxy at {proxy.url}")
    try:
        b = Bench(
            Scene(args.stacks),
            proxy.url,
            moto_url,
            args.change_set,
            args.operation,
            args.time_scale,
            make_context(proxy.url),
        )
        results: dict[str, dict[str, Any]] = {}
        active: list[PacePeer] = []
        for peer in peers:
            results[peer.name] = {"description": peer.description, "status": "ok"}
            try:
                peer.prepare(b)
            except runners.PeerUnavailable as exc:
                results[peer.name]["status"] = f"skipped: {exc}"
                print(f"peer {peer.name} skipped: {exc}")
                continue
            results[peer.name]["version"] = peer.version(b)
            active.append(peer)

        samples: dict[str, dict[str, list[dict[str, Any]]]] = {
            p.name: {phase: [] for phase in PHASES} for p in active
        }
        for run in range(args.runs):
            for peer in list(active):
                try:
                    for phase in PHASES:
                        record = measure(peer, b, proxy, run, phase, args.throttle)
                        samples[peer.name][phase].append(record)
                        print(
                            f"run {run + 1}/{args.runs} {peer.name:<11} {phase:<12} "
                            f"{record['seconds']:7.2f} s {record['calls']:5d} calls "
                            f"({record['calls_per_stack']:.1f}/stack) busy "
                            f"{record['refused_busy']} throttled {record['throttled']}",
                            flush=True,
                        )
                except runners.PeerFailed as exc:
                    results[peer.name]["status"] = f"failed: {exc}"
                    print(f"peer {peer.name} failed: {exc}")
                    active.remove(peer)

        for peer in active:
            results[peer.name]["summary"] = {
                phase: summarise(samples[peer.name][phase], b) for phase in PHASES
            }
            results[peer.name]["runs"] = samples[peer.name]
        base = results.get("syncd", {}).get("summary")
        for res in results.values():
            if (summary := res.get("summary")) is None or base is None:
                continue
            res["ratio_vs_syncd"] = {
                phase: {
                    "seconds": ratio(
                        summary[phase]["seconds_median"], base[phase]["seconds_median"]
                    ),
                    "calls": ratio(summary[phase]["calls_median"], base[phase]["calls_median"]),
                }
                for phase in PHASES
            }

        print_table(results, b, args.runs, args.throttle)
        total = time.perf_counter() - started
        print(f"whole benchmark: {total:.0f} s")
        output.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "stacks": args.stacks,
            "independent": len(b.scene.independent),
            "chain": list(CHAIN),
            "runs": args.runs,
            "change_set_s": b.change_set_s,
            "operation_s": b.operation_s,
            "critical_path_s": b.critical_path_s,
            "throttle": args.throttle,
            "time_scale": b.scale,
            "syncd_calls_per_second": args.syncd_calls_per_second or "syncd's default",
            "statistic": "median over runs",
            "python": platform.python_version(),
            "syncd_checkout": _checkout(),
            "cpus": os.cpu_count(),
            "load_average_at_end": list(os.getloadavg()),
            "total_seconds": round(total, 1),
            "timing": "subprocess wall time for every peer, interpreter start included",
            "calls": "FaultProxy.log: every CloudFormation call, throttled and refused included",
        }
        output.write_text(json.dumps({"meta": meta, "peers": results}, indent=2) + "\n")
        print(f"results written to {output}")
    finally:
        proxy.stop()
        moto.terminate()
        moto.wait(timeout=30)
    return 0


def _checkout() -> str:
    """This checkout's commit, and whether syncd/ differs from it (read-only git calls)."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "--no-optional-locks", "diff", "--quiet", "HEAD", "--", "syncd"],
        cwd=PROJECT_ROOT,
        capture_output=True,
    ).returncode
    return f"{head or '?'}{' + uncommitted changes in syncd/' if dirty else ''}"


if __name__ == "__main__":
    sys.exit(main())
