"""The dashboard's pages rendered from a journal's state, without a server: hostile values,
thousands of stacks, access and headers (syncd.web)."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from syncd.core.config import HttpConfig, RepoConfig
from syncd.core.journal_state import Kind, Record, fold
from syncd.web.access import Access, read_access
from syncd.web.dashboard import SECURITY_HEADERS, Dashboard

EVIL = '"><script>alert(1)</script><img src=x onerror=alert(2)>'
C1 = "a" * 40


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
