"""The dashboard's pages rendered from a journal's state, without a server: hostile values,
thousands of stacks, access and headers, a version's details (template diff, parameters, tags,
commits), the filters and the counts by state (syncd.web)."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from syncd import versions
from syncd.core.config import HttpConfig, RepoConfig
from syncd.core.journal_state import Kind, Record, fold
from syncd.web import dashboard as dashboard_module
from syncd.web.access import Access, read_access
from syncd.web.dashboard import SECURITY_HEADERS, Dashboard

EVIL = '"><script>alert(1)</script><img src=x onerror=alert(2)>'
C1 = "a" * 40
C2 = "b" * 40


def app_of(records: list[Record], repos: tuple[str, ...] = ("app",)) -> Any:
    state = fold(records)
    journal = SimpleNamespace(
        state=state,
        records=lambda: list(records),
        records_after=lambda seq: [r for r in records if r.seq > seq],
        directory=Path("/no"),
    )
    config = SimpleNamespace(
        repos=[RepoConfig(name=r, url="/nonexistent") for r in repos],
        backup=SimpleNamespace(url=None),
        state_dir=Path("/no"),
        http=HttpConfig(),
    )
    return SimpleNamespace(
        journal=journal, config=config, mirror=None, outboxes=[], syncs={}, cfn="not read here"
    )


def applied(seq: int, stack: str, *, message: str = "", params: dict[str, str] | None = None):
    version = {
        "repo": "app",
        "stack": stack,
        "version": 1,
        "commit": C1,
        "digest": "d",
        "action": "create",
        "template_file": "templates/t.yaml",
        "parameters": params or {},
    }
    change_set = {
        "stack": stack,
        "arn": f"arn:aws:cloudformation:us-east-1:1:changeSet/{EVIL}/1",
        "name": EVIL,
        "changes": [{"action": "Add", "logical_id": EVIL, "type": EVIL, "replacement": None}],
    }
    result = (
        {"stack": stack, "result": "failed", "message": message}
        if message
        else {"stack": stack, "result": "succeeded", "stack_status": "CREATE_COMPLETE"}
    )
    return [
        Record(seq, "2026-12-02T10:00:00.000Z", Kind.VERSION, version),
        Record(seq + 1, "2026-12-02T10:00:01.000Z", Kind.CHANGE_SET, change_set),
        Record(seq + 2, "2026-12-02T10:00:02.000Z", Kind.RESULT, result),
    ]


def get(
    dashboard: Dashboard, path: str, authorization: str | None = None, host: str = "localhost"
) -> tuple[int, str]:
    answer = dashboard.answer(path, authorization, host)
    # Every answer has every header (their values, as a browser gets them, are checked in
    # tests/integration/test_dashboard_access.py).
    for name, value in SECURITY_HEADERS.items():
        assert answer.headers[name] == value
    return answer.code, answer.body.decode()


def no_markup_from_data(html: str) -> None:
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # The only scripts are the page's own, by URL: no inline script at all.
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/static/syncd.js" defer>']


def test_hostile_names_messages_and_values_are_escaped_everywhere() -> None:
    stack = f"evil{EVIL}"
    records = applied(1, stack, message=f"failed: {EVIL}", params={"P": EVIL})
    records += [
        Record(4, "2026-12-02T10:00:03.000Z", Kind.COMMIT, {"repo": "app", "commit": C1}),
        Record(5, "t", Kind.SOURCE_ERROR, {"repo": "app", "message": EVIL}),
    ]
    dashboard = Dashboard(lambda: app_of(records))
    code, overview = get(dashboard, "/")
    assert code == 200 and "evil&#34;&gt;&lt;script&gt;" in overview
    no_markup_from_data(overview)
    code, page = get(dashboard, "/stacks/" + stack.replace("<", "%3C").replace(">", "%3E"))
    assert code == 200
    no_markup_from_data(page)
    assert page.count("&lt;img src=x onerror=alert(2)&gt;") >= 3  # message, change, parameter


def test_two_thousand_stacks_render_with_counts_and_filters() -> None:
    records: list[Record] = []
    for n in range(2000):
        records += applied(len(records) + 1, f"s{n:04d}", message="no" if n % 100 == 0 else "")
    dashboard = Dashboard(lambda: app_of(records))
    code, html = get(dashboard, "/")
    assert code == 200 and html.count('<th scope="row">') == 2000
    assert "2000 of 2000 stacks" in html
    code, failed = get(dashboard, "/?state=failed")
    assert failed.count('<th scope="row">') == 20 and "20 of 2000 stacks" in failed
    code, named = get(dashboard, "/?name=s19&state=nonsense")  # an unknown state: ignored
    assert named.count('<th scope="row">') == 100


def test_states_are_written_out_not_only_coloured() -> None:
    records = applied(1, "ok") + applied(4, "bad", message="quota exceeded")
    _, html = get(Dashboard(lambda: app_of(records)), "/")
    assert '<span class="state failed">failed</span>' in html
    assert '<span class="state in_sync">in sync</span>' in html


def test_a_stack_awaiting_approval_shows_the_command_to_run() -> None:
    records = [
        *applied(1, "db")[:1],
        Record(
            2,
            "t",
            Kind.CHANGE_SET,
            {
                "stack": "db",
                "arn": "arn:aws:cloudformation:us-east-1:1:changeSet/syncd-v1-abc/uuid",
                "name": "syncd-v1-abc",
                "changes": [],
                "awaiting_approval": True,
            },
        ),
    ]
    _, html = get(Dashboard(lambda: app_of(records)), "/stacks/db")
    assert "waits for approval" in html
    assert "syncd approve db --change-set syncd-v1-abc" in html


def test_unknown_pages_and_files() -> None:
    app = app_of(applied(1, "db"))
    dashboard = Dashboard(lambda: app)
    read = []
    app.journal.records = lambda: read.append(1) or []
    assert get(dashboard, "/stacks/nope")[0] == 404
    assert read == []  # a stack the journal does not know: nothing read for it
    fresh = Dashboard(lambda: app_of(applied(1, "db")))
    assert get(fresh, "/stacks/db?version=1")[0] == 200
    for version in ("9", "²", "9" * 5000, "-1"):
        assert get(fresh, f"/stacks/db?version={version}")[0] == 404
    assert get(dashboard, "/static/../../etc/passwd")[0] == 404
    assert get(dashboard, "/static/syncd.css")[0] == 200
    assert get(dashboard, "/live") == (200, "3\n")
    assert not dashboard.serves("/metricsx") and dashboard.serves("/stacks/x")


def test_access_by_token_or_password(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("t0ken\n")
    (tmp_path / "users").write_text("# who may look\nalice:s3cret\nbob:pa:ss\n")
    access = read_access(tmp_path / "token", tmp_path / "users")
    dashboard = Dashboard(lambda: app_of(applied(1, "db")), access=lambda: access)

    def basic(user: str, password: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    for path in ("/", "/live", "/static/syncd.js", "/stacks/db", "/journal"):
        answer = dashboard.answer(path, None)
        assert answer.code == 401 and answer.headers["WWW-Authenticate"].startswith("Basic")
    assert get(dashboard, "/", "Bearer t0ken")[0] == 200
    assert get(dashboard, "/", basic("alice", "s3cret"))[0] == 200
    assert get(dashboard, "/", basic("bob", "pa:ss"))[0] == 200
    assert get(dashboard, "/live", basic("anyone", "t0ken"))[0] == 200  # the token, in a browser
    for wrong in ("Bearer t0ke", basic("alice", "nope"), basic("eve", "s3cret"), "Basic !!!", ""):
        assert get(dashboard, "/", wrong)[0] == 401
    assert Access().allows(None)
    # With access set, any name may be used (a proxy's); without, only this machine's.
    assert get(dashboard, "/", "Bearer t0ken", "syncd.example.com")[0] == 200
    open_one = Dashboard(lambda: app_of(applied(1, "db")))
    assert get(open_one, "/", None, "127.0.0.1:9280")[0] == 200
    assert get(open_one, "/", None, "[::1]:9280")[0] == 200
    code, text = get(open_one, "/", None, "rebound.attacker.example:9280")
    assert code == 403 and "http.allowed_hosts" in text


@pytest.mark.parametrize(
    ("token", "users"),
    [("two words", None), ("", None), (None, "nocolon\n"), (None, "# only a comment\n")],
)
def test_access_files_that_cannot_be_used(tmp_path: Path, token: str | None, users: str | None):
    paths = []
    for name, text in (("token", token), ("users", users)):
        if text is None:
            paths.append(None)
        else:
            (tmp_path / name).write_text(text)
            paths.append(tmp_path / name)
    with pytest.raises(ValueError) as info:
        read_access(*paths)
    assert "two words" not in str(info.value)


def test_a_very_long_name_and_message_stay_one_bounded_cell() -> None:
    stack = "s" + "x" * 5000
    records = applied(1, stack, message="why " * 5000)
    _, html = get(Dashboard(lambda: app_of(records)), "/")
    assert html.count(stack) == 2  # its link and its name, whole (it wraps); the message cut
    assert "why why" in html and len(html) < 60_000


def test_pages_off_after_a_reload() -> None:
    app = app_of(applied(1, "db"))
    dashboard = Dashboard(lambda: app)
    assert dashboard.serves("/")
    app.config.http = HttpConfig(dashboard=False)
    assert not dashboard.serves("/") and not dashboard.serves("/static/syncd.css")


def test_a_read_of_the_state_is_made_again_when_a_worker_changed_it_meanwhile():
    """The pages and /metrics read the journal's state without its lock (read_steady)."""
    from syncd.journal.store import read_steady

    state = {"a": 1}
    tries = []

    def walk() -> list[str]:
        tries.append(1)
        out = []
        for key in state:
            if len(tries) < 3:
                state[f"k{len(state)}"] = 0  # a worker appends while it walks
            out.append(key)
        return out

    assert read_steady(walk) == list(state) and len(tries) == 3

    def broken() -> None:
        raise RuntimeError("something else")

    with pytest.raises(RuntimeError, match="something else"):
        read_steady(broken)


def versioned(
    seq: int,
    stack: str,
    number: int,
    *,
    repo: str = "app",
    commit: str = C1,
    params: dict[str, str] | None = None,
    tags: dict[str, str] | None = None,
    result: str = "succeeded",
) -> list[Record]:
    """Version `number` of `stack` applied from `commit`, ending in `result`."""
    version = {
        "repo": repo,
        "stack": stack,
        "version": number,
        "commit": commit,
        "digest": f"d{number}",
        "action": "create" if number == 1 else "update",
        "template_file": "templates/t.yaml",
        "parameters": params or {},
        "tags": tags or {},
    }
    end: dict[str, Any] = {"stack": stack, "result": result}
    if result == "failed":
        end["message"] = "quota exceeded"
    else:
        end["stack_status"] = "UPDATE_COMPLETE"
    return [
        Record(seq, f"2026-12-02T10:00:{seq:02d}.000Z", Kind.VERSION, version),
        Record(seq + 1, f"2026-12-02T10:01:{seq:02d}.000Z", Kind.RESULT, end),
    ]


def section(html: str, title: str, until: str) -> str:
    """The part of a page from the heading `title` to the next `until`."""
    start = html.index(title)
    return html[start : html.index(until, start)]


TEMPLATES = {
    C1: "Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n    Properties:\n      TopicName: old\n",
    C2: "Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n    Properties:\n      TopicName: new\n",
}


def test_a_version_whose_template_changed_shows_the_diff(monkeypatch) -> None:
    """The template's diff against the version before, each line marked added or removed
    (the two templates as the repo's Git mirror would give them)."""
    read = []

    def from_mirror(config: Any, repo: str, where: Any) -> tuple[str, None]:
        read.append((repo, where.version, where.commit, where.file))
        return TEMPLATES[where.commit], None

    monkeypatch.setattr(versions, "read_template", from_mirror)
    records = versioned(1, "db", 1, commit=C1) + versioned(3, "db", 2, commit=C2)
    dashboard = Dashboard(lambda: app_of(records))
    code, html = get(dashboard, "/stacks/db")
    assert code == 200
    assert sorted(read) == [
        ("app", 1, C1, "templates/t.yaml"),
        ("app", 2, C2, "templates/t.yaml"),
    ]
    template = section(html, "<h3>Template against version 1</h3>", "<h3>Stack events")
    assert '<span class="hunk">@@ -2,4 +2,4 @@</span>' in template
    assert (
        '<span class="">     Properties:</span>'
        '<span class="del">-      TopicName: old</span>'
        '<span class="add">+      TopicName: new</span>'
    ) in template
    assert "no change" not in template
    # The first version (a create): its whole template added.
    _, first = get(dashboard, "/stacks/db?version=1")
    template = section(first, "<h3>Template</h3>", "<h3>Stack events")
    assert '<span class="add">+      TopicName: old</span>' in template
    assert re.findall(r'<span class="del">([^<]*)</span>', template) == ["--- /dev/null"]


def test_noecho_parameters_show_as_stars_never_their_value() -> None:
    """A parameter NoEcho in this version shows `****` before and after, and the value the
    journal kept from before it was NoEcho is not on the page."""
    records = versioned(1, "db", 1, params={"DbPassword": "hunter2", "Size": "small"})
    records += versioned(3, "db", 2, commit=C2, params={"DbPassword": "****", "Size": "large"})
    _, html = get(Dashboard(lambda: app_of(records)), "/stacks/db")
    assert "hunter2" not in html
    parameters = section(html, "<h3>Parameters</h3>", "<h3>Tags</h3>")
    assert (
        '<tr class="not_compared"><td>DbPassword</td><td>****</td><td>****</td>'
        "<td>not compared</td></tr>"
    ) in parameters
    assert '<tr class="changed"><td>Size</td><td>small</td><td>large</td>' in parameters


def test_tags_before_and_after() -> None:
    records = versioned(1, "db", 1, tags={"team": "red", "cost": "1", "gone": "x"})
    records += versioned(3, "db", 2, commit=C2, tags={"team": "blue", "cost": "1", "new": "y"})
    _, html = get(Dashboard(lambda: app_of(records)), "/stacks/db")
    tags = section(html, "<h3>Tags</h3>", "<h3>Template")
    rows = re.findall(
        r'<tr class="(\w+)"><td>(\w+)</td><td>(\w*)</td><td>(\w*)</td><td>([\w ]+)</td></tr>', tags
    )
    assert rows == [
        ("unchanged", "cost", "1", "1", "unchanged"),
        ("removed", "gone", "x", "", "removed"),
        ("added", "new", "", "y", "added"),
        ("changed", "team", "red", "blue", "changed"),
    ]


def test_the_history_names_each_commits_subject_and_author(monkeypatch) -> None:
    asked = []

    def summaries(path: Path, commits: Any) -> dict[str, dict[str, str]]:
        asked.append((path, set(commits)))
        known = {
            C1: {"subject": "db: the first version", "author": "Ada Lovelace"},
            C2: {"subject": "db: bigger", "author": f"Grace {EVIL}"},
        }
        return {c: known[c] for c in commits}

    monkeypatch.setattr(dashboard_module, "commit_summaries", summaries)
    records = versioned(1, "db", 1, commit=C1) + versioned(3, "db", 2, commit=C2)
    _, html = get(Dashboard(lambda: app_of(records)), "/stacks/db")
    assert asked == [(Path("/no/repos/app.git"), {C1, C2})]  # the repo's mirror, once
    history = section(html, '<h2 id="history-h">History</h2>', "</tbody>")
    rows = {}
    for row in history.split("<tr>")[2:]:  # after the head's row: a row per version
        number = re.search(r"\?version=(\d+)", row)
        assert number is not None, row
        rows[number[1]] = row
    assert sorted(rows) == ["1", "2"]
    assert '<span class="subject">db: the first version</span>' in rows["1"]
    assert '<span class="author">Ada Lovelace</span>' in rows["1"]
    assert '<span class="subject">db: bigger</span>' in rows["2"]
    assert '<span class="author">Grace &#34;&gt;&lt;script&gt;alert(1)' in rows["2"]
    no_markup_from_data(html)


def counts_of(html: str) -> dict[str, int]:
    """The overview's counts by state, as its links show them (`all` too)."""
    found = re.findall(r'<li><a href="/(?:\?state=(\w+))?"[^>]*>.*?<strong>(\d+)</strong>', html)
    return {state or "all": int(n) for state, n in found}


def test_the_repo_filter_and_the_counts_by_state() -> None:
    records = versioned(1, "a-ok", 1) + versioned(3, "a-bad", 1, result="failed")
    records += versioned(5, "w-ok", 1, repo="web")
    records += versioned(7, "w-bad", 1, repo="web", result="failed")
    records += versioned(9, "w-ok2", 1, repo="web")
    records += [
        *versioned(11, "w-wait", 1, repo="web")[:1],
        Record(
            12,
            "t",
            Kind.CHANGE_SET,
            {
                "stack": "w-wait",
                "arn": "arn:aws:cloudformation:us-east-1:1:changeSet/syncd-v1-abc/uuid",
                "name": "syncd-v1-abc",
                "changes": [],
                "awaiting_approval": True,
            },
        ),
    ]
    dashboard = Dashboard(lambda: app_of(records, repos=("app", "web")))
    expected = {"failed": 2, "awaiting_approval": 1, "in_sync": 3, "all": 6}
    _, everything = get(dashboard, "/")
    assert counts_of(everything) == expected
    assert "6 of 6 stacks" in everything
    _, web = get(dashboard, "/?repo=web")
    assert re.findall(r'<th scope="row"><a href="/stacks/([\w-]+)"', web) == [
        "w-bad",
        "w-ok",
        "w-ok2",
        "w-wait",
    ]
    assert "4 of 6 stacks" in web and "<option selected>web</option>" in web
    assert counts_of(web) == expected  # the counts are of every stack, whatever the filter
    _, failed_in_web = get(dashboard, "/?repo=web&state=failed")
    assert re.findall(r'<th scope="row"><a href="/stacks/([\w-]+)"', failed_in_web) == ["w-bad"]
    _, nobody = get(dashboard, "/?repo=nope")
    assert "0 of 6 stacks" in nobody and "no stack matches" in nobody
