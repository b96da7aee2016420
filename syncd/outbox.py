"""Telling others what happened: event webhooks (CloudEvents or Slack) and commit statuses on
the forge, each receiver following the journal at its own pace.

The journal is the outbox. A receiver's thread reads the records after its cursor
(`state_dir/notify/<name>.json`), turns each into at most one event (syncd.core.events), sends
the events it wants in order, and moves its cursor past a record only once that record's event
is delivered (or refused for good). So an event is sent at least once: a restart, a crash or a
receiver that is down only delays it, and its id (`<journal lineage>-<record seq>`) lets the
receiver drop a second copy. A receiver never slows an apply: it runs on its own thread, behind
the journal, and what it has not sent waits on disk.

A failed send (no answer, a timeout, 5xx, 429, 401, 403) is retried with exponential back-off
(1 s doubling to 5 min, with jitter; a 429's Retry-After is honoured) until it goes through; an
answer that says the request itself is wrong (400, 404, 405, 410, 413, 422) drops that event,
logged, and goes on. A new receiver starts at the journal's end: history is not replayed.

Secrets (tokens, webhook keys, a Slack URL) live only in the requests built here: logs, status
and errors name a receiver by its name and its URL's scheme and host.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.client
import json
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import structlog

from syncd.core.config import CommitStatusConfig, Config, WebhookConfig
from syncd.core.events import Event, EventFold, commit_status, stack_status
from syncd.core.forges import Request, delivered, status_request
from syncd.core.journal_state import HistoryRow, JournalState
from syncd.core.text import bounded
from syncd.errors import ConfigError
from syncd.journal.follow import Follower
from syncd.journal.mirror import write_atomically
from syncd.journal.store import utc_now

MAX_ANSWER = 64 * 1024  # bytes of a receiver's answer read (its status line is what counts)
REFUSED_FOR_GOOD = frozenset({400, 404, 405, 410, 413, 422})
BACKOFF = (1.0, 300.0)  # the first pause after a failed send, and the longest


def shown_url(url: str) -> str:
    """A receiver's URL as logs and status show it: scheme and host only (the path of a Slack
    URL, a query's token or a user:password would be a secret)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


class Receiver(Protocol):
    name: str
    kind: str  # cloudevents | slack | commit_status
    shown: str
    timeout: float

    def wants(self, event: Event) -> bool: ...
    def request(self, event: Event, event_id: str) -> Request | None: ...
    def delivered(self, code: int, body: bytes) -> bool: ...


# --- receivers -----------------------------------------------------------------------------


class EventWebhook:
    """CloudEvents 1.0 in structured mode (application/cloudevents+json), signed with
    `X-Syncd-Signature-256: sha256=<hex HMAC-SHA256 of the body>` when it has a secret; or,
    `format: slack`, `{"text": ...}` for an incoming-webhook URL."""

    def __init__(self, config: WebhookConfig, url: str, secret: bytes | None, host: str) -> None:
        self.config = config
        self.name = config.name
        self.kind = config.format
        self.url = url
        self.shown = shown_url(url)
        self.timeout = config.timeout
        self._secret = secret
        self._host = host

    def wants(self, event: Event) -> bool:
        if event.type not in self.config.events:
            return False
        return self.config.repos is None or event.repo in self.config.repos

    def request(self, event: Event, event_id: str) -> Request:
        if self.kind == "slack":
            body = json.dumps({"text": slack_text(event)}).encode()
            headers = {"Content-Type": "application/json"}
        else:
            body = json.dumps(cloud_event(event, event_id, self._host)).encode()
            headers = {"Content-Type": "application/cloudevents+json; charset=utf-8"}
        headers.update({"User-Agent": "syncd", "X-Syncd-Event": event.type})
        headers["X-Syncd-Delivery"] = event_id
        if self._secret is not None:
            digest = hmac.new(self._secret, body, hashlib.sha256).hexdigest()
            headers["X-Syncd-Signature-256"] = f"sha256={digest}"
        return Request("POST", self.url, headers, body)

    def delivered(self, code: int, body: bytes) -> bool:
        return 200 <= code < 300


def cloud_event(event: Event, event_id: str, host: str) -> dict[str, Any]:
    source = f"syncd://{host}" + (f"/{event.repo}" if event.repo else "")
    out = {
        "specversion": "1.0",
        "id": event_id,
        "source": source,
        "type": f"syncd.{event.type}",
        "time": event.time,
        "datacontenttype": "application/json",
        "data": event.as_data(),
    }
    subject = event.stack or event.repo
    if subject:
        out["subject"] = subject
    return out


def slack_text(event: Event) -> str:
    """One line for a chat: where, then what, with Slack's three control characters escaped
    (a stack name or a reason cannot mention @channel or forge a link)."""
    where = [f"repo {event.repo}"] if event.repo else []
    where += [f"commit {event.commit[:12]}"] if event.commit else []
    head = f"syncd {event.type}" + (f" ({', '.join(where)})" if where else "")
    text = f"{head}: {event.message}"
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class CommitStatuses:
    """A repo's commit statuses on its forge (`notify.commit_status`): one per stack (context
    `<context>/<stack>`) or one per commit (context `<context>`, from every stack's latest
    version from that commit)."""

    kind = "commit_status"

    def __init__(
        self,
        repo: str,
        config: CommitStatusConfig,
        token: str,
        history: Callable[[], Sequence[HistoryRow]],
    ) -> None:
        self.name = f"commit-status-{repo}"
        self.repo = repo
        self.config = config
        self.shown = shown_url(config.api_url)
        self.timeout = 10.0
        self._token = token
        self._history = history

    def wants(self, event: Event) -> bool:
        return event.repo == self.repo and stack_status(event, self.config.context) is not None

    def request(self, event: Event, event_id: str) -> Request | None:
        c = self.config
        if c.per == "commit":
            status = commit_status(event, c.context, self._history())
        else:
            status = stack_status(event, c.context)
        if status is None:
            return None
        return status_request(c.forge, c.api_url, c.repository, self._token, status, c.target_url)

    def delivered(self, code: int, body: bytes) -> bool:
        return delivered(self.config.forge, code, body)


_URL = re.compile(r"https?://[\x21-\x7e]+")  # one URL: printable ASCII, no space
_TOKEN = re.compile(rb"[\x21-\x7e]+")  # one word of printable ASCII: a header value


def open_receivers(config: Config, history: Callable[[], Sequence[HistoryRow]]) -> list[Receiver]:
    """Every receiver the config names, its secrets read now (at start and on SIGHUP). A file
    that cannot be read or is empty is a config error; what it holds is never shown."""
    problems: list[str] = []

    def read(path: Path | None, what: str) -> bytes | None:
        if path is None:
            return None
        try:
            value = path.read_bytes().strip()
        except OSError as exc:
            problems.append(f"{what}: cannot read {path}: {exc.strerror}")
            return None
        if not value:
            problems.append(f"{what}: {path} is empty")
            return None
        return value

    host = socket.gethostname()
    receivers: list[Receiver] = []
    for webhook in config.receivers():
        what = f"webhook {webhook.name!r}"
        url = webhook.url or (read(webhook.url_file, f"{what} url_file") or b"").decode(
            errors="replace"
        )
        if webhook.url_file is not None and url and not _URL.fullmatch(url):
            problems.append(
                f"{what} url_file: {webhook.url_file} holds no single http(s) URL "
                "(what it holds is not shown: it may be a secret)"
            )
            continue
        secret = read(webhook.secret_file, f"{what} secret_file")
        if url:
            receivers.append(EventWebhook(webhook, url, secret, host))
    for repo in config.repos:
        if repo.commit_status is None:
            continue
        what = f"repo {repo.name!r} commit_status token_file"
        token = read(repo.commit_status.token_file, what)
        if token is not None and not _TOKEN.fullmatch(token):
            problems.append(
                f"{what}: {repo.commit_status.token_file} holds more than one printable word "
                "(what it holds is not shown)"
            )
        elif token is not None:
            text = token.decode()
            receivers.append(CommitStatuses(repo.name, repo.commit_status, text, history))
    if problems:
        raise ConfigError(config.source, problems)
    return receivers


# --- sending ---------------------------------------------------------------------------------


def post(request: Request, timeout: float) -> tuple[int, bytes, float | None]:
    """Send `request`; its answer's status, the start of its body, and a 429's Retry-After (s).
    Raises OSError (http.client.HTTPException included) when there is no answer."""
    try:
        parts = urlsplit(request.url)
        kind = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        conn = kind(parts.hostname or "", parts.port, timeout=timeout)
        headers = dict(request.headers)
        if parts.username is not None:
            user = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(user.encode()).decode()
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    except (ValueError, UnicodeError):
        raise OSError("the request could not be made (its URL is not valid)") from None
    # The whole exchange within `timeout`: a receiver that answers a byte at a time is cut off.
    cut = threading.Event()
    deadline = threading.Timer(timeout, _cut, (conn, cut))
    deadline.start()
    try:
        conn.request(request.method, target, body=request.body, headers=headers)
        answer = conn.getresponse()
        body = answer.read(MAX_ANSWER)
        retry = (answer.getheader("Retry-After") or "").strip()
        after = float(retry) if retry.isascii() and retry.isdigit() else None
        return answer.status, body, after
    except (OSError, http.client.HTTPException, ValueError, UnicodeError) as exc:
        if cut.is_set() or isinstance(exc, TimeoutError):  # the cut, or the socket's own
            raise OSError(f"no whole answer within {timeout:g} s") from None
        if isinstance(exc, OSError) and not isinstance(exc, http.client.HTTPException):
            raise OSError(f"{type(exc).__name__}: {exc.strerror or exc}") from None
        # Never the exception's text: a header it quotes may hold the token.
        raise OSError(f"the exchange failed ({type(exc).__name__})") from None
    finally:
        deadline.cancel()
        conn.close()


def _cut(conn: http.client.HTTPConnection, cut: threading.Event) -> None:
    """End an exchange that ran past its deadline (a read blocked on it fails at once)."""
    cut.set()
    with contextlib.suppress(OSError):
        if conn.sock is not None:
            conn.sock.shutdown(socket.SHUT_RDWR)


@dataclass
class Progress:
    """A receiver's cursor and record, in `state_dir/notify/<name>.json`."""

    lineage: str = ""
    seq: int = 0  # every record up to here is delivered (or refused for good)
    sent: int = 0
    dropped: int = 0
    failed_sends: int = 0
    error: str | None = None  # why the event it is on has not gone through
    failing_since: str | None = None
    waiting_since: str | None = None  # the time of the event it is on, while that fails
    last_sent: str | None = None

    @classmethod
    def load(cls, path: Path) -> Progress | None:
        """The saved progress; None when there is none, or it cannot be read."""
        try:
            data = json.loads(path.read_bytes())
            progress = cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        except (OSError, ValueError, TypeError, AttributeError, RecursionError):
            return None
        for name, kind in (("lineage", str), ("seq", int), ("sent", int), ("dropped", int)):
            value = getattr(progress, name)
            if not isinstance(value, kind) or isinstance(value, bool):
                return None
        return progress


def progress_path(state_dir: Path, name: str) -> Path:
    return state_dir / "notify" / f"{name}.json"


class Outbox:
    """One receiver's thread: follow the journal, send what it wants, keep its cursor."""

    def __init__(
        self,
        receiver: Receiver,
        follower: Follower,
        state: JournalState,
        state_dir: Path,
        lineage: str,
        *,
        send: Callable[[Request, float], tuple[int, bytes, float | None]] = post,
        backoff: tuple[float, float] = BACKOFF,
        clock: Callable[[], str] = utc_now,
    ) -> None:
        self.receiver = receiver
        self.follower = follower
        self.path = progress_path(state_dir, receiver.name)
        self.lineage = lineage
        self.send = send
        self.backoff = backoff
        self.clock = clock
        self.log = structlog.get_logger("syncd.notify").bind(
            receiver=receiver.name, url=receiver.shown
        )
        saved = Progress.load(self.path)
        if saved is None or saved.lineage != lineage or saved.seq > follower.last_seq:
            # New, or another journal (restored to a fork): from now on, not from the start.
            saved = Progress(lineage=lineage, seq=follower.last_seq)
        self.progress = saved
        self._fold = EventFold.primed(state)
        # The event of the record it is on (its seq): a record is folded once, even when its
        # delivery is interrupted (stop, an error) and the step starts again.
        self._current: tuple[int, Event | None] | None = None
        self._saved_at = 0.0
        self.thread: threading.Thread | None = None

    @property
    def behind(self) -> int:
        """Records not yet gone through (those with no event for it included)."""
        return max(0, self.follower.last_seq - self.progress.seq)

    def start(self, stop: threading.Event) -> None:
        self.thread = threading.Thread(
            target=self.run, args=(stop,), name=f"notify-{self.receiver.name}", daemon=True
        )
        self.thread.start()

    def run(self, stop: threading.Event) -> None:
        self._save()
        while not stop.is_set():
            try:
                self._step(stop)
            except Exception as exc:  # a damaged segment, a bug: say so, try again later
                self.log.error(
                    "notify.error", error=type(exc).__name__, detail=bounded(str(exc), 200)
                )
                stop.wait(30.0)
        self._save()

    def _step(self, stop: threading.Event) -> None:
        """Go through the records there are now (or wait a little for more)."""
        records = self.follower.after(self.progress.seq)
        if not records:
            self.follower.wait(self.progress.seq, 1.0)
            return
        for record in records:
            if self._current is None or self._current[0] != record.seq:
                self._current = (record.seq, self._fold.event(record))
            event = self._current[1]
            if event is not None and self.receiver.wants(event):
                if not self._deliver(event, stop):
                    return
                self.progress.seq = record.seq
                self._save()
            self.progress.seq = record.seq
        if time.monotonic() - self._saved_at >= 1.0:  # records with nothing for it
            self._save()

    def _deliver(self, event: Event, stop: threading.Event) -> bool:
        """Send `event` until it is delivered or refused for good (True), or `stop` (False)."""
        event_id = f"{self.lineage}-{event.seq}"
        request = self.receiver.request(event, event_id)
        if request is None:
            return True
        tries = 0
        while not stop.is_set():
            retry_after: float | None = None
            try:
                code, body, retry_after = self.send(request, self.receiver.timeout)
            except OSError as exc:
                why = bounded(f"no answer: {exc}", 300)
            except Exception as exc:  # a bug: never its text (it may quote the request)
                why = f"not sent ({type(exc).__name__})"
            else:
                if self.receiver.delivered(code, body):
                    self._sent(event)
                    return True
                why = f"HTTP {code}"
                if code in REFUSED_FOR_GOOD:
                    self._dropped(event, why)
                    return True
            tries += 1
            pause = self._failed(event, why, tries, retry_after)
            stop.wait(pause)
        return False

    def _sent(self, event: Event) -> None:
        p = self.progress
        if p.error is not None:
            self.log.info("notify.recovered", after=p.error, failed_sends=p.failed_sends)
        p.sent += 1
        p.error = p.failing_since = p.waiting_since = None
        p.last_sent = self.clock()
        self.log.debug("notify.sent", kind=event.type, seq=event.seq)

    def _dropped(self, event: Event, why: str) -> None:
        p = self.progress
        p.dropped += 1
        p.error = p.failing_since = p.waiting_since = None
        self.log.error(
            "notify.refused",
            kind=event.type,
            seq=event.seq,
            reason=f"{why}: the receiver refuses this event; it is dropped",
        )

    def _failed(self, event: Event, why: str, tries: int, retry_after: float | None) -> float:
        p = self.progress
        p.failed_sends += 1
        if p.error != why:
            self.log.warning("notify.failing", kind=event.type, seq=event.seq, error=why)
        p.error = why
        p.failing_since = p.failing_since or self.clock()
        p.waiting_since = p.waiting_since or event.time
        self._save()
        first, longest = self.backoff
        pause = min(longest, first * 2.0 ** min(tries - 1, 20)) * random.uniform(0.8, 1.2)
        if retry_after is not None:
            pause = max(pause, min(retry_after, longest))
        return pause

    def _save(self) -> None:
        self._saved_at = time.monotonic()
        with contextlib.suppress(OSError):  # the cursor is kept in memory; it is saved again
            self.path.parent.mkdir(mode=0o700, exist_ok=True)
            write_atomically(self.path, json.dumps(asdict(self.progress), indent=1).encode())


def oldest_age(progress: Progress, now: datetime | None = None) -> float | None:
    """Seconds since the event a failing receiver is on was due, or None."""
    if not progress.waiting_since:
        return None
    since = datetime.fromisoformat(progress.waiting_since.replace("Z", "+00:00"))
    return float(((now or datetime.now(UTC)) - since).total_seconds())
