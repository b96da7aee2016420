"""The configuration file (docs/configuration.md): parse, validate and resolve it into frozen
values.

Pure: it takes the file's text and folder and returns a `Config`, or raises `ConfigError` listing
every problem at once with its key path. Unknown keys are errors, so a typo never silently turns
into a default. Relative paths are resolved against the config file's folder.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import yaml

from syncd.core import capabilities
from syncd.core.cfn_yaml import SafeLoader, located, yaml_error
from syncd.core.events import EVENT_TYPES
from syncd.core.targets import (
    Place,
    Target,
    account_of_role,
    is_account,
    is_region,
    name_of,
    stack_key,
)
from syncd.core.text import bounded, did_you_mean, quoted
from syncd.errors import ConfigError

T = TypeVar("T")


class Approval(StrEnum):
    AUTO = "auto"
    MANUAL = "manual"


class OnFailure(StrEnum):
    KEEP = "keep"  # wait for a new commit
    RETRY = "retry"  # back off and try the same version again
    RECREATE = "recreate"  # retry, and delete + recreate a stack left in ROLLBACK_COMPLETE

    @property
    def strictness(self) -> int:
        return {OnFailure.KEEP: 2, OnFailure.RETRY: 1, OnFailure.RECREATE: 0}[self]


class OnDrift(StrEnum):
    REPORT = "report"  # show the drift a check found; changes are applied as ever
    BLOCK = "block"  # no change set until `syncd drift accept` (a sync blocker)


# None by default: a template that creates IAM resources, names them or expands macros is
# applied only where the config's owner allows it (syncd.core.capabilities), not wherever a
# repo writer asks.
DEFAULT_CAPABILITIES: tuple[str, ...] = ()
KNOWN_CAPABILITIES = frozenset(capabilities.ALL)
# Stacks worked on at once, across all repos. Waiting on CloudFormation costs no call of its
# own (one shared look serves every waiter), so this can be large.
DEFAULT_CONCURRENCY = 50


@dataclass(frozen=True)
class StackOptions:
    """Per-stack behaviour: from `defaults`, overridden by a repo, then by `repos[].stacks`."""

    capabilities: tuple[str, ...] = DEFAULT_CAPABILITIES
    approval: Approval = Approval.AUTO
    on_failure: OnFailure = OnFailure.KEEP
    prune: bool = False
    # Take over a stack that exists and that syncd did not create (see syncd.core.ownership).
    adopt: bool = False
    # Seconds between two drift checks of the deployed stack (DetectStackDrift); None: none.
    drift_interval: float | None = None
    on_drift: OnDrift = OnDrift.REPORT
    # Where the stack is deployed: the top-level `aws`, then a repo's and a stack's `aws`.
    target: Target = field(default_factory=Target)


# The keys of StackOptions, as they are written in the config.
OPTION_KEYS = frozenset(
    {"capabilities", "approval", "on_failure", "prune", "adopt", "drift_interval", "on_drift"}
)


@dataclass(frozen=True)
class AwsConfig:
    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None
    embedded: bool = False
    role_arn: str | None = None
    template_bucket: str | None = None  # s3://bucket/prefix for templates over 51,200 bytes
    wait_poll: float = 5.0  # the longest pause between two looks at a running operation
    calls_per_second: float | None = None  # the call budget's ceiling (None: 20; embedded: none)
    external_id: str | None = None
    session_name: str | None = None
    account_id: str | None = None

    @property
    def target(self) -> Target:
        """The default target: where a stack goes when neither its repo nor it says."""
        return Target(
            region=self.region,
            profile=self.profile,
            role_arn=self.role_arn,
            external_id=self.external_id,
            session_name=self.session_name,
            account_id=self.account_id,
            template_bucket=self.template_bucket,
        )


# The keys of `aws` set once for the daemon, and those a repo or a stack may set too.
DAEMON_AWS_KEYS = frozenset({"endpoint_url", "embedded", "wait_poll", "calls_per_second"})
TARGET_KEYS = frozenset(
    {
        "region",
        "profile",
        "role_arn",
        "external_id",
        "session_name",
        "account_id",
        "template_bucket",
    }
)


@dataclass(frozen=True)
class BackupConfig:
    url: str | None = None
    interval: float = 5.0
    sse: str | None = None
    kms_key_id: str | None = None
    # The secret that signs the backup's checkpoints; kept off the bucket (syncd.journal.auth).
    key_file: Path | None = None


@dataclass(frozen=True)
class HttpConfig:
    listen: str | None = None
    # The names a request's Host header may give (lower case, no port); None: any.
    allowed_hosts: tuple[str, ...] | None = None
    dashboard: bool = True  # the read-only pages (syncd.web)
    token_file: Path | None = None  # the pages need this bearer token ...
    users_file: Path | None = None  # ... or one of these users' passwords (user:password lines)


FORGES = ("github", "gitlab", "gitea", "bitbucket")
# Each forge's public API, where a commit status is posted (Gitea and Forgejo: the server's own).
FORGE_APIS = {
    "github": "https://api.github.com",
    "gitlab": "https://gitlab.com/api/v4",
    "bitbucket": "https://api.bitbucket.org/2.0",
}


@dataclass(frozen=True)
class CommitStatusConfig:
    """A repo's `notify.commit_status`: where its commits' statuses are posted, and how."""

    forge: str  # one of FORGES
    repository: str  # owner/name (GitLab: the project's path or id; Bitbucket: workspace/slug)
    token_file: Path
    api_url: str
    per: str = "stack"  # a status per stack (context <context>/<stack>), or one per commit
    context: str = "syncd"
    target_url: str | None = None  # a link on each status (Bitbucket needs one)


@dataclass(frozen=True)
class WebhookConfig:
    """An event receiver (`notify.webhooks`): CloudEvents JSON, or a Slack-style `{"text"}`."""

    name: str
    url: str | None = None
    url_file: Path | None = None  # a URL that is itself a secret (Slack's): read from a file
    format: str = "cloudevents"  # or "slack"
    secret_file: Path | None = None  # HMAC-SHA256 key of X-Syncd-Signature-256
    events: tuple[str, ...] = EVENT_TYPES
    repos: tuple[str, ...] | None = None  # None: every repo's events, and the daemon's own
    timeout: float = 10.0


@dataclass(frozen=True)
class VerifyConfig:
    """A repo's `verify`: only commits signed by these keys are applied."""

    allowed_signers_file: Path | None = None  # SSH signatures (ssh-keygen's allowed_signers)
    keyring: Path | None = None  # OpenPGP public keys (armored or binary)


@dataclass(frozen=True)
class RepoConfig:
    name: str
    url: str
    branch: str = "main"
    poll_interval: float = 60.0
    watch: bool = False
    webhook_secret_file: Path | None = None
    deployments: tuple[str, ...] = ("deployments/*.yaml",)
    stack_prefix: str = ""
    options: StackOptions = StackOptions()
    stack_options: Mapping[str, StackOptions] = field(default_factory=dict)
    init_from: Path | None = None  # local url only: create the repo from this folder if missing
    # The default target's place: stack keys name a stack's place relative to it.
    home: Place = field(default_factory=lambda: Place(None, None))
    commit_status: CommitStatusConfig | None = None
    webhooks: tuple[WebhookConfig, ...] = ()  # this repo's own receivers
    verify: VerifyConfig | None = None

    def options_for(self, stack: str) -> StackOptions:
        """The options of one stack (by its name or its key). A key of `stacks` names a stack
        with or without the repo's prefix: one that starts with the prefix is a whole name, any
        other gets the prefix. So with the prefix `team-`, the options of `team-db` are never
        those of `team-team-db`."""
        stack_name = name_of(stack)
        for key, options in self.stack_options.items():
            whole = key if key.startswith(self.stack_prefix) else self.stack_prefix + key
            if whole == stack_name:
                return options
        return self.options

    def key_of(self, stack_name: str) -> str:
        """The key of this repo's stack `stack_name`: its name, with its place when that is
        not the default target's (syncd.core.targets)."""
        return stack_key(self.options_for(stack_name).target.place, stack_name, self.home)

    @property
    def local_path(self) -> Path | None:
        """The folder of a repo given as a path or file:// URL, else None."""
        if self.url.startswith("file://"):
            rest = self.url[len("file://") :]
            host, _, path = rest.partition("/")
            return Path("/" + path) if host in ("", "localhost") else None
        if "://" in self.url or re.match(r"^[\w.-]+@[\w.-]+:", self.url):
            return None
        return Path(self.url)


@dataclass(frozen=True)
class Config:
    source: str
    state_dir: Path
    aws: AwsConfig
    backup: BackupConfig
    http: HttpConfig
    defaults: StackOptions
    concurrency: int
    repos: tuple[RepoConfig, ...]
    webhooks: tuple[WebhookConfig, ...] = ()  # notify.webhooks, beside the repos' own

    def receivers(self) -> tuple[WebhookConfig, ...]:
        """Every event receiver: the daemon's, then each repo's (for its events only)."""
        return self.webhooks + tuple(w for repo in self.repos for w in repo.webhooks)

    def targets(self) -> dict[Place, Target]:
        """Each place stacks are deployed to, and how it is reached (one way per place)."""
        out = {self.aws.target.place: self.aws.target}
        for repo in self.repos:
            for options in (repo.options, *repo.stack_options.values()):
                out.setdefault(options.target.place, options.target)
        return out

    def repo(self, name: str) -> RepoConfig:
        for repo in self.repos:
            if repo.name == name:
                return repo
        raise KeyError(name)


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_REPO_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_STACK_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,127}$")


def parse_duration(text: str) -> float:
    """'500ms', '30s', '5m', '1h' -> seconds. Raises ValueError otherwise."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration like 500ms, 30s, 5m or 1h")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds > MAX_DURATION:  # a wait that long overflows the thread waits it becomes
        raise ValueError(f"{text!r} is longer than {MAX_DURATION / 3600:g}h")
    return seconds


MAX_DURATION = 30 * 24 * 3600.0


def parse_config(text: str, source: str, base_dir: Path) -> Config:
    """Parse a config file's text; `base_dir` anchors its relative paths."""
    reader = _Reader(base_dir)
    try:
        # The loader deployment files are read with: no base-60 numbers (`1:30` is text, not
        # 90), no number too long to print, and an explicit tag that cannot be read is a YAML
        # error at its line and column, not a crash.
        data = yaml.load(text, Loader=SafeLoader)
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        raise ConfigError(source, [f"not valid YAML: {yaml_error(located(exc, text))}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, [f"not valid YAML: {yaml_error(exc)}"]) from None
    except RecursionError:
        raise ConfigError(source, ["not valid YAML: nested too deeply"]) from None
    if data is None:
        data = {}
    config = reader.config(data)
    if reader.problems or config is None:
        raise ConfigError(source, reader.problems)
    return Config(source=source, **config)


class _Reader:
    """Walks the parsed YAML, collecting every problem instead of stopping at the first."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.problems: list[str] = []

    def problem(self, path: str, message: str) -> None:
        # One bounded line: a problem can quote the value at fault, and a key can be anything.
        self.problems.append(bounded(f"{path}: {message}" if path else message, 400))

    def mapping(self, value: object, path: str, allowed: set[str]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(path, f"must be a mapping, not {_kind(value)}")
            return {}
        for key in value:
            if key not in allowed:
                where = _join(path, key)
                self.problem(where, "unknown key" + did_you_mean(str(key), allowed))
        return {k: v for k, v in value.items() if k in allowed}

    def get(
        self, data: dict[str, Any], key: str, path: str, convert: Callable[[object], T], default: T
    ) -> T:
        if key not in data or data[key] is None:
            return default
        where = _join(path, key)
        try:
            return convert(data[key])
        except (TypeError, ValueError, OverflowError) as exc:
            self.problem(where, str(exc))
            return default

    def path(self, value: object) -> Path:
        text = _string(value)
        try:
            p = Path(text).expanduser()
        except RuntimeError:  # `~someone` with no such user, or no home at all
            raise ValueError(f"{text!r}: cannot tell whose home ~ is") from None
        return p if p.is_absolute() else (self.base_dir / p)

    def config(self, data: object) -> dict[str, Any] | None:
        top = self.mapping(
            data,
            "",
            {"state_dir", "aws", "backup", "http", "defaults", "concurrency", "repos", "notify"},
        )
        if "state_dir" not in top:
            self.problem("state_dir", "required")
        state_dir = self.get(top, "state_dir", "", self.path, Path("."))
        aws = self.aws(top.get("aws"))
        backup = self.backup(top.get("backup"))
        http = self.http(top.get("http"))
        base = StackOptions(target=aws.target)
        defaults = self.options(top.get("defaults"), "defaults", base)
        concurrency = self.get(top, "concurrency", "", _positive_int, DEFAULT_CONCURRENCY)
        repos = tuple(
            replace(r, home=aws.target.place) for r in self.repos(top.get("repos"), defaults)
        )
        self.check_targets(aws, repos)
        notify = self.mapping(top.get("notify"), "notify", {"webhooks"})
        webhooks = self.webhooks(notify.get("webhooks"), "notify.webhooks", None)
        self.check_webhooks(webhooks, repos)
        return {
            "webhooks": webhooks,
            "state_dir": state_dir,
            "aws": aws,
            "backup": backup,
            "http": http,
            "defaults": defaults,
            "concurrency": concurrency,
            "repos": repos,
        }

    def aws(self, value: object) -> AwsConfig:
        d = self.mapping(value, "aws", set(DAEMON_AWS_KEYS | TARGET_KEYS))
        target = self.target(d, "aws", Target())
        return AwsConfig(
            region=target.region,
            profile=target.profile,
            endpoint_url=self.get(d, "endpoint_url", "aws", _http_url, None),
            embedded=self.get(d, "embedded", "aws", _bool, False),
            role_arn=target.role_arn,
            template_bucket=target.template_bucket,
            wait_poll=self.get(d, "wait_poll", "aws", _duration, 5.0),
            calls_per_second=self.get(d, "calls_per_second", "aws", _positive_number, None),
            external_id=target.external_id,
            session_name=target.session_name,
            account_id=target.account_id,
        )

    def target(self, d: dict[str, Any], path: str, base: Target) -> Target:
        """The target keys of an `aws` block over `base` (a key not given is inherited)."""
        target = Target(
            region=self.get(d, "region", path, _region, base.region),
            profile=self.get(d, "profile", path, _string, base.profile),
            role_arn=self.get(d, "role_arn", path, _role_arn, base.role_arn),
            external_id=self.get(d, "external_id", path, _external_id, base.external_id),
            session_name=self.get(d, "session_name", path, _session_name, base.session_name),
            account_id=self.get(d, "account_id", path, _account_id, base.account_id),
            template_bucket=self.get(d, "template_bucket", path, _s3_url, base.template_bucket),
        )
        for key in ("external_id", "session_name"):
            if d.get(key) is not None and not target.role_arn:
                self.problem(_join(path, key), "needs role_arn (it is sent when assuming it)")
        if "role_arn" in d and "account_id" not in d:
            target = replace(target, account_id=None)  # a new role names its own account
        if target.region != base.region and "template_bucket" not in d:
            # CloudFormation reads a template from a bucket in the stack's own region.
            target = replace(target, template_bucket=None)
        in_role = _role_account(target.role_arn)
        if target.account_id and in_role and target.account_id != in_role:
            self.problem(
                _join(path, "account_id"),
                f"{target.account_id} is not the account of role_arn ({in_role})",
            )
        return target

    def stack_aws(self, value: object, path: str, base: StackOptions) -> StackOptions:
        """A repo's or a stack's `aws` block over the target it inherits."""
        if value is None:
            return base
        d = self.mapping(value, path, set(TARGET_KEYS | DAEMON_AWS_KEYS))
        for key in sorted(DAEMON_AWS_KEYS & set(d)):
            self.problem(_join(path, key), "is set once, in the top-level aws block")
        return replace(base, target=self.target(d, path, base.target))

    def check_targets(self, aws: AwsConfig, repos: tuple[RepoConfig, ...]) -> None:
        """Every stack's place must be known from the config alone (a region when some stack
        names another, an account when a target reaches another through a profile), and each
        place is reached one way (one session and call budget per account and region)."""
        home = aws.target
        seen: dict[Place, tuple[str, Target]] = {home.place: ("aws", home)}
        for i, repo in enumerate(repos):
            where = [(f"repos[{i}].aws", repo.options.target)] + [
                (f"repos[{i}].stacks.{name}.aws", o.target)
                for name, o in repo.stack_options.items()
            ]
            for path, target in where:
                if target == home:
                    continue
                if target.region != home.region and home.region is None:
                    self.problem(
                        "aws.region",
                        f"required when a repo or stack sets another region ({path})",
                    )
                    return
                if target.profile != home.profile and target.account is None:
                    self.problem(
                        _join(path, "account_id"),
                        "required with a profile of its own and no role_arn: the account "
                        "its stacks are in must be known before syncd asks AWS",
                    )
                    continue
                other, first = seen.setdefault(target.place, (path, target))
                if first != target:
                    label = target.place.label(home.place) or "the default account and region"
                    self.problem(
                        path,
                        f"reaches {label} as {other} does, with other settings: syncd reaches "
                        "an account and region one way (one session, one call budget)",
                    )

    def backup(self, value: object) -> BackupConfig:
        d = self.mapping(value, "backup", {"url", "interval", "sse", "kms_key_id", "key_file"})
        sse = self.get(d, "sse", "backup", _one_of("AES256", "aws:kms"), None)
        kms = self.get(d, "kms_key_id", "backup", _string, None)
        if kms and sse != "aws:kms":
            self.problem("backup.kms_key_id", "needs sse: aws:kms")
        return BackupConfig(
            url=self.get(d, "url", "backup", _s3_url, None),
            interval=self.get(d, "interval", "backup", _duration, 5.0),
            sse=sse,
            kms_key_id=kms,
            key_file=self.get(d, "key_file", "backup", self.path, None),
        )

    def http(self, value: object) -> HttpConfig:
        keys = {"listen", "allowed_hosts", "dashboard", "token_file", "users_file"}
        d = self.mapping(value, "http", keys)
        return HttpConfig(
            listen=self.get(d, "listen", "http", _host_port, None),
            allowed_hosts=self.get(d, "allowed_hosts", "http", _hosts, None),
            dashboard=self.get(d, "dashboard", "http", _bool, True),
            token_file=self.get(d, "token_file", "http", self.path, None),
            users_file=self.get(d, "users_file", "http", self.path, None),
        )

    def options(self, value: object, path: str, base: StackOptions) -> StackOptions:
        d = self.mapping(value, path, set(OPTION_KEYS))
        return self.option_values(d, path, base)

    def option_values(self, d: dict[str, Any], path: str, base: StackOptions) -> StackOptions:
        return StackOptions(
            capabilities=self.get(d, "capabilities", path, _capabilities, base.capabilities),
            approval=self.get(d, "approval", path, _enum(Approval), base.approval),
            on_failure=self.get(d, "on_failure", path, _enum(OnFailure), base.on_failure),
            prune=self.get(d, "prune", path, _bool, base.prune),
            adopt=self.get(d, "adopt", path, _bool, base.adopt),
            drift_interval=self.get(
                d, "drift_interval", path, _duration_or_off, base.drift_interval
            ),
            on_drift=self.get(d, "on_drift", path, _enum(OnDrift), base.on_drift),
            target=base.target,
        )

    def repos(self, value: object, defaults: StackOptions) -> tuple[RepoConfig, ...]:
        if value is None:
            self.problem("repos", "required: at least one repo")
            return ()
        if not isinstance(value, list):
            self.problem("repos", f"must be a list, not {_kind(value)}")
            return ()
        if not value:
            self.problem("repos", "required: at least one repo")
            return ()
        repos: list[RepoConfig] = []
        seen: set[str] = set()
        for i, item in enumerate(value):
            repo = self.repo(item, f"repos[{i}]", defaults)
            if repo is None:
                continue
            if repo.name in seen:
                self.problem(f"repos[{i}].name", f"{repo.name!r} is used by another repo")
            seen.add(repo.name)
            repos.append(repo)
        return tuple(repos)

    def repo(self, value: object, path: str, defaults: StackOptions) -> RepoConfig | None:
        option_keys = set(OPTION_KEYS)
        keys = {
            "name",
            "url",
            "branch",
            "poll_interval",
            "watch",
            "webhook_secret_file",
            "deployments",
            "stack_prefix",
            "stacks",
            "init_from",
            "aws",
            "notify",
            "verify",
        } | option_keys
        d = self.mapping(value, path, keys)
        for key in ("name", "url"):
            if d.get(key) is None:  # absent, or `url:` with nothing after it
                self.problem(f"{path}.{key}", "required")
        name = self.get(d, "name", path, _repo_name, "")
        url = self.get(d, "url", path, _string, "")
        options = self.option_values({k: d[k] for k in option_keys if k in d}, path, defaults)
        options = self.stack_aws(d.get("aws"), f"{path}.aws", options)
        stacks_raw = self.mapping(d.get("stacks"), f"{path}.stacks", set(_keys(d.get("stacks"))))
        stack_options: dict[str, StackOptions] = {}
        for stack, overrides in stacks_raw.items():
            if not _STACK_NAME.match(str(stack)):
                self.problem(_join(f"{path}.stacks", stack), "is not a valid stack name")
                continue
            where = f"{path}.stacks.{stack}"
            o = self.mapping(overrides, where, set(OPTION_KEYS) | {"aws"})
            own = self.option_values(o, where, options)
            stack_options[str(stack)] = self.stack_aws(o.get("aws"), f"{where}.aws", own)
        local = bool(url) and _is_local(url)
        if local and not url.startswith("file://"):
            try:
                url = str(self.path(url))
            except ValueError as exc:
                self.problem(f"{path}.url", str(exc))
                url = ""
        init_from = self.get(d, "init_from", path, self.path, None)
        if init_from is not None and url and not local:
            self.problem(f"{path}.init_from", "only for a repo whose url is a local path")
        prefix = self.get(d, "stack_prefix", path, _text, "")
        if prefix and not re.match(r"^[A-Za-z][A-Za-z0-9-]*$", prefix):
            self.problem(f"{path}.stack_prefix", "must start with a letter; letters, digits, -")
        secret = self.get(d, "webhook_secret_file", path, self.path, None)
        branch = self.get(d, "branch", path, _branch, "main")
        poll_interval = self.get(d, "poll_interval", path, _duration, 60.0)
        watch = self.get(d, "watch", path, _bool, False)
        if watch and url and not local:
            self.problem(
                f"{path}.watch",
                "only for a repo on this machine (a path or file:// url); "
                "a remote server can call POST /hooks/<repo> instead",
            )
        default_globs: tuple[str, ...] = ("deployments/*.yaml",)
        deployments = self.get(d, "deployments", path, _globs, default_globs)
        notify = self.mapping(d.get("notify"), f"{path}.notify", {"commit_status", "webhooks"})
        commit_status = self.commit_status(notify.get("commit_status"), f"{path}.notify")
        webhooks = self.webhooks(notify.get("webhooks"), f"{path}.notify.webhooks", name)
        verify = self.verify(d.get("verify"), f"{path}.verify")
        if not name or not url:  # reported above; every other key was still checked
            return None
        return RepoConfig(
            commit_status=commit_status,
            webhooks=webhooks,
            verify=verify,
            name=name,
            url=url,
            branch=branch,
            poll_interval=poll_interval,
            watch=watch,
            webhook_secret_file=secret,
            deployments=deployments,
            stack_prefix=prefix,
            options=options,
            stack_options=stack_options,
            init_from=init_from,
        )

    # --- notify and verify ----------------------------------------------------------------

    def commit_status(self, value: object, parent: str) -> CommitStatusConfig | None:
        if value is None:
            return None
        path = f"{parent}.commit_status"
        keys = {"forge", "repository", "token_file", "api_url", "per", "context", "target_url"}
        d = self.mapping(value, path, keys)
        if not isinstance(value, dict):
            return None  # said so, once
        for key in ("forge", "repository", "token_file"):
            if d.get(key) is None:
                self.problem(f"{path}.{key}", "required")
        forge = self.get(d, "forge", path, _one_of(*FORGES), "")
        api_url = self.get(d, "api_url", path, _http_url, FORGE_APIS.get(forge, ""))
        if forge == "gitea" and d.get("api_url") is None:
            self.problem(f"{path}.api_url", "required for gitea (https://<server>/api/v1)")
        repository = self.get(d, "repository", path, _repository, "")
        token_file = self.get(d, "token_file", path, self.path, None)
        target_url = self.get(d, "target_url", path, _http_url, None)
        if forge == "bitbucket" and target_url is None and d.get("target_url") is None:
            self.problem(f"{path}.target_url", "required for bitbucket (its statuses need a link)")
        if not forge or not repository or token_file is None or not api_url:
            return None
        return CommitStatusConfig(
            forge=forge,
            repository=repository,
            token_file=token_file,
            api_url=api_url.rstrip("/"),
            per=self.get(d, "per", path, _one_of("stack", "commit"), "stack"),
            context=self.get(d, "context", path, _context, "syncd"),
            target_url=target_url,
        )

    def webhooks(self, value: object, path: str, repo: str | None) -> tuple[WebhookConfig, ...]:
        """A list of receivers; a repo's (`repo` given) hear only that repo's events."""
        if value is None:
            return ()
        if not isinstance(value, list):
            self.problem(path, f"must be a list, not {_kind(value)}")
            return ()
        out = []
        for i, item in enumerate(value):
            where = f"{path}[{i}]"
            keys = {"name", "url", "url_file", "format", "secret_file", "events", "timeout"}
            d = self.mapping(item, where, keys | ({"repos"} if repo is None else set()))
            if not isinstance(item, dict):
                continue  # said so, once
            if d.get("name") is None:
                self.problem(f"{where}.name", "required")
            if (d.get("url") is None) == (d.get("url_file") is None):
                self.problem(where, "needs url or url_file (one of them)")
            fmt = self.get(d, "format", where, _one_of("cloudevents", "slack"), "cloudevents")
            if fmt == "slack" and d.get("secret_file") is not None:
                self.problem(
                    f"{where}.secret_file", "not for format: slack (its URL is the secret)"
                )
            webhook = WebhookConfig(
                name=self.get(d, "name", where, _repo_name, ""),
                url=self.get(d, "url", where, _receiver_url, None),
                url_file=self.get(d, "url_file", where, self.path, None),
                format=fmt,
                secret_file=self.get(d, "secret_file", where, self.path, None),
                events=self.get(d, "events", where, _events, EVENT_TYPES),
                repos=(repo,) if repo is not None else self.get(d, "repos", where, _names, None),
                timeout=self.get(d, "timeout", where, _duration, 10.0),
            )
            if webhook.name:
                out.append(webhook)
        return tuple(out)

    def check_webhooks(self, top: tuple[WebhookConfig, ...], repos: tuple[RepoConfig, ...]) -> None:
        """Receivers have names of their own (their progress is kept by name), and name repos
        that exist."""
        known = {r.name for r in repos}
        seen: set[str] = set()
        for webhook in top + tuple(w for r in repos for w in r.webhooks):
            if webhook.name in seen:
                self.problem("notify.webhooks", f"{webhook.name!r} names two receivers")
            if webhook.name.startswith("commit-status-"):
                self.problem(
                    "notify.webhooks",
                    f"{webhook.name!r}: names starting commit-status- are the commit statuses'",
                )
            seen.add(webhook.name)
        for i, webhook in enumerate(top):
            for name in sorted(set(webhook.repos or ()) - known):
                where = f"notify.webhooks[{i}].repos"
                self.problem(where, f"{name!r} is not a repo" + did_you_mean(name, known))

    def verify(self, value: object, path: str) -> VerifyConfig | None:
        if value is None:
            return None
        d = self.mapping(value, path, {"allowed_signers_file", "keyring"})
        if not isinstance(value, dict):
            return None  # said so, once
        if not d:
            self.problem(path, "needs allowed_signers_file, keyring or both")
            return None
        return VerifyConfig(
            allowed_signers_file=self.get(d, "allowed_signers_file", path, self.path, None),
            keyring=self.get(d, "keyring", path, self.path, None),
        )


def _repository(value: object) -> str:
    text = _string(value)
    if not re.match(r"^[\w.-]+(/[\w.-]+)+$|^\d+$", text) or ".." in text.split("/"):
        raise ValueError(f"must be owner/name (or a GitLab project id), not {quoted(text)}")
    return text


def _context(value: object) -> str:
    text = _string(value)
    if len(text) > 40 or not re.match(r"^[\w./ -]+$", text):
        raise ValueError("must be up to 40 letters, digits, spaces and . / _ -")
    return text


def _receiver_url(value: object) -> str:
    """A receiver's URL: never quoted back (a Slack URL is itself a secret)."""
    if not isinstance(value, str) or not re.fullmatch(r"https?://[\x21-\x7e]+", value):
        raise ValueError("must be an http:// or https:// URL (not shown: it may hold a secret)")
    return value


def _events(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError("must be a list of event types")
    for item in value:
        if item not in EVENT_TYPES:
            hint = did_you_mean(item, EVENT_TYPES) if isinstance(item, str) else ""
            raise ValueError(
                f"{quoted(item)} is not an event type ({', '.join(EVENT_TYPES)}){hint}"
            )
    return tuple(dict.fromkeys(value))


def _names(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError("must be a list of repo names")
    return tuple(_repo_name(v) for v in value)


def _kind(value: object) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _keys(value: object) -> list[str]:
    return [str(k) for k in value] if isinstance(value, dict) else []


def _join(path: str, key: object) -> str:
    """Where a key is, as a problem names it: `repos[0].stacks.app`, or the key quoted when it
    is not a plain name (`repos[0].stacks.''`, `backup.'a b'`)."""
    name = key if isinstance(key, str) and _PLAIN_KEY.match(key) else quoted(key)
    return f"{path}.{name}" if path else str(name)


_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {_kind(value)}")
    if not value:
        raise ValueError("must not be empty")
    return value


def _text(value: object) -> str:
    """A string that may be empty (stack_prefix: "" means no prefix)."""
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {_kind(value)}")
    return value


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {value!r}")
    return value


def _positive_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1_000_000:
        raise ValueError(f"must be a whole number from 1 to 1,000,000, not {value!r}")
    return value


def _positive_number(value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 < value <= 1_000_000  # nan and inf are neither
    ):
        raise ValueError(f"must be a number above 0, up to 1,000,000, not {value!r}")
    return float(value)


def _duration(value: object) -> float:
    if not isinstance(value, str):
        raise ValueError(f"must be a duration like 500ms, 30s, 5m or 1h, not {value!r}")
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("must be longer than zero")
    return seconds


# The shortest drift_interval: each check is a DetectStackDrift (and its reads) on AWS, whose
# detections take seconds to minutes.
MIN_DRIFT_INTERVAL = 60.0


def _duration_or_off(value: object) -> float | None:
    """A drift_interval: a duration of at least a minute, or `off` (a stack or repo may turn
    off what `defaults` turned on)."""
    if value == "off" or value is False:
        return None
    if not isinstance(value, str):
        raise ValueError(f"must be a duration like 5m, 1h or 24h, or off; not {value!r}")
    seconds = parse_duration(value)
    if seconds < MIN_DRIFT_INTERVAL:
        raise ValueError(f"must be at least 1m (or off), not {value!r}")
    return seconds


def _one_of(*choices: str) -> Callable[[object], str]:
    def convert(value: object) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, not {value!r}")
        return str(value)

    return convert


E = TypeVar("E", Approval, OnFailure, OnDrift)


def _enum(kind: type[E]) -> Callable[[object], E]:
    def convert(value: object) -> E:
        for member in kind:
            if member.value == value:
                return member
        choices = ", ".join(m.value for m in kind)
        hint = did_you_mean(value, [m.value for m in kind]) if isinstance(value, str) else ""
        raise ValueError(f"must be one of {choices}, not {value!r}{hint}")

    return convert


def _s3_url(value: object) -> str:
    text = _string(value)
    if not re.match(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$", text):
        raise ValueError(f"must be an s3://bucket/prefix/ URL, not {text!r}")
    return text


def _region(value: object) -> str:
    text = _string(value)
    if not is_region(text):
        raise ValueError(f"{text!r} is not an AWS region such as eu-west-1")
    return text


def _role_arn(value: object) -> str:
    text = _string(value)
    account_of_role(text)  # ValueError if it is not a role ARN
    return text


def _role_account(role_arn: str | None) -> str | None:
    return account_of_role(role_arn) if role_arn else None


def _account_id(value: object) -> str:
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    text = _string(text)
    if not is_account(text):
        raise ValueError(f"{text!r} is not a 12-digit AWS account id")
    return text


def _external_id(value: object) -> str:
    text = _string(value)
    if not re.match(r"^[\w+=,.@:/-]{2,1224}$", text):
        raise ValueError("must be 2 to 1,224 letters, digits or +=,.@:/-")
    return text


def _session_name(value: object) -> str:
    text = _string(value)
    if not re.match(r"^[\w+=,.@-]{2,64}$", text):
        raise ValueError("must be 2 to 64 letters, digits or +=,.@-")
    return text


def _http_url(value: object) -> str:
    text = _string(value)
    if not re.match(r"^https?://", text):
        raise ValueError(f"must be an http:// or https:// URL, not {text!r}")
    return text


def _host_port(value: object) -> str:
    text = str(value) if isinstance(value, int) else _string(value)
    if re.match(r"^:?\d{1,5}$", text):  # a port alone: loopback only
        return f"127.0.0.1:{text.lstrip(':')}"
    if not re.match(r"^(\[[0-9a-fA-F:]+\]|[\w.-]+):\d{1,5}$", text):
        raise ValueError(f"must be host:port, not {text!r}")
    return text


def _hosts(value: object) -> tuple[str, ...]:
    """Host names or addresses as a Host header gives them, without a port: lower case, an IPv6
    address without its brackets, no trailing dot."""
    if not isinstance(value, list) or not value:
        raise ValueError("must be a non-empty list of host names (leave it out to allow any)")
    hosts = []
    for item in value:
        text = _string(item).strip().lower().rstrip(".")
        bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
        if ":" in bare:  # an IPv6 address, or a name with a port
            try:
                ipaddress.IPv6Address(bare)
            except ValueError:
                raise ValueError(f"{item!r} is not a host name or address (no port)") from None
        elif not re.match(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$", bare):
            raise ValueError(f"{item!r} is not a host name or address")
        hosts.append(bare)
    return tuple(hosts)


def _repo_name(value: object) -> str:
    text = _string(value)
    if not _REPO_NAME.match(text):
        raise ValueError(f"{text!r} may hold only a-z, 0-9 and -")
    return text


def _branch(value: object) -> str:
    text = _string(value)
    if text.startswith("-") or ".." in text or " " in text:
        raise ValueError(f"{text!r} is not a branch name")
    return text


def _globs(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError("must be a non-empty list of glob patterns")
    for pattern in value:
        if pattern.startswith("/") or ".." in pattern.split("/"):
            raise ValueError(f"{pattern!r} must stay inside the repo")
    return tuple(value)


def _capabilities(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("must be a list of capabilities")
    unknown = [v for v in value if v not in KNOWN_CAPABILITIES]
    if unknown:
        raise ValueError(f"unknown capabilities {unknown}; known: {sorted(KNOWN_CAPABILITIES)}")
    return tuple(value)


def _is_local(url: str) -> bool:
    if url.startswith("file://"):
        return True
    return "://" not in url and not re.match(r"^[\w.-]+@[\w.-]+:", url)
