"""`syncd validate --path` and `--ref`: one tree of one repo checked before a push, and the
pre-commit hook that runs it, with the `syncd` command on real Git repos (no AWS).

validate runs cfn-lint, slow to import, so each run checks a tree holding many problems, each
told apart by its stack and file."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from syncd.configfile import DEFAULT_CONFIG
from syncd.core.deployments import MAX_FILE_BYTES
from tests.conftest import TOPIC_TEMPLATE, deployment, write_config
from tests.e2e.conftest import REPO_ROOT, chain, deployed, run_syncd, syncd_env
from tests.support.gitrepo import GitRepo, git

NO_CONFIG = "checking with the repo defaults (deployments/*.yaml, no stack_prefix)"


def no_config_env() -> dict[str, str]:
    """The environment of a developer's checkout: no config named, none at the default path."""
    assert not DEFAULT_CONFIG.exists(), f"these tests need no {DEFAULT_CONFIG}"
    env = syncd_env()
    env.pop("SYNCD_CONFIG", None)
    return env


def reads(stack: str) -> str:
    """A deployment file whose Name is the output of `stack`."""
    return deployment(Name={"stack-output": f"{stack}.TopicName"})


def commits(repo: GitRepo) -> str:
    return git("rev-list", "--count", "--all", cwd=repo.work)


def test_path_refuses_what_a_pass_would_in_uncommitted_files_and_commits_nothing(
    tmp_path: Path, repo: GitRepo
) -> None:
    repo.commit(
        {"templates/topic.yaml": TOPIC_TEMPLATE, "deployments/good.yaml": deployment(Name="g")}
    )
    (tmp_path / "git" / "outside.yaml").write_text(TOPIC_TEMPLATE)
    repo.write(
        {
            "deployments/broken.yaml": "template-file-path: templates/topic.yaml\n"
            "parameters: [oops\n",
            "deployments/escape.yaml": deployment("templates/link.yaml", Name="e"),
            "deployments/typo.yaml": "template_file_path: templates/topic.yaml\n",
            "deployments/twin-a.yaml": "stack-name: twin\n" + deployment(Name="a"),
            "deployments/twin-b.yaml": "stack-name: twin\n" + deployment(Name="b"),
            "deployments/badname.yaml": "stack-name: 9lives\n" + deployment(Name="n"),
            "deployments/extra.yaml": deployment(Name="x", Colour="red"),
            "templates/huge.yaml": "#" * (MAX_FILE_BYTES + 1),
            "deployments/huge.yaml": deployment("templates/huge.yaml", Name="h"),
            "deployments/ping.yaml": reads("pong"),
            "deployments/pong.yaml": reads("ping"),
            "deployments/reader.yaml": reads("elsewhere"),
            "deployments/x\x1b[2J\n  fake row.yaml": "stack-name: evil\nparameters: 1\n",
        }
    )
    (repo.work / "templates" / "link.yaml").symlink_to("../../outside.yaml")
    before = (commits(repo), git("status", "--porcelain", cwd=repo.work))
    index = (repo.work / ".git" / "index").read_bytes()

    result = run_syncd("validate", "--path", str(repo.work), env=no_config_env())

    assert result.returncode == 1, result.stderr
    assert NO_CONFIG in result.stderr
    out = result.stdout
    assert (
        f"work @ working tree {repo.work}: 12 stack(s): 1 ok, 11 invalid, 0 failing cfn-lint" in out
    ), out
    for line in (
        "  broken: INVALID deployments/broken.yaml: not valid YAML: line 3, column 1:",
        "  escape: INVALID templates/link.yaml: template 'templates/link.yaml' is a symlink "
        "pointing outside the repo ('../../outside.yaml') (the template of "
        "deployments/escape.yaml)",
        "  typo: INVALID deployments/typo.yaml: unknown key(s) template_file_path (did you "
        "mean 'template-file-path'?)",
        "  twin: INVALID deployments/twin-a.yaml: stack 'twin' is named by more than one "
        "deployment file: deployments/twin-a.yaml, deployments/twin-b.yaml",
        "  badname: INVALID deployments/badname.yaml: stack-name '9lives' is not a valid "
        "CloudFormation stack name",
        "  extra: INVALID deployments/extra.yaml: parameters Colour are not declared in "
        "templates/topic.yaml",
        f"  huge: INVALID templates/huge.yaml: template is {MAX_FILE_BYTES + 1} bytes; the "
        f"limit is {MAX_FILE_BYTES} (the template of deployments/huge.yaml)",
        "  ping: INVALID deployments/ping.yaml: dependency cycle: ping -> pong -> ping",
        "  pong: INVALID deployments/pong.yaml: dependency cycle: ping -> pong -> ping",
        "  reader: INVALID deployments/reader.yaml: parameters.Name: stack-output "
        "elsewhere.TopicName names stack 'elsewhere', which nothing syncd can see describes "
        "(this working tree; no config names other repos or a journal); if it lives in the "
        "account outside syncd, say so with --external elsewhere",
        "  evil: INVALID deployments/x\\x1b[2J\\n  fake row.yaml: ",
        "  good: ok deployments/good.yaml (template templates/topic.yaml)",
    ):
        assert line in out, (line, out)
    assert "\x1b" not in out and not any(s.startswith("  fake") for s in out.splitlines())

    # A stack that lives outside syncd, named as such: its reader is linted like any other.
    result = run_syncd(
        "validate", "--path", str(repo.work), "--external", "elsewhere", env=no_config_env()
    )
    assert result.returncode == 1
    assert "  reader: ok deployments/reader.yaml (template templates/topic.yaml)" in result.stdout
    assert "INVALID deployments/reader.yaml" not in result.stdout
    assert (commits(repo), git("status", "--porcelain", cwd=repo.work)) == before
    assert (repo.work / ".git" / "index").read_bytes() == index


def test_path_with_a_config_takes_its_repo_and_knows_the_stacks_syncd_knows(
    tmp_path: Path, repo: GitRepo
) -> None:
    other = GitRepo(tmp_path / "other")
    other.commit(
        {"templates/topic.yaml": TOPIC_TEMPLATE, "deployments/shared.yaml": deployment(Name="s")}
    )
    repos = [
        {"name": "app", "url": str(repo.bare), "stack_prefix": "team-"},
        {"name": "other", "url": str(other.bare)},
    ]
    config = str(write_config(tmp_path, repos))
    journal = tmp_path / "state" / "journal"
    journal.mkdir(parents=True)
    (journal / "segment-000000000001.jsonl").write_bytes(chain(deployed("legacy")))
    repo.commit({"templates/topic.yaml": TOPIC_TEMPLATE})
    repo.write(
        {
            "deployments/in-other.yaml": reads("shared"),
            "deployments/in-journal.yaml": reads("legacy"),
            "deployments/own.yaml": reads("in-other"),  # this repo's, without its prefix
            "deployments/lost.yaml": reads("nowhere"),
            "deployments/rogue.yaml": "stack-name: rogue\n" + deployment(Name="r"),
        }
    )

    several = run_syncd("validate", "--path", str(repo.work), "-c", config)
    assert several.returncode == 2
    assert "--repo is needed: this config has 2 repos (app, other)" in several.stderr
    plain = run_syncd("validate", "-c", config, "--repo", "app")  # every repo, or none
    assert plain.returncode == 2 and "--repo and --external go with --path" in plain.stderr
    for named in (["-c", str(tmp_path / "nope.yaml")], ["--repo", "app"]):
        env = syncd_env(SYNCD_CONFIG=str(tmp_path / "nope.yaml"))
        missing = run_syncd("validate", "--path", str(repo.work), *named, env=env)
        assert missing.returncode == 2 and "cannot read the config file" in missing.stderr

    result = run_syncd("validate", "--path", str(repo.work), "-c", config, "--repo", "app")
    assert result.returncode == 1, result.stderr
    out = result.stdout
    assert (
        f"app @ working tree {repo.work}: 5 stack(s): 3 ok, 2 invalid, 0 failing cfn-lint" in out
    ), out
    for stack in ("in-other", "in-journal", "own"):
        assert f"  team-{stack}: ok deployments/{stack}.yaml (template templates/topic.yaml)" in out
    assert (
        "  team-lost: INVALID deployments/lost.yaml: parameters.Name: stack-output "
        "nowhere.TopicName names stack 'nowhere', which nothing syncd can see describes (this "
        f"working tree; followed repos other; the journal in {tmp_path / 'state'}); "
        "if it lives in the account outside syncd, say so with --external nowhere"
    ) in out
    assert re.search(r"rogue: INVALID deployments/rogue\.yaml: .*stack_prefix 'team-'", out)
    assert NO_CONFIG not in result.stderr


def test_ref_checks_one_commit_fetched_or_found_in_the_local_repository(
    tmp_path: Path, repo: GitRepo
) -> None:
    good = repo.commit(
        {"templates/topic.yaml": TOPIC_TEMPLATE, "deployments/app.yaml": deployment(Name="a")}
    )
    git("checkout", "--quiet", "-b", "broken", cwd=repo.work)
    repo.commit(
        {
            "deployments/app.yaml": "template-file-path: templates/gone.yaml\n",
            "deployments/ping.yaml": reads("pong"),
            "deployments/pong.yaml": reads("ping"),
            "deployments/reader.yaml": reads("elsewhere"),
        },
        push=False,
    )
    git("push", "--quiet", "origin", "broken", cwd=repo.work)
    git("checkout", "--quiet", "main", cwd=repo.work)
    local = repo.commit({"deployments/local.yaml": reads("app")}, push=False)
    config = str(write_config(tmp_path, [{"name": "r", "url": str(repo.bare)}]))

    result = run_syncd("validate", "-c", config, "--ref", good)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(
        f"r @ {good[:12]} ({good}): 1 stack(s): 1 ok, 0 invalid, 0 failing cfn-lint\n"
    )

    result = run_syncd("validate", "-c", config, "--ref", "broken")
    assert result.returncode == 1
    assert (
        "  app: INVALID templates/gone.yaml: template 'templates/gone.yaml' does not exist at "
        "commit"
    ) in result.stdout
    assert "  ping: INVALID deployments/ping.yaml: dependency cycle: ping -> pong -> ping" in (
        result.stdout
    )
    assert "  reader: INVALID deployments/reader.yaml: parameters.Name: stack-output " in (
        result.stdout
    )
    assert "names stack 'elsewhere', which nothing syncd can see describes" in result.stdout

    # With --path, REF is the local repository's: a commit never pushed, and no config.
    result = run_syncd("validate", "--path", str(repo.work), "--ref", "main", env=no_config_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(
        f"work @ {local[:12]} (main): 2 stack(s): 2 ok, 0 invalid, 0 failing cfn-lint\n"
    )
    assert "  local: ok deployments/local.yaml (template templates/topic.yaml)" in result.stdout
    assert subprocess.run(["git", "cat-file", "-e", local], cwd=repo.bare).returncode != 0

    result = run_syncd("validate", "--ref", "main", env=no_config_env())
    assert result.returncode == 2 and "--ref needs the repo from a config file" in result.stderr


def test_the_pre_commit_hook_checks_the_working_tree_of_a_template_repo(repo: GitRepo) -> None:
    hooks = yaml.safe_load((REPO_ROOT / ".pre-commit-hooks.yaml").read_text())
    (hook,) = [h for h in hooks if h["id"] == "syncd-validate"]
    assert hook["language"] == "python" and hook["pass_filenames"] is False
    files = re.compile(hook["files"])
    assert all(files.search(f) for f in ("deployments/a.yaml", "t/b.yml", "c.json", "d.template"))
    assert not any(files.search(f) for f in ("README.md", "yaml.txt"))
    entry = shlex.split(hook["entry"])
    assert entry[0] == "syncd"
    # What pre-commit runs, from the template repo's top, with the args its config adds.
    command = [sys.executable, "-m", "syncd", *entry[1:], "--external", "shared-vpc"]

    def run_hook() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command, cwd=repo.work, env=no_config_env(), capture_output=True, text=True
        )

    repo.commit({"templates/topic.yaml": TOPIC_TEMPLATE})
    repo.write({"deployments/app.yaml": reads("shared-vpc"), "deployments/bad.yaml": "[\n"})
    bad = run_hook()
    assert bad.returncode == 1, bad.stderr
    assert "bad: INVALID deployments/bad.yaml: not valid YAML" in bad.stdout
    repo.write({"deployments/bad.yaml": None})
    good = run_hook()
    assert good.returncode == 0, good.stdout + good.stderr
    assert (
        "work @ working tree .: 1 stack(s): 1 ok, 0 invalid, 0 failing cfn-lint\n  app: ok"
        in good.stdout
    )


def test_secrets_reads_every_secret_file_as_run_does_and_shows_none(
    tmp_path: Path, repo: GitRepo
) -> None:
    repo.commit(
        {"templates/topic.yaml": TOPIC_TEMPLATE, "deployments/app.yaml": deployment(Name="v1")}
    )
    secret_word = "s3cr3t-never-shown"
    files = tmp_path / "secrets"
    files.mkdir()
    (files / "hook").write_text("")  # empty
    (files / "token").write_text(f"{secret_word} two words\n")  # not one word
    (files / "users").write_text(f"{secret_word}\n")  # not user:hash lines
    entry = {
        "name": "r",
        "url": str(repo.bare),
        "webhook_secret_file": str(files / "hook"),
        "notify": {
            "commit_status": {
                "forge": "github",
                "repository": "org/templates",
                "token_file": str(files / "token"),
            }
        },
    }
    receiver = {"name": "ops", "url": "http://127.0.0.1:9/", "secret_file": str(files / "gone")}
    http = {"listen": "127.0.0.1:0", "users_file": str(files / "users")}
    (files / "backup.key").write_text(secret_word * 4)
    (files / "backup.key").chmod(0o644)  # readable by others
    backup = {"url": "s3://bucket/syncd", "key_file": str(files / "backup.key")}
    top = {"notify": {"webhooks": [receiver]}, "http": http, "backup": backup}
    config = write_config(tmp_path, [entry], **top)

    # Plain validate does not read them (a CI job seldom holds a host's secrets)...
    assert run_syncd("validate", "-c", str(config)).returncode == 0
    # ... --secrets reads them all, and names each file that cannot be used, in one go, as
    # `syncd run` does before it starts anything.
    for command in (["validate", "--secrets"], ["run"]):
        checked = run_syncd(*command, "-c", str(config))
        out = checked.stdout + checked.stderr
        assert checked.returncode == 2, out
        assert "5 problem(s)" in out
        for name in ("hook", "token", "users", "gone", "backup.key"):
            assert str(files / name) in out, (command, name)
        assert secret_word not in out

    # Files that can be used: exit 0, and said so.
    (files / "hook").write_text("hook-secret\n")
    (files / "token").write_text("ghp_token\n")
    (files / "gone").write_text("receiver-secret\n")
    (files / "users").unlink()
    (files / "backup.key").chmod(0o600)
    http["token_file"] = str(files / "hook")
    del http["users_file"]
    config = write_config(tmp_path, [entry], **top)
    checked = run_syncd("validate", "-c", str(config), "--secrets")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "every secret file can be read and used" in checked.stdout
    assert "hook-secret" not in checked.stdout + checked.stderr
    # A config that names none is said so.
    config = write_config(tmp_path, [{"name": "r", "url": str(repo.bare)}])
    checked = run_syncd("validate", "-c", str(config), "--secrets")
    assert checked.returncode == 0 and "names no secret file" in checked.stdout
    # It reads a config's files: a working tree has none.
    tree = run_syncd("validate", "--path", str(tmp_path), "--secrets")
    assert tree.returncode == 2 and "--secrets goes with plain validate" in tree.stderr
