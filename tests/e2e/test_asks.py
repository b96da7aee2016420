"""`syncd sync` and `syncd rollback` while `syncd run` holds the state_dir: the command asks the
daemon (an ask file and SIGUSR1), the daemon journals ASKED, its worker runs the pass or the
rollback and journals ANSWERED, and the command prints what a standalone run prints. Against
moto's server and real Git repos; the daemons poll once an hour, so only an ask makes a pass."""

from __future__ import annotations

import signal
import subprocess
import sys

from syncd.core.journal_state import Kind
from syncd.journal.store import Journal, lock_holder
from tests.conftest import TOPIC_TEMPLATE, deployment, write_config
from tests.e2e.conftest import journal_records, json_out, run_syncd, running_daemon, wait_for
from tests.e2e.test_rollback import TOPIC_WITH_EXTRA, commit, history


def hourly(tmp_path, repo, aws):
    entry = {"name": "r", "url": str(repo.bare), "poll_interval": "1h"}
    return write_config(tmp_path, [entry], aws.endpoint)


def kinds(state_dir) -> list[str]:
    return [r["kind"] for r in journal_records(state_dir)]


def daemon_ready(state_dir) -> None:
    """The daemon holds the lock and has read its repo, with no apply open (its first pass
    may still be about to apply: wait for what it applies too)."""
    wait_for(lambda: lock_holder(state_dir).held, what="the daemon's lock")
    wait_for(lambda: _first_pass_done(state_dir), what="the daemon's first pass")


def _first_pass_done(state_dir) -> bool:
    journal = Journal.open(state_dir, writer=False, warn=lambda m: None)
    try:
        repo = journal.state.repos.get("r")
        return (
            repo is not None
            and repo.commit is not None
            and not any(v.attempt is not None for v in journal.state.stacks.values())
        )
    finally:
        journal.close()


def test_sync_with_a_daemon_asks_it_and_prints_what_sync_prints(tmp_path, repo, aws):
    config = hourly(tmp_path, repo, aws)
    state = tmp_path / "state"
    commit(repo, "t1")
    with running_daemon("-c", str(config)) as daemon:
        daemon_ready(state)
        wait_for(lambda: aws.parameters("app") == {"Name": "t1"}, what="the first pass's apply")
        commit(repo, "t2")  # the daemon polls hourly: only the ask applies it
        result = run_syncd("sync", "-c", str(config), "--format", "json")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "asking the running daemon" in result.stderr
        rows = json_out(result)
        assert [(r["stack"], r["repo"], r["outcome"], r["version"]) for r in rows] == [
            ("app", "r", "succeeded", 2)
        ]
        assert aws.parameters("app") == {"Name": "t2"}
        assert not list((state / "asks").glob("*.json"))
        asked = [r for r in journal_records(state) if r["kind"] in ("asked", "answered")]
        assert [r["kind"] for r in asked] == ["asked", "answered"]
        assert asked[0]["data"]["action"] == "sync" and asked[0]["data"]["by"]
        assert asked[1]["data"]["outcomes"] == {"app": "succeeded"}
        # The commands that only read work beside the daemon, as without one.
        history = run_syncd("history", "app", "-c", str(config), "--format", "json")
        assert history.returncode == 0, history.stderr
        assert [(r["version"], r["result"]) for r in json_out(history)][-2:] == [
            (1, "succeeded"),
            (2, "succeeded"),
        ]
        checked = run_syncd("validate", "-c", str(config))
        assert checked.returncode == 0, checked.stdout + checked.stderr

        # Nothing to do: the same table a standalone sync prints, in text.
        result = run_syncd("sync", "-c", str(config))
        assert result.returncode == 0, result.stderr
        assert result.stdout.split("\n")[0].split() == ["STACK", "REPO", "OUTCOME", "MESSAGE"]
        assert result.stdout.split("\n")[1].split()[:3] == ["app", "r", "in_sync"]
        result = run_syncd("sync", "--repo", "r", "-c", str(config), "--format", "json")
        assert result.returncode == 0 and "asking the running daemon" in result.stderr
        assert [(r["stack"], r["outcome"]) for r in json_out(result)] == [("app", "in_sync")]

        # A stack that cannot be applied: exit 1, its row says why.
        repo.commit({"deployments/app.yaml": "template-file-path: [nope\n"})
        result = run_syncd("sync", "--stack", "app", "-c", str(config), "--format", "json")
        assert result.returncode == 1, result.stdout + result.stderr
        assert [(r["stack"], r["outcome"]) for r in json_out(result)] == [("app", "invalid")]
        # The YAML error is one line of the status table (not a parser's several).
        header, row, *rest = run_syncd("status", "-c", str(config)).stdout.splitlines()
        assert header.split()[0] == "STACK" and rest == []
        assert row.split()[:4] == ["app", "r", "2", "failed"]
        assert "deployments/app.yaml: not valid YAML: line 2, column 1: while parsing" in row

        result = run_syncd("sync", "--stack", "nope", "-c", str(config))
        assert result.returncode == 2 and "no such stack: nope" in result.stderr
        result = run_syncd("sync", "--repo", "nope", "-c", str(config))
        assert result.returncode == 2 and "no repo 'nope'" in result.stderr
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    assert "ask.sync" in daemon.stderr_text


def test_rollback_with_a_daemon_is_done_by_the_daemon(tmp_path, repo, aws):
    config = hourly(tmp_path, repo, aws)
    state = tmp_path / "state"
    first = commit(repo, "t1")
    assert run_syncd("sync", "-c", str(config)).returncode == 0
    commit(repo, "t2", TOPIC_WITH_EXTRA)
    assert run_syncd("sync", "-c", str(config)).returncode == 0
    with running_daemon("-c", str(config)) as daemon:
        daemon_ready(state)
        result = run_syncd("rollback", "app", "--to", "1", "-c", str(config), "--format", "json")
        assert result.returncode == 0, result.stdout + result.stderr
        out = json_out(result)
        assert (out["version"], out["rollback_of"], out["outcome"]) == (3, 1, "succeeded")
        assert out["commit"] == first and "suspended by" in out["message"]
        assert aws.parameters("app") == {"Name": "t1"} and "Extra" not in aws.outputs("app")
        # Resumed at once (no pass between): Git's state again.
        assert run_syncd("resume", "app", "-c", str(config)).returncode == 0
        wait_for(lambda: aws.parameters("app") == {"Name": "t2"}, what="Git's state again")

        result = run_syncd("rollback", "app", "--to", "1", "-c", str(config))
        assert result.returncode == 0, result.stdout + result.stderr
        # The daemon's next pass (asked for here) leaves the rolled-back stack alone ...
        result = run_syncd("sync", "-c", str(config), "--format", "json")
        assert [r["outcome"] for r in json_out(result)] == ["suspended"]
        assert aws.parameters("app") == {"Name": "t1"}
        # ... until it is resumed, which applies Git's state again.
        assert run_syncd("resume", "app", "-c", str(config)).returncode == 0
        wait_for(lambda: aws.parameters("app") == {"Name": "t2"}, what="Git's state again")

        # A version the journal does not have is refused before the daemon is asked (one the
        # daemon itself refuses, drift holding it: test_drift.py).
        result = run_syncd("rollback", "app", "--to", "9", "-c", str(config))
        assert result.returncode == 2 and "has no version 9" in result.stderr
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    assert [h["rollback_of"] for h in history(config)][-4:] == [1, None, 1, None]


def test_what_a_daemon_took_is_answered_after_a_restart_unless_it_is_late(tmp_path, repo, aws):
    """ASKED records left by a daemon killed before it answered: the next daemon runs the sync
    and answers it; the rollback whose deadline has passed is answered 'expired', not run."""
    config = hourly(tmp_path, repo, aws)
    state = tmp_path / "state"
    first = commit(repo, "t1")
    assert run_syncd("sync", "-c", str(config)).returncode == 0
    commit(repo, "t2")
    journal = Journal.open(state, writer=True, warn=lambda m: None)
    common = {"repo": "r", "by": "someone", "version": None, "commit": None}
    journal.append(
        Kind.ASKED,
        request="1-sync",
        action="sync",
        stacks=[],
        deadline="2999-01-01T00:00:00+00:00",
        **common,
    )
    late = common | {"version": 1, "commit": first}
    journal.append(
        Kind.ASKED,
        request="2-rollback",
        action="rollback",
        stacks=["app"],
        deadline="2000-01-01T00:00:00+00:00",
        **late,
    )
    journal.close()
    with running_daemon("-c", str(config)):
        wait_for(lambda: kinds(state).count("answered") == 2, what="both answered")
        answered = {
            r["data"]["request"]: r["data"]
            for r in journal_records(state)
            if r["kind"] == "answered"
        }
        assert answered["1-sync"]["outcomes"] == {"app": "succeeded"}
        assert answered["1-sync"]["error"] is None
        assert answered["2-rollback"]["error"].startswith("expired")
        assert aws.parameters("app") == {"Name": "t2"}  # the late rollback did not run
    journal = Journal.open(state, writer=False, warn=lambda m: None)
    assert journal.state.repos["r"].asked == {}
    journal.close()


HOLDER = """
import signal, sys, time
from pathlib import Path
from syncd.journal.store import Journal
signal.signal(signal.SIGUSR1, signal.SIG_IGN)
journal = Journal.open(Path(sys.argv[1]), writer=True, warn=lambda m: None)
print("held", flush=True)
time.sleep(120)
"""


def test_an_ask_nobody_takes_is_withdrawn_with_a_clear_error(tmp_path, repo, aws):
    """A process holds the lock but never reads asks (a stuck daemon): `sync` says so, exit 1,
    and leaves no ask behind for a later daemon to run by surprise."""
    config = hourly(tmp_path, repo, aws)
    state = tmp_path / "state"
    commit(repo, "t1")
    assert run_syncd("sync", "-c", str(config)).returncode == 0
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(state)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        result = run_syncd("sync", "-c", str(config))
        assert result.returncode == 1, result.stdout + result.stderr
        assert "did not take the request" in result.stderr and "withdrawn" in result.stderr
        assert not list((state / "asks").glob("*.json"))
    finally:
        holder.kill()
        holder.wait()
    assert "asked" not in kinds(state)


def test_sync_of_one_stack_with_a_daemon_reports_that_stack(tmp_path, repo, aws):
    config = hourly(tmp_path, repo, aws)
    state = tmp_path / "state"
    repo.commit(
        {
            "templates/topic.yaml": TOPIC_TEMPLATE,
            "deployments/a.yaml": deployment(Name="a"),
            "deployments/b.yaml": deployment(Name="b"),
        }
    )
    with running_daemon("-c", str(config)):
        daemon_ready(state)
        wait_for(lambda: aws.parameters("b") == {"Name": "b"}, what="the first pass's apply")
        wait_for(lambda: _first_pass_done(state), what="the first pass's end")
        repo.commit({"deployments/b.yaml": deployment(Name="b2")})
        result = run_syncd("sync", "--stack", "b", "-c", str(config), "--format", "json")
        assert result.returncode == 0, result.stderr
        assert [(r["stack"], r["outcome"]) for r in json_out(result)] == [("b", "succeeded")]
    assert aws.parameters("b") == {"Name": "b2"}
