"""The composition root: the one place that builds real adapters from a config and wires them.

Commands that need AWS and Git call `open_app`; commands that only read the journal (`status`,
`history`) open it read-only and never touch AWS.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore.exceptions
import structlog

from syncd.apply import Applier, Waiter
from syncd.approvals import Approvals
from syncd.cloudformation import DEFAULT_CALLS_PER_SECOND, CloudFormation, make_session
from syncd.clouds import Gateways, Worlds
from syncd.core.config import Config
from syncd.core.journal_state import HistoryRow
from syncd.core.targets import Place, Target
from syncd.emulator import Emulator, start_emulator
from syncd.errors import ConfigError
from syncd.journal.auth import BackupKey
from syncd.journal.mirror import Mirror
from syncd.journal.store import Journal, lock_holder
from syncd.outbox import Receiver, open_receivers
from syncd.ratelimit import RateLimiter
from syncd.reconcile import RepoSync
from syncd.slots import Slots
from syncd.sources.git import GitSource
from syncd.sources.signatures import SignatureCheck
from syncd.web.access import Access, read_access
from syncd.world import World

EMBEDDED_TEMPLATE_BUCKET = "s3://syncd-templates"


def read_webhook_secrets(config: Config) -> dict[str, bytes]:
    """Each repo's webhook secret, read once (the daemon's start and reloads); every file that
    cannot be read, or is empty, is a config error. The secrets are never logged."""
    secrets: dict[str, bytes] = {}
    problems = []
    for i, repo in enumerate(config.repos):
        if repo.webhook_secret_file is None:
            continue
        try:
            secret = repo.webhook_secret_file.read_bytes().strip()
        except OSError as exc:
            problems.append(f"repos[{i}].webhook_secret_file: cannot read it: {exc.strerror}")
            continue
        if not secret:
            problems.append(f"repos[{i}].webhook_secret_file: {repo.webhook_secret_file} is empty")
            continue
        secrets[repo.name] = secret
    if problems:
        raise ConfigError(config.source, problems)
    return secrets


def dashboard_access(config: Config) -> Access:
    """Who may read the dashboard (http.token_file, http.users_file), read now: at start and
    on reloads. A file that cannot be used is a config error; what it holds is never shown."""
    http = config.http
    try:
        return read_access(http.token_file, http.users_file)
    except OSError as exc:
        problem = f"http: cannot read {exc.filename}: {exc.strerror}"
        raise ConfigError(config.source, [problem]) from None
    except ValueError as exc:
        raise ConfigError(config.source, [f"http: {exc}"]) from None


@dataclass(frozen=True)
class Secrets:
    """What a config's secret files hold, read together: each repo's webhook secret, the
    notification receivers (with their tokens and secrets) and the dashboard's access (the
    backup key is checked with them, and loaded where the mirror opens)."""

    webhooks: dict[str, bytes]
    receivers: list[Receiver]
    access: Access


def secret_files(config: Config) -> list[Path]:
    """Every secret file `config` names, the ones read_secrets reads."""
    named = [r.webhook_secret_file for r in config.repos]
    named += [r.commit_status.token_file for r in config.repos if r.commit_status is not None]
    named += [p for w in config.receivers() for p in (w.url_file, w.secret_file)]
    named += [config.http.token_file, config.http.users_file, config.backup.key_file]
    return [path for path in named if path is not None]


def read_secrets(config: Config, history: Callable[[], Sequence[HistoryRow]]) -> Secrets:
    """Every secret file of `config`, read now (the daemon's start, each reload, and `validate
    --secrets`). Raises one ConfigError naming every file that cannot be used, never what any
    file holds."""
    problems: list[str] = []
    webhooks: dict[str, bytes] = {}
    receivers: list[Receiver] = []
    access = Access()
    try:
        webhooks = read_webhook_secrets(config)
    except ConfigError as exc:
        problems += exc.problems
    try:
        receivers = open_receivers(config, history)
    except ConfigError as exc:
        problems += exc.problems
    try:
        access = dashboard_access(config)
    except ConfigError as exc:
        problems += exc.problems
    try:
        backup_key(config)  # read again where the mirror opens; here to be named with the rest
    except ConfigError as exc:
        problems += [f"{problem} ({exc.source})" for problem in exc.problems]
    if problems:
        raise ConfigError(config.source, problems)
    return Secrets(webhooks, receivers, access)


@dataclass
class App:
    """Everything a reconciling command needs, built from one config."""

    config: Config
    journal: Journal
    cfn: Gateways
    world: Worlds
    syncs: dict[str, RepoSync]
    stop: threading.Event
    emulator: Emulator | None = None
    mirror: Mirror | None = None
    _owns_journal: bool = field(default=True, repr=False)
    _emulator_file: Path | None = field(default=None, repr=False)
    outboxes: list[Any] = field(default_factory=list)  # syncd.outbox, the daemon's (run)

    def close_sources(self) -> None:
        """Remove what the Git sources keep outside the state (their signature keys)."""
        for sync in self.syncs.values():
            sync.source.close()

    def close(self) -> None:
        self.close_sources()
        if self._owns_journal:
            self.journal.close()
        if self._emulator_file is not None:
            self._emulator_file.unlink(missing_ok=True)
            self._emulator_file = None
        if self.emulator is not None:
            self.emulator.stop()
            self.emulator = None


def open_journal(config: Config) -> Journal:
    log = structlog.get_logger("syncd.journal")
    return Journal.open(
        config.state_dir, writer=True, warn=lambda m: log.warning("journal.torn", detail=m)
    )


def open_app(
    config: Config,
    *,
    stop: threading.Event | None = None,
    journal: Journal | None = None,
    emulator: Emulator | None = None,
    read_only: bool = False,
    emulator_url: str | None = None,
) -> App:
    """Wire the journal, AWS gateways, Git sources and appliers for `config` (`read_only`: no
    mirror, for commands that only look, beside a running daemon; `emulator_url`: with
    aws.embedded, the emulator of the `syncd run` beside, not one of this process's own)."""
    owns_journal = journal is None
    journal = journal or open_journal(config)
    stop = stop or threading.Event()
    aws = config.aws
    endpoint = aws.endpoint_url
    emulator_file = None
    started = False  # an emulator started here is stopped here if the wiring fails
    if aws.embedded and emulator_url is not None:
        endpoint = emulator_url  # the running daemon's; not this process's to stop
    elif aws.embedded:
        if emulator is None:
            emulator = start_emulator()
            started = True
            if not read_only:  # for `syncd plan` while this process runs (see running_emulator)
                emulator_file = _announce(config.state_dir, emulator.url)
        endpoint = emulator.url
    mirror = None
    signatures: dict[str, SignatureCheck] = {}
    try:
        signatures = open_signatures(config)
        cfn = open_gateways(config, endpoint)
        if config.backup.url and not read_only:
            session = make_session(_with_region(aws.target, aws.embedded), endpoint)
            mirror = open_mirror(config, journal, session, endpoint)
    except BaseException:
        for check in signatures.values():
            check.close()
        if emulator_file is not None:
            emulator_file.unlink(missing_ok=True)
        if emulator is not None and started:  # one handed in (a reload's) goes on
            emulator.stop()
        if owns_journal:
            journal.close()
        raise
    world = Worlds.of(cfn, lambda gateway: World(gateway, max_gap=aws.wait_poll))
    applier = Applier(cfn, world, journal, Waiter(stop, max_pause=aws.wait_poll))
    if mirror is not None:
        applier.before_acting = lambda: mirror.flush(when_healthy=True)
    slots = Slots(config.concurrency)
    syncs = {
        repo.name: RepoSync(
            repo,
            GitSource(repo, config.state_dir, signatures=signatures.get(repo.name)),
            applier,
            world,
            journal,
            slots,
            config.concurrency,
            Approvals(config.state_dir),
        )
        for repo in config.repos
    }
    return App(
        config, journal, cfn, world, syncs, stop, emulator, mirror, owns_journal, emulator_file
    )


def open_signatures(config: Config) -> dict[str, SignatureCheck]:
    """Each repo's trusted keys (`verify`), read now: at start and on SIGHUP. Raises
    ConfigError naming every file that cannot be used."""
    checks: dict[str, SignatureCheck] = {}
    problems: list[str] = []
    for repo in config.repos:
        if repo.verify is None:
            continue
        try:
            checks[repo.name] = SignatureCheck(repo.verify)
        except ConfigError as exc:
            problems += [f"repos.{repo.name}.{p}" for p in exc.problems]
    if problems:
        for check in checks.values():
            check.close()
        raise ConfigError(config.source, problems)
    return checks


def open_gateways(config: Config, endpoint: str | None) -> Gateways:
    """A CloudFormation gateway for each place the config deploys to, each with its own
    session (its role assumed, and refreshed, by botocore) and its own call budget:
    CloudFormation throttles per account and region. `endpoint`: the emulator's, if any."""
    aws = config.aws
    # The embedded emulator throttles nothing: no budget unless one is set.
    ceiling = aws.calls_per_second or (math.inf if aws.embedded else DEFAULT_CALLS_PER_SECOND)
    gateways: dict[Place, CloudFormation] = {}
    unusable: dict[Place, str] = {}
    for place, target in config.targets().items():
        bucket = target.template_bucket or (EMBEDDED_TEMPLATE_BUCKET if aws.embedded else None)
        try:
            session = make_session(_with_region(target, aws.embedded), endpoint)
            gateway = CloudFormation(session, endpoint, bucket, RateLimiter(ceiling))
        except botocore.exceptions.BotoCoreError as exc:  # a profile that is not there
            unusable[place] = (
                f"no credentials for {place.label(aws.target.place) or 'the default target'}: {exc}"
            )
            continue
        if aws.embedded and bucket:
            gateway.ensure_bucket(bucket)
        gateways[place] = gateway
    return Gateways(aws.target.place, gateways, unusable)


def _with_region(target: Target, embedded: bool) -> Target:
    """The embedded emulator needs a region when the config names none."""
    if embedded and target.region is None:
        return dataclasses.replace(target, region="us-east-1")
    return target


EMULATOR_FILE = "emulator.json"  # in state_dir: the embedded emulator of the syncd running


def _announce(state_dir: Path, url: str) -> Path:
    """Say where this process's embedded emulator answers, for `syncd plan` beside it."""
    path = state_dir / EMULATOR_FILE
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"url": url, "pid": os.getpid()}))
    os.replace(tmp, path)
    return path


def running_emulator(state_dir: Path) -> str | None:
    """The endpoint of the embedded emulator inside the syncd that holds `state_dir` now, or
    None: believed only when the process that wrote it is the one holding the state's lock."""
    from syncd.requests import read_request

    try:
        doc = json.loads(read_request(state_dir / EMULATOR_FILE))
        url, pid = str(doc["url"]), int(doc["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    holder = lock_holder(state_dir)
    return url if holder.held and holder.pid == pid and url.startswith("http://127.") else None


def open_mirror(config: Config, journal: Journal, session: Any, endpoint: str | None) -> Mirror:
    """The journal's S3 mirror at backup.url (the embedded emulator's bucket made if missing)."""
    from syncd.s3 import S3Store

    assert config.backup.url
    store = S3Store(
        session,
        config.backup.url,
        endpoint_url=endpoint,
        sse=config.backup.sse,
        kms_key_id=config.backup.kms_key_id,
    )
    if config.aws.embedded:
        store.ensure_bucket()
    return Mirror(journal, store, config.state_dir, config.backup.interval, key=backup_key(config))


def backup_key(config: Config) -> BackupKey | None:
    """The key that signs and authenticates the backup (backup.key_file), if there is one."""
    path = config.backup.key_file
    return BackupKey.load(path) if path is not None else None
