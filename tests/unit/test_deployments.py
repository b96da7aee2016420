"""syncd.core.deployments: deployment files (docs/deployment-files.md) read from a commit,
resolved, digested."""

from __future__ import annotations

import hashlib
import json
import textwrap
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace

import pytest

from syncd.core import deployments as deployments_module
from syncd.core.config import Approval, OnFailure, RepoConfig, StackOptions
from syncd.core.deployments import (
    MAX_DEPLOYMENT_FILES,
    MAX_FILE_BYTES,
    CommitTooLarge,
    DesiredState,
    InvalidStack,
    LoadResult,
    OutputRef,
    StackSpec,
    TreeError,
    UnresolvedOutput,
    default_stack_name,
    digest_of,
    load_stacks,
    matches,
    resolve,
)


class DictTree:
    """A commit's files held in a dict: the `Tree` protocol without Git."""

    def __init__(self, files: Mapping[str, str | bytes]) -> None:
        self.files = {
            path: data.encode() if isinstance(data, str) else data for path, data in files.items()
        }
        self.reads: list[str] = []

    def paths(self) -> Iterable[str]:
        return list(self.files)

    def read(self, path: str) -> bytes:
        self.reads.append(path)
        try:
            return self.files[path]
        except KeyError:
            raise TreeError(f"{path!r} is not in the commit") from None

    def blob_id(self, path: str) -> str:
        if path not in self.files:
            raise TreeError(f"{path!r} is not in the commit")
        return hashlib.sha1(self.files[path]).hexdigest()


def repo_config(**overrides: object) -> RepoConfig:
    fields: dict[str, object] = {"name": "platform", "url": "https://git.example.com/p.git"}
    fields.update(overrides)
    return RepoConfig(**fields)


def load(files: Mapping[str, str | bytes], **repo: object) -> LoadResult:
    return load_stacks(repo_config(**repo), DictTree(files))


def yaml_text(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


SIMPLE_TEMPLATE = yaml_text(
    """
    Resources:
      Topic:
        Type: AWS::SNS::Topic
    """
)

APP_TEMPLATE = yaml_text(
    """
    AWSTemplateFormatVersion: "2010-09-09"
    Parameters:
      Env:
        Type: String
      VpcId:
        Type: String
        Default: ""
      DbPassword:
        Type: String
        NoEcho: true
        Default: ""
      Port:
        Type: Number
        Default: 80
      Enabled:
        Type: String
        Default: "false"
      Ratio:
        Type: String
        Default: "1"
      Subnets:
        Type: CommaDelimitedList
        Default: ""
    Conditions:
      IsProd: !Equals [!Ref Env, prod]
    Resources:
      Queue:
        Type: AWS::SQS::Queue
        Properties:
          QueueName: !Sub "${Env}-queue"
          DelaySeconds: !If [IsProd, 0, 5]
      Alarm:
        Type: AWS::CloudWatch::Alarm
        Properties:
          Dimensions:
            - Name: QueueName
              Value: !GetAtt Queue.QueueName
    Outputs:
      QueueArn:
        Value: !GetAtt Queue.Arn
    """
)

GOOD = {
    "deployments/good.yaml": "template-file-path: templates/simple.yaml\n",
    "templates/simple.yaml": SIMPLE_TEMPLATE,
}


def deployment(template: str = "templates/simple.yaml", extra: str = "") -> str:
    return f"template-file-path: {template}\n" + yaml_text(extra)


# --- a good file ---------------------------------------------------------------------------


def test_a_good_deployment_file_becomes_a_stack_spec() -> None:
    result = load(
        {
            "deployments/app.yaml": deployment(
                "templates/app.yaml",
                """
                parameters:
                  Env: prod
                tags:
                  team: platform
                  cost-center: 42
                """,
            ),
            "templates/app.yaml": APP_TEMPLATE,
            "README.md": "# not a deployment file\n",
        }
    )

    assert result.invalid == {}
    assert list(result.stacks) == ["app"]
    spec = result.stacks["app"]
    assert spec == StackSpec(
        name="app",
        repo="platform",
        deployment_file="deployments/app.yaml",
        template_file="templates/app.yaml",
        template_body=APP_TEMPLATE,
        parameters=(("Env", "prod"),),
        tags=(("cost-center", "42"), ("team", "platform")),
        options=StackOptions(),
        no_echo=frozenset({"DbPassword"}),
        notes=(),
    )
    assert spec.dependencies == frozenset()


def test_template_path_is_normalised() -> None:
    result = load(
        {
            "deployments/app.yaml": deployment("./templates/../templates/simple.yaml"),
            "templates/simple.yaml": SIMPLE_TEMPLATE,
        }
    )
    assert result.stacks["app"].template_file == "templates/simple.yaml"


def test_no_deployment_files_means_no_stacks() -> None:
    result = load({"templates/simple.yaml": SIMPLE_TEMPLATE})
    assert result.stacks == {}
    assert result.invalid == {}


# --- stack names ---------------------------------------------------------------------------


def test_stack_name_defaults_to_the_file_stem() -> None:
    result = load({**GOOD, "deployments/network.yaml": deployment()})
    assert sorted(result.stacks) == ["good", "network"]


def test_stack_name_default_carries_the_repo_prefix() -> None:
    result = load({**GOOD, "deployments/network.yaml": deployment()}, stack_prefix="prod-")
    assert sorted(result.stacks) == ["prod-good", "prod-network"]
    assert default_stack_name(repo_config(stack_prefix="dev-"), "x/y/app.yaml") == "dev-app"


def test_stack_name_in_the_file_wins_and_gets_no_prefix() -> None:
    result = load(
        {**GOOD, "deployments/app.yaml": deployment(extra="stack-name: prod-app-main\n")},
        stack_prefix="prod-",
    )
    assert sorted(result.stacks) == ["prod-app-main", "prod-good"]
    assert result.stacks["prod-app-main"].deployment_file == "deployments/app.yaml"


def test_a_stack_name_outside_the_repos_prefix_is_refused() -> None:
    # stack_prefix bounds the stacks a repo may name: not another team's, not an unmanaged one.
    result = load(
        {**GOOD, "deployments/app.yaml": deployment(extra="stack-name: prod-db\n")},
        stack_prefix="team2-",
    )
    assert sorted(result.stacks) == ["team2-good"]
    bad = result.invalid["prod-db"]
    assert bad.file == "deployments/app.yaml"
    assert "not one of this repo's stacks" in bad.reason and "'team2-'" in bad.reason


# --- globs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("deployments/*.yaml", "deployments/app.yaml", True),
        ("deployments/*.yaml", "deployments/eu/app.yaml", False),
        ("deployments/*.yaml", "deployments/app.yml", False),
        ("deployments/*.yaml", "deployments/app.yaml.bak", False),
        ("deployments/*.yaml", "other/deployments/app.yaml", False),
        ("deployments/*.yaml", "deploymentsXapp.yaml", False),
        ("deployments/**/*.yaml", "deployments/app.yaml", True),
        ("deployments/**/*.yaml", "deployments/eu/app.yaml", True),
        ("deployments/**/*.yaml", "deployments/eu/west/app.yaml", True),
        ("deployments/**", "deployments/eu/app.yaml", True),
        ("**/*.yaml", "app.yaml", True),
        ("**/*.yaml", "a/b/c/app.yaml", True),
        ("deployments/?.yaml", "deployments/a.yaml", True),
        ("deployments/?.yaml", "deployments/ab.yaml", False),
        ("deploy.ments/*.yaml", "deployXments/a.yaml", False),
    ],
)
def test_glob_semantics(pattern: str, path: str, expected: bool) -> None:
    assert matches(path, [pattern]) is expected


def test_any_of_several_patterns_matches() -> None:
    assert matches("extra/app.yml", ["deployments/*.yaml", "extra/*.yml"])
    assert not matches("extra/app.yaml", ["deployments/*.yaml", "extra/*.yml"])
    assert not matches("deployments/app.yaml", [])


def test_single_star_does_not_load_nested_folders_and_double_star_does() -> None:
    files = {
        **GOOD,
        "deployments/eu/west.yaml": deployment(),
        "elsewhere/other.yaml": deployment(),
    }
    assert sorted(load(files).stacks) == ["good"]
    assert sorted(load(files, deployments=("deployments/**/*.yaml",)).stacks) == ["good", "west"]


# --- bad inputs: only that stack is invalid ------------------------------------------------

TOO_MANY_TAGS = "tags:\n" + "".join(f"  t{i}: v\n" for i in range(50))


@pytest.mark.parametrize(
    ("files", "file", "needle"),
    [
        pytest.param(
            {"deployments/bad.yaml": "template-file-path: [oops\n"},
            "deployments/bad.yaml",
            "not valid YAML",
            id="invalid-yaml",
        ),
        pytest.param(
            {"deployments/bad.yaml": "- template-file-path\n- x\n"},
            "deployments/bad.yaml",
            "must be a mapping",
            id="not-a-mapping",
        ),
        pytest.param(
            {
                "deployments/bad.yaml": 'a: &a ["lol", "lol"]\nb: &b [*a, *a, *a]\n'
                "stack-name: [*b, *b, *b]\ntemplate-file-path: templates/app.yaml\n"
            },
            "deployments/bad.yaml",
            "anchors are not allowed in deployment files",
            id="yaml-anchors",
        ),
        pytest.param(
            {"deployments/bad.yaml": "template-file-path: " + "[" * 150 + "]" * 150 + "\n"},
            "deployments/bad.yaml",
            "nested more than 100 levels deep",
            id="deep-nesting",
        ),
        pytest.param(
            {"deployments/bad.yaml": ""},
            "deployments/bad.yaml",
            "must be a mapping",
            id="empty-file",
        ),
        pytest.param(
            {"deployments/bad.yaml": "parameters: {}\n"},
            "deployments/bad.yaml",
            "template-file-path is required",
            id="missing-template-file-path",
        ),
        pytest.param(
            {"deployments/bad.yaml": "template-file-path: 42\n"},
            "deployments/bad.yaml",
            "template-file-path is required",
            id="template-file-path-not-a-string",
        ),
        pytest.param(
            {"deployments/bad.yaml": deployment("templates/gone.yaml")},
            "templates/gone.yaml",
            "'templates/gone.yaml' is not in the commit",
            id="template-missing",
        ),
        pytest.param(
            {"deployments/bad.yaml": deployment("../x.yaml")},
            "deployments/bad.yaml",
            "outside the repo",
            id="template-parent-folder",
        ),
        pytest.param(
            {"deployments/bad.yaml": deployment("templates/../../x.yaml")},
            "deployments/bad.yaml",
            "outside the repo",
            id="template-escapes-through-folder",
        ),
        pytest.param(
            {"deployments/bad.yaml": deployment("..")},
            "deployments/bad.yaml",
            "outside the repo",
            id="template-is-parent",
        ),
        pytest.param(
            {"deployments/bad.yaml": deployment("/etc/passwd")},
            "deployments/bad.yaml",
            "is absolute",
            id="template-absolute",
        ),
        pytest.param(
            {"deployments/bad.yaml": deployment() + "#" * MAX_FILE_BYTES + "\n"},
            "deployments/bad.yaml",
            f"the limit is {MAX_FILE_BYTES}",
            id="deployment-file-over-1MiB",
        ),
        pytest.param(
            {
                "deployments/bad.yaml": deployment("templates/big.yaml"),
                "templates/big.yaml": SIMPLE_TEMPLATE + "#" * MAX_FILE_BYTES + "\n",
            },
            "templates/big.yaml",
            f"the limit is {MAX_FILE_BYTES}",
            id="template-over-1MiB",
        ),
        pytest.param(
            {"deployments/bad.yaml": b"template-file-path: t\xff\xfe.yaml\n"},
            "deployments/bad.yaml",
            "not UTF-8",
            id="deployment-file-not-utf8",
        ),
        pytest.param(
            {
                "deployments/bad.yaml": deployment("templates/latin1.yaml"),
                "templates/latin1.yaml": "Resources:\n  T:\n    Type: caf\xe9\n".encode("latin-1"),
            },
            "templates/latin1.yaml",
            "not UTF-8",
            id="template-not-utf8",
        ),
        pytest.param(
            {
                "deployments/bad.yaml": deployment("templates/nores.yaml"),
                "templates/nores.yaml": "Parameters:\n  Env: {Type: String}\n",
            },
            "templates/nores.yaml",
            "Resources",
            id="template-without-resources",
        ),
        pytest.param(
            {
                "deployments/bad.yaml": deployment("templates/list.yaml"),
                "templates/list.yaml": "- Resources\n",
            },
            "templates/list.yaml",
            "is not a mapping",
            id="template-not-a-mapping",
        ),
        pytest.param(
            {
                "deployments/bad.yaml": deployment("templates/broken.yaml"),
                "templates/broken.yaml": "Resources: [unclosed\n",
            },
            "templates/broken.yaml",
            "not valid YAML",
            id="template-invalid-yaml",
        ),
        pytest.param(
            {
                "deployments/bad.yaml": deployment("templates/broken.json"),
                "templates/broken.json": '{"Resources": {',
            },
            "templates/broken.json",
            "not valid JSON",
            id="template-invalid-json",
        ),
        pytest.param(
            {"deployments/bad.yaml": deployment(extra="parameters:\n  Nope: 1\n  Env: x\n")},
            "deployments/bad.yaml",
            "parameters Env, Nope are not declared in templates/simple.yaml",
            id="undeclared-parameters",
        ),
        pytest.param(
            {
                "deployments/bad.yaml": deployment("templates/app.yaml"),
                "templates/app.yaml": APP_TEMPLATE,
            },
            "deployments/bad.yaml",
            "template parameters Env need values",
            id="required-parameter-missing",
        ),
        pytest.param(
            {"deployments/bad.yaml": deployment(extra="parameters: [a, b]\n")},
            "deployments/bad.yaml",
            "parameters must be a mapping",
            id="parameters-not-a-mapping",
        ),
        pytest.param(
            {
                "deployments/bad.yaml": deployment(
                    "templates/app.yaml", "parameters:\n  Env: {nested: value}\n"
                ),
                "templates/app.yaml": APP_TEMPLATE,
            },
            "deployments/bad.yaml",
            "parameters.Env: must be a string, a list, or {stack-output: ...}",
            id="parameter-mapping",
        ),
        pytest.param(
            {
                "deployments/bad.yaml": deployment(
                    "templates/app.yaml", "parameters:\n  Env: {stack-output: network}\n"
                ),
                "templates/app.yaml": APP_TEMPLATE,
            },
            "deployments/bad.yaml",
            "parameters.Env: stack-output must be 'stack.OutputName'",
            id="stack-output-without-output",
        ),
        pytest.param(
            {"deployments/bad.yaml": deployment(extra=TOO_MANY_TAGS)},
            "deployments/bad.yaml",
            "50 tags; CloudFormation allows 50, one of them syncd's own",
            id="too-many-tags",
        ),
        pytest.param(
            {"deployments/bad.yaml": deployment(extra="tags:\n  aws:owner: me\n")},
            "deployments/bad.yaml",
            "tags.aws:owner: the aws: and syncd: prefixes are reserved",
            id="tag-aws-prefix",
        ),
        pytest.param(
            {"deployments/bad.yaml": deployment(extra="tags:\n  syncd:repo: other-team\n")},
            "deployments/bad.yaml",
            "tags.syncd:repo: the aws: and syncd: prefixes are reserved",
            id="tag-syncd-prefix",
        ),
        pytest.param(
            {"deployments/bad.yaml": deployment(extra=f"tags:\n  {'k' * 129}: v\n")},
            "deployments/bad.yaml",
            "keys 1-128 and values up to 256 characters",
            id="tag-key-too-long",
        ),
        pytest.param(
            {"deployments/bad.yaml": deployment(extra=f"tags:\n  team: {'v' * 257}\n")},
            "deployments/bad.yaml",
            "tags.team: keys 1-128 and values up to 256 characters",
            id="tag-value-too-long",
        ),
        pytest.param(
            {"deployments/bad.yaml": deployment(extra="tags:\n  team: [a, b]\n")},
            "deployments/bad.yaml",
            "tags.team:",
            id="tag-value-a-list",
        ),
        pytest.param(
            {"deployments/bad.yaml": deployment(extra="tags: [team]\n")},
            "deployments/bad.yaml",
            "tags must be a mapping",
            id="tags-not-a-mapping",
        ),
        pytest.param(
            {"deployments/bad.yaml": deployment(extra="stack_name: x\nparams: {}\n")},
            "deployments/bad.yaml",
            "unknown key(s) params, stack_name",
            id="unknown-keys",
        ),
        pytest.param(
            {"deployments/bad.yaml": deployment(extra="stack-name: 1app\n")},
            "deployments/bad.yaml",
            "stack-name '1app' is not a valid CloudFormation stack name",
            id="stack-name-starts-with-digit",
        ),
        pytest.param(
            {"deployments/bad.yaml": deployment(extra="stack-name: app_prod\n")},
            "deployments/bad.yaml",
            "stack-name 'app_prod' is not a valid CloudFormation stack name",
            id="stack-name-underscore",
        ),
        pytest.param(
            {"deployments/bad.yaml": deployment(extra=f"stack-name: a{'b' * 128}\n")},
            "deployments/bad.yaml",
            "is not a valid CloudFormation stack name",
            id="stack-name-too-long",
        ),
        pytest.param(
            {"deployments/bad.yaml": deployment(extra="stack-name: 42\n")},
            "deployments/bad.yaml",
            "stack-name 42 is not a valid CloudFormation stack name",
            id="stack-name-not-a-string",
        ),
        pytest.param(
            {"deployments/bad.yaml": deployment(extra="approval: sometimes\n")},
            "deployments/bad.yaml",
            "approval must be auto or manual",
            id="bad-approval",
        ),
        pytest.param(
            {"deployments/bad.yaml": deployment(extra="prune: 'yes'\n")},
            "deployments/bad.yaml",
            "prune must be true or false",
            id="bad-prune",
        ),
        pytest.param(
            {"deployments/bad.yaml": deployment(extra="on-failure: never\n")},
            "deployments/bad.yaml",
            "on-failure must be keep, retry or recreate",
            id="bad-on-failure",
        ),
    ],
)
def test_a_bad_input_marks_only_its_stack_invalid(
    files: dict[str, str | bytes], file: str, needle: str
) -> None:
    result = load({**GOOD, **files})

    assert list(result.stacks) == ["good"]
    assert list(result.invalid) == ["bad"]
    bad = result.invalid["bad"]
    assert bad == InvalidStack(
        name="bad",
        repo="platform",
        file=file,
        reason=bad.reason,
        deployment_file="deployments/bad.yaml",
    )
    assert needle in bad.reason


def test_a_file_stem_that_is_not_a_stack_name_asks_for_stack_name() -> None:
    result = load({**GOOD, "deployments/app.prod.yaml": deployment()})
    assert list(result.stacks) == ["good"]
    assert (
        result.invalid["app.prod"].reason == "'app.prod' is not a valid stack name; set stack-name"
    )


def test_several_bad_files_are_each_reported() -> None:
    result = load(
        {
            **GOOD,
            "deployments/one.yaml": "not: [valid\n",
            "deployments/two.yaml": deployment("templates/missing.yaml"),
            "deployments/three.yaml": deployment(extra="tags:\n  aws:x: y\n"),
        }
    )
    assert list(result.stacks) == ["good"]
    assert sorted(result.invalid) == ["one", "three", "two"]


@pytest.mark.parametrize(
    ("template_file", "template"),
    [
        pytest.param("templates/gone.yaml", None, id="template-missing"),
        pytest.param(
            "templates/big.yaml", SIMPLE_TEMPLATE + "#" * MAX_FILE_BYTES, id="template-too-big"
        ),
        pytest.param("templates/bin.yaml", b"\xff\xfe\x00R", id="template-not-utf8"),
        pytest.param("templates/nores.yaml", "Parameters: {}\n", id="template-no-resources"),
    ],
)
def test_a_bad_template_is_reported_under_the_files_stack_name(
    template_file: str, template: str | bytes | None
) -> None:
    # The stack is `app-prod` (its stack-name), whatever is wrong with its template: reporting
    # it under the file's stem would leave `app-prod` looking like its file was deleted.
    files: dict[str, str | bytes] = {
        **GOOD,
        "deployments/app.yaml": deployment(template_file, "stack-name: app-prod\n"),
    }
    if template is not None:
        files[template_file] = template
    result = load(files)

    assert list(result.stacks) == ["good"]
    assert list(result.invalid) == ["app-prod"]
    assert result.invalid["app-prod"].file == template_file


# --- two files, one stack ------------------------------------------------------------------


def test_two_files_naming_the_same_stack_are_both_reported_and_neither_loads() -> None:
    result = load(
        {
            **GOOD,
            "deployments/a.yaml": deployment(extra="stack-name: shared\n"),
            "deployments/b.yaml": deployment(extra="stack-name: shared\n"),
        }
    )

    assert list(result.stacks) == ["good"]
    bad = result.invalid["shared"]
    assert bad.file == "deployments/a.yaml"
    assert bad.reason == (
        "stack 'shared' is named by more than one deployment file: "
        "deployments/a.yaml, deployments/b.yaml"
    )


def test_an_explicit_stack_name_can_collide_with_a_default_one() -> None:
    result = load({**GOOD, "deployments/other.yaml": deployment(extra="stack-name: good\n")})
    assert result.stacks == {}
    assert "deployments/good.yaml, deployments/other.yaml" in result.invalid["good"].reason


def test_same_stem_in_two_folders_collides_with_double_star() -> None:
    result = load(
        {**GOOD, "deployments/eu/good.yaml": deployment()},
        deployments=("deployments/**/*.yaml",),
    )
    assert result.stacks == {}
    assert "deployments/eu/good.yaml, deployments/good.yaml" in result.invalid["good"].reason


def test_a_valid_and_an_invalid_file_naming_the_same_stack() -> None:
    result = load(
        {
            **GOOD,
            "deployments/a.yaml": deployment(extra="stack-name: shared\n"),
            "deployments/b.yaml": deployment(extra="stack-name: shared\nparameters: {X: 1}\n"),
        }
    )
    assert list(result.stacks) == ["good"]
    assert "deployments/a.yaml, deployments/b.yaml" in result.invalid["shared"].reason


# --- parameters ----------------------------------------------------------------------------


def test_parameter_values_become_strings() -> None:
    result = load(
        {
            "deployments/app.yaml": deployment(
                "templates/app.yaml",
                """
                parameters:
                  Env: prod
                  Port: 8080
                  Enabled: true
                  Ratio: 0.5
                  Subnets: [subnet-a, subnet-b]
                  VpcId: ""
                """,
            ),
            "templates/app.yaml": APP_TEMPLATE,
        }
    )

    assert result.stacks["app"].parameters == (
        ("Enabled", "true"),
        ("Env", "prod"),
        ("Port", "8080"),
        ("Ratio", "0.5"),
        ("Subnets", "subnet-a,subnet-b"),
        ("VpcId", ""),
    )


def test_list_of_numbers_and_bools_joins_as_strings() -> None:
    result = load(
        {
            "deployments/app.yaml": deployment(
                "templates/app.yaml", "parameters:\n  Env: x\n  Subnets: [80, true, 1.5]\n"
            ),
            "templates/app.yaml": APP_TEMPLATE,
        }
    )
    assert dict(result.stacks["app"].parameters)["Subnets"] == "80,true,1.5"


NETWORK_TEMPLATE = yaml_text(
    """
    Resources:
      Vpc:
        Type: AWS::EC2::VPC
        Properties:
          CidrBlock: 10.0.0.0/16
    Outputs:
      VpcId:
        Value: !Ref Vpc
    """
)


def _network_and_app(ref: str) -> dict[str, str | bytes]:
    return {
        "deployments/network.yaml": deployment("templates/network.yaml"),
        "templates/network.yaml": NETWORK_TEMPLATE,
        "deployments/app.yaml": deployment(
            "templates/app.yaml", f"parameters:\n  Env: prod\n  VpcId:\n    stack-output: {ref}\n"
        ),
        "templates/app.yaml": APP_TEMPLATE,
    }


def test_stack_output_becomes_an_output_ref_and_a_dependency() -> None:
    result = load(_network_and_app("network.VpcId"))

    app = result.stacks["app"]
    assert dict(app.parameters)["VpcId"] == OutputRef("network", "VpcId")
    assert app.dependencies == frozenset({"network"})
    assert str(OutputRef("network", "VpcId")) == "network.VpcId"
    assert result.stacks["network"].dependencies == frozenset()


@pytest.mark.parametrize("ref", ["network.VpcId", "prod-network.VpcId"])
def test_stack_output_canonicalises_to_the_prefixed_name(ref: str) -> None:
    result = load(_network_and_app(ref), stack_prefix="prod-")

    app = result.stacks["prod-app"]
    assert dict(app.parameters)["VpcId"] == OutputRef("prod-network", "VpcId")
    assert app.dependencies == frozenset({"prod-network"})


def test_stack_output_of_a_stack_outside_the_repo_is_kept_as_written() -> None:
    files = _network_and_app("shared-vpc.VpcId")
    result = load(files, stack_prefix="prod-")
    assert dict(result.stacks["prod-app"].parameters)["VpcId"] == OutputRef("shared-vpc", "VpcId")


# --- options: stricter only ----------------------------------------------------------------

KEEP, RETRY, RECREATE = OnFailure.KEEP, OnFailure.RETRY, OnFailure.RECREATE
AUTO, MANUAL = Approval.AUTO, Approval.MANUAL


@pytest.mark.parametrize(
    ("config", "file_keys", "expected", "note"),
    [
        (StackOptions(), "approval: manual\n", StackOptions(approval=MANUAL), None),
        (StackOptions(approval=MANUAL), "approval: auto\n", StackOptions(approval=MANUAL), "auto"),
        (StackOptions(approval=AUTO), "approval: auto\n", StackOptions(), None),
        (StackOptions(prune=True), "prune: false\n", StackOptions(prune=False), None),
        (StackOptions(prune=True), "prune: true\n", StackOptions(prune=True), None),
        (StackOptions(prune=False), "prune: true\n", StackOptions(prune=False), "prune: true"),
        (StackOptions(on_failure=RECREATE), "on-failure: keep\n", StackOptions(), None),
        (
            StackOptions(on_failure=RECREATE),
            "on-failure: retry\n",
            StackOptions(on_failure=RETRY),
            None,
        ),
        (StackOptions(on_failure=RETRY), "on-failure: keep\n", StackOptions(), None),
        (
            StackOptions(on_failure=RETRY),
            "on-failure: retry\n",
            StackOptions(on_failure=RETRY),
            None,
        ),
        (StackOptions(), "on-failure: retry\n", StackOptions(), "on-failure: retry"),
        (StackOptions(), "on-failure: recreate\n", StackOptions(), "on-failure: recreate"),
        (
            StackOptions(on_failure=RETRY),
            "on-failure: recreate\n",
            StackOptions(on_failure=RETRY),
            "on-failure: recreate",
        ),
    ],
)
def test_a_deployment_file_may_only_make_its_stack_stricter(
    config: StackOptions, file_keys: str, expected: StackOptions, note: str | None
) -> None:
    result = load(
        {
            "deployments/app.yaml": deployment(extra=file_keys),
            "templates/simple.yaml": SIMPLE_TEMPLATE,
        },
        options=config,
    )

    spec = result.stacks["app"]
    assert spec.options == expected
    if note is None:
        assert spec.notes == ()
    else:
        assert len(spec.notes) == 1
        assert note in spec.notes[0]
        assert "ignored" in spec.notes[0]


def test_all_three_stricter_keys_at_once() -> None:
    loose = StackOptions(approval=AUTO, on_failure=RECREATE, prune=True)
    result = load(
        {
            "deployments/app.yaml": deployment(
                extra="approval: manual\nprune: false\non-failure: keep\n"
            ),
            "templates/simple.yaml": SIMPLE_TEMPLATE,
        },
        options=loose,
    )
    assert result.stacks["app"].options == StackOptions(approval=MANUAL, on_failure=KEEP)


def test_options_come_from_the_repos_per_stack_overrides() -> None:
    per_stack = StackOptions(capabilities=("CAPABILITY_IAM",), prune=True)
    result = load(
        {**GOOD, "deployments/app.yaml": deployment()},
        stack_prefix="prod-",
        options=StackOptions(approval=MANUAL),
        stack_options={"app": per_stack},
    )
    assert result.stacks["prod-app"].options == per_stack
    assert result.stacks["prod-good"].options == StackOptions(approval=MANUAL)


# --- templates -----------------------------------------------------------------------------


def test_json_templates_load_unchanged() -> None:
    template = json.dumps(
        {
            "Parameters": {
                "Env": {"Type": "String"},
                "Secret": {"Type": "String", "NoEcho": "true", "Default": ""},
            },
            "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        },
        indent=2,
    )
    result = load(
        {
            "deployments/app.yaml": deployment("templates/app.json", "parameters: {Env: prod}\n"),
            "templates/app.json": "\n  " + template,
        }
    )
    spec = result.stacks["app"]
    assert spec.template_body == "\n  " + template
    assert spec.no_echo == frozenset({"Secret"})


def test_yaml_templates_with_short_tags_load() -> None:
    template = yaml_text(
        """
        Parameters:
          Env: {Type: String}
        Conditions:
          IsProd: !Equals [!Ref Env, prod]
        Resources:
          Bucket:
            Type: AWS::S3::Bucket
            Condition: IsProd
            Properties:
              BucketName: !Sub "${AWS::StackName}-${Env}"
              Tags:
                - Key: size
                  Value: !If [IsProd, big, small]
          Policy:
            Type: AWS::S3::BucketPolicy
            Properties:
              Bucket: !Ref Bucket
              PolicyDocument:
                Statement:
                  - Resource: !GetAtt Bucket.Arn
                    Principal: !Base64 x
        """
    )
    result = load(
        {
            "deployments/app.yaml": deployment("templates/app.yaml", "parameters: {Env: prod}\n"),
            "templates/app.yaml": template,
        }
    )
    assert result.invalid == {}
    assert result.stacks["app"].template_body == template


# --- resolve, NoEcho, digest ---------------------------------------------------------------


OutputsOf = Callable[[str], Mapping[str, str] | None]


def _app_spec(**repo: object) -> StackSpec:
    files = _network_and_app("network.VpcId")
    files["deployments/app.yaml"] = deployment(
        "templates/app.yaml",
        """
        parameters:
          Env: prod
          DbPassword: hunter2
          VpcId:
            stack-output: network.VpcId
        tags:
          team: platform
        """,
    )
    stacks = load(files, **repo).stacks
    return stacks[f"{repo.get('stack_prefix', '')}app"]


def _outputs(values: Mapping[str, Mapping[str, str]]) -> OutputsOf:
    def outputs_of(stack: str) -> Mapping[str, str] | None:
        return values.get(stack)

    return outputs_of


def _resolve(spec: StackSpec, vpc: str = "vpc-123") -> DesiredState:
    return resolve(spec, _outputs({"network": {"VpcId": vpc}}))


def test_resolve_fills_stack_outputs() -> None:
    spec = _app_spec()
    desired = _resolve(spec)

    assert desired.spec is spec
    assert desired.name == "app"
    assert desired.parameters == (
        ("DbPassword", "hunter2"),
        ("Env", "prod"),
        ("VpcId", "vpc-123"),
    )
    assert desired.digest == digest_of(spec, desired.parameters)
    assert len(desired.digest) == 64
    int(desired.digest, 16)


def test_no_echo_parameters_are_redacted() -> None:
    desired = _resolve(_app_spec())
    redacted = desired.redacted_parameters()

    assert redacted == {"DbPassword": "****", "Env": "prod", "VpcId": "vpc-123"}
    assert "hunter2" not in repr(redacted)
    assert dict(desired.parameters)["DbPassword"] == "hunter2"


def test_resolve_without_the_stack_raises_unresolved_output() -> None:
    with pytest.raises(UnresolvedOutput, match="stack 'network' is not deployed"):
        resolve(_app_spec(), _outputs({}))


def test_resolve_without_the_output_raises_unresolved_output() -> None:
    with pytest.raises(UnresolvedOutput, match="stack 'network' has no output 'VpcId'") as info:
        resolve(_app_spec(), _outputs({"network": {"SubnetId": "s-1"}}))
    assert "parameters.VpcId" in str(info.value)


def test_resolve_asks_for_the_canonical_prefixed_stack() -> None:
    spec = _app_spec(stack_prefix="prod-")
    asked: list[str] = []

    def outputs_of(stack: str) -> Mapping[str, str] | None:
        asked.append(stack)
        return {"VpcId": "vpc-9"}

    assert dict(resolve(spec, outputs_of).parameters)["VpcId"] == "vpc-9"
    assert asked == ["prod-network"]


def test_same_inputs_give_the_same_digest() -> None:
    assert _resolve(_app_spec()).digest == _resolve(_app_spec()).digest


def test_parameter_order_in_the_file_does_not_change_the_digest() -> None:
    def spec_with(params: str) -> StackSpec:
        files = {
            "deployments/app.yaml": deployment("templates/app.yaml", params),
            "templates/app.yaml": APP_TEMPLATE,
        }
        return load(files).stacks["app"]

    one = spec_with("parameters:\n  Env: prod\n  Port: 1\ntags:\n  a: x\n  b: y\n")
    two = spec_with("tags:\n  b: y\n  a: x\nparameters:\n  Port: 1\n  Env: prod\n")
    assert resolve(one, _outputs({})).digest == resolve(two, _outputs({})).digest


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(
            lambda s: replace(
                s, parameters=tuple((k, "dev" if k == "Env" else v) for k, v in s.parameters)
            ),
            id="parameter",
        ),
        pytest.param(lambda s: replace(s, tags=(("team", "other"),)), id="tag-value"),
        pytest.param(lambda s: replace(s, tags=(*s.tags, ("extra", "x"))), id="tag-added"),
        pytest.param(
            lambda s: replace(s, template_body=s.template_body + "# comment\n"), id="template"
        ),
        pytest.param(
            lambda s: replace(s, options=replace(s.options, capabilities=("CAPABILITY_IAM",))),
            id="capabilities",
        ),
    ],
)
def test_a_change_in_desired_state_changes_the_digest(
    change: Callable[[StackSpec], StackSpec],
) -> None:
    spec = _app_spec()
    changed = change(spec)
    assert changed != spec
    assert _resolve(changed).digest != _resolve(spec).digest


def test_a_changed_output_value_changes_the_digest() -> None:
    spec = _app_spec()
    assert _resolve(spec, "vpc-1").digest != _resolve(spec, "vpc-2").digest


def test_digest_of_depends_on_resolved_parameters() -> None:
    spec = _app_spec()
    assert digest_of(spec, (("Env", "a"),)) != digest_of(spec, (("Env", "b"),))
    assert digest_of(spec, (("Env", "a"),)) == digest_of(spec, (("Env", "a"),))


def test_two_bad_files_naming_one_stack_are_both_named() -> None:
    result = load(
        {
            **GOOD,
            "deployments/one.yaml": "stack-name: shared\ntemplate-file-path: templates/nope.yaml\n",
            "deployments/two.yaml": "stack-name: shared\ntemplate-file-path: templates/gone.yaml\n",
        }
    )
    reason = result.invalid["shared"].reason
    assert "templates/nope.yaml" in reason
    assert "deployments/two.yaml names the same stack" in reason
    assert "templates/gone.yaml" in reason


# --- what one commit may cost (an untrusted pusher chooses it) ------------------------------


def test_files_sharing_one_template_read_and_parse_it_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parsed: list[str] = []
    real = deployments_module.parse_template

    def counting(text: str, budget: object = None) -> object:
        parsed.append(text)
        return real(text, budget)  # type: ignore[arg-type]

    monkeypatch.setattr(deployments_module, "parse_template", counting)
    files: dict[str, str | bytes] = {"templates/app.yaml": APP_TEMPLATE}
    for i in range(300):
        files[f"deployments/s{i:03d}.yaml"] = deployment(
            "templates/app.yaml", "parameters: {Env: x}"
        )
    tree = DictTree(files)
    result = load_stacks(repo_config(), tree)
    assert len(result.stacks) == 300 and not result.invalid
    assert len(parsed) == 1
    assert tree.reads.count("templates/app.yaml") == 1
    # The stacks share one copy of the text, not 300.
    assert len({id(s.template_body) for s in result.stacks.values()}) == 1


def test_a_bad_template_shared_by_many_files_is_parsed_once_and_fails_each_stack() -> None:
    files: dict[str, str | bytes] = {"templates/bad.yaml": "Resources: [unclosed\n"}
    for i in range(50):
        files[f"deployments/s{i:02d}.yaml"] = deployment("templates/bad.yaml")
    result = load(files)
    assert len(result.invalid) == 50
    assert {bad.file for bad in result.invalid.values()} == {"templates/bad.yaml"}


def test_a_tree_loaded_twice_is_loaded_once() -> None:
    tree = DictTree(GOOD)
    first = load_stacks(repo_config(), tree)
    reads = len(tree.reads)
    again = load_stacks(repo_config(), tree)
    assert again == first and len(tree.reads) == reads
    other = load_stacks(repo_config(stack_prefix="p-"), tree)  # another config: loaded anew
    assert list(other.stacks) == ["p-good"]


def test_more_deployment_files_than_the_limit_refuse_the_whole_commit() -> None:
    files: dict[str, str | bytes] = dict(GOOD)
    for i in range(MAX_DEPLOYMENT_FILES):  # with good.yaml: one more than the limit
        files[f"deployments/s{i:04d}.yaml"] = deployment()
    tree = DictTree(files)
    with pytest.raises(CommitTooLarge) as caught:
        load_stacks(repo_config(), tree)
    message = str(caught.value)
    assert f"{MAX_DEPLOYMENT_FILES + 1:,} files match" in message
    assert "deployments/*.yaml" in message and f"{MAX_DEPLOYMENT_FILES:,}" in message
    assert tree.reads == []  # refused before reading any of them
    del files["deployments/s0000.yaml"]
    assert len(load(files).stacks) == MAX_DEPLOYMENT_FILES  # the limit itself is allowed


def test_a_commit_past_the_parse_budget_is_refused_naming_the_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(deployments_module, "MAX_COMMIT_PARSE", 5_000)
    dense = "Resources: {T: {Type: X}}\nPad: [" + ",".join(["1"] * 3000) + "]\n"
    files: dict[str, str | bytes] = {
        "templates/a.yaml": dense,
        "templates/b.yaml": dense + "# another blob\n",
        "deployments/a.yaml": deployment("templates/a.yaml"),
        "deployments/b.yaml": deployment("templates/b.yaml"),
    }
    with pytest.raises(CommitTooLarge, match=r"parsing templates/b\.yaml .* past 5,000 YAML"):
        load(files)
    del files["deployments/b.yaml"]
    assert list(load(files).stacks) == ["a"]  # one of them fits


def test_json_values_count_against_the_parse_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deployments_module, "MAX_COMMIT_PARSE", 5_000)
    dense = json.dumps({"Resources": {"T": {"Type": "X"}}, "Pad": [[1]] * 3000})
    files: dict[str, str | bytes] = {
        "templates/a.json": dense,
        "deployments/a.yaml": deployment("templates/a.json"),
    }
    with pytest.raises(CommitTooLarge, match=r"parsing templates/a\.json"):
        load(files)


HUGE = 500_000


def _short(result: LoadResult, name: str) -> InvalidStack:
    bad = result.invalid[name]
    assert len(bad.reason) <= 1000 and len(bad.file) <= 300 and len(bad.name) <= 128
    assert len(json.dumps([bad.name, bad.file, bad.reason])) < 2000
    return bad


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        pytest.param(
            f"stack-name: {'s' * HUGE}\n" + deployment(), "is not a valid", id="stack-name"
        ),
        pytest.param(
            deployment(extra=f"parameters: {{Env: {'v' * 200_000}}}"),
            "parameters.Env: the value is 200,000 characters; CloudFormation allows 4,096",
            id="parameter-value",
        ),
        pytest.param(
            deployment(extra=f"parameters:\n  ? {'K' * HUGE}\n  : v"),  # a long key is explicit
            "is not a parameter name",
            id="parameter-name",
        ),
        pytest.param(
            deployment(extra="parameters:\n" + "".join(f"  P{i}: v\n" for i in range(250))),
            "250 parameters; CloudFormation allows 200",
            id="too-many-parameters",
        ),
        pytest.param(
            deployment(extra=f"tags:\n  ? {'k' * HUGE}\n  : v"), "keys 1-128", id="tag-key"
        ),
        pytest.param(
            deployment(extra="".join(f"k{i}{'x' * 500}: 1\n" for i in range(2000))),
            "unknown key(s)",
            id="unknown-keys",
        ),
        pytest.param(
            deployment("t/" + "x" * HUGE + ".yaml"),
            "template-file-path is 500,007 characters; the limit is 300",
            id="template-path",
        ),
        pytest.param(deployment("/" + "x" * 250), "is absolute", id="absolute-template-path"),
        pytest.param(
            f"template-file-path: !{'t' * HUGE} x\n", "not valid YAML", id="yaml-error-text"
        ),
        pytest.param(
            f"a: &{'n' * HUGE} 1\n" + deployment(), "anchors are not allowed", id="anchor-name"
        ),
        pytest.param(
            "template-file-path: templates/simple.yaml\n"
            f"parameters: {{Env: {{stack-output: {'s' * HUGE}.Out}}}}\n",
            "stack-output must be",
            id="stack-output",
        ),
    ],
)
def test_a_huge_value_gets_a_short_located_reason(text: str, needle: str) -> None:
    result = load({**GOOD, "deployments/bad.yaml": text})
    assert list(result.stacks) == ["good"]
    [bad] = result.invalid.values()
    _short(result, bad.name)
    assert bad.deployment_file == "deployments/bad.yaml"
    assert needle in bad.reason, bad.reason


def test_a_huge_name_of_a_parameter_the_template_declares_is_refused_short() -> None:
    name = "P" * 100_000
    template = json.dumps({"Parameters": {name: {"Type": "String"}}, "Resources": {"T": {}}})
    result = load(
        {
            "templates/t.json": template,
            "deployments/bad.yaml": deployment(
                "templates/t.json", f"parameters:\n  ? {name}\n  : v"
            ),
        }
    )
    assert "is not a parameter name" in _short(result, "bad").reason


def test_a_huge_missing_parameter_list_is_counted_not_spelled_out() -> None:
    declared = "".join(f"  P{i}{'x' * 200}:\n    Type: String\n" for i in range(1000))
    result = load(
        {
            "templates/t.yaml": "Parameters:\n" + declared + SIMPLE_TEMPLATE,
            "deployments/bad.yaml": deployment("templates/t.yaml"),
        }
    )
    reason = _short(result, "bad").reason
    assert "and 995 more need values" in reason


def test_a_huge_file_name_gets_a_short_reason_and_name() -> None:
    path = "deployments/" + "n" * 200_000 + ".yaml"
    result = load({**GOOD, path: deployment()})
    [bad] = result.invalid.values()
    _short(result, bad.name)
    assert "its path is 200,017 characters; the limit is 300" in bad.reason
    assert bad.deployment_file == path  # kept whole: it names the file in the commit


def test_a_thousand_files_naming_one_stack_give_one_short_reason() -> None:
    files: dict[str, str | bytes] = dict(GOOD)
    for i in range(1000):
        files[f"deployments/s{i:04d}.yaml"] = deployment(extra="stack-name: shared")
    result = load(files)
    bad = _short(result, "shared")
    assert "named by more than one deployment file" in bad.reason
    assert "and 995 more" in bad.reason


def test_a_thousand_bad_files_naming_one_stack_give_one_short_reason() -> None:
    files: dict[str, str | bytes] = dict(GOOD)
    for i in range(1000):
        files[f"deployments/s{i:04d}.yaml"] = (
            f"stack-name: shared\ntemplate-file-path: templates/missing-{i}-{'x' * 200}.yaml\n"
        )
    bad = _short(load(files), "shared")
    assert "deployments/s0001.yaml names the same stack" in bad.reason
    assert "and 998 more" in bad.reason


def test_resolve_reasons_are_short() -> None:
    spec = _app_spec()
    spec = replace(spec, parameters=(("VpcId", OutputRef("n" * 128, "O" * 255)),))
    with pytest.raises(UnresolvedOutput) as caught:
        resolve(spec, lambda stack: {})
    assert len(str(caught.value)) < 1000


@pytest.mark.parametrize("value", ["1" * 5000, "2001-13-45", "!!int x"])
def test_a_value_that_does_not_construct_fails_its_own_stack_only(value: str) -> None:
    result = load(
        {
            **GOOD,
            "deployments/bad.yaml": deployment(extra=f"tags: {{t: {value}}}"),
            "deployments/badtemplate.yaml": deployment("templates/bad.yaml"),
            "templates/bad.yaml": "Resources: {A: {Type: X, Properties: {V: " + value + "}}}\n",
        }
    )
    assert list(result.stacks) == ["good"]
    assert "cannot be read" in result.invalid["bad"].reason
    assert "cannot be read" in result.invalid["badtemplate"].reason


def test_messages_say_which_file_where_and_what_was_meant() -> None:
    result = load(
        {
            "deployments/a.yaml": "template-file-path: templates/missing.yaml\n",
            "deployments/b.yaml": "template-file-path: templates/bad.yaml\n",
            "templates/bad.yaml": "Resources: [\n",
            "deployments/c.yaml": "template_file_path: templates/t.yaml\n",
            "templates/t.yaml": "Resources: {}\n",
        }
    )
    # A template's problem names the deployment file that uses it.
    assert result.invalid["a"].reason.endswith("(the template of deployments/a.yaml)")
    # A YAML error is one line that starts with where, without PyYAML's "<unicode string>".
    b = result.invalid["b"].reason
    assert "line 2, column 1: while parsing a flow node" in b
    assert "unicode string" not in b and "\n" not in b
    # An unknown key gets a suggestion.
    assert "did you mean 'template-file-path'?" in result.invalid["c"].reason
