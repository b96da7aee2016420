"""Deployment files (SPEC §4): from a commit's files to each stack's desired state.

Pure. `load_stacks` reads a repo's deployment files through a `Tree` (the adapter that reads a
commit's blobs) and returns a `StackSpec` for every good one and an `InvalidStack` for every bad
one; a bad file never stops the others. `resolve` turns a spec into a `DesiredState` once the
outputs its `stack-output` parameters name are known, and gives it a content digest: the same
digest means the same desired state, which means no new version and no AWS call.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

import yaml

from syncd.core.cfn_yaml import (
    SafeLoader,
    TemplateSyntaxError,
    check_yaml,
    declared_parameters,
    no_echo_parameters,
    parse_template,
)
from syncd.core.config import Approval, OnFailure, RepoConfig, StackOptions

MAX_FILE_BYTES = 1024 * 1024
_STACK_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,127}$")
_DEPLOYMENT_KEYS = {
    "template-file-path",
    "parameters",
    "tags",
    "stack-name",
    "approval",
    "prune",
    "on-failure",
}


class TreeError(ValueError):
    """A file cannot be read from the commit: missing, outside the repo, too large, binary."""


class Tree(Protocol):
    """A commit's files, as the Git adapter exposes them."""

    def paths(self) -> Iterable[str]:
        """Every file path in the commit (POSIX, from the repo root)."""
        ...

    def read(self, path: str) -> bytes:
        """A file's bytes; symlinks followed inside the repo. Raises TreeError."""
        ...


@dataclass(frozen=True)
class OutputRef:
    """A parameter whose value is another stack's output (`stack-output: stack.Output`)."""

    stack: str
    output: str

    def __str__(self) -> str:
        return f"{self.stack}.{self.output}"


ParamValue = str | OutputRef


@dataclass(frozen=True)
class StackSpec:
    """A stack as one commit describes it, before `stack-output` values are known."""

    name: str
    repo: str
    deployment_file: str
    template_file: str
    template_body: str
    parameters: tuple[tuple[str, ParamValue], ...]
    tags: tuple[tuple[str, str], ...]
    options: StackOptions
    no_echo: frozenset[str] = frozenset()
    notes: tuple[str, ...] = ()

    @property
    def dependencies(self) -> frozenset[str]:
        return frozenset(v.stack for _, v in self.parameters if isinstance(v, OutputRef))


@dataclass(frozen=True)
class InvalidStack:
    """A deployment file that cannot be applied, and why (`file` is where the problem is: the
    deployment file itself or its template)."""

    name: str
    repo: str
    file: str
    reason: str
    deployment_file: str = ""


@dataclass(frozen=True)
class LoadResult:
    stacks: Mapping[str, StackSpec]
    invalid: Mapping[str, InvalidStack]


class UnresolvedOutput(ValueError):
    """A `stack-output` names a stack or output that does not exist (yet)."""


@dataclass(frozen=True)
class DesiredState:
    """A stack's full desired state at a commit, with its digest."""

    spec: StackSpec
    parameters: tuple[tuple[str, str], ...]
    digest: str

    @property
    def name(self) -> str:
        return self.spec.name

    def redacted_parameters(self) -> dict[str, str]:
        """Parameters as they may appear in logs, the journal and plans."""
        return {k: ("****" if k in self.spec.no_echo else v) for k, v in self.parameters}


def matches(path: str, patterns: Iterable[str]) -> bool:
    """Whether `path` matches one of the repo's deployment globs (`*` stays in one folder)."""
    return any(_glob_regex(p).match(path) for p in patterns)


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("^" + "".join(out) + "$")


def default_stack_name(repo: RepoConfig, deployment_file: str) -> str:
    stem = posixpath.splitext(posixpath.basename(deployment_file))[0]
    return repo.stack_prefix + stem


def load_stacks(repo: RepoConfig, tree: Tree) -> LoadResult:
    """Every stack the repo's deployment files describe at one commit."""
    files = sorted(p for p in tree.paths() if matches(p, repo.deployments))
    parsed: list[StackSpec] = []
    invalid: dict[str, InvalidStack] = {}
    for path in files:
        try:
            parsed.append(_load_one(repo, tree, path))
        except _Invalid as bad:
            name = bad.stack_name or default_stack_name(repo, path)
            if name in invalid:  # two bad files name one stack: say both
                earlier = invalid[name]
                invalid[name] = InvalidStack(
                    name,
                    repo.name,
                    earlier.file,
                    f"{earlier.reason}; and {path} names the same stack: {bad.file}: {bad.reason}",
                    earlier.deployment_file,
                )
            else:
                invalid[name] = InvalidStack(name, repo.name, bad.file, bad.reason, path)
    by_name: dict[str, list[StackSpec]] = {}
    for spec in parsed:
        by_name.setdefault(spec.name, []).append(spec)
    stacks: dict[str, StackSpec] = {}
    for name, specs in by_name.items():
        if len(specs) > 1 or name in invalid:
            others = [s.deployment_file for s in specs]
            if name in invalid:
                others.append(invalid[name].file)
            first = sorted(others)[0]
            invalid[name] = InvalidStack(
                name,
                repo.name,
                first,
                f"stack {name!r} is named by more than one deployment file: "
                + ", ".join(sorted(others)),
                first,
            )
            continue
        stacks[name] = specs[0]
    return LoadResult(_canonical_refs(repo, stacks), invalid)


def _canonical_refs(repo: RepoConfig, stacks: dict[str, StackSpec]) -> dict[str, StackSpec]:
    """Let `stack-output: network.X` name a stack of this repo with or without its prefix."""
    out: dict[str, StackSpec] = {}
    for name, spec in stacks.items():
        params: list[tuple[str, ParamValue]] = []
        for key, value in spec.parameters:
            if (
                isinstance(value, OutputRef)
                and value.stack not in stacks
                and repo.stack_prefix + value.stack in stacks
            ):
                value = OutputRef(repo.stack_prefix + value.stack, value.output)
            params.append((key, value))
        out[name] = replace(spec, parameters=tuple(params))
    return out


class _Invalid(Exception):
    def __init__(self, file: str, reason: str, stack_name: str | None = None) -> None:
        self.file = file
        self.reason = reason
        self.stack_name = stack_name


def _read_text(tree: Tree, path: str, what: str, stack_name: str | None = None) -> str:
    """A file's text; errors carry the stack name when it is known, so that a bad template
    is reported under its own stack (never as a missing one, which prune could delete)."""
    try:
        data = tree.read(path)
    except TreeError as exc:
        raise _Invalid(path, f"{what} {exc}", stack_name) from exc
    if len(data) > MAX_FILE_BYTES:
        raise _Invalid(
            path, f"{what} is {len(data)} bytes; the limit is {MAX_FILE_BYTES}", stack_name
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Invalid(path, f"{what} is not UTF-8 text", stack_name) from exc


def _load_one(repo: RepoConfig, tree: Tree, path: str) -> StackSpec:
    text = _read_text(tree, path, "deployment file")
    try:
        check_yaml(text, anchors=False)  # syncd's own format: no anchors, no aliases
        doc = yaml.load(text, Loader=SafeLoader)
    except yaml.YAMLError as exc:
        raise _Invalid(path, f"not valid YAML: {exc}") from exc
    except TemplateSyntaxError as exc:
        raise _Invalid(path, str(exc)) from None
    if not isinstance(doc, dict):
        raise _Invalid(path, "a deployment file must be a mapping with template-file-path")
    stack_name = doc.get("stack-name")
    if stack_name is not None and (
        not isinstance(stack_name, str) or not _STACK_NAME.match(stack_name)
    ):
        raise _Invalid(path, f"stack-name {stack_name!r} is not a valid CloudFormation stack name")
    name = stack_name or default_stack_name(repo, path)
    if not _STACK_NAME.match(name):
        raise _Invalid(path, f"{name!r} is not a valid stack name; set stack-name", name)
    unknown = sorted(str(k) for k in doc if k not in _DEPLOYMENT_KEYS)
    if unknown:
        raise _Invalid(path, f"unknown key(s) {', '.join(unknown)}", name)
    template_file = doc.get("template-file-path")
    if not isinstance(template_file, str) or not template_file:
        raise _Invalid(path, "template-file-path is required", name)
    template_file = _inside_repo(path, template_file, name)
    body = _read_text(tree, template_file, "template", name)
    try:
        template = parse_template(body)
    except TemplateSyntaxError as exc:
        raise _Invalid(template_file, f"template {exc}", name) from exc
    parameters = _parameters(path, doc.get("parameters"), name)
    declared = declared_parameters(template)
    undeclared = sorted(k for k, _ in parameters if k not in declared)
    if undeclared:
        raise _Invalid(
            path, f"parameters {', '.join(undeclared)} are not declared in {template_file}", name
        )
    missing = sorted(_required_parameters(template) - {k for k, _ in parameters})
    if missing:
        raise _Invalid(path, f"template parameters {', '.join(missing)} need values", name)
    tags = _tags(path, doc.get("tags"), name)
    options, notes = _options(path, doc, repo.options_for(name), name)
    return StackSpec(
        name=name,
        repo=repo.name,
        deployment_file=path,
        template_file=template_file,
        template_body=body,
        parameters=parameters,
        tags=tags,
        options=options,
        no_echo=no_echo_parameters(template),
        notes=notes,
    )


def _inside_repo(deployment_file: str, template_file: str, name: str) -> str:
    if template_file.startswith("/"):
        raise _Invalid(deployment_file, f"template-file-path {template_file!r} is absolute", name)
    normal = posixpath.normpath(template_file)
    if normal == ".." or normal.startswith("../"):
        raise _Invalid(
            deployment_file, f"template-file-path {template_file!r} is outside the repo", name
        )
    return normal


def _scalar(value: object) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


def _parameters(path: str, raw: object, name: str) -> tuple[tuple[str, ParamValue], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise _Invalid(path, "parameters must be a mapping", name)
    out: list[tuple[str, ParamValue]] = []
    for key, value in raw.items():
        scalar = _scalar(value)
        if scalar is not None:
            out.append((str(key), scalar))
        elif isinstance(value, list) and all(_scalar(v) is not None for v in value):
            out.append((str(key), ",".join(str(_scalar(v)) for v in value)))
        elif isinstance(value, dict) and set(value) == {"stack-output"}:
            ref = value["stack-output"]
            if not isinstance(ref, str) or not re.match(r"^[A-Za-z][A-Za-z0-9-]*\.\w+$", ref):
                raise _Invalid(
                    path, f"parameters.{key}: stack-output must be 'stack.OutputName'", name
                )
            stack, output = ref.split(".", 1)
            out.append((str(key), OutputRef(stack, output)))
        else:
            raise _Invalid(
                path, f"parameters.{key}: must be a string, a list, or {{stack-output: ...}}", name
            )
    return tuple(sorted(out))


def _required_parameters(template: Mapping[str, object]) -> frozenset[str]:
    params = template.get("Parameters")
    if not isinstance(params, dict):
        return frozenset()
    return frozenset(
        k for k, spec in params.items() if isinstance(spec, dict) and "Default" not in spec
    )


def _tags(path: str, raw: object, name: str) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise _Invalid(path, "tags must be a mapping", name)
    if len(raw) > 50:
        raise _Invalid(path, f"{len(raw)} tags; CloudFormation allows 50", name)
    out = []
    for key, value in raw.items():
        text = _scalar(value)
        if text is None or not 1 <= len(str(key)) <= 128 or len(text) > 256:
            raise _Invalid(path, f"tags.{key}: keys 1-128 and values up to 256 characters", name)
        if str(key).startswith("aws:"):
            raise _Invalid(path, f"tags.{key}: the aws: prefix is reserved", name)
        out.append((str(key), text))
    return tuple(sorted(out))


def _options(
    path: str, doc: Mapping[str, object], base: StackOptions, name: str
) -> tuple[StackOptions, tuple[str, ...]]:
    """A deployment file may make its stack stricter than the config, never looser."""
    notes: list[str] = []
    approval, prune, on_failure = base.approval, base.prune, base.on_failure
    if "approval" in doc:
        try:
            asked = Approval(str(doc["approval"]))
        except ValueError as exc:
            raise _Invalid(path, "approval must be auto or manual", name) from exc
        if asked is Approval.MANUAL:
            approval = Approval.MANUAL
        elif base.approval is Approval.MANUAL:
            notes.append("approval: auto in the deployment file is ignored; the config says manual")
    if "prune" in doc:
        if not isinstance(doc["prune"], bool):
            raise _Invalid(path, "prune must be true or false", name)
        if not doc["prune"]:
            prune = False
        elif not base.prune:
            notes.append("prune: true in the deployment file is ignored; the config says false")
    if "on-failure" in doc:
        try:
            asked_failure = OnFailure(str(doc["on-failure"]))
        except ValueError as exc:
            raise _Invalid(path, "on-failure must be keep, retry or recreate", name) from exc
        if asked_failure.strictness >= base.on_failure.strictness:
            on_failure = asked_failure
        else:
            notes.append(
                f"on-failure: {asked_failure.value} in the deployment file is ignored; "
                f"the config says {base.on_failure.value}"
            )
    options = replace(base, approval=approval, on_failure=on_failure, prune=prune)
    return options, tuple(notes)


def resolve(spec: StackSpec, outputs_of: Callable[[str], Mapping[str, str] | None]) -> DesiredState:
    """The desired state with `stack-output` values filled in; raises UnresolvedOutput."""
    params: list[tuple[str, str]] = []
    for key, value in spec.parameters:
        if isinstance(value, OutputRef):
            outputs = outputs_of(value.stack)
            if outputs is None:
                raise UnresolvedOutput(f"parameters.{key}: stack {value.stack!r} is not deployed")
            if value.output not in outputs:
                raise UnresolvedOutput(
                    f"parameters.{key}: stack {value.stack!r} has no output {value.output!r}"
                )
            params.append((key, outputs[value.output]))
        else:
            params.append((key, value))
    resolved = tuple(params)
    return DesiredState(spec, resolved, digest_of(spec, resolved))


def digest_of(spec: StackSpec, parameters: tuple[tuple[str, str], ...]) -> str:
    """A stable digest of everything CloudFormation is asked to deploy for the stack."""
    canonical = json.dumps(
        {
            "template": spec.template_body,
            "parameters": [list(p) for p in parameters],
            "tags": [list(t) for t in spec.tags],
            "capabilities": sorted(spec.options.capabilities),
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()
