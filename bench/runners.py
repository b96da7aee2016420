"""How each peer is run for one measurement (first deploy, or no-op pass).

Every peer has `prepare()` (once, untimed: install, check the command exists), `first_deploy()`
and `noop()`; the last two return the wall time in seconds and raise `PeerFailed` with the tail
of the peer's stderr when it fails. The harness resets the emulator and the proxy's counters
around each call, so the API calls a measurement made are exactly what reached the proxy.

Timing:
- boto3 loop: in-process, `time.perf_counter()` around `boto3_loop.sync_all` (no interpreter
  start, `import boto3` already done; creating the session and client is included).
- aws CLI, sceptre, syncd: subprocesses; wall time from spawn to exit, interpreter start and
  imports included (that is what a user of the tool waits for).

All subprocesses get an environment that only reaches the proxy: dummy credentials, region
us-east-1, AWS_ENDPOINT_URL (honoured by botocore >= 1.31 for every service) set to the proxy,
no shared config or credentials files, and instance metadata lookups disabled.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import venv
from dataclasses import dataclass
from pathlib import Path

import boto3_loop
import yaml
from workload import Workload

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = BENCH_DIR.parent
SUBPROCESS_TIMEOUT_S = 900
# moto completes everything at once and throttles nothing: syncd's call budget (20 calls a
# second by default, for AWS's quotas) would set the pace of this comparison, not syncd's work.
# bench/pace.py measures syncd with its default budget, at CloudFormation's pace.
INSTANT_BUDGET = {"calls_per_second": 1000}


class PeerFailed(RuntimeError):
    """A peer's command failed; the message carries its stderr tail."""


class PeerUnavailable(RuntimeError):
    """A peer cannot be run here at all (not installed, not written yet)."""


@dataclass
class Context:
    workload: Workload
    proxy_url: str
    work_dir: Path  # bench/.work
    run: int = 0  # which run this measurement belongs to (0-based)

    def env(self) -> dict[str, str]:
        """Environment for peer subprocesses: AWS traffic goes to the proxy and nowhere else."""
        env = dict(os.environ)
        for key in list(env):
            if key.startswith("AWS_"):
                del env[key]
        env.update(
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_REGION="us-east-1",
            AWS_ENDPOINT_URL=self.proxy_url,
            AWS_ENDPOINT_URL_CLOUDFORMATION=self.proxy_url,
            AWS_CONFIG_FILE=str(self.work_dir / "no-aws-config"),
            AWS_SHARED_CREDENTIALS_FILE=str(self.work_dir / "no-aws-credentials"),
            AWS_EC2_METADATA_DISABLED="true",
            BENCH_ENDPOINT=self.proxy_url,
            NO_COLOR="1",
        )
        return env


def _command_version(cmd: list[str], env: dict[str, str] | None = None) -> str:
    """First line `cmd` prints (stdout, else stderr), or "?" when it fails."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    if proc.returncode != 0:
        return "?"
    lines = (proc.stdout.strip() or proc.stderr.strip()).splitlines()
    return lines[0] if lines else "?"


def tail(text: str, lines: int = 6, chars: int = 800) -> str:
    out = "\n".join(text.strip().splitlines()[-lines:])
    return out[-chars:] if out else "(no output)"


def timed_run(
    cmd: list[str], ctx: Context, cwd: Path | None = None, env: dict[str, str] | None = None
) -> float:
    """Run `cmd`, return its wall time; raise PeerFailed on a non-zero exit or a timeout."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd,
            cwd=cwd,
            env=env or ctx.env(),
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        raise PeerFailed(f"timed out after {SUBPROCESS_TIMEOUT_S} s") from exc
    except OSError as exc:
        raise PeerFailed(f"cannot start {cmd[0]}: {exc}") from exc
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise PeerFailed(f"exit {proc.returncode}: {tail(proc.stderr or proc.stdout)}")
    return elapsed


class Peer:
    name = "?"
    description = "?"

    def prepare(self, ctx: Context) -> None:
        """Untimed set-up, once per harness run."""

    def first_deploy(self, ctx: Context) -> float:
        raise NotImplementedError

    def noop(self, ctx: Context) -> float:
        raise NotImplementedError

    def version(self, ctx: Context) -> str:
        return "?"


# -- plain boto3 loop --------------------------------------------------------------------------
class Boto3Loop(Peer):
    name = "boto3-loop"
    description = "plain boto3, one process, sequential change sets (timed in-process)"

    def _pass(self, ctx: Context, expect_deployed: int | None) -> float:
        start = time.perf_counter()
        try:
            deployed = boto3_loop.sync_all(ctx.workload.repo, ctx.workload.stacks, ctx.proxy_url)
        except Exception as exc:  # any boto3 or deploy error fails this peer, not the harness
            raise PeerFailed(f"{type(exc).__name__}: {exc}") from exc
        elapsed = time.perf_counter() - start
        if expect_deployed is not None and deployed != expect_deployed:
            raise PeerFailed(f"deployed {deployed} stacks, expected {expect_deployed}")
        return elapsed

    def first_deploy(self, ctx: Context) -> float:
        return self._pass(ctx, len(ctx.workload.stacks))

    def noop(self, ctx: Context) -> float:
        return self._pass(ctx, 0)

    def version(self, ctx: Context) -> str:
        import boto3

        return f"boto3 {boto3.__version__}"


# -- aws cloudformation deploy -----------------------------------------------------------------
class AwsCliLoop(Peer):
    name = "aws-cli-deploy"
    description = "`aws cloudformation deploy` per stack in a bash loop"

    def prepare(self, ctx: Context) -> None:
        if shutil.which("aws") is None:
            raise PeerUnavailable("the `aws` command is not on PATH")

    def first_deploy(self, ctx: Context) -> float:
        return timed_run(["bash", str(ctx.workload.awscli_script)], ctx)

    def noop(self, ctx: Context) -> float:
        return timed_run(["bash", str(ctx.workload.awscli_script)], ctx)

    def version(self, ctx: Context) -> str:
        return _command_version(["aws", "--version"])


# -- sceptre -----------------------------------------------------------------------------------
class Sceptre(Peer):
    """sceptre pins jsonschema<3.3, so it lives in its own venv under bench/.work/."""

    name = "sceptre"
    description = "`sceptre launch -y` (its own venv; create_stack/update_stack, 4 s status polls)"

    def venv_dir(self, ctx: Context) -> Path:
        return ctx.work_dir / "sceptre-venv"

    def exe(self, ctx: Context) -> Path:
        return self.venv_dir(ctx) / "bin" / "sceptre"

    def prepare(self, ctx: Context) -> None:
        exe = self.exe(ctx)
        if (
            exe.exists()
            and subprocess.run([str(exe), "--version"], capture_output=True).returncode == 0
        ):
            return
        print(f"  creating {self.venv_dir(ctx)} and installing sceptre (once) ...", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(self.venv_dir(ctx))
        pip = self.venv_dir(ctx) / "bin" / "pip"
        proc = subprocess.run(
            [str(pip), "install", "-q", "sceptre"], capture_output=True, text=True
        )
        if proc.returncode != 0 or not exe.exists():
            raise PeerUnavailable(f"pip install sceptre failed: {tail(proc.stderr)}")

    def _launch(self, ctx: Context) -> float:
        cmd = [
            str(self.exe(ctx)),
            "--no-colour",
            "--dir",
            str(ctx.workload.sceptre_dir),
            "launch",
            "-y",
            "bench",
        ]
        return timed_run(cmd, ctx)

    def first_deploy(self, ctx: Context) -> float:
        return self._launch(ctx)

    def noop(self, ctx: Context) -> float:
        return self._launch(ctx)

    def version(self, ctx: Context) -> str:
        return _command_version([str(self.exe(ctx)), "--version"])


# -- syncd -------------------------------------------------------------------------------------
class Syncd(Peer):
    """`syncd sync -c CONFIG` as a subprocess, as docs/commands.md describes it."""

    name = "syncd"
    description = "`syncd sync -c CONFIG` subprocess (interpreter start included)"

    def __init__(self, command: list[str] | None = None) -> None:
        self._command = command

    def command(self) -> list[str]:
        if self._command:
            return self._command
        exe = shutil.which("syncd")
        if exe:
            return [exe]
        # Not installed: run this checkout's CLI (the [project.scripts] entry point).
        return [sys.executable, "-c", "import sys; from syncd.cli import main; sys.exit(main())"]

    def env(self, ctx: Context) -> dict[str, str]:
        env = ctx.env()
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p
        )
        return env

    def config_path(self, ctx: Context) -> Path:
        return ctx.work_dir / f"syncd-run{ctx.run}" / "syncd.yaml"

    def write_config(self, ctx: Context) -> Path:
        """A fresh state_dir for this run's first deploy; the no-op pass reuses it."""
        run_dir = self.config_path(ctx).parent
        if run_dir.exists():
            shutil.rmtree(run_dir)
        (run_dir / "syncd-state").mkdir(parents=True)
        config = {
            "state_dir": str(run_dir / "syncd-state"),
            "aws": {"region": "us-east-1", "endpoint_url": ctx.proxy_url, **INSTANT_BUDGET},
            "repos": [
                {
                    "name": "bench",
                    "url": str(ctx.workload.repo),
                    "branch": "main",
                    "deployments": ["deployments/*.yaml"],
                }
            ],
        }
        path = self.config_path(ctx)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def first_deploy(self, ctx: Context) -> float:
        config = self.write_config(ctx)
        return timed_run([*self.command(), "sync", "-c", str(config)], ctx, env=self.env(ctx))

    def noop(self, ctx: Context) -> float:
        config = self.config_path(ctx)
        return timed_run([*self.command(), "sync", "-c", str(config)], ctx, env=self.env(ctx))

    def version(self, ctx: Context) -> str:
        return _command_version([*self.command(), "--version"], env=self.env(ctx))


def measure_syncd_inprocess(ctx: Context, phase: str) -> float:
    """Time one syncd pass inside this process, as the daemon runs it.

    "first_deploy": a fresh state_dir; the daemon's first pass (the one look at the deployed
    world, paginated DescribeStacks, then the pass). "noop": the journal from the first deploy
    is reopened (so no in-memory "nothing changed" shortcut applies) and one pass reads the
    whole commit, loads all deployment files, resolves and digests every stack, and compares
    with the journal. Imports and opening the journal are outside the timing.
    """
    from syncd import logs
    from syncd.app import open_app
    from syncd.apply import Outcome
    from syncd.configfile import load_config
    from syncd.reconcile import observe_world

    logs.configure(json_output=True, level="warning")  # stderr, and only what matters

    run_dir = ctx.work_dir / f"syncd-inproc-run{ctx.run}"
    config_path = run_dir / "syncd.yaml"
    if phase == "first_deploy":
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        config = {
            "state_dir": str(run_dir / "syncd-state"),
            "aws": {"region": "us-east-1", "endpoint_url": ctx.proxy_url, **INSTANT_BUDGET},
            "repos": [{"name": "bench", "url": str(ctx.workload.repo), "branch": "main"}],
        }
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    for key, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        os.environ.setdefault(key, value)
    app = open_app(load_config(config_path))
    try:
        started = time.perf_counter()
        if phase == "first_deploy":
            observe_world(app.world, app.journal)
        report = app.syncs["bench"].run_pass()
        elapsed = time.perf_counter() - started
    finally:
        app.close()
    if not report.ok:
        raise PeerFailed(f"syncd pass failed: {report}")
    if phase == "noop" and set(report.outcomes.values()) != {Outcome.IN_SYNC}:
        raise PeerFailed(f"the no-op pass applied something: {report.outcomes}")
    return elapsed


class SyncdInprocess(Peer):
    name = "syncd-inprocess"
    description = "syncd's daemon pass called in-process (imports and journal open excluded)"

    def first_deploy(self, ctx: Context) -> float:
        return measure_syncd_inprocess(ctx, "first_deploy")

    def noop(self, ctx: Context) -> float:
        return measure_syncd_inprocess(ctx, "noop")


ALL_PEERS = ["boto3", "awscli", "sceptre", "syncd", "syncd-inprocess"]
