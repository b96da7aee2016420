"""The dashboard: read-only HTML pages on `http.listen`, beside health and metrics.

    GET /                 the overview: repos, stacks (filter: ?repo= &state= &name=), counts,
                          the backup's and the notifications' health
    GET /stacks/<key>     a stack: every version, one in full (?version=N; default the latest)
    GET /journal          the latest records, and the journal's verdict
    GET /live             the journal's last seq (the pages' script polls it)
    GET /static/<file>    the stylesheet and the script, shipped in the package

Server-rendered with Jinja2 (autoescape on: every value from a repo, AWS or the journal is
escaped), no asset from elsewhere, and a script that only makes the page live: without it the
pages are plain HTML, refreshed by hand. Every answer carries a Content-Security-Policy that
allows only this origin's stylesheet and script (no inline script), `frame-ancestors 'none'`,
`X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`. With `http.token_file`
or `http.users_file`, each page needs `Authorization: Bearer <token>` or Basic credentials of
one of the users, compared in constant time.

Costs: the overview is built from the journal's state in memory. A stack page reads the journal
on disk for that stack (as `syncd show` does; kept while the journal has not moved) and, for a
version that has ended, its events from CloudFormation once; the journal page verifies the whole
journal at most once a minute.
"""

from __future__ import annotations

import base64
import hmac
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import jinja2

from syncd import versions
from syncd.core import show
from syncd.core.text import bounded
from syncd.web import views

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; "
        "img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
STATIC = {"syncd.css": "text/css; charset=utf-8", "syncd.js": "text/javascript; charset=utf-8"}
HTML = "text/html; charset=utf-8"
JOURNAL_ROWS = 100
VERIFY_EVERY = 60.0  # seconds between two checks of the whole journal
CACHED = 256  # stacks' records, commit messages and events kept


@dataclass(frozen=True)
class Answer:
    code: int
    content_type: str
    body: bytes
    headers: Mapping[str, str]


@dataclass(frozen=True)
class Access:
    """Who may read the pages: a bearer token, users with passwords (Basic); neither: anyone
    who reaches the listener."""

    token: bytes | None = None
    users: Mapping[bytes, bytes] | None = None

    @property
    def open(self) -> bool:
        return self.token is None and not self.users

    def allows(self, header: str | None) -> bool:
        if self.open:
            return True
        scheme, _, value = (header or "").partition(" ")
        given = value.strip().encode()
        if scheme.lower() == "bearer" and self.token is not None:
            return hmac.compare_digest(given, self.token)
        if scheme.lower() == "basic" and self.users:
            try:
                user, _, password = base64.b64decode(given, validate=True).partition(b":")
            except ValueError:
                return False
            known = self.users.get(user)
            return known is not None and hmac.compare_digest(password, known)
        return False


def read_access(token_file: Path | None, users_file: Path | None) -> Access:
    """The dashboard's access from its files (at start and on SIGHUP); OSError or ValueError
    (never quoting what they hold) when one cannot be used."""
    token = None
    if token_file is not None:
        token = token_file.read_bytes().strip()
        if not token or any(c <= 32 or c > 126 for c in token):
            raise ValueError(f"{token_file} must hold one word of printable ASCII")
    users: dict[bytes, bytes] = {}
    if users_file is not None:
        for number, line in enumerate(users_file.read_bytes().splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith(b"#"):
                continue
            user, colon, password = line.partition(b":")
            if not colon or not user or not password:
                raise ValueError(f"{users_file}, line {number}: not user:password")
            users[user] = password
        if not users:
            raise ValueError(f"{users_file} names no user")
    return Access(token, users or None)


def _utc(iso: str) -> str:
    """An ISO time as the pages show it without their script: `2026-12-02 10:31:07 UTC`."""
    try:
        when = datetime.fromisoformat(str(iso).replace("Z", "+00:00"))
    except ValueError:
        return str(iso)
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("syncd.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["utc"] = _utc
    env.filters["iso"] = _iso
    env.filters["state_class"] = views.state_class
    return env


class Dashboard:
    """The pages of the running daemon's App (`app()`, which a reload replaces)."""

    def __init__(
        self,
        app: Callable[[], Any],
        last_pass: Callable[[], dict[str, float]] = dict,
        access: Callable[[], Access] = Access,
    ) -> None:
        self.app = app
        self.last_pass = last_pass
        self.access = access
        self.env = environment()
        self._lock = threading.Lock()
        self._records: OrderedDict[str, tuple[int, list[Any]]] = OrderedDict()
        self._commits: OrderedDict[str, dict[str, str]] = OrderedDict()
        self._events: OrderedDict[tuple[str, int, str], show.Events] = OrderedDict()
        self._verdict: tuple[float, dict[str, Any]] | None = None
        self._static = {
            name: (resources.files("syncd.web") / "static" / name).read_bytes() for name in STATIC
        }

    # --- routing ------------------------------------------------------------------------------

    def serves(self, path: str) -> bool:
        route = urlsplit(path).path
        return route in ("/", "/journal", "/live") or route.startswith(("/stacks/", "/static/"))

    def answer(self, path: str, authorization: str | None) -> Answer:
        parts = urlsplit(path)
        route, query = parts.path, parse_qs(parts.query)
        if not self.access().allows(authorization):
            return Answer(
                401,
                "text/plain; charset=utf-8",
                b"this dashboard needs a token or a user's password\n",
                {**SECURITY_HEADERS, "WWW-Authenticate": 'Basic realm="syncd", charset="UTF-8"'},
            )
        app = self.app()
        if route.startswith("/static/"):
            name = route[len("/static/") :]
            if name not in STATIC:
                return self._text(404, "not found")
            return Answer(200, STATIC[name], self._static[name], SECURITY_HEADERS)
        if app is None:
            return self._text(503, "starting")
        if route == "/live":
            return self._text(200, str(app.journal.state.last_seq))
        seq = app.journal.state.last_seq  # before the page is built: a later record reloads it
        if route == "/":
            return self._page("overview.html", seq, page="overview", o=self._overview(app, query))
        if route == "/journal":
            return self._page("journal.html", seq, page="journal", j=self._journal(app))
        stack = unquote(route[len("/stacks/") :])
        page = self._stack(app, stack, query)
        if page is None:
            return self._text(404, "no such stack")
        return self._page("stack.html", seq, page="stack", p=page)

    def _page(self, name: str, seq: int, **context: Any) -> Answer:
        body = self.env.get_template(name).render(seq=seq, **context).encode()
        return Answer(200, HTML, body, SECURITY_HEADERS)

    def _text(self, code: int, text: str) -> Answer:
        return Answer(code, "text/plain; charset=utf-8", (text + "\n").encode(), SECURITY_HEADERS)

    # --- pages --------------------------------------------------------------------------------

    def overview_page(self, app: Any, query: Mapping[str, list[str]]) -> str:
        """The overview's HTML (for benchmarks and tests)."""
        return self.env.get_template("overview.html").render(
            page="overview", o=(o := self._overview(app, query)), seq=o.seq
        )

    def _overview(self, app: Any, query: Mapping[str, list[str]]) -> views.Overview:
        config = app.config
        backup = None
        if config.backup.url and app.mirror is not None:
            from syncd.journal.mirror import backlog

            cursor = app.mirror.cursor
            waiting, oldest = backlog(app.journal, cursor)
            backup = {
                "url": config.backup.url,
                "waiting": waiting,
                "oldest": oldest,
                "error": cursor.error,
                "error_since": cursor.error_since,
            }
        receivers = [
            {"name": o.receiver.name, **vars(o.progress)} for o in getattr(app, "outboxes", [])
        ]
        return views.overview(
            app.journal.state,
            [r.name for r in config.repos],
            views.Filters.of(query),
            backup=backup,
            receivers=receivers,
            last_pass=self.last_pass(),
        )

    def _stack(
        self, app: Any, stack: str, query: Mapping[str, list[str]]
    ) -> views.StackPage | None:
        state = app.journal.state
        records = self._stack_records(app, stack)
        if stack not in state.stacks and not records:
            return None
        found = show.applies(records, stack)
        wanted = query.get("version", [""])[0]
        chosen = show.choose(found, int(wanted) if wanted.isdigit() else None)
        detail = None
        if chosen is not None:
            before = show.replaced(found, chosen)
            view = show.ShowView(
                chosen,
                before,
                versions.template_diff(app.config, chosen, before),
                self._version_events(app, found, chosen, before),
            )
            detail = show.as_json(view)
        commits = {a.commit: self._commit(app, a.repo, a.commit) for a in found[-50:]}
        return views.stack_page(state, stack, found, detail, commits)

    def _stack_records(self, app: Any, stack: str) -> list[Any]:
        seq = app.journal.state.last_seq
        with self._lock:
            kept = self._records.get(stack)
            if kept is not None and kept[0] == seq:
                return kept[1]
        records = [r for r in app.journal.records() if r.data.get("stack") == stack]
        with self._lock:
            self._records[stack] = (seq, records)
            self._records.move_to_end(stack)
            while len(self._records) > 16:
                self._records.popitem(last=False)
        return records

    def _version_events(
        self, app: Any, found: list[show.Apply], chosen: show.Apply, before: show.Apply | None
    ) -> show.Events:
        """The events of an apply that has ended, read once; of one under way, none yet."""
        if chosen.finished_at is None:
            return show.Events(None, None, note="read once the apply has ended")
        key = (chosen.stack, chosen.version, chosen.finished_at)
        with self._lock:
            if key in self._events:
                return self._events[key]
        events = versions.events(app.cfn, found, chosen, before)
        with self._lock:
            self._events[key] = events
            while len(self._events) > CACHED:
                self._events.popitem(last=False)
        return events

    def _commit(self, app: Any, repo: str, commit: str) -> dict[str, str]:
        """A commit's subject and author, from the repo's mirror (empty when it is gone)."""
        with self._lock:
            if commit in self._commits:
                return self._commits[commit]
        info: dict[str, str] = {}
        sync = app.syncs.get(repo) if hasattr(app, "syncs") else None
        if sync is not None:
            try:
                found = sync.source._git().commit(commit)
                info = {
                    "subject": bounded(str(found.summary), 200),
                    "author": bounded(str(found.author.name), 100),
                }
            except Exception:  # gone from the mirror, or not a commit: shown without
                info = {}
        with self._lock:
            self._commits[commit] = info
            while len(self._commits) > CACHED * 8:
                self._commits.popitem(last=False)
        return info

    def _journal(self, app: Any) -> dict[str, Any]:
        from syncd.journal.store import check_segments, segments, verify_journal

        journal = app.journal
        found = segments(journal.directory)
        tail: list[Any] = []
        for start in range(len(found) - 1, -1, -1):
            checked = check_segments(found[start:], keep_after=0, trust_start=True)
            tail = list(checked.records)
            if len(tail) >= JOURNAL_ROWS or start == 0:
                break
        rows = []
        for r in reversed(tail[-JOURNAL_ROWS:]):
            data = json.dumps(r.data, sort_keys=True)
            rows.append(
                {
                    "seq": r.seq,
                    "time": r.time,
                    "kind": r.kind.value,
                    "stack": r.data.get("stack") or "",
                    "repo": r.data.get("repo") or "",
                    "data": bounded(data, 400),
                }
            )
        now = time.monotonic()
        with self._lock:
            verdict = self._verdict
        if verdict is None or now - verdict[0] > VERIFY_EVERY:
            try:
                checked = verify_journal(journal.directory.parent, warn=lambda m: None)
                result = {
                    "ok": True,
                    "text": f"{checked.last_seq} records, hash chain and snapshot intact "
                    f"(checked {_utc(_iso(time.time()))})",
                }
            except Exception as exc:
                result = {"ok": False, "text": bounded(f"damaged: {exc}", 500)}
            verdict = (now, result)
            with self._lock:
                self._verdict = verdict
        return {
            "records": rows,
            "last_seq": journal.state.last_seq,
            "verdict": verdict[1],
            "seq": journal.state.last_seq,
        }
