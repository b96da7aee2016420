"""Deployment files (docs/deployment-files.md): from a commit's files to each stack's
desired state.

Pure. `load_stacks` reads a repo's deployment files through a `Tree` (the adapter that reads a
commit's blobs) and returns a `StackSpec` for every good one and an `InvalidStack` for every bad
one; a bad file never stops the others. `resolve` turns a spec into a `DesiredState` once the
outputs its `stack-output` parameters name are known, and gives it a content digest: the same
digest means the same desired state, which means no new version and no AWS call.

What one commit can cost is bounded, since anyone who can push chooses it: each file is read
and parsed once however many deployment files share it, and a commit past one of the limits
below (too many files, bytes or parsing) is refused whole with `CommitTooLarge`, so that nothing
from it is applied. Every reason is cut to a known length (`syncd.core.text`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import posixpath
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

import yaml

from syncd.core import capabilities, targets
from syncd.core.cfn_yaml import (
    ParseBudget,
    ParseBudgetExceeded,
    SafeLoader,
    TemplateSyntaxError,
    check_yaml,
    declared_parameters,
    no_echo_parameters,
    parse_template,
    yaml_error,
)
from syncd.core.config import Approval, OnFailure, RepoConfig, StackOptions
from syncd.core.text import PATH_LIMIT, REASON_LIMIT, bounded, did_you_mean, listed, quoted
from syncd.errors import SourceError

# What one commit of one repo may ask of syncd (docs/deployment-files.md#limits). A realistic
# big repo (2,000 stacks over a few hundred 10 KB templates) takes a tenth of each.
MAX_FILE_BYTES = 1024 * 1024  # one deployment file or template (CloudFormation's own limit)
MAX_DEPLOYMENT_FILES = 2000  # files matching a repo's deployments globs
MAX_TREE_FILES = 100_000  # files (blobs and symlinks) in the whole commit, listed to find them
MAX_COMMIT_BYTES = 64 * 1024 * 1024  # bytes read from the commit, each blob counted once
MAX_COMMIT_PARSE = 2_000_000  # YAML events and JSON values parsed, over all files
MAX_PARAMETERS = 200  # CloudFormation's limit per template
MAX_PARAMETER_VALUE = 4096  # characters; CloudFormation's limit is 4,096 bytes
_STACK_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,127}$")
_PARAMETER_NAME = re.compile(r"^[A-Za-z0-9]{1,255}$")
# `stack.Output`, the stack possibly at another place: `eu-west-1/stack.Output`,
# `222222222222/eu-west-1/stack.Output` (syncd.core.targets).
_OUTPUT_REF = re.compile(
    r"^(?:(?:\d{12}/)?[a-z]{2}(?:-[a-z]+)+-\d+/)?[A-Za-z][A-Za-z0-9-]{0,127}\.[A-Za-z0-9]{1,255}$"
)
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


class CommitTooLarge(SourceError):
    """A commit asks for more than syncd reads from one commit (the MAX_* limits): nothing of
    it is applied. The message says which limit, and where it was reached."""


class Tree(Protocol):
    """A commit's files, as the Git adapter exposes them.

    A Tree may also carry `loaded` (None at first): `load_stacks` keeps its result there, so
    that the same tree loaded twice (the Git source checks a commit's limits when it fetches
    it, then the pass loads it) costs once."""

    def paths(self) -> Iterable[str]:
        """Every file path in the commit (POSIX, from the repo root)."""
        ...

    def read(self, path: str) -> bytes:
        """A file's bytes; symlinks followed inside the repo. Raises TreeError, and
        CommitTooLarge once the commit's reads would pass MAX_COMMIT_BYTES."""
        ...

    def blob_id(self, path: str) -> str:
        """What names the file's content (its blob SHA, symlinks followed): files with the
        same id have the same bytes, so one read and one parse serve them all. Raises
        TreeError like `read`, without reading the file."""
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
    # Why the config does not let syncd apply this template (a capability it needs but is not
    # allowed), or "": the stack is blocked until the config allows it.
    capability_problem: str = ""

    @property
    def dependencies(self) -> frozenset[str]:
        return frozenset(v.stack for _, v in self.parameters if isinstance(v, OutputRef))

    def refused(self, why: object) -> str:
        """What CloudFormation said when it refused this stack's desired state (a template
        error, a parameter the template does not declare), naming the files that say it:
        `templates/app.yaml (from deployments/app.yaml): CreateChangeSet app: ...`."""
        return f"{self.template_file} (from {self.deployment_file}): {why}"


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
    """Every stack the repo's deployment files describe at one commit. Raises CommitTooLarge
    when the commit asks for more than the MAX_* limits allow (nothing of it is loaded)."""
    remembered = getattr(tree, "loaded", None)
    if isinstance(remembered, tuple) and remembered[0] == repo:
        result: LoadResult = remembered[1]
        return LoadResult(dict(result.stacks), dict(result.invalid))
    globs = [_glob_regex(p) for p in repo.deployments]
    files = sorted(p for p in tree.paths() if any(g.match(p) for g in globs))
    if len(files) > MAX_DEPLOYMENT_FILES:
        raise CommitTooLarge(
            f"{len(files):,} files match the deployments globs ({listed(repo.deployments)}), "
            f"past the limit of {MAX_DEPLOYMENT_FILES:,} deployment files for a repo"
        )
    reader = _Reader(tree)
    parsed: list[StackSpec] = []
    bad_files: dict[str, list[tuple[str, _Invalid]]] = {}
    for path in files:
        try:
            parsed.append(_load_one(repo, reader, path))
        except _Invalid as bad:
            name = repo.key_of(bad.stack_name or default_stack_name(repo, path))
            bad_files.setdefault(_name_or_bounded(name), []).append((path, bad))
    invalid: dict[str, InvalidStack] = {}
    for name, bads in bad_files.items():
        first_path, first = bads[0]
        reason = first.reason
        if len(bads) > 1:  # bad files naming one stack: say the second, count the others
            second_path, second = bads[1]
            reason += (
                f"; and {bounded(second_path, PATH_LIMIT)} names the same stack: "
                f"{bounded(second.file, PATH_LIMIT)}: {second.reason}"
            )
            if len(bads) > 2:
                reason += f"; and {len(bads) - 2:,} more: {listed(p for p, _ in bads[2:])}"
        if first.file != first_path:  # the template's problem: say which stack's file uses it
            reason += f" (the template of {bounded(first_path, PATH_LIMIT)})"
        invalid[name] = _invalid_stack(name, repo.name, first.file, reason, first_path)
    by_name: dict[str, list[StackSpec]] = {}
    for spec in parsed:
        by_name.setdefault(spec.name, []).append(spec)
    stacks: dict[str, StackSpec] = {}
    for name, specs in by_name.items():
        if len(specs) > 1 or name in invalid:
            others = [s.deployment_file for s in specs]
            if name in invalid:
                others.append(invalid[name].deployment_file)
                others.extend(p for p, _ in bad_files[name][1:])
            others.sort()
            invalid[name] = _invalid_stack(
                name,
                repo.name,
                others[0],
                f"stack {name!r} is named by more than one deployment file: {listed(others)}",
                others[0],
            )
            continue
        stacks[name] = specs[0]
    result = LoadResult(_canonical_refs(repo, stacks), invalid)
    with contextlib.suppress(AttributeError):
        tree.loaded = (repo, result)  # type: ignore[attr-defined]
    return result


def _name_or_bounded(name: str) -> str:
    """An invalid file's stack name as the journal keeps it: a long one is cut."""
    return name if len(name) <= 128 else bounded(name, 128)


def _invalid_stack(
    name: str, repo: str, file: str, reason: str, deployment_file: str
) -> InvalidStack:
    """Every field bounded: a repo's paths and values reach the journal and logs through it."""
    return InvalidStack(
        name,
        repo,
        bounded(file, PATH_LIMIT),
        bounded(reason, REASON_LIMIT),
        deployment_file,
    )


@dataclass(frozen=True)
class _Template:
    """What syncd needs from a parsed template (the parsed value itself is not kept)."""

    declared: frozenset[str]
    required: frozenset[str]
    no_echo: frozenset[str]
    capabilities: Mapping[str, str]  # each capability it needs, and what needs it


@dataclass(frozen=True)
class _Unreadable:
    """Why a blob's bytes are not a file syncd can use (not UTF-8), kept for the next reader."""

    reason: str


class _Reader:
    """One commit's files as one load reads them: each blob read, decoded and (a template)
    parsed once, however many deployment files share it, and the parsing of all files together
    within MAX_COMMIT_PARSE."""

    def __init__(self, tree: Tree) -> None:
        self.tree = tree
        self.budget = ParseBudget(MAX_COMMIT_PARSE)
        self._texts: dict[str, str | _Unreadable] = {}  # by blob id
        self._templates: dict[str, _Template | str] = {}  # by blob id; a str is the error

    def text(self, path: str, what: str, stack_name: str | None = None) -> tuple[str, str]:
        """A file's blob id and text; errors carry the stack name when it is known, so that a
        bad template is reported under its own stack (never as a missing one, which prune
        could delete)."""
        try:
            blob = self.tree.blob_id(path)
            known = self._texts.get(blob)
            if known is None:
                data = self.tree.read(path)
                if len(data) > MAX_FILE_BYTES:  # a Tree that does not check it itself
                    raise TreeError(f"is {len(data)} bytes; the limit is {MAX_FILE_BYTES}")
                try:
                    known = data.decode("utf-8")
                except UnicodeDecodeError:
                    known = _Unreadable("is not UTF-8 text")
                self._texts[blob] = known
        except TreeError as exc:
            raise _Invalid(path, f"{what} {exc}", stack_name) from None
        if isinstance(known, _Unreadable):
            raise _Invalid(path, f"{what} {known.reason}", stack_name)
        return blob, known

    def deployment(self, path: str, text: str) -> object:
        try:
            check_yaml(text, anchors=False, budget=self.budget)  # syncd's format: no anchors
            return yaml.load(text, Loader=SafeLoader)
        except yaml.YAMLError as exc:
            raise _Invalid(path, f"not valid YAML: {yaml_error(exc)}") from None
        except TemplateSyntaxError as exc:
            raise _Invalid(path, str(exc)) from None
        except ParseBudgetExceeded as exc:
            raise self._too_much(path, exc) from None
        except ValueError as exc:  # a value that does not construct: 2001-13-45, 5000 digits
            raise _Invalid(
                path, f"has a value that cannot be read: {bounded(str(exc), 200)}"
            ) from None

    def template(self, path: str, blob: str, body: str, stack_name: str) -> _Template:
        known = self._templates.get(blob)
        if known is None:
            try:
                template = parse_template(body, self.budget)
            except TemplateSyntaxError as exc:
                known = f"template {exc}"
            except ParseBudgetExceeded as exc:
                raise self._too_much(path, exc) from None
            else:
                known = _Template(
                    declared_parameters(template),
                    _required_parameters(template),
                    no_echo_parameters(template),
                    capabilities.needed(template),
                )
            self._templates[blob] = known
        if isinstance(known, str):
            raise _Invalid(path, known, stack_name)
        return known

    def _too_much(self, path: str, exc: ParseBudgetExceeded) -> CommitTooLarge:
        return CommitTooLarge(
            f"parsing {bounded(path, PATH_LIMIT)} takes the commit past {exc.limit:,} YAML "
            "events and JSON values, the limit for all its deployment files and templates"
        )


def _canonical_refs(repo: RepoConfig, stacks: dict[str, StackSpec]) -> dict[str, StackSpec]:
    """Each `stack-output` as the key of the stack it names: relative to the place of the stack
    that names it (`network.X` at its own place, `eu-west-1/network.X` in that region of its
    account), and naming a stack of this repo with or without its prefix."""
    out: dict[str, StackSpec] = {}
    for name, spec in stacks.items():
        params: list[tuple[str, ParamValue]] = []
        at = spec.options.target.place
        for key, value in spec.parameters:
            if isinstance(value, OutputRef):
                where, _, bare = value.stack.rpartition("/")
                whole = targets.resolve(value.stack, at, repo.home)
                if whole not in stacks and repo.stack_prefix:
                    with contextlib.suppress(ValueError):  # too long with the prefix
                        prefixed = f"{where}/{repo.stack_prefix}{bare}".lstrip("/")
                        if targets.resolve(prefixed, at, repo.home) in stacks:
                            whole = targets.resolve(prefixed, at, repo.home)
                value = OutputRef(whole, value.output)
            params.append((key, value))
        out[name] = replace(spec, parameters=tuple(params))
    return out


class _Invalid(Exception):
    def __init__(self, file: str, reason: str, stack_name: str | None = None) -> None:
        self.file = file
        self.reason = reason
        self.stack_name = stack_name


def _load_one(repo: RepoConfig, reader: _Reader, path: str) -> StackSpec:
    if len(path) > PATH_LIMIT:
        raise _Invalid(path, f"its path is {len(path):,} characters; the limit is {PATH_LIMIT}")
    _, text = reader.text(path, "deployment file")
    doc = reader.deployment(path, text)
    if not isinstance(doc, dict):
        raise _Invalid(path, "a deployment file must be a mapping with template-file-path")
    stack_name = doc.get("stack-name")
    if stack_name is not None and (
        not isinstance(stack_name, str) or not _STACK_NAME.match(stack_name)
    ):
        raise _Invalid(
            path, f"stack-name {quoted(stack_name)} is not a valid CloudFormation stack name"
        )
    name = stack_name or default_stack_name(repo, path)
    if not _STACK_NAME.match(name):
        raise _Invalid(path, f"{quoted(name)} is not a valid stack name; set stack-name", name)
    if not name.startswith(repo.stack_prefix):
        raise _Invalid(
            path,
            f"stack-name {quoted(name)} is not one of this repo's stacks: with stack_prefix "
            f"{repo.stack_prefix!r}, every stack name it uses starts with it",
            name,
        )
    unknown = sorted(str(k) for k in doc if k not in _DEPLOYMENT_KEYS)
    if unknown:
        hint = did_you_mean(unknown[0], _DEPLOYMENT_KEYS)
        raise _Invalid(path, f"unknown key(s) {listed(unknown)}{hint}", name)
    template_file = doc.get("template-file-path")
    if not isinstance(template_file, str) or not template_file:
        raise _Invalid(path, "template-file-path is required", name)
    template_file = _inside_repo(path, template_file, name)
    blob, body = reader.text(template_file, "template", name)
    template = reader.template(template_file, blob, body, name)
    parameters = _parameters(path, doc.get("parameters"), name)
    undeclared = sorted(k for k, _ in parameters if k not in template.declared)
    if undeclared:
        raise _Invalid(
            path,
            f"parameters {listed(undeclared)} are not declared in {bounded(template_file)}",
            name,
        )
    missing = sorted(template.required - {k for k, _ in parameters}, key=str)
    if missing:
        raise _Invalid(path, f"template parameters {listed(missing)} need values", name)
    tags = _tags(path, doc.get("tags"), name)
    options, notes = _options(path, doc, repo.options_for(name), name)
    return StackSpec(
        name=repo.key_of(name),
        repo=repo.name,
        deployment_file=path,
        template_file=template_file,
        template_body=body,
        parameters=parameters,
        tags=tags,
        options=options,
        no_echo=template.no_echo,
        notes=notes,
        capability_problem=capabilities.missing(template.capabilities, options.capabilities) or "",
    )


def _inside_repo(deployment_file: str, template_file: str, name: str) -> str:
    if len(template_file) > PATH_LIMIT:
        raise _Invalid(
            deployment_file,
            f"template-file-path is {len(template_file):,} characters; the limit is {PATH_LIMIT}",
            name,
        )
    if template_file.startswith("/"):
        raise _Invalid(
            deployment_file, f"template-file-path {quoted(template_file)} is absolute", name
        )
    normal = posixpath.normpath(template_file)
    if normal == ".." or normal.startswith("../"):
        raise _Invalid(
            deployment_file, f"template-file-path {quoted(template_file)} is outside the repo", name
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
    if len(raw) > MAX_PARAMETERS:
        raise _Invalid(
            path, f"{len(raw):,} parameters; CloudFormation allows {MAX_PARAMETERS}", name
        )
    out: list[tuple[str, ParamValue]] = []
    for raw_key, value in raw.items():
        key = str(raw_key)
        if not _PARAMETER_NAME.match(key):
            raise _Invalid(
                path,
                f"parameters: {quoted(key)} is not a parameter name (1 to 255 letters and digits)",
                name,
            )
        scalar = _scalar(value)
        if (
            scalar is None
            and isinstance(value, list)
            and all(_scalar(v) is not None for v in value)
        ):
            scalar = ",".join(str(_scalar(v)) for v in value)
        if scalar is not None:
            if len(scalar) > MAX_PARAMETER_VALUE:
                raise _Invalid(
                    path,
                    f"parameters.{key}: the value is {len(scalar):,} characters; "
                    f"CloudFormation allows {MAX_PARAMETER_VALUE:,}",
                    name,
                )
            out.append((key, scalar))
        elif isinstance(value, dict) and set(value) == {"stack-output"}:
            ref = value["stack-output"]
            if not isinstance(ref, str) or not _OUTPUT_REF.match(ref):
                raise _Invalid(
                    path,
                    f"parameters.{key}: stack-output must be 'stack.OutputName' (the stack "
                    "possibly as REGION/stack or ACCOUNT/REGION/stack)",
                    name,
                )
            stack, output = ref.split(".", 1)
            out.append((key, OutputRef(stack, output)))
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


MAX_TAGS = 49  # CloudFormation's 50, less syncd's ownership tag (syncd.core.ownership)


def _tags(path: str, raw: object, name: str) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise _Invalid(path, "tags must be a mapping", name)
    if len(raw) > MAX_TAGS:
        raise _Invalid(
            path, f"{len(raw)} tags; CloudFormation allows 50, one of them syncd's own", name
        )
    out = []
    for raw_key, value in raw.items():
        key = str(raw_key)
        text = _scalar(value)
        if text is None or not 1 <= len(key) <= 128 or len(text) > 256:
            raise _Invalid(
                path, f"tags.{bounded(key, 128)}: keys 1-128 and values up to 256 characters", name
            )
        if key.startswith(("aws:", "syncd:")):
            raise _Invalid(
                path, f"tags.{bounded(key, 128)}: the aws: and syncd: prefixes are reserved", name
            )
        out.append((key, text))
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
