"""The `syncd` command against moto's server and real Git repos: output, exit codes, errors."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys

import yaml

from tests.conftest import TOPIC_TEMPLATE, deployment, topic_stack, write_config
from tests.e2e.conftest import (
    REPO_ROOT,
    journal_records,
    json_out,
    own_port,
    run_syncd,
    running_daemon,
    start_syncd,
    syncd_env,
    wait_for,
)
from tests.support.timing import PATIENCE

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def two_stacks(repo) -> str:
    return repo.commit(
        {
            "templates/topic.yaml": TOPIC_TEMPLATE,
            "deployments/alpha.yaml": deployment(Name="alpha"),
            "deployments/beta.yaml": yaml.safe_dump(
                {
                    "template-file-path": "templates/topic.yaml",
                    "parameters": {"Name": {"stack-output": "alpha.TopicName"}},
                    "tags": {"team": "platform"},
                }
            ),
        }
    )


def test_version_and_help():
    result = run_syncd("--version")
    assert result.returncode == 0
    assert re.fullmatch(r"syncd \d+\.\d+\.\d+\n", result.stdout)
    result = run_syncd("sync", "--help")
    assert result.returncode == 0 and "--stack" in result.stdout


def test_a_bad_config_reports_every_problem_and_starts_nothing(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(
        "state_dir: ./state\n"
        "concurency: 3\n"
        "aws: {embedded: yes-please}\n"
        "repos:\n"
        "  - name: Bad_Name\n"
        "    url: /tmp/x\n"
        "    poll_interval: 10\n"
        "  - url: /tmp/y\n"
    )
    result = run_syncd("sync", "-c", str(config))
    assert result.returncode == 2
    for fragment in (
        "concurency: unknown key (did you mean 'concurrency'?)",
        "aws.embedded: must be true or false",
        "repos[0].name:",
        "repos[0].poll_interval: must be a duration",
        "repos[1].name: required",
    ):
        assert fragment in result.stderr, result.stderr
    assert not (tmp_path / "state").exists()
    assert result.stdout == ""


def test_a_missing_config_file_is_a_config_error(tmp_path):
    result = run_syncd("status", "-c", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "nope.yaml" in result.stderr and "cannot read" in result.stderr


def test_sync_status_history_match_the_spec(tmp_path, repo, aws):
    commit = two_stacks(repo)
    config = write_config(tmp_path, [{"name": "r", "url": str(repo.bare)}], aws.endpoint)
    result = run_syncd("sync", "-c", str(config), "--format", "json")
    assert result.returncode == 0, result.stderr
    assert {(r["stack"], r["outcome"]) for r in json_out(result)} == {
        ("alpha", "succeeded"),
        ("beta", "succeeded"),
    }

    # -c before the command name, and $SYNCD_CONFIG, work too.
    status = json_out(run_syncd("-c", str(config), "status", "--format", "json"))
    assert status == json_out(
        run_syncd("status", "--format", "json", env=syncd_env(SYNCD_CONFIG=str(config)))
    )
    assert [row["stack"] for row in status] == ["alpha", "beta"]
    for row in status:
        assert set(row) >= {
            "stack",
            "repo",
            "version",
            "commit",
            "state",
            "stack_status",
            "last_sync",
            "message",
        }
        assert row["repo"] == "r"
        assert row["version"] == 1
        assert row["commit"] == commit
        assert row["state"] == "in_sync"
        assert row["stack_status"] == "CREATE_COMPLETE"
        assert ISO.match(row["last_sync"])

    history = json_out(run_syncd("history", "-c", str(config), "--format", "json"))
    assert [h["stack"] for h in history] == ["alpha", "beta"]  # oldest first: alpha before beta
    for row in history:
        assert set(row) >= {
            "stack",
            "version",
            "commit",
            "action",
            "result",
            "change_set",
            "started_at",
            "finished_at",
        }
        assert (row["version"], row["commit"], row["action"], row["result"]) == (
            1,
            commit,
            "create",
            "succeeded",
        )
        assert row["change_set"].startswith("arn:aws:cloudformation:")
        assert ISO.match(row["started_at"]) and ISO.match(row["finished_at"])
        assert row["started_at"] <= row["finished_at"]
    one = json_out(run_syncd("history", "beta", "-c", str(config), "--format", "json"))
    assert [h["stack"] for h in one] == ["beta"]

    text = run_syncd("status", "-c", str(config))
    assert text.returncode == 0
    assert text.stdout.splitlines()[0].split()[:4] == ["STACK", "REPO", "VERSION", "STATE"]
    assert "alpha" in text.stdout and "in_sync" in text.stdout


def test_a_failing_stack_makes_sync_and_status_exit_1(tmp_path, repo, aws):
    repo.commit(
        {
            "templates/topic.yaml": TOPIC_TEMPLATE,
            "deployments/ok.yaml": deployment(Name="ok"),
            "deployments/bad.yaml": deployment(Name="bad", Undeclared="x"),
        }
    )
    config = write_config(tmp_path, [{"name": "r", "url": str(repo.bare)}], aws.endpoint)
    result = run_syncd("sync", "-c", str(config))
    assert result.returncode == 1
    assert "deployments/bad.yaml" in result.stdout
    status = run_syncd("status", "-c", str(config), "--format", "json")
    assert status.returncode == 1
    states = {r["stack"]: r["state"] for r in json_out(status)}
    assert states == {"ok": "in_sync", "bad": "failed"}
    assert aws.stack("ok") is not None


def test_sync_one_stack_only(tmp_path, repo, aws):
    two_stacks(repo)
    config = write_config(tmp_path, [{"name": "r", "url": str(repo.bare)}], aws.endpoint)
    result = run_syncd("sync", "-c", str(config), "--stack", "alpha")
    assert result.returncode == 0, result.stderr
    assert aws.stack("alpha") is not None and aws.stack("beta") is None
    result = run_syncd("sync", "-c", str(config), "--stack", "gamma")
    assert result.returncode == 2 and "no such stack: gamma" in result.stderr


def test_a_change_of_tags_alone_is_applied(tmp_path, repo, aws):
    """A commit that changes only a stack's tags is an update (CloudFormation applies new stack
    tags through a change set with no resource change), on the emulator as on AWS."""

    def tagged(team: str) -> str:
        return yaml.safe_dump(
            {
                "template-file-path": "templates/topic.yaml",
                "parameters": {"Name": "t"},
                "tags": {"team": team},
            }
        )

    def tags() -> dict[str, str]:
        return {t["Key"]: t["Value"] for t in (aws.stack("s") or {}).get("Tags", [])}

    repo.commit({"templates/topic.yaml": TOPIC_TEMPLATE, "deployments/s.yaml": tagged("one")})
    config = write_config(tmp_path, [{"name": "r", "url": str(repo.bare)}], aws.endpoint)
    assert run_syncd("sync", "-c", str(config)).returncode == 0
    assert tags()["team"] == "one"
    repo.commit({"deployments/s.yaml": tagged("two")})
    result = run_syncd("sync", "-c", str(config), "--format", "json")
    assert [(r["stack"], r["outcome"]) for r in json_out(result)] == [("s", "succeeded")]
    assert tags()["team"] == "two"
    # The same tags again: nothing to do, no change set.
    aws.proxy.reset()
    repo.commit({"deployments/s.yaml": tagged("two") + "# a comment\n"})
    result = run_syncd("sync", "-c", str(config), "--format", "json")
    assert [r["outcome"] for r in json_out(result)] == ["in_sync"]
    assert aws.proxy.count("CreateChangeSet") == 0


def test_validate_lints_templates_without_aws_calls(tmp_path, repo, aws):
    repo.commit(
        {
            "templates/topic.yaml": TOPIC_TEMPLATE,
            "templates/typo.yaml": TOPIC_TEMPLATE.replace("AWS::SNS::Topic", "AWS::SNS::Topik"),
            "deployments/good.yaml": deployment(Name="good"),
            "deployments/typo.yaml": deployment("templates/typo.yaml", Name="typo"),
        }
    )
    config = write_config(tmp_path, [{"name": "r", "url": str(repo.bare)}], aws.endpoint)
    result = run_syncd("validate", "-c", str(config))
    assert result.returncode == 1
    assert ": 2 stack(s): 1 ok, 0 invalid, 1 failing cfn-lint\n" in result.stdout  # each once
    assert "good: ok" in result.stdout
    assert "typo: FAIL" in result.stdout
    assert re.search(r"templates/typo\.yaml:\d+: error E3006", result.stdout), result.stdout
    assert aws.proxy.count() == 0
    repo.commit({"deployments/typo.yaml": None})
    assert run_syncd("validate", "-c", str(config)).returncode == 0

    # A stack-output naming a stack no repo describes is noted (it may exist in the account).
    repo.commit(
        {
            "deployments/reader.yaml": "template-file-path: templates/topic.yaml\nparameters:\n"
            "  Name: {stack-output: elsewhere.TopicName}\n"
        }
    )
    result = run_syncd("validate", "-c", str(config))
    assert result.returncode == 0, result.stdout
    assert "note: elsewhere (read by reader) is described by no followed repo" in result.stdout
    repo.commit({"deployments/reader.yaml": None})

    # A dependency cycle, which a pass refuses, fails validate too.
    cycle = {
        "deployments/a.yaml": "template-file-path: templates/topic.yaml\nparameters:\n"
        "  Name: {stack-output: b.TopicName}\n",
        "deployments/b.yaml": "template-file-path: templates/topic.yaml\nparameters:\n"
        "  Name: {stack-output: a.TopicName}\n",
    }
    repo.commit(cycle)
    result = run_syncd("validate", "-c", str(config))
    assert result.returncode == 1
    assert "a: INVALID deployments/a.yaml: dependency cycle: a -> b -> a" in result.stdout
    assert "good: ok" in result.stdout


def test_a_second_process_cannot_take_a_running_daemons_state(tmp_path, repo, aws):
    two_stacks(repo)
    config = write_config(tmp_path, [{"name": "r", "url": str(repo.bare)}], aws.endpoint)
    daemon = start_syncd("run", "-c", str(config))
    try:
        wait_for(lambda: (tmp_path / "state" / "syncd.lock").exists(), what="the lock")
        wait_for(lambda: journal_records(tmp_path / "state"), what="the first record")
        # `sync` asks the daemon (tests/e2e/test_asks.py); taking the journal is refused.
        take = (
            "from syncd.journal.store import Journal; Journal.open(Path(sys.argv[1]), writer=True)"
        )
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                f"import sys; from pathlib import Path; {take}",
                str(tmp_path / "state"),
            ],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 1 and "StateLocked" in result.stderr
        assert "another syncd" in result.stderr
        status = run_syncd("status", "-c", str(config), "--format", "json")  # readers may
        assert status.returncode in (0, 1)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)


def test_kill_9_during_an_apply_then_restart_never_executes_twice(tmp_path, repo, aws):
    topic_stack(repo, "s", "s")
    config = write_config(tmp_path, [{"name": "r", "url": str(repo.bare)}], aws.endpoint)
    aws.proxy.slow("s", polls=100_000)  # the update "takes forever"
    proc = start_syncd("sync", "-c", str(config))
    state = tmp_path / "state"
    wait_for(
        lambda: any(r["kind"] == "executing" for r in journal_records(state)),
        what="the executing record",
    )
    # The record is written before the call: killed in between, the next start would execute
    # (once, rightly). This test is about a call that reached CloudFormation.
    wait_for(lambda: aws.proxy.count("ExecuteChangeSet") == 1, what="the execute call")
    proc.kill()
    proc.wait(timeout=PATIENCE)
    assert aws.proxy.count("ExecuteChangeSet") == 1

    aws.proxy.reset()  # the operation finishes while syncd is dead
    result = run_syncd("sync", "-c", str(config), "--format", "json")
    assert result.returncode == 0, result.stderr
    assert aws.proxy.count("ExecuteChangeSet") == 0
    assert aws.proxy.count("CreateChangeSet") == 0
    history = json_out(run_syncd("history", "-c", str(config), "--format", "json"))
    assert [(h["version"], h["result"]) for h in history] == [(1, "succeeded")]


def test_the_quick_start_plans_a_branch_while_syncd_run_holds_the_emulator(tmp_path):
    from tests.support.gitrepo import git

    shutil.copytree(REPO_ROOT / "config", tmp_path / "config")
    shutil.copytree(REPO_ROOT / "examples", tmp_path / "examples")
    config = str(own_port(tmp_path / "config" / "local.yaml"))
    state = tmp_path / ".local" / "state"

    def deployed() -> bool:
        rows = json_out(run_syncd("status", "-c", config, "--format", "json"))
        return len(rows) == 2 and {r["state"] for r in rows} == {"in_sync"}

    with running_daemon("-c", config) as daemon:
        wait_for(deployed, what="the sample deployed")
        work = tmp_path / "work"
        git("clone", "--quiet", str(tmp_path / ".local" / "sample.git"), str(work), cwd=tmp_path)
        app = work / "deployments" / "app.yaml"
        app.write_text(app.read_text().replace("Env: demo", "Env: staging"))
        git("checkout", "--quiet", "-b", "feature", cwd=work)
        git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "staging", cwd=work)
        git("push", "--quiet", "origin", "feature", cwd=work)
        no_aws = {k: v for k, v in syncd_env().items() if not k.startswith("AWS_")}  # a new user
        plan = run_syncd("plan", "--ref", "feature", "-c", config, "--format", "json", env=no_aws)
        assert plan.returncode == 0, plan.stderr
        actions = {s["stack"]: s["action"] for s in json_out(plan)["stacks"]}
        assert actions == {"demo-app": "update", "demo-network": "none"}
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    assert not (state / "emulator.json").exists()
    refused = run_syncd("plan", "--ref", "feature", "-c", config)
    assert refused.returncode == 2 and "start it (same config)" in refused.stderr


def test_the_quick_starts_manual_approval_as_the_readme_walks_it(tmp_path):
    """`approval: manual` for the app stack in config/local.yaml, a reload (SIGHUP), a push:
    the push's change set waits, `status` says so, and `syncd approve demo-app` executes it; no
    AWS account. The reload keeps the emulator's stacks: nothing is re-created."""
    from tests.e2e.test_daemon import NotifySocket
    from tests.support.gitrepo import git

    shutil.copytree(REPO_ROOT / "config", tmp_path / "config")
    shutil.copytree(REPO_ROOT / "examples", tmp_path / "examples")
    local = own_port(tmp_path / "config" / "local.yaml")
    config = str(local)
    notify = NotifySocket(tmp_path / "notify.sock")

    def rows() -> dict[str, dict]:
        found = json_out(run_syncd("status", "-c", config, "--format", "json"))
        return {r["stack"]: r for r in found}

    try:
        env = syncd_env(NOTIFY_SOCKET=str(notify.path))
        with running_daemon("-c", config, env=env) as daemon:
            notify.wait_for("READY=1")
            wait_for(lambda: {r["state"] for r in rows().values()} == {"in_sync"}, what="sample")
            # As the README says: under the `sample` repo, `stacks: {app: {approval: manual}}`,
            # then a reload.
            text = local.read_text()
            assert "    stack_prefix: demo-\n" in text
            local.write_text(text + "    stacks: {app: {approval: manual}}\n")
            daemon.send_signal(signal.SIGHUP)
            notify.wait_for("RELOADING=1")
            notify.wait_for("READY=1")
            work = tmp_path / "work"
            sample = str(tmp_path / ".local" / "sample.git")
            git("clone", "--quiet", sample, str(work), cwd=tmp_path)
            app = work / "deployments" / "app.yaml"
            app.write_text(app.read_text().replace("Env: demo", "Env: staging"))
            git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "staging", cwd=work)
            git("push", "--quiet", cwd=work)
            waiting = wait_for(
                lambda: (r := rows().get("demo-app")) and r["state"] == "awaiting_approval" and r,
                what="the change set waiting",
            )
            assert "syncd approve" in waiting["message"], waiting
            approved = run_syncd("approve", "demo-app", "-c", config)
            assert approved.returncode == 0, approved.stdout + approved.stderr
            wait_for(
                lambda: (
                    rows()["demo-app"]["state"] == "in_sync" and rows()["demo-app"]["version"] == 2
                ),
                what="version 2 applied on approval",
            )
            history = json_out(run_syncd("history", "-c", config, "--format", "json"))
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=30) == 0
    finally:
        notify.close()
    # One create each, then the approved update: the reload re-created nothing.
    assert [(h["stack"], h["action"], h["result"]) for h in history] == [
        ("demo-network", "create", "succeeded"),
        ("demo-app", "create", "succeeded"),
        ("demo-app", "update", "succeeded"),
    ]
    # The sample repo, made on this first run, is watched from the start.
    assert "watch.unavailable" not in daemon.stderr_text
    assert '"event": "watch.started"' in daemon.stderr_text


def test_the_quick_start_config_deploys_the_sample_on_the_embedded_emulator(tmp_path):
    shutil.copytree(REPO_ROOT / "config", tmp_path / "config")
    shutil.copytree(REPO_ROOT / "examples", tmp_path / "examples")
    config = tmp_path / "config" / "local.yaml"
    result = run_syncd("sync", "-c", str(config), "--format", "json")
    assert result.returncode == 0, result.stderr
    assert {r["stack"]: r["outcome"] for r in json_out(result)} == {
        "demo-network": "succeeded",
        "demo-app": "succeeded",
    }
    assert (tmp_path / ".local" / "sample.git" / "HEAD").exists()
    status = json_out(run_syncd("status", "-c", str(config), "--format", "json"))
    assert {r["state"] for r in status} == {"in_sync"}
    assert (
        subprocess.run(
            ["git", "-C", str(tmp_path / ".local/sample.git"), "log", "--oneline"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.count("\n")
        == 1
    )


def test_logs_are_json_lines_with_context_and_never_show_credentials(tmp_path, repo, aws):
    topic_stack(repo, "s", "v1")
    secret_url = "https://deploy:hunter2secret@127.0.0.1:9/private.git"
    config = write_config(
        tmp_path,
        [{"name": "r", "url": str(repo.bare)}, {"name": "private", "url": secret_url}],
        aws.endpoint,
    )
    result = run_syncd("sync", "-c", str(config))
    assert result.returncode == 1  # the private repo cannot be fetched
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert all({"event", "level", "timestamp"} <= set(line) for line in lines)
    created = [line for line in lines if line["event"] == "change_set.created"]
    assert created and created[0]["repo"] == "r" and created[0]["stack"] == "s"
    assert len(created[0]["commit"]) == 12
    journal = (tmp_path / "state" / "journal" / "segment-000000000001.jsonl").read_text()
    status = run_syncd("status", "-c", str(config)).stdout
    for text in (result.stderr, result.stdout, journal, status):
        assert "hunter2secret" not in text
    assert "deploy:***@" not in journal and "***@127.0.0.1:9" in journal


def test_plan_without_a_syncd_run_refuses_the_embedded_emulator_which_it_cannot_see(tmp_path):
    config = tmp_path / "embedded.yaml"
    config.write_text(
        "state_dir: ./state\naws: {embedded: true}\nrepos:\n  - {name: a, url: /tmp/nowhere}\n"
    )
    (tmp_path / "state").mkdir()  # an address left behind, with no syncd holding the state
    (tmp_path / "state" / "emulator.json").write_text('{"url": "http://127.0.0.1:9", "pid": 1}')
    result = run_syncd("plan", "-c", str(config))
    assert result.returncode == 2
    assert "the emulator inside `syncd run`; start it (same config)" in result.stderr


def test_the_approver_is_the_os_user_whatever_user_says(monkeypatch):
    import os
    import pwd

    from syncd.cli import approver

    real = pwd.getpwuid(os.getuid()).pw_name
    monkeypatch.setenv("USER", "someone-else")
    monkeypatch.setenv("LOGNAME", "someone-else")
    monkeypatch.delenv("SUDO_USER", raising=False)
    assert approver() == f"{real}@{os.uname().nodename}"
    monkeypatch.setenv("SUDO_USER", "alice")
    assert approver().startswith(f"{real} (sudo by alice)@")


def test_what_syncd_writes_is_private_whatever_the_umask(tmp_path, repo, aws):
    import os
    import stat

    from tests.conftest import topic_stack, write_config
    from tests.e2e.conftest import run_syncd

    topic_stack(repo, "s", "v1")
    state = tmp_path / "state"
    state.mkdir(mode=0o755)  # made earlier, open to all
    config = write_config(tmp_path, [{"name": "r", "url": str(repo.bare)}], aws.endpoint)
    old = os.umask(0o022)
    try:
        assert run_syncd("sync", "-c", str(config)).returncode == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for path in state.rglob("*"):
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}"


def test_names_from_a_repo_cannot_send_terminal_escapes_or_forge_rows(tmp_path, repo, aws):
    from tests.conftest import TOPIC_TEMPLATE, deployment, write_config
    from tests.e2e.conftest import run_syncd

    evil = "deployments/x\x1b[2J\x1b[31m\n  fake  row.yaml"
    repo.commit(
        {
            "templates/topic.yaml": TOPIC_TEMPLATE,
            "deployments/good.yaml": deployment(Name="good"),
            evil: "stack-name: evil\ntemplate-file-path: [broken\n",
        }
    )
    config = write_config(tmp_path, [{"name": "r", "url": str(repo.bare)}], aws.endpoint)
    for args in (("sync",), ("status",), ("validate",)):
        result = run_syncd(*args, "-c", str(config))
        assert "\x1b" not in result.stdout, args
        assert "\\x1b[2J" in result.stdout, (args, result.stdout)
        assert not any(line.startswith("  fake") for line in result.stdout.splitlines()), args


def test_names_with_or_without_prefix_and_usage_errors_that_say_which_command(tmp_path, repo, aws):
    topic_stack(repo, "app", "a1")
    repos = [{"name": "r", "url": str(repo.bare), "stack_prefix": "team-"}]
    config = write_config(tmp_path, repos, aws.endpoint)

    # Before any journal: verify says there is nothing to verify (not "ok, 0 records").
    empty = run_syncd("journal", "verify", "-c", str(config))
    assert empty.returncode == 2 and "no journal" in empty.stderr

    assert run_syncd("sync", "-c", str(config)).returncode == 0
    short = json_out(run_syncd("history", "app", "-c", str(config), "--format", "json"))
    full = json_out(run_syncd("history", "team-app", "-c", str(config), "--format", "json"))
    assert short == full and [h["stack"] for h in short] == ["team-app"]
    unknown = run_syncd("history", "nope", "-c", str(config))
    assert unknown.returncode == 2 and "no stack 'nope'" in unknown.stderr

    # status takes names too, and --watch shows it again until Ctrl-C.
    topic_stack(repo, "web", "w1")
    assert run_syncd("sync", "-c", str(config)).returncode == 0
    one = json_out(run_syncd("status", "web", "-c", str(config), "--format", "json"))
    assert [r["stack"] for r in one] == ["team-web"]
    assert run_syncd("status", "nope", "-c", str(config)).returncode == 2
    watching = start_syncd("status", "app", "--watch", "0.2", "-c", str(config))
    seen = []
    assert watching.stdout is not None
    while sum("team-app" in line for line in seen) < 2:  # shown twice: it refreshes
        line = watching.stdout.readline()
        assert line, "status --watch ended by itself"
        seen.append(line)
    watching.send_signal(signal.SIGINT)
    watching.communicate(timeout=PATIENCE)
    assert watching.returncode == 0
    assert not any("team-web" in line for line in seen)

    bad = run_syncd("status", "--bogus", "-c", str(config))
    assert bad.returncode == 2
    assert "usage: syncd status" in bad.stderr and "--bogus" in bad.stderr


def test_every_commands_help_ends_with_its_exit_codes_and_an_example(capsys):
    import argparse

    import pytest

    from syncd.cli import _EPILOGS, build_parser

    def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[str]:
        """Every command and every action of one (`drift accept`), as typed."""
        found = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found += [" ".join((*path, name)), *commands(sub, (*path, name))]
        return found

    every = commands(build_parser())
    assert {"journal verify", "drift accept"} <= set(every)
    assert set(every) == set(_EPILOGS)
    for command in every:
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args([*command.split(), "--help"])
        assert exited.value.code == 0, command
        text = capsys.readouterr().out
        assert text.startswith(f"usage: syncd {command} "), command
        assert "\nexit: " in text, command
        assert re.search(rf"\nexample: syncd {command}[ \n]", text), command


def test_output_cut_short_by_its_reader_is_not_a_traceback(tmp_path, repo, aws):
    topic_stack(repo, "app", "v1")
    config = write_config(tmp_path, [{"name": "r", "url": str(repo.bare)}], aws.endpoint)
    assert run_syncd("sync", "-c", str(config)).returncode == 0
    # `syncd status | true`: the reader is gone before syncd (half a second to start) writes.
    command = f"{sys.executable} -m syncd status -c {config} | true"
    proc = subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, timeout=PATIENCE, cwd=REPO_ROOT
    )
    assert proc.stderr == ""
