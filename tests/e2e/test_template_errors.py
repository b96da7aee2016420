"""A template CloudFormation refuses: the failure, wherever it is shown (`sync`, `status`,
`history`, `show`), names the template file and the deployment file that uses it."""

from __future__ import annotations

import yaml

from tests.conftest import TOPIC_TEMPLATE, write_config
from tests.e2e.conftest import json_out, run_syncd

# The stack `web` (deployments/web.yaml), its template in a file of another name.
FILES = "templates/site.yaml (from deployments/web.yaml): "
# A template that names a resource it does not have. moto takes its change set and refuses it
# at the execute; CloudFormation refuses the change set itself (see the second test).
UNDEFINED = TOPIC_TEMPLATE.replace("!Ref Name", "!GetAtt Nowhere.TopicName")
MOTO_SAYS = "ValidationError: Template error: instance of Fn::GetAtt references undefined resource"
AWS_SAYS = (
    "Template format error: Unresolved resource dependencies [Vpc] in the Resources block of "
    "the template"
)


def push(repo, template: str, name: str = "n1") -> str:
    web = {"template-file-path": "templates/site.yaml", "parameters": {"Name": name}}
    return str(
        repo.commit({"templates/site.yaml": template, "deployments/web.yaml": yaml.safe_dump(web)})
    )


def assert_named_everywhere(config, refusal: str) -> None:
    """`status`, `history` and `show` all give the failure as one line, naming both files."""
    status = run_syncd("status", "-c", str(config), "--format", "json")
    assert status.returncode == 1, status.stdout + status.stderr
    [row] = json_out(status)
    assert row["state"] == "failed"
    assert row["message"].startswith(FILES) and refusal in row["message"], row["message"]
    text = run_syncd("status", "-c", str(config)).stdout
    assert FILES in text and refusal in text, text

    last = json_out(run_syncd("history", "web", "-c", str(config), "--format", "json"))[-1]
    assert last["result"] == "failed" and last["message"] == row["message"]
    shown = run_syncd("show", "web", "--no-events", "-c", str(config), "--format", "json")
    assert json_out(shown)["message"] == row["message"]
    assert "\n" not in row["message"]


def refused_next(tmp_path, repo, aws):
    """A config whose stack `web` is deployed, then a commit whose next CreateChangeSet
    CloudFormation answers with a ValidationError (the proxy answers for it: moto would take
    the change set)."""
    config = write_config(tmp_path, [{"name": "r", "url": str(repo.bare)}], aws.endpoint)
    push(repo, TOPIC_TEMPLATE)
    assert run_syncd("sync", "-c", str(config)).returncode == 0
    push(repo, TOPIC_TEMPLATE, name="n2")
    aws.proxy.error("CreateChangeSet", 400, "ValidationError", 1, AWS_SAYS)
    return config


def test_a_template_refused_at_its_execute_names_both_files(tmp_path, repo, aws):
    config = write_config(tmp_path, [{"name": "r", "url": str(repo.bare)}], aws.endpoint)
    push(repo, UNDEFINED)
    result = run_syncd("sync", "-c", str(config))
    assert result.returncode == 1, result.stdout + result.stderr
    [row] = [line for line in result.stdout.splitlines() if line.startswith("web ")]
    assert "failed" in row and FILES in row and f"{MOTO_SAYS} Nowhere" in row, row

    assert_named_everywhere(config, f"{MOTO_SAYS} Nowhere")


def test_a_template_refused_by_create_change_set_names_both_files(tmp_path, repo, aws):
    """What CloudFormation does with a template it cannot use: CreateChangeSet answers
    ValidationError (the proxy answers for it: moto would take the change set)."""
    config = refused_next(tmp_path, repo, aws)
    result = run_syncd("sync", "-c", str(config), "--format", "json")
    assert result.returncode == 1, result.stdout + result.stderr
    [row] = json_out(result)
    assert row["outcome"] == "failed"
    assert row["message"] == f"{FILES}CreateChangeSet web: ValidationError: {AWS_SAYS}"
    assert aws.parameters("web") == {"Name": "n1"}

    assert_named_everywhere(config, f"CreateChangeSet web: ValidationError: {AWS_SAYS}")


def test_a_plan_of_a_refused_template_names_both_files(tmp_path, repo, aws):
    """The pull request's preview says it first: `plan` gives the refusal as `sync` would."""
    config = refused_next(tmp_path, repo, aws)
    plan = run_syncd("plan", "-c", str(config), "--format", "json")
    assert plan.returncode == 1, plan.stdout + plan.stderr
    [stack] = json_out(plan)["stacks"]
    assert stack["error"] is True
    assert stack["message"] == f"{FILES}CreateChangeSet web: ValidationError: {AWS_SAYS}"
