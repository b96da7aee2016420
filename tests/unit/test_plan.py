"""syncd.core.plan: value changes with secrets hidden, and comments that fit a pull request."""

from __future__ import annotations

from syncd.core.plan import (
    Plan,
    ResourceChange,
    StackPlan,
    ValueChange,
    as_markdown,
    as_text,
    value_changes,
)


def big_plan(stacks: int, resources: int) -> Plan:
    return Plan(
        "platform",
        "refs/pull/7/head",
        "c" * 40,
        tuple(
            StackPlan(
                f"stack-{i:03d}",
                "update",
                tuple(
                    ResourceChange("Modify", f"Resource{j:04d}", "AWS::SNS::Topic", "False")
                    for j in range(resources)
                ),
            )
            for i in range(stacks)
        ),
    )


def test_value_changes_hide_secrets_on_both_sides() -> None:
    changes = value_changes(
        {"Name": "a", "Token": "****", "Gone": "x"},
        {"Name": "b", "Token": "****", "New": "y"},
        frozenset({"Token"}),
    )
    assert changes == (
        ValueChange("Gone", "x", None),
        ValueChange("Name", "a", "b"),
        ValueChange("New", None, "y"),
    )
    assert value_changes({"Token": "old"}, {"Token": "new"}, frozenset({"Token"})) == (
        ValueChange("Token", "****", "****"),
    )


def test_a_small_plan_shows_every_detail() -> None:
    text = as_markdown(big_plan(3, 2))
    assert text.count("<details>") == 3 and "summarised" not in text
    assert "0 to create, 3 to update, 0 to delete, 0 unchanged" in text


def test_a_huge_plan_is_summarised_under_the_limit_with_the_table_whole() -> None:
    plan = big_plan(40, 400)
    text = as_markdown(plan)
    assert len(text) <= 60_000
    for i in range(40):
        assert f"| `stack-{i:03d}` | ~ update | 400 resource(s) |" in text
    assert "summarised to keep this comment under 60,000 characters" in text
    assert "(details left out)" in text


def test_a_table_too_long_for_the_limit_is_kept_whole_and_says_so() -> None:
    plan = big_plan(50, 1)
    text = as_markdown(plan, limit=2_000)
    assert text.count("| `stack-") == 50
    assert "details left out to keep this comment short" in text


def test_text_marks_replacements_and_errors() -> None:
    plan = Plan(
        "r",
        "main",
        "d" * 40,
        (
            StackPlan(
                "a", "update", (ResourceChange("Modify", "Db", "AWS::RDS::DBInstance", "True"),)
            ),
            StackPlan("b", "none", message="UPDATE_IN_PROGRESS: cannot be planned now", error=True),
        ),
    )
    text = as_text(plan)
    assert "Db (AWS::RDS::DBInstance) REPLACED" in text
    assert "! b: none - UPDATE_IN_PROGRESS" in text
    assert plan.has_errors and plan.has_changes
    # Each stack counted once: b could not be planned, it is not also "unchanged".
    summary = "0 to create, 1 to update, 0 to delete, 0 unchanged, 1 could not be planned"
    assert summary in as_markdown(plan)


def hostile_plan() -> Plan:
    evil = "x\x1b[2J|<!-- `\n| fake | row |"
    return Plan(
        "platform",
        "refs/pull/7/head",
        "c" * 40,
        (
            StackPlan(
                "app",
                "update",
                (ResourceChange("Modify", evil, "AWS::SNS::Topic", "False"),),
                parameters=(ValueChange(evil, "old", "new"),),
                message=f"deployments/{evil}.yaml: bad",
            ),
        ),
    )


def test_text_from_a_repo_cannot_forge_lines_or_send_escapes() -> None:
    text = as_text(hostile_plan())
    assert "\x1b" not in text and "\\x1b[2J" in text
    assert len(text.splitlines()) == 5  # header, the stack, its change, its parameter, summary


def test_markdown_from_a_repo_cannot_forge_rows_or_open_html() -> None:
    import re

    text = as_markdown(hostile_plan())
    assert "\x1b" not in text
    # Inside a code span HTML is shown as it is; outside one it is escaped.
    assert "<!--" not in re.sub(r"`[^`]*`", "", text)
    for line in text.splitlines():
        if line.startswith("|"):  # every table row keeps its four columns
            assert line.replace("\\|", "").count("|") == 5, line
