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

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import jinja2

from syncd import versions
from syncd.core import show
from syncd.core.text import bounded
from syncd.journal.store import read_steady
from syncd.sources.git import commit_summaries
from syncd.web import views
from syncd.web.access import Access

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
CACHED = 256  # template diffs and events kept (commit subjects: 8 times as many)
STACKS_KEPT = 16  # stacks whose records are kept between two views
HISTORY_ROWS = 200  # versions listed on a stack's page; older ones: `syncd history`
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


@dataclass(frozen=True)
class Answer:
    code: int
    content_type: str
    body: bytes
    headers: Mapping[str, str]


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
        self._verifying = False
        self._diffs: OrderedDict[tuple[str, int, str, int], show.TemplateDiff] = OrderedDict()
        self._static = {
            name: (resources.files("syncd.web") / "static" / name).read_bytes() for name in STATIC
        }

    # --- routing ------------------------------------------------------------------------------

    def serves(self, path: str) -> bool:
        """Whether `path` is one of the pages (and the pages are on: `http.dashboard`, read
        again after a reload)."""
        app = self.app()
        if app is not None and not app.config.http.dashboard:
            return False
        route = urlsplit(path).path
        return route in ("/", "/journal", "/live") or route.startswith(("/stacks/", "/static/"))

    def answer(self, path: str, authorization: str | None, host: str = "localhost") -> Answer:
        parts = urlsplit(path)
        route, query = parts.path, parse_qs(parts.query)
        app = self.app()
        access = self.access()
        from syncd.http import host_name

        hosts = app.config.http.allowed_hosts if app is not None else None
        if access.open and hosts is None and host_name(host) not in LOOPBACK_NAMES:
            # No token, no users, no allowed_hosts: only this machine's names. A web page whose
            # name is pointed at 127.0.0.1 (DNS rebinding) must not read the pages.
            return self._text(
                403,
                "the dashboard answers other names than localhost only with http.allowed_hosts, "
                "http.token_file or http.users_file set",
            )
        if not access.allows(authorization):
            return Answer(
                401,
                "text/plain; charset=utf-8",
                b"this dashboard needs a token or a user's password\n",
                {**SECURITY_HEADERS, "WWW-Authenticate": 'Basic realm="syncd", charset="UTF-8"'},
            )
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
            o = read_steady(lambda: self._overview(app, query))
            return self._page("overview.html", seq, page="overview", o=o)
        if route == "/journal":
            return self._page("journal.html", seq, page="journal", j=self._journal(app))
        stack = unquote(route[len("/stacks/") :])
        if not self._known(app.journal.state, stack):
            return self._text(404, "no such stack")
        page = self._stack(app, stack, query)
        if page is None:
            return self._text(404, "no such version of this stack")
        return self._page("stack.html", seq, page="stack", p=page)

    @staticmethod
    def _known(state: Any, stack: str) -> bool:
        """A stack the journal shows, or one syncd deleted that its history still names: the
        only ones whose records are read."""
        return stack in state.stacks or any(h.stack == stack for h in list(state.history))

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
        """The stack's page; None for a version it never had."""
        state = app.journal.state
        found = show.applies(self._stack_records(app, stack), stack)
        wanted = query.get("version", [""])[0]
        number = int(wanted) if wanted.isascii() and wanted.isdigit() and len(wanted) <= 9 else None
        if wanted and number is None:
            return None  # not a version number
        chosen = show.choose(found, number)
        if chosen is None and number is not None:
            return None
        detail = None
        if chosen is not None:
            before = show.replaced(found, chosen)
            view = show.ShowView(
                chosen,
                before,
                self._template_diff(app, chosen, before),
                self._version_events(app, found, chosen, before),
            )
            detail = show.as_json(view)
        shown = found[-HISTORY_ROWS:]
        commits = self._commits_of(app, shown)
        page: views.StackPage = read_steady(
            lambda: views.stack_page(state, stack, shown, detail, commits)
        )
        page.older = len(found) - len(shown)
        return page

    def _stack_records(self, app: Any, stack: str) -> list[Any]:
        """The stack's records: read whole once, then only what the journal has added since
        (the segments that hold it); kept for the last STACKS_KEPT stacks viewed."""
        journal = app.journal
        seq = journal.state.last_seq
        with self._lock:
            kept = self._records.get(stack)
        if kept is None:
            records = [r for r in journal.records() if r.data.get("stack") == stack]
        elif kept[0] < seq:
            added = [r for r in journal.records_after(kept[0]) if r.data.get("stack") == stack]
            records = kept[1] + added
        else:
            return kept[1]
        with self._lock:
            self._records[stack] = (seq, records)
            self._records.move_to_end(stack)
            while len(self._records) > STACKS_KEPT:
                self._records.popitem(last=False)
        return records

    def _template_diff(
        self, app: Any, chosen: show.Apply, before: show.Apply | None
    ) -> show.TemplateDiff:
        key = (chosen.stack, chosen.version, chosen.started_at, before.version if before else 0)
        with self._lock:
            if key in self._diffs:
                return self._diffs[key]
        diff = versions.template_diff(app.config, chosen, before)
        with self._lock:
            self._diffs[key] = diff
            while len(self._diffs) > CACHED:
                self._diffs.popitem(last=False)
        return diff

    def _version_events(
        self, app: Any, found: list[show.Apply], chosen: show.Apply, before: show.Apply | None
    ) -> show.Events:
        """The events of an apply that has ended, read once; of one under way, none yet. A
        read that failed is tried again at the next view."""
        if chosen.finished_at is None:
            return show.Events(None, None, note="read once the apply has ended")
        key = (chosen.stack, chosen.version, chosen.finished_at)
        with self._lock:
            if key in self._events:
                return self._events[key]
        events = versions.events(app.cfn, found, chosen, before)
        if events.note and events.note.startswith("CloudFormation could not be read"):
            return events
        with self._lock:
            self._events[key] = events
            while len(self._events) > CACHED:
                self._events.popitem(last=False)
        return events

    def _commits_of(self, app: Any, found: list[show.Apply]) -> dict[str, dict[str, str]]:
        """Each commit's subject and author, from its repo's mirror (none when it is gone)."""
        out: dict[str, dict[str, str]] = {}
        wanted: dict[str, set[str]] = {}
        with self._lock:
            for a in found:
                if a.commit in self._commits:
                    out[a.commit] = self._commits[a.commit]
                else:
                    wanted.setdefault(a.repo, set()).add(a.commit)
        for repo, commits in wanted.items():
            path = app.config.state_dir / "repos" / f"{repo}.git"
            infos = commit_summaries(path, commits)
            out.update(infos)
            with self._lock:
                self._commits.update(infos)
                while len(self._commits) > CACHED * 8:
                    self._commits.popitem(last=False)
        return out

    def _journal(self, app: Any) -> dict[str, Any]:
        from syncd.errors import JournalCorrupt

        journal = app.journal
        rows = []
        try:
            tail = journal.records_after(max(0, journal.state.last_seq - JOURNAL_ROWS))
        except JournalCorrupt:
            tail = []  # the verdict says where
        for r in reversed(tail[-JOURNAL_ROWS:]):
            rows.append(
                {
                    "seq": r.seq,
                    "time": r.time,
                    "kind": r.kind.value,
                    "stack": r.data.get("stack") or "",
                    "repo": r.data.get("repo") or "",
                    "data": bounded(json.dumps(r.data, sort_keys=True), 400),
                }
            )
        return {
            "records": rows,
            "last_seq": journal.state.last_seq,
            "verdict": self._checked(journal),
        }

    def _checked(self, journal: Any) -> dict[str, Any]:
        """`journal verify`'s verdict, at most VERIFY_EVERY seconds old; one check at a time
        (a page asked while one runs gets the verdict before it)."""
        from syncd.journal.store import read_snapshots, verify_journal

        now = time.monotonic()
        with self._lock:
            verdict = self._verdict
            due = verdict is None or now - verdict[0] > VERIFY_EVERY
            if due and self._verifying:
                due = verdict is None  # the first page waits for the first check
            if due:
                self._verifying = True
        if not due and verdict is not None:
            return verdict[1]
        try:
            checked = verify_journal(journal.directory.parent, warn=lambda m: None)
            snapshot = bool(read_snapshots(journal.directory, lambda m: None))
            what = "hash chain and the snapshot intact" if snapshot else "hash chain intact"
            result = {
                "ok": True,
                "text": f"{checked.last_seq} records, {what} (checked {_utc(_iso(time.time()))})",
            }
        except Exception as exc:
            result = {"ok": False, "text": bounded(f"damaged: {exc}", 500)}
        with self._lock:
            self._verdict = (now, result)
            self._verifying = False
        return result
