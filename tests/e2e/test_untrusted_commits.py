"""The `syncd` command given commits made by someone with push access who means harm: one past
the limits is refused whole while other repos go on, and huge values get short reasons."""

from __future__ import annotations

import json

import yaml

from syncd.core.deployments import MAX_DEPLOYMENT_FILES
from tests.conftest import TOPIC_TEMPLATE, deployment, topic_stack, write_config
from tests.e2e.conftest import journal_records, json_out, run_syncd
from tests.support.gitrepo import GitRepo

LINE_LIMIT = 2048  # bytes: a journal record or a log line about one stack, whatever the commit


def test_a_commit_past_the_limits_is_refused_whole_and_other_repos_go_on(tmp_path, aws):
    other = GitRepo(tmp_path / "other")
    topic_stack(other, "calm", "calm-v1")
    attacked = GitRepo(tmp_path / "attacked")
    good = topic_stack(attacked, "app", "app-v1")
    config = write_config(
        tmp_path,
        [
            {"name": "attacked", "url": str(attacked.bare)},
            {"name": "other", "url": str(other.bare)},
        ],
        aws.endpoint,
    )
    first = run_syncd("sync", "-c", str(config), "--format", "json")
    assert first.returncode == 0, first.stderr

    # One commit: the existing stack changed, and more deployment files than allowed.
    floods = {f"deployments/f{i:04d}.yaml": deployment(Name=f"f{i}") for i in range(2000)}
    bad = attacked.commit({"deployments/app.yaml": deployment(Name="app-v2"), **floods})
    topic_stack(other, "calm", "calm-v2")  # meanwhile, an ordinary change elsewhere

    result = run_syncd("sync", "-c", str(config), "--format", "json")
    assert result.returncode == 1
    rows = {(r["repo"], r["stack"]): r for r in json_out(result)}
    refusal = rows[("attacked", None)]
    assert refusal["outcome"] == "source_error"
    assert refusal["message"] == (
        f"commit {bad[:12]} is refused, nothing of it is applied: 2,001 files match the "
        f"deployments globs (deployments/*.yaml), past the limit of {MAX_DEPLOYMENT_FILES:,} "
        f"deployment files for a repo; keeping commit {good[:12]}"
    )
    assert rows[("other", "calm")]["outcome"] == "succeeded"
    assert aws.parameters("calm") == {"Name": "calm-v2"}
    assert aws.parameters("app") == {"Name": "app-v1"}  # nothing of the refused commit
    assert aws.stack("f0000") is None

    records = journal_records(tmp_path / "state")
    errors = [r for r in records if r.get("kind") == "source_error"]
    assert [r["data"]["message"] for r in errors] == [refusal["message"]]
    status = json_out(run_syncd("status", "-c", str(config), "--format", "json"))
    assert {(r["stack"], r["commit"]) for r in status if r["repo"] == "attacked"} == {("app", good)}
    text = run_syncd("status", "-c", str(config))
    assert f"repo attacked: commit {bad[:12]} is refused" in text.stdout

    # Asked again: the same answer, not journaled twice; fixed, it is taken.
    assert run_syncd("sync", "-c", str(config)).returncode == 1
    records = journal_records(tmp_path / "state")
    assert len([r for r in records if r.get("kind") == "source_error"]) == 1
    attacked.commit({path: None for path in floods})
    fixed = run_syncd("sync", "-c", str(config), "--format", "json")
    assert fixed.returncode == 0, fixed.stdout
    assert aws.parameters("app") == {"Name": "app-v2"}


def test_huge_values_from_a_repo_get_short_located_reasons(tmp_path, repo, aws):
    repo.commit(
        {
            "templates/topic.yaml": TOPIC_TEMPLATE,
            "deployments/good.yaml": deployment(Name="good"),
            "deployments/long-name.yaml": yaml.safe_dump(
                {"template-file-path": "templates/topic.yaml", "stack-name": "s" * 500_000}
            ),
            "deployments/long-value.yaml": deployment(Name="v" * 200_000),
            "deployments/long-path.yaml": deployment("templates/" + "p" * 100_000 + ".yaml"),
        }
    )
    config = write_config(tmp_path, [{"name": "r", "url": str(repo.bare)}], aws.endpoint)
    result = run_syncd("sync", "-c", str(config), "--format", "json")
    assert result.returncode == 1
    rows = {r["stack"]: r for r in json_out(result)}
    assert rows["good"]["outcome"] == "succeeded"
    assert rows["long-name"]["message"].startswith("deployments/long-name.yaml: stack-name 'sssss")
    assert "characters]" in rows["long-name"]["message"]
    assert rows["long-value"]["message"] == (
        "deployments/long-value.yaml: parameters.Name: the value is 200,000 characters; "
        "CloudFormation allows 4,096"
    )
    assert (
        "template-file-path is 100,015 characters; the limit is 300"
        in (rows["long-path"]["message"])
    )

    invalid = [r for r in journal_records(tmp_path / "state") if r.get("kind") == "invalid"]
    assert {r["data"]["stack"] for r in invalid} == {"long-name", "long-value", "long-path"}
    for record in invalid:
        assert len(json.dumps(record)) < LINE_LIMIT, record
    for line in result.stderr.splitlines():
        assert len(line.encode()) < LINE_LIMIT, line[:300]
    status = run_syncd("status", "-c", str(config))
    assert all(len(line) < LINE_LIMIT for line in status.stdout.splitlines())
    assert max(len(line) for line in result.stdout.splitlines()) < 5 * LINE_LIMIT
