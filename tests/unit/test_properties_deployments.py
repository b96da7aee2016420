"""Properties of syncd.core.deployments.load_stacks over commits nobody planned for.

Whatever a commit's deployment files and templates hold (any text or bytes; YAML with
CloudFormation's short tags, JSON, deep nesting, anchors and aliases, huge numbers, odd
unicode, duplicate keys), loading never raises: every deployment file becomes a StackSpec or
an InvalidStack whose reason is one printable line and whose `file` is the file at fault.
"""

from __future__ import annotations

import json
import posixpath
import re
from typing import Any

import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from syncd.core.cfn_yaml import SafeLoader, TemplateSyntaxError, parse_template
from syncd.core.config import RepoConfig
from syncd.core.deployments import (
    MAX_FILE_BYTES,
    InvalidStack,
    LoadResult,
    OutputRef,
    StackSpec,
    load_stacks,
)
from syncd.core.text import PATH_LIMIT, REASON_LIMIT, VALUE_LIMIT, bounded, printable
from tests.support.properties import (
    CFN_TAGS,
    YAML_TAGS,
    MemoryTree,
    bounded_settings,
    dump_yaml,
    flow_yaml,
    hostile_bytes,
    hostile_text,
    json_values,
    odd_scalars,
    scalar_values,
    yaml_values,
)

GOOD_TEMPLATE = """\
Parameters:
  Env: {Type: String, Default: dev}
  Port: {Type: Number, Default: 80}
  Secret: {Type: String, NoEcho: true, Default: ""}
Conditions:
  IsProd: !Equals [!Ref Env, prod]
Resources:
  Queue:
    Type: AWS::SQS::Queue
    Properties:
      QueueName: !Sub "${Env}-queue"
      DelaySeconds: !If [IsProd, 0, 5]
Outputs:
  Arn: {Value: !GetAtt Queue.Arn}
"""
GOOD = "templates/good.yaml"
NEEDS = "templates/needs.yaml"  # GOOD, but Env must be given
ODD = "templates/odd.yaml"  # whatever the strategy puts there
LFS_POINTER = (
    "version https://git-lfs.github.com/spec/v1\n"
    "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
    "size 12345\n"
)

TEMPLATE_PATHS = [
    GOOD,
    NEEDS,
    ODD,
    "templates/lfs.yaml",
    "templates/missing.yaml",
    "templates/../templates/good.yaml",
    "./templates/good.yaml",
    "templates//good.yaml",
    "../outside.yaml",
    "templates/../../outside.yaml",
    "/etc/passwd",
    "",
    ".",
    "templates",
    "deployments/a.yaml",
    "t" * 400,
    "templates/\x1b[2J.yaml",
]


def template_paths() -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(TEMPLATE_PATHS), scalar_values(), json_values(max_leaves=4))


def parameter_values() -> st.SearchStrategy[Any]:
    return st.one_of(
        scalar_values(),
        st.lists(scalar_values(), max_size=4),
        st.sampled_from(["x" * 5000, "\u202e" * 10]),
        st.fixed_dictionaries(
            {
                "stack-output": st.one_of(
                    st.sampled_from(["net.VpcId", "a.b.c", ".x"]), scalar_values()
                )
            }
        ),
        json_values(max_leaves=6),
    )


def names() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from(["Env", "Port", "Secret", "Undeclared", "bad-name", "", "P" * 300]),
        scalar_values(),
    )


def structured_deployments() -> st.SearchStrategy[dict[Any, Any]]:
    """Deployment files with the real keys, each given good and wrong-typed values."""
    return st.fixed_dictionaries(
        {"template-file-path": template_paths()},
        optional={
            "parameters": st.one_of(
                st.dictionaries(names(), parameter_values(), max_size=5), json_values(max_leaves=5)
            ),
            "tags": st.one_of(
                st.dictionaries(
                    st.one_of(st.sampled_from(["team", "aws:x", "syncd:repo", "k" * 200]), names()),
                    scalar_values(),
                    max_size=4,
                ),
                st.just({f"t{i}": "v" for i in range(60)}),
                scalar_values(),
            ),
            "stack-name": st.one_of(
                st.sampled_from(["app", "app-x", "other", "9bad", "a" * 200, "app-" + "z" * 300]),
                scalar_values(),
            ),
            "approval": st.one_of(st.sampled_from(["auto", "manual"]), scalar_values()),
            "prune": scalar_values(),
            "on-failure": st.one_of(
                st.sampled_from(["keep", "retry", "recreate"]), scalar_values()
            ),
            "template_file_path": st.just("templates/good.yaml"),
            "unknown": json_values(max_leaves=3),
        },
    )


def valid_deployments() -> st.SearchStrategy[dict[Any, Any]]:
    """Deployment files as they should be: what the others break, and where stacks come from."""
    text = st.text(max_size=20)
    return st.fixed_dictionaries(
        {"template-file-path": st.sampled_from([GOOD, NEEDS, "./templates/good.yaml"])},
        optional={
            "parameters": st.fixed_dictionaries(
                {},
                optional={
                    "Env": st.one_of(text, st.integers(), st.lists(text, max_size=3)),
                    "Port": st.integers(0, 65535),
                    "Secret": st.one_of(
                        text,
                        st.just({"stack-output": "network.Secret"}),
                        st.just({"stack-output": "app-net.X"}),
                    ),
                },
            ),
            "tags": st.dictionaries(
                st.from_regex(r"[a-z][a-z:-]{0,20}", fullmatch=True), text, max_size=4
            ),
            "stack-name": st.from_regex(r"(app-)?[A-Za-z][A-Za-z0-9-]{0,20}", fullmatch=True),
            "approval": st.sampled_from(["auto", "manual"]),
            "prune": st.booleans(),
            "on-failure": st.sampled_from(["keep", "retry", "recreate"]),
        },
    )


def written(doc: dict[Any, Any], how: str) -> str:
    if how == "json":
        return json.dumps(doc, default=str)
    if how == "flow":
        return dump_yaml(doc, default_flow_style=True, width=10**6)
    return dump_yaml(doc)


# YAML's own tags first: hypothesis leans towards the start of a sampled list, and these are
# the ones that reach constructors with text they were never meant for.
SPLICED = [*YAML_TAGS, *CFN_TAGS, "&a", "*a"]


def tagged(text: str, tag: str, which: int) -> str:
    """A tag spliced in before one of the values (deployment files take no short tags)."""
    parts = text.split(": ")
    if len(parts) == 1:
        return f"{tag} {text}"
    at = 1 + which % (len(parts) - 1)
    return ": ".join(parts[:at]) + f": {tag} " + ": ".join(parts[at:])


def deployment_files() -> st.SearchStrategy[str | bytes]:
    docs = st.one_of(
        valid_deployments(),
        structured_deployments(),
        structured_deployments().map(
            lambda d: {k: v for k, v in d.items() if k != "template-file-path"}
        ),
    )
    structured = st.tuples(docs, st.sampled_from(["yaml", "json", "flow"])).map(
        lambda d: written(*d)
    )
    return st.one_of(
        structured,
        structured,  # twice: the files that get furthest into the loader
        st.tuples(structured, st.sampled_from(SPLICED), st.integers(0, 8)).map(
            lambda d: tagged(*d)
        ),
        # one key of the format, its value under any tag (`tags: {t: !!bool x}`)
        st.tuples(
            st.sampled_from(["parameters: {Env: ", "tags: {t: ", "stack-name: ", "prune: "]),
            st.sampled_from(SPLICED),
            st.one_of(odd_scalars(), st.text(max_size=5).map(json.dumps)),
        ).map(lambda d: f"template-file-path: {GOOD}\n{d[0]}{d[1]} {d[2]}" + "}" * d[0].count("{")),
        structured.map(lambda t: t + t),  # every key twice
        yaml_values().map(dump_yaml),
        hostile_text(),
        hostile_bytes(),
    )


def template_files() -> st.SearchStrategy[str | bytes]:
    return st.one_of(
        st.just(GOOD_TEMPLATE),
        st.just(LFS_POINTER),
        flow_yaml().map(lambda v: f"Resources:\n  A:\n    Type: T\n    Properties: {{V: {v}}}\n"),
        hostile_text(),
        hostile_bytes(),
    )


STEMS = st.one_of(
    st.from_regex(r"[a-z][a-z0-9-]{0,7}", fullmatch=True),
    st.from_regex(r"[a-z0-9-]{1,8}", fullmatch=True),
    st.sampled_from(["app", "x.y", "with space", "\u202eevil", "\x1b[31m", "x" * 400]),
    st.text(min_size=1, max_size=12).filter(lambda s: "/" not in s),
)


# Built once: a strategy made anew inside every draw costs more than the test itself.
_DEPLOYMENT_FILES = deployment_files()
_TEMPLATE_FILES = template_files()


@st.composite
def commits(draw: st.DrawFn) -> dict[str, str | bytes]:
    stems = draw(st.lists(STEMS, min_size=1, max_size=4, unique=True))
    files: dict[str, str | bytes] = {
        GOOD: GOOD_TEMPLATE,
        NEEDS: GOOD_TEMPLATE.replace("Env: {Type: String, Default: dev}", "Env: {Type: String}"),
        ODD: draw(_TEMPLATE_FILES),
        "templates/lfs.yaml": LFS_POINTER,
        "templates/bin.dat": bytes(range(256)),
    }
    for stem in stems:
        files[f"deployments/{stem}.yaml"] = draw(_DEPLOYMENT_FILES)
    return files


def _load(files: dict[str, str | bytes], prefix: str) -> tuple[LoadResult, MemoryTree]:
    tree = MemoryTree(files)
    repo = RepoConfig(name="platform", url="https://git.example.com/p.git", stack_prefix=prefix)
    return load_stacks(repo, tree), tree


def _named_template(data: bytes) -> str | None:
    """The template a deployment file names, read as the loader reads it, if it names one."""
    try:
        doc = yaml.load(data.decode("utf-8"), Loader=SafeLoader)
    except (UnicodeDecodeError, yaml.YAMLError, ValueError, RecursionError):
        return None
    path = doc.get("template-file-path") if isinstance(doc, dict) else None
    return posixpath.normpath(path) if isinstance(path, str) and path else None


def _template_at_fault(tree: MemoryTree, path: str) -> bool:
    data = tree.files.get(path)
    if data is None or len(data) > MAX_FILE_BYTES:
        return True
    try:
        parse_template(data.decode("utf-8"))
    except (UnicodeDecodeError, TemplateSyntaxError):
        return True
    return False


def check_invalid(stack: InvalidStack, tree: MemoryTree, deployment_files: list[str]) -> None:
    reason = stack.reason
    assert reason.strip(), stack
    assert printable(reason) == reason, reason
    assert len(reason) <= REASON_LIMIT
    assert stack.file and printable(stack.file) == stack.file and len(stack.file) <= PATH_LIMIT
    assert stack.deployment_file in deployment_files, stack
    if "is named by more than one deployment file" in reason:
        assert stack.file in {bounded(p, PATH_LIMIT) for p in deployment_files}, stack
        return
    if stack.file == bounded(stack.deployment_file, PATH_LIMIT):
        return
    # Not the deployment file: then its template, and the template really is bad.
    template = _named_template(tree.files[stack.deployment_file])
    assert template is not None, stack
    assert stack.file == bounded(template, PATH_LIMIT), stack
    assert _template_at_fault(tree, template), stack
    if len(stack.deployment_file) <= VALUE_LIMIT:  # a long one may be cut from the reason
        assert f"(the template of {printable(stack.deployment_file)})" in reason, stack


def check_spec(spec: StackSpec, tree: MemoryTree, prefix: str) -> None:
    assert spec.name.startswith(prefix)
    assert spec.template_body == tree.files[spec.template_file].decode("utf-8")
    assert spec.deployment_file in tree.files
    for key, value in spec.parameters:
        assert re.fullmatch(r"[A-Za-z0-9]{1,255}", key), key
        assert isinstance(value, OutputRef) or (isinstance(value, str) and len(value) <= 4096)
    template = parse_template(spec.template_body)
    declared = set(template.get("Parameters") or {})
    assert {k for k, _ in spec.parameters} <= declared


def accounted(path: str, result: LoadResult) -> bool:
    """Every deployment file shows up: as a stack, as an invalid one, or named in a reason
    (files naming one stack are reported together, under it)."""
    if any(s.deployment_file == path for s in result.stacks.values()):
        return True
    if any(s.deployment_file == path for s in result.invalid.values()):
        return True
    return any(bounded(path, VALUE_LIMIT) in s.reason for s in result.invalid.values())


@bounded_settings(200)
@given(commits(), st.sampled_from(["", "app-"]))
@example({"deployments/a.yaml": "template-file-path: templates/t.yaml\ntags: {t: !!bool x}\n"}, "")
@example({"deployments/a.yaml": "parameters: {P: 0x" + "f" * 5000 + "}\n"}, "")
@example(
    {
        "deployments/a.yaml": "template-file-path: templates/t.yaml\n",
        "templates/t.yaml": "Parameters: {P: {NoEcho: 0x" + "f" * 5000 + "}}\nResources: {A: 1}\n",
    },
    "",
)
@example({"deployments/a.yaml": b"template-file-path: t\x00\n"}, "")
@example({"deployments/a.yaml": "stack-name: !!int ''\n"}, "")
def test_any_commit_loads_into_stacks_and_located_invalid_files(
    files: dict[str, str | bytes], prefix: str
) -> None:
    result, tree = _load(files, prefix)
    deployment_files = sorted(p for p in files if p.startswith("deployments/"))
    for name, stack in result.invalid.items():
        assert stack.name == name
        check_invalid(stack, tree, deployment_files)
    for name, spec in result.stacks.items():
        assert spec.name == name
        assert name not in result.invalid
        check_spec(spec, tree, prefix)
    for path in deployment_files:
        if len(path) <= VALUE_LIMIT:
            assert accounted(path, result), path
    again, _ = _load(files, prefix)
    assert again == result


@bounded_settings(100)
@given(template_files(), st.sampled_from(["yaml", "json"]))
def test_a_bad_template_fails_its_stack_naming_the_template(
    template: str | bytes, how: str
) -> None:
    deployment = written({"template-file-path": ODD, "parameters": {"Env": "prod"}}, how)
    files = {"deployments/app.yaml": deployment, ODD: template}
    result, tree = _load(files, "")
    if _template_at_fault(tree, ODD):
        stack = result.invalid["app"]
        assert stack.file == ODD
        assert "deployments/app.yaml" in stack.reason
        check_invalid(stack, tree, ["deployments/app.yaml"])
    elif "app" in result.invalid:  # a good template: only the parameters can be wrong
        stack = result.invalid["app"]
        assert stack.file == "deployments/app.yaml"
        assert "parameter" in stack.reason, stack
    else:
        assert result.stacks["app"].template_body == tree.files[ODD].decode()
