"""One syncd daemon carrying many stacks: R repos x S stacks (default 10 x 100 = 1,000).

    python bench/scale.py                                   # 10 repos x 100 stacks, 3 runs
    python bench/scale.py --repos 2 --stacks-per-repo 10 --runs 1 --idle-seconds 5  # a quick try
    python bench/scale.py --scales 100,1000 --runs 3        # one row per scale: how figures grow
    python bench/scale.py --probe-moto 10000                # can moto's server hold that many?
    python bench/scale.py --world memory --scales 1000,10000 --runs 1  # past what moto holds

Every run of every scale starts from an empty emulator, the "world": with `--world moto` (the
default) moto's server in a process of its own, with syncd's ExecuteChangeSet fix, answering one
request at a time (`servers.start_moto`); with `--world memory` the test layer's in-memory
CloudFormation (`tests/support/cfn_memory.py`: instant, thread-safe, a listing page costs a
page) in a process of its own (`servers.start_memory`), and syncd gets the call budget
`runners.INSTANT_BUDGET` (`aws.calls_per_second: 1000`, unless `--aws` sets it) so that the
budget does not set the pace of 10,000 stacks. Every syncd command, the daemon and the
baseline talk to it through the counting proxy (`countproxy.py`), which counts the calls by
action and logs when each arrived. Each repo is a generated workload (`workload.py`: S stacks of
an SNS topic and an SSM parameter) pushed to a bare repository on this machine, which syncd
follows (`poll_interval: 1s`, `watch: false`, `stack_prefix: rNNN-`). One run measures, in order:

1. first deploy: `syncd sync` from an empty state_dir (wall time, calls by action); it builds
   the state the rest uses;
2. no-op: `syncd sync` again (nothing changed) and, in the same run, a bare boto3 process
   (`python -c`: import boto3, page through `describe_stacks` once) against the same proxy; the
   difference in seconds (target: syncd within 1 s of the bare look) and the calls (target:
   only the DescribeStacks pages);
3. `syncd status --format json` (target <= 0.5 s);
4. idle daemon: `syncd run` with `http.listen`; once `/readyz` answers 200 and a short settle,
   its CPU (utime+stime from /proc/PID/stat over `--idle-seconds`, as % of one core; also with
   its git children, reaped and alive) and its largest VmRSS (targets < 5 % of a core,
   < 200 MB), with the calls and passes made meanwhile;
5. push to one stack: with that daemon running, `--pushes` times: change one stack's `Env`
   parameter in its deployment file, commit, wait `--push-pause` seconds plus 0-1 s at random
   (the daemon idle, the push at a random moment of the poll cycle), `git push` to the bare
   repo, and take the time from `git push` returning to the CreateChangeSet for that stack
   arriving at the proxy (target <= 1.5 s); also from the push to the daemon's
   `commit.detected` and `apply.settled` log lines. Each push must make exactly one
   CreateChangeSet, for that stack, and name no other stack until the stack has settled.

It prints the medians over `--runs` (and ratios where there is a baseline), a growth table when
there are several scales, and writes medians, raw samples and calls by action to
bench/results/scale.json (scale-memory.json on the memory world), which names the world. A
scale whose first deploy would take longer than `--deploy-budget` (estimated from a smaller
scale's rate; default 1,200 s on moto, 3,600 s on memory) is skipped and reported. Timings are
never asserted: the targets are printed beside the figures. The machine is shared (2 cores):
read medians. Scratch files go to bench/.work/scale/ (git-ignored).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

import runners  # noqa: E402
import yaml  # noqa: E402
from countproxy import Call, CountingProxy  # noqa: E402
from peers import by_action, cfn_calls, live_stack_count, median  # noqa: E402
from servers import free_port, start_memory, start_moto  # noqa: E402
from workload import TEMPLATE, Workload, make_workload  # noqa: E402

WORK_DIR = BENCH_DIR / ".work" / "scale"
RESULTS = {
    "moto": BENCH_DIR / "results" / "scale.json",
    "memory": BENCH_DIR / "results" / "scale-memory.json",
}
DEPLOY_BUDGET_S = {"moto": 1200.0, "memory": 3600.0}
TARGETS = {
    "noop_diff_s": 1.0,  # syncd sync's no-op minus the bare boto3 look
    "status_s": 0.5,
    "idle_cpu_pct": 5.0,  # of one core
    "idle_rss_mb": 200.0,
    "push_s": 1.5,  # git push returned -> CreateChangeSet at the proxy
}
# The baseline: what any tool that looks at every stack once must pay, as a process of its own.
BARE_LOOK = (
    "import boto3\n"
    "pages = boto3.client('cloudformation').get_paginator('describe_stacks').paginate()\n"
    "print(sum(len(page['Stacks']) for page in pages))\n"
)
CLK_TCK = os.sysconf("SC_CLK_TCK")


WORLDS = {
    "moto": "moto's server (syncd's patched emulator, serial)",
    "memory": "the in-memory CloudFormation (tests/support/cfn_memory.py)",
}


class RunFailed(RuntimeError):
    """One run at one scale could not be measured; the message says why."""


# -- the layout: repos, each a generated workload behind a bare repository ----------------------
@dataclass
class Repo:
    name: str  # r000: syncd's repo name, its stack prefix and its stacks' Env parameter
    workload: Workload  # workload.repo is the clone commits are made in
    bare: Path  # what syncd follows; commits reach it with `git push`
    env: str  # the stacks' current Env parameter (a push changes one stack's)

    def stack(self, i: int) -> str:
        """The name syncd gives stack i (its prefix + the deployment file's stem)."""
        return f"{self.name}-{self.workload.stacks[i].name}"


def aws_extra(args: argparse.Namespace) -> dict[str, Any]:
    """Extra `aws:` keys for syncd's config: --aws KEY=VALUE (values read as YAML); on the
    memory world, the instant budget unless --aws sets calls_per_second."""
    pairs = (item.split("=", 1) for item in args.aws)
    given = {key: yaml.safe_load(value) for key, value in pairs}
    return {**runners.INSTANT_BUDGET, **given} if args.world == "memory" else given


def git(*args: str, cwd: Path) -> None:
    subprocess.run(
        ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def make_repos(root: Path, repos: int, per_repo: int) -> list[Repo]:
    out = []
    for r in range(repos):
        name = f"r{r:03d}"
        workload = make_workload(root / name, per_repo, env=name, peer_inputs=False)
        bare = root / name / "repo.git"
        git("clone", "--quiet", "--bare", str(workload.repo), str(bare), cwd=root)
        git("remote", "add", "origin", str(bare), cwd=workload.repo)
        out.append(Repo(name, workload, bare, name))
    return out


def write_config(
    path: Path, state: Path, repos: list[Repo], proxy: str, port: int, aws: dict[str, Any]
) -> Path:
    config = {
        "state_dir": str(state),
        "aws": {"region": "us-east-1", "endpoint_url": proxy, **aws},
        "http": {"listen": f"127.0.0.1:{port}"},  # `syncd run` only
        "repos": [
            {
                "name": r.name,
                "url": str(r.bare),
                "branch": "main",
                "poll_interval": "1s",
                "watch": False,
                "deployments": ["deployments/*.yaml"],
                "stack_prefix": f"{r.name}-",
            }
            for r in repos
        ],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# -- processes -------------------------------------------------------------------------------
def run_cmd(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[float, str]:
    """Run `cmd` to its end; (wall seconds, stdout). RunFailed on an error exit or a timeout."""
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise RunFailed(f"{' '.join(cmd[-4:])}: still running after {timeout:.0f} s") from exc
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        why = runners.tail(proc.stderr or proc.stdout)
        raise RunFailed(f"{' '.join(cmd[-4:])}: exit {proc.returncode}: {why}")
    return elapsed, proc.stdout


def counted(
    proxy: CountingProxy, action: Callable[[], Any]
) -> tuple[Any, Counter[tuple[str, str]]]:
    proxy.reset_counts()
    result = action()
    return result, proxy.counts()


def reset_world(url: str) -> None:
    """Forget every stack (moto's reset path, which the in-memory world answers too)."""
    req = urllib.request.Request(f"{url}/moto-api/reset", method="POST")
    with urllib.request.urlopen(req, timeout=30):
        pass


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


# -- /proc: CPU and memory of the daemon ------------------------------------------------------
def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name: [state, ppid, ...]; utime is [11]."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def _children_of() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                kids.setdefault(int(_stat_fields(int(entry.name))[1]), []).append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile
    return kids


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(the process's own CPU seconds, with its children: reaped ones and those alive)."""
    f = _stat_fields(pid)
    own = (int(f[11]) + int(f[12])) / CLK_TCK
    tree = own + (int(f[13]) + int(f[14])) / CLK_TCK
    kids = _children_of()
    todo = list(kids.get(pid, []))
    while todo:
        child = todo.pop()
        try:
            c = _stat_fields(child)
        except OSError:
            continue  # ended and reaped: its time is in cutime/cstime now
        tree += sum(int(x) for x in c[11:15]) / CLK_TCK
        todo.extend(kids.get(child, []))
    return own, tree


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def metric_sums(port: int) -> dict[str, float]:
    """syncd_passes_total and syncd_pass_duration_seconds_sum over all repos, from /metrics."""
    _, text = http_get(f"http://127.0.0.1:{port}/metrics")
    sums = {"passes": 0.0, "pass_seconds": 0.0}
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name == "syncd_passes_total":
            sums["passes"] += float(line.rsplit(" ", 1)[1])
        elif name == "syncd_pass_duration_seconds_sum":
            sums["pass_seconds"] += float(line.rsplit(" ", 1)[1])
    return sums


# -- one run at one scale ----------------------------------------------------------------------
@dataclass
class Scale:
    repos: int
    per_repo: int

    @property
    def stacks(self) -> int:
        return self.repos * self.per_repo

    @property
    def label(self) -> str:
        return f"{self.stacks} stacks ({self.repos} repos x {self.per_repo})"


@dataclass
class Bench:
    args: argparse.Namespace
    syncd: list[str]
    world_url: str  # moto's server or the in-memory CloudFormation, behind the proxy
    proxy: CountingProxy
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    pushes_made: int = 0

    @property
    def aws(self) -> dict[str, Any]:
        return aws_extra(self.args)

    def env(self, repos: list[Repo]) -> dict[str, str]:
        ctx = runners.Context(repos[0].workload, self.proxy.url, BENCH_DIR / ".work")
        return runners.Syncd(self.syncd).env(ctx)

    def run(
        self, scale: Scale, repos: list[Repo], run: int, say: Callable[[str], None]
    ) -> dict[str, Any]:
        """Phases 1-5 of one run; the samples, or RunFailed."""
        run_dir = WORK_DIR / str(scale.stacks) / f"run{run}"
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        port = free_port()
        config = write_config(
            run_dir / "syncd.yaml", run_dir / "state", repos, self.proxy.url, port, self.aws
        )
        env = self.env(repos)
        sync = [*self.syncd, "sync", "-c", str(config), "--format", "json"]
        out: dict[str, Any] = {"load_before": os.getloadavg()}

        # 1. first deploy, from an empty emulator and state_dir
        reset_world(self.world_url)
        (seconds, stdout), counts = counted(
            self.proxy, lambda: run_cmd(sync, env, self.args.deploy_timeout)
        )
        live = live_stack_count(self.world_url)
        if live != scale.stacks:
            raise RunFailed(f"first deploy left {live} of {scale.stacks} stacks deployed")
        out["first_deploy"] = sample(seconds, counts, outcomes=outcomes(stdout))
        say(f"first deploy {seconds:8.2f} s {cfn_calls(counts):6d} calls")

        # 2. no-op: syncd sync and the bare boto3 look, in alternating order
        bare = [sys.executable, "-c", BARE_LOOK]
        for which in ("bare", "syncd") if run % 2 == 0 else ("syncd", "bare"):
            cmd = bare if which == "bare" else sync
            (seconds, stdout), counts = counted(self.proxy, partial(run_cmd, cmd, env, 600))
            if which == "bare":
                seen = int(stdout.strip() or 0)
                if seen != scale.stacks:
                    raise RunFailed(f"the bare look saw {seen} of {scale.stacks} stacks")
                out["noop_bare"] = sample(seconds, counts)
            else:
                out["noop_syncd"] = sample(seconds, counts, outcomes=outcomes(stdout))
            say(f"no-op {which:<6} {seconds:8.2f} s {cfn_calls(counts):6d} calls")

        # 3. status
        status = [*self.syncd, "status", "--format", "json", "-c", str(config)]
        seconds, stdout = run_cmd(status, env, 600)
        rows = json.loads(stdout)
        out["status"] = {
            "seconds": seconds,
            "rows": len(rows),
            "states": dict(Counter(r["state"] for r in rows)),
        }
        say(f"status       {seconds:8.2f} s {len(rows):6d} rows")

        # 4. and 5. the daemon: idle, then pushes
        out.update(self.daemon(scale, repos, run_dir, config, port, env, say))
        out["load_after"] = os.getloadavg()
        return out

    def daemon(
        self,
        scale: Scale,
        repos: list[Repo],
        run_dir: Path,
        config: Path,
        port: int,
        env: dict[str, str],
        say: Callable[[str], None],
    ) -> dict[str, Any]:
        log_path = run_dir / "daemon.log"
        self.proxy.reset_counts()
        self.proxy.reset_log()
        started = time.monotonic()
        with log_path.open("wb") as log:
            daemon = subprocess.Popen(
                [*self.syncd, "run", "-c", str(config)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        try:
            while http_get(f"http://127.0.0.1:{port}/readyz", 2)[0] != 200:
                if daemon.poll() is not None:
                    raise RunFailed(
                        f"syncd run exited {daemon.returncode}: "
                        f"{runners.tail(log_path.read_text(errors='replace'))}"
                    )
                if time.monotonic() - started > self.args.deploy_timeout:
                    raise RunFailed("syncd run never became ready")
                time.sleep(0.05)
            ready_s = time.monotonic() - started
            start_counts = self.proxy.counts()
            time.sleep(self.args.settle)
            idle = self.idle(daemon.pid, port)
            idle["ready_s"] = ready_s
            idle["startup_calls_by_action"] = by_action(start_counts)
            say(
                f"daemon ready {ready_s:8.2f} s; idle {idle['cpu_pct']:.1f} % of a core "
                f"({idle['cpu_tree_pct']:.1f} % with git), RSS {idle['rss_max_mb']:.0f} MB, "
                f"{idle['passes']:.0f} passes, {idle['cfn_calls']} calls"
            )
            pushes = []
            for _ in range(self.args.pushes):
                p = self.push(repos, scale, log_path)
                pushes.append(p)
                say(
                    f"push {p['stack']:<16} {fmt(p['latency_s'], '.3f'):>6} s to "
                    f"CreateChangeSet (seen {fmt(p['detected_s'], '.3f')} s, settled "
                    f"{fmt(p['settled_s'], '.3f')} s); {p['create_change_sets']} "
                    f"CreateChangeSet; other stacks: {p['other_stacks'] or 'none'}"
                )
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        return {"idle": idle, "pushes": pushes, "daemon_exit": daemon.returncode}

    def idle(self, pid: int, port: int) -> dict[str, Any]:
        self.proxy.reset_counts()
        metrics_before = metric_sums(port)
        own0, tree0 = cpu_seconds(pid)
        started = time.monotonic()
        rss_max = rss_mb(pid)
        while (elapsed := time.monotonic() - started) < self.args.idle_seconds:
            time.sleep(min(0.5, self.args.idle_seconds - elapsed))
            rss_max = max(rss_max, rss_mb(pid))
        own1, tree1 = cpu_seconds(pid)
        wall = time.monotonic() - started
        metrics_after = metric_sums(port)
        counts = self.proxy.counts()
        passes = metrics_after["passes"] - metrics_before["passes"]
        pass_seconds = metrics_after["pass_seconds"] - metrics_before["pass_seconds"]
        return {
            "window_s": wall,
            "cpu_pct": 100 * (own1 - own0) / wall,
            "cpu_tree_pct": 100 * (tree1 - tree0) / wall,
            "rss_max_mb": rss_max,
            "passes": passes,
            "mean_pass_ms": 1000 * pass_seconds / passes if passes else None,
            "cfn_calls": cfn_calls(counts),
            "calls_by_action": by_action(counts),
        }

    def push(self, repos: list[Repo], scale: Scale, log_path: Path) -> dict[str, Any]:
        """One commit to one stack's deployment file, pushed while the daemon is idle: when did
        its change set come, and what else did the daemon call until the stack settled?"""
        self.pushes_made += 1
        repo = repos[self.rng.randrange(len(repos))]
        i = self.rng.randrange(scale.per_repo)
        stack = repo.stack(i)
        path = repo.workload.repo / repo.workload.stacks[i].deployment_path
        doc = yaml.safe_load(path.read_text())
        doc["parameters"]["Env"] = f"{repo.name}p{self.pushes_made}"  # unique resource names
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        git("commit", "-qam", f"{stack}: push {self.pushes_made}", cwd=repo.workload.repo)
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo.workload.repo, capture_output=True, text=True
        ).stdout.strip()
        # idle first, then a random moment in the 1 s poll cycle
        time.sleep(self.args.push_pause + self.rng.uniform(0, 1))
        before, before_wall = time.monotonic(), time.time()
        git("push", "--quiet", "origin", "main", cwd=repo.workload.repo)
        pushed, pushed_wall = time.monotonic(), time.time()
        deadline = pushed + 60

        def first(action: str) -> Call | None:
            calls = self.proxy.calls_since(before)
            return next((c for c in calls if c.action == action and c.stack == stack), None)

        def logged(events: set[str], **match: str) -> dict[str, Any] | None:
            for event in daemon_events(log_path, before_wall):
                if event.get("event") in events and all(
                    str(event.get(k, "")).startswith(v) for k, v in match.items()
                ):
                    return event
            return None

        while (created := first("CreateChangeSet")) is None and time.monotonic() < deadline:
            time.sleep(0.005)
        ended = {"apply.settled", "apply.failed", "apply.blocked"}
        while (settled := logged(ended, stack=stack)) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # calls the settle itself set off
        window = self.proxy.calls_since(before)
        detected = logged({"commit.detected"}, repo=repo.name, commit=commit[:12])
        return {
            "repo": repo.name,
            "stack": stack,
            "push_s": pushed - before,
            "latency_s": (created.at - pushed) if created else None,
            "detected_s": detected["_t"] - pushed_wall if detected else None,
            "settled_s": settled["_t"] - pushed_wall if settled else None,
            "result": settled.get("result", settled.get("event")) if settled else None,
            "create_change_sets": sum(1 for c in window if c.action == "CreateChangeSet"),
            "other_stacks": sorted({c.stack for c in window if c.stack and c.stack != stack}),
            "calls_by_action": dict(sorted(Counter(c.action for c in window).items())),
            "timeline": [(round(c.at - pushed, 3), c.action, c.stack) for c in window],
        }


def daemon_events(log_path: Path, since: float) -> list[dict[str, Any]]:
    """The daemon's JSON log lines stamped at or after `since` (epoch seconds), with `_t`."""
    events = []
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
            when = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # not a JSON event line, or one being written
        if when >= since:
            events.append({**event, "_t": when})
    return events


def outcomes(stdout: str) -> dict[str, int]:
    """`syncd sync --format json`'s rows, counted by outcome."""
    try:
        rows = json.loads(stdout)
    except ValueError:
        return {}
    return dict(Counter(str(r.get("outcome")) for r in rows))


def sample(seconds: float, counts: Counter[tuple[str, str]], **extra: Any) -> dict[str, Any]:
    calls = cfn_calls(counts)
    return {
        "seconds": seconds,
        "cfn_calls": calls,
        "other_calls": sum(counts.values()) - calls,
        "calls_by_action": by_action(counts),
        **extra,
    }


# -- medians -----------------------------------------------------------------------------------
def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the runs (pushes: over every push of every run)."""

    def med(get: Callable[[dict[str, Any]], Any]) -> float | None:
        values = [v for r in runs if (v := get(r)) is not None]
        return round(median(values), 4) if values else None

    pushes = [p for r in runs for p in r["pushes"]]
    latencies = [p["latency_s"] for p in pushes if p["latency_s"] is not None]
    s: dict[str, Any] = {
        "first_deploy_s": med(lambda r: r["first_deploy"]["seconds"]),
        "first_deploy_calls": med(lambda r: r["first_deploy"]["cfn_calls"]),
        "noop_syncd_s": med(lambda r: r["noop_syncd"]["seconds"]),
        "noop_bare_s": med(lambda r: r["noop_bare"]["seconds"]),
        "noop_diff_s": med(lambda r: r["noop_syncd"]["seconds"] - r["noop_bare"]["seconds"]),
        "noop_syncd_calls": med(lambda r: r["noop_syncd"]["cfn_calls"]),
        "noop_bare_calls": med(lambda r: r["noop_bare"]["cfn_calls"]),
        "status_s": med(lambda r: r["status"]["seconds"]),
        "ready_s": med(lambda r: r["idle"]["ready_s"]),
        "idle_cpu_pct": med(lambda r: r["idle"]["cpu_pct"]),
        "idle_cpu_tree_pct": med(lambda r: r["idle"]["cpu_tree_pct"]),
        "idle_rss_mb": med(lambda r: r["idle"]["rss_max_mb"]),
        "idle_passes_per_s": med(lambda r: r["idle"]["passes"] / r["idle"]["window_s"]),
        "idle_mean_pass_ms": med(lambda r: r["idle"]["mean_pass_ms"]),
        "idle_cfn_calls": med(lambda r: r["idle"]["cfn_calls"]),
        "push_s": round(median(latencies), 4) if latencies else None,
        "push_detected_s": med_of([p["detected_s"] for p in pushes]),
        "push_settled_s": med_of([p["settled_s"] for p in pushes]),
        "push_max_s": round(max(latencies), 4) if latencies else None,
        "pushes": len(pushes),
        "pushes_clean": sum(
            1 for p in pushes if p["create_change_sets"] == 1 and not p["other_stacks"]
        ),
        "pushes_settled": sum(1 for p in pushes if p["result"] == "succeeded"),
    }
    s["noop_ratio"] = ratio(s["noop_syncd_s"], s["noop_bare_s"])
    s["noop_calls_ratio"] = ratio(s["noop_syncd_calls"], s["noop_bare_calls"])
    last = runs[-1]
    s["calls_by_action_last_run"] = {
        "first_deploy": last["first_deploy"]["calls_by_action"],
        "noop_syncd": last["noop_syncd"]["calls_by_action"],
        "noop_bare": last["noop_bare"]["calls_by_action"],
        "daemon_startup": last["idle"]["startup_calls_by_action"],
        "idle": last["idle"]["calls_by_action"],
        "pushes": dict(
            sum((Counter(p["calls_by_action"]) for p in last["pushes"]), Counter()).items()
        ),
    }
    return s


def med_of(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(median(present), 4) if present else None


def ratio(value: float | None, base: float | None) -> float | None:
    if value is None or not base:
        return None
    return round(value / base, 2)


# -- printing ----------------------------------------------------------------------------------
def fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def verdict(value: float | None, target: float, below: bool = False) -> str:
    if value is None:
        return "(not measured)"
    ok = value < target if below else value <= target
    return f"target {'<' if below else '<='} {target:g}: {'met' if ok else 'NOT met'}"


def print_scale(scale: Scale, s: dict[str, Any], runs: int, world: str) -> None:
    calls = s["calls_by_action_last_run"]
    noop_actions = set(calls["noop_syncd"]) - {"cloudformation:DescribeStacks"}
    print()
    print(f"{scale.label}, median of {runs} run(s), world: {world}")
    print(
        f"  first deploy (syncd sync)     {fmt(s['first_deploy_s']):>8} s  "
        f"{fmt(s['first_deploy_calls'], '.0f'):>6} calls  (informational)"
    )
    print(f"      calls by action: {calls['first_deploy']}")
    print(
        f"  no-op syncd sync              {fmt(s['noop_syncd_s']):>8} s  "
        f"{fmt(s['noop_syncd_calls'], '.0f'):>6} calls  {calls['noop_syncd']}"
    )
    print(
        f"  no-op bare boto3 look         {fmt(s['noop_bare_s']):>8} s  "
        f"{fmt(s['noop_bare_calls'], '.0f'):>6} calls  {calls['noop_bare']}"
    )
    print(
        f"      syncd - bare              {fmt(s['noop_diff_s'], '+.2f'):>8} s  "
        f"(ratio {fmt(s['noop_ratio'])}x; calls {fmt(s['noop_calls_ratio'])}x)  "
        f"{verdict(s['noop_diff_s'], TARGETS['noop_diff_s'])}; only DescribeStacks pages: "
        f"{'yes' if not noop_actions else 'NO: ' + ', '.join(sorted(noop_actions))}"
    )
    print(
        f"  syncd status --format json    {fmt(s['status_s']):>8} s  "
        f"{verdict(s['status_s'], TARGETS['status_s'])}"
    )
    print(
        f"  daemon: ready after           {fmt(s['ready_s']):>8} s  "
        f"start-up calls {calls['daemon_startup']}"
    )
    print(
        f"  idle daemon CPU               {fmt(s['idle_cpu_pct'], '.1f'):>8} % of a core  "
        f"{verdict(s['idle_cpu_pct'], TARGETS['idle_cpu_pct'], below=True)}  "
        f"(with its git children: {fmt(s['idle_cpu_tree_pct'], '.1f')} %)"
    )
    print(
        f"  idle daemon RSS (max)         {fmt(s['idle_rss_mb'], '.0f'):>8} MB  "
        f"{verdict(s['idle_rss_mb'], TARGETS['idle_rss_mb'], below=True)}"
    )
    print(
        f"      idle: {fmt(s['idle_passes_per_s'], '.1f')} passes/s, "
        f"{fmt(s['idle_mean_pass_ms'], '.0f')} ms each, "
        f"{fmt(s['idle_cfn_calls'], '.0f')} CloudFormation calls"
    )
    print(
        f"  push -> CreateChangeSet       {fmt(s['push_s'], '.3f'):>8} s  "
        f"(max {fmt(s['push_max_s'], '.3f')} s, {s['pushes']} pushes)  "
        f"{verdict(s['push_s'], TARGETS['push_s'])}"
    )
    print(
        f"      push -> commit.detected in the log {fmt(s['push_detected_s'], '.3f')} s, "
        f"-> apply.settled {fmt(s['push_settled_s'], '.3f')} s (medians)"
    )
    print(
        f"      {s['pushes_clean']} of {s['pushes']} pushes made exactly one CreateChangeSet, "
        f"for their stack, and named no other stack; {s['pushes_settled']} succeeded; "
        f"calls of the last run's pushes: {calls['pushes']}"
    )


GROWTH_COLUMNS = [
    ("first deploy s", "first_deploy_s", ".1f"),
    ("calls", "first_deploy_calls", ".0f"),
    ("no-op s", "noop_syncd_s", ".2f"),
    ("bare s", "noop_bare_s", ".2f"),
    ("diff s", "noop_diff_s", "+.2f"),
    ("calls", "noop_syncd_calls", ".0f"),
    ("status s", "status_s", ".2f"),
    ("ready s", "ready_s", ".1f"),
    ("CPU %", "idle_cpu_pct", ".1f"),
    ("+git %", "idle_cpu_tree_pct", ".1f"),
    ("RSS MB", "idle_rss_mb", ".0f"),
    ("push s", "push_s", ".3f"),
]


def print_growth(rows: list[tuple[Scale, dict[str, Any]]], runs: int, world: str) -> None:
    widths = [max(len(h), 8) for h, _, _ in GROWTH_COLUMNS]
    head = f"{'stacks':>7} {'repos':>5} " + " ".join(
        f"{h:>{w}}" for (h, _, _), w in zip(GROWTH_COLUMNS, widths, strict=True)
    )
    print()
    print(f"growth, median of {runs} run(s) per scale, world: {world}")
    print(head)
    print("-" * len(head))
    for scale, s in rows:
        cells = [
            f"{fmt(s[key], spec):>{w}}"
            for (_, key, spec), w in zip(GROWTH_COLUMNS, widths, strict=True)
        ]
        print(f"{scale.stacks:>7} {scale.repos:>5} " + " ".join(cells))
    base_scale, base = rows[0]
    if len(rows) > 1:
        print(f"growth against {base_scale.stacks} stacks (x):")
        for scale, s in rows[1:]:
            cells = [
                f"{fmt(ratio(s[key], base[key]), '.1f'):>{w}}"
                for (_, key, _), w in zip(GROWTH_COLUMNS, widths, strict=True)
            ]
            grow = f"x{scale.stacks / base_scale.stacks:g}"
            print(f"{grow:>7} {scale.repos / base_scale.repos:>5g} " + " ".join(cells))


# -- moto alone at scale -----------------------------------------------------------------------
def probe_moto(n: int, step: int) -> dict[str, Any]:
    """Create `n` stacks in moto directly (4 threads; the calls syncd makes per stack:
    DescribeStacks, CreateChangeSet, DescribeChangeSet, ExecuteChangeSet, DescribeStacks) and
    page through describe_stacks after every `step`: does moto's server keep up?"""
    import boto3
    from botocore.config import Config

    server, url = start_moto(patched=True, serial=True)
    client = boto3.client(
        "cloudformation",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(max_pool_connections=8),
    )

    def deploy(i: int) -> None:
        r, s = divmod(i, 100)
        name = f"r{r:03d}-stack-{s:02d}"
        with contextlib.suppress(client.exceptions.ClientError):  # not there yet
            client.describe_stacks(StackName=name)
        cs = client.create_change_set(
            StackName=name,
            ChangeSetName=f"probe-{name}",
            ChangeSetType="CREATE",
            TemplateBody=TEMPLATE.format(nn=f"{s:02d}"),
            Parameters=[{"ParameterKey": "Env", "ParameterValue": f"r{r:03d}"}],
        )
        client.describe_change_set(ChangeSetName=cs["Id"])
        client.execute_change_set(ChangeSetName=cs["Id"])
        client.describe_stacks(StackName=name)

    rows = []
    try:
        with ThreadPoolExecutor(4) as pool:
            for done in range(0, n, step):
                started = time.perf_counter()
                list(pool.map(deploy, range(done, min(n, done + step))))
                created = time.perf_counter() - started
                started = time.perf_counter()
                pages = list(client.get_paginator("describe_stacks").paginate())
                look = time.perf_counter() - started
                total = sum(len(p["Stacks"]) for p in pages)
                rows.append(
                    {"stacks": total, "create_s": created, "look_s": look, "pages": len(pages)}
                )
                print(
                    f"  {total:6d} stacks: the last {min(step, n - done)} created in "
                    f"{created:6.1f} s; describe_stacks over all: {look:5.2f} s, "
                    f"{len(pages)} pages",
                    flush=True,
                )
    finally:
        server.terminate()
        server.wait()
    return {"n": n, "rows": rows, "create_total_s": sum(r["create_s"] for r in rows)}


# -- main --------------------------------------------------------------------------------------
def syncd_command(arg: str | None) -> list[str]:
    if arg:
        return arg.split()
    beside = Path(sys.executable).parent / "syncd"  # this venv's console script
    return [str(beside)] if beside.exists() else runners.Syncd().command()


def parse_scales(args: argparse.Namespace) -> list[Scale]:
    if not args.scales:
        return [Scale(args.repos, args.stacks_per_repo)]
    scales = []
    for item in args.scales.split(","):
        n = int(item.replace("_", ""))
        per_repo = min(args.stacks_per_repo, n)
        if n % per_repo:
            raise SystemExit(f"--scales: {n} is not a multiple of --stacks-per-repo {per_repo}")
        scales.append(Scale(n // per_repo, per_repo))
    return scales


def meta(
    args: argparse.Namespace, syncd: list[str], started: float, at_start: dict[str, Any]
) -> dict[str, Any]:
    import moto

    def out(cmd: list[str]) -> str:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=PROJECT_ROOT)
            return proc.stdout.strip()
        except OSError:
            return "?"

    # GIT_OPTIONAL_LOCKS=0: `git status` must not refresh (write) the index.
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "syncd"],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
    ).stdout.split("\n")
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "runs": args.runs,
        "statistic": "median over runs (push latency: over every push of every run)",
        "targets": TARGETS,
        "idle_seconds": args.idle_seconds,
        "aws_config_extra": aws_extra(args),
        "pushes_per_run": args.pushes,
        "push_pause_s": args.push_pause,
        "world": WORLDS[args.world],
        "deploy_budget_s": args.deploy_budget,
        "python": platform.python_version(),
        "moto": str(moto.__version__),
        "syncd": out([*syncd, "--version"]),
        "syncd_cmd": " ".join(syncd),
        "syncd_commit": out(["git", "rev-parse", "--short", "HEAD"]),
        "syncd_uncommitted_files": len([line for line in dirty if line.strip()]),
        "at_start": at_start,  # syncd/ may change during a long run
        "cpus": os.cpu_count(),
        "total_seconds": round(time.monotonic() - started, 1),
        "timing": "subprocess wall time for sync, status and the bare look (interpreter start "
        "included); the push latency from `git push` returning to the CreateChangeSet's arrival "
        "at the proxy, on the bench process's monotonic clock",
        "calls": "HTTP requests through the counting proxy; cfn_calls are those signed for the "
        "cloudformation service",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repos", type=int, default=10, help="repos (default 10)")
    parser.add_argument(
        "--stacks-per-repo", type=int, default=100, help="stacks per repo (default 100)"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per scale; medians reported")
    parser.add_argument(
        "--scales",
        default=None,
        help="total stack counts, e.g. 100,1000,10000 (repos = N / --stacks-per-repo); "
        "default: --repos x --stacks-per-repo",
    )
    parser.add_argument(
        "--idle-seconds", type=float, default=30.0, help="idle sampling window (default 30)"
    )
    parser.add_argument("--settle", type=float, default=3.0, help="pause after ready (default 3)")
    parser.add_argument("--pushes", type=int, default=5, help="pushes per run (default 5)")
    parser.add_argument(
        "--push-pause",
        type=float,
        default=5.0,
        help="idle seconds before each push, plus 0-1 s at random (default 5)",
    )
    parser.add_argument(
        "--world",
        choices=sorted(WORLDS),
        default="moto",
        help="the CloudFormation syncd deploys to: moto's server (default), or the in-memory "
        "one of the test layer, instant, with syncd's call budget at 1000 calls/s",
    )
    parser.add_argument(
        "--deploy-budget",
        type=float,
        default=None,
        help="skip a scale whose first deploy is estimated to take longer "
        "(default 1200 s on moto, 3600 s on memory)",
    )
    parser.add_argument(
        "--deploy-timeout",
        type=float,
        default=1800.0,
        help="stop a first deploy (or a daemon start) after this long (default 1800 s)",
    )
    parser.add_argument("--syncd-cmd", default=None, help="command that runs syncd")
    parser.add_argument(
        "--aws",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra key for the config's aws: section, e.g. calls_per_second=100 "
        "(repeatable; default: none, syncd's own defaults)",
    )
    parser.add_argument(
        "--probe-moto",
        type=int,
        default=0,
        metavar="N",
        help="only time moto alone: create N stacks directly, page through them every 1,000",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="JSON results file (default bench/results/scale.json, scale-memory.json for memory)",
    )
    args = parser.parse_args(argv)
    args.output = args.output or RESULTS[args.world]
    if args.deploy_budget is None:
        args.deploy_budget = DEPLOY_BUDGET_S[args.world]

    started = time.monotonic()
    if args.probe_moto:
        print(f"moto alone: {args.probe_moto} stacks through change sets, 4 client threads")
        probe = probe_moto(args.probe_moto, min(1000, args.probe_moto))
        print(f"created all in {probe['create_total_s']:.0f} s")
        probe["date"] = datetime.now(UTC).isoformat(timespec="seconds")
        # kept beside the benchmark's own results, under "moto_probe"
        stored = json.loads(args.output.read_text()) if args.output.exists() else {}
        stored["moto_probe"] = probe
        write(args.output, stored)
        print(f"results written to {args.output} (moto_probe)")
        return 0

    scales = parse_scales(args)
    syncd = syncd_command(args.syncd_cmd)
    first = meta(args, syncd, started, {})
    at_start = {k: first[k] for k in ("date", "syncd_commit", "syncd_uncommitted_files")}
    shutil.rmtree(WORK_DIR, ignore_errors=True)
    WORK_DIR.mkdir(parents=True)
    if args.world == "memory":
        server, world_url = start_memory()
    else:
        server, world_url = start_moto(patched=True, serial=True)
    proxy = CountingProxy(world_url).start()
    print(
        f"world: {WORLDS[args.world]} at {world_url} (own process), counting proxy at "
        f"{proxy.url}; syncd: {' '.join(syncd)}; aws: {aws_extra(args)}"
    )
    results: dict[str, Any] = {"world": args.world, "scales": {}}
    if args.output.exists():  # a --probe-moto result stays
        probe = json.loads(args.output.read_text()).get("moto_probe")
        if probe:
            results["moto_probe"] = probe
    done: list[tuple[Scale, dict[str, Any]]] = []
    try:
        bench = Bench(args, syncd, world_url, proxy)
        for scale in scales:
            entry: dict[str, Any] = {
                "world": args.world,
                "repos": scale.repos,
                "stacks_per_repo": scale.per_repo,
            }
            results["scales"][str(scale.stacks)] = entry
            rates = [(s["first_deploy_s"] / sc.stacks, sc) for sc, s in done if s["first_deploy_s"]]
            per_stack, base = max(rates, key=lambda r: r[0]) if rates else (0.0, scale)
            estimate = per_stack * scale.stacks  # linear: a lower bound on moto (it slows as it
            # fills); on the memory world the first deploy is syncd's own work
            if estimate > args.deploy_budget:
                entry["estimated_first_deploy_s"] = round(estimate)
                entry["skipped"] = (
                    f"first deploy estimated at >= {estimate:.0f} s ({per_stack:.3f} s a stack, "
                    f"as measured at {base.stacks} stacks), over --deploy-budget "
                    f"{args.deploy_budget:.0f} s"
                )
                print(f"\n{scale.label}: skipped: {entry['skipped']}")
                continue
            print(f"\n{scale.label}: generating repos ...", flush=True)
            repos = make_repos(WORK_DIR / str(scale.stacks) / "repos", scale.repos, scale.per_repo)
            samples: list[dict[str, Any]] = []
            failures: list[str] = []
            for run in range(args.runs):

                def say(text: str, run: int = run) -> None:
                    print(f"  run {run + 1}/{args.runs} {text}", flush=True)

                try:
                    samples.append(bench.run(scale, repos, run, say))
                except (RunFailed, subprocess.CalledProcessError, OSError, ValueError) as exc:
                    failures.append(f"run {run + 1}: {exc}")
                    say(f"FAILED: {exc}")
            entry["runs"] = samples
            entry["failures"] = failures
            if samples:
                entry["summary"] = summarise(samples)
                done.append((scale, entry["summary"]))
                print_scale(scale, entry["summary"], len(samples), args.world)
            results["meta"] = meta(args, syncd, started, at_start)
            write(args.output, results)
        if len(done) > 1:
            print_growth(done, args.runs, args.world)
    finally:
        proxy.stop()
        server.terminate()
        server.wait()
    results["meta"] = meta(args, syncd, started, at_start)
    write(args.output, results)
    print(
        f"\nwhole benchmark: {time.monotonic() - started:.0f} s on {os.cpu_count()} cores "
        f"(shared: read the medians); results written to {args.output}"
    )
    return 0


def write(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
