"""The dashboard over real HTTP on loopback, wired as the daemon wires it (a config file read by
`load_config`, its access files by `dashboard_access`, syncd.http's listener): the headers that
reach the browser, and who may read the pages."""

from __future__ import annotations

import base64
import http.client
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from syncd.app import dashboard_access
from syncd.configfile import load_config
from syncd.core.journal_state import Kind
from syncd.http import Endpoints, HttpServer
from syncd.journal.store import Journal
from syncd.metrics import Metrics
from syncd.web.dashboard import Dashboard

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "t0ken-for-tests"
PAGES = ("/", "/stacks/db", "/journal", "/live", "/static/syncd.js", "/static/syncd.css")


def write_config(tmp_path: Path, **http: Any) -> Path:
    doc = {
        "state_dir": str(tmp_path / "state"),
        "repos": [{"name": "app", "url": str(tmp_path / "app.git")}],
        "http": {"listen": "127.0.0.1:0", **http},
    }
    path = tmp_path / "syncd.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@contextmanager
def listening(config_file: Path) -> Iterator[str]:
    """The daemon's listener and pages for `config_file`, over a journal with one stack; yields
    the listener's address."""
    config = load_config(config_file)
    access = dashboard_access(config)
    journal = Journal.open(config.state_dir, writer=True)
    try:
        journal.append(
            Kind.VERSION,
            repo="app",
            stack="db",
            version=1,
            commit="c" * 40,
            digest="d",
            action="create",
        )
        journal.append(Kind.RESULT, stack="db", result="succeeded", stack_status="CREATE_COMPLETE")
        app = SimpleNamespace(
            journal=journal, config=config, mirror=None, outboxes=[], syncs={}, cfn="not read"
        )
        endpoints = Endpoints(
            Metrics(lambda: app),
            hooks=dict,
            ready=lambda: True,
            allowed_hosts=lambda: config.http.allowed_hosts,
            dashboard=Dashboard(lambda: app, access=lambda: access),
        )
        server = HttpServer("127.0.0.1:0", endpoints)
        server.start()
        try:
            yield server.address
        finally:
            server.stop()
    finally:
        journal.close()


def get(address: str, path: str, headers: dict[str, str] | None = None) -> Any:
    """The answer to a GET: `.status`, `.headers` (an email.message.Message), `.body`."""
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        reply = conn.getresponse()
        return SimpleNamespace(status=reply.status, headers=reply.headers, body=reply.read())
    finally:
        conn.close()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def one(headers: Any, name: str) -> str:
    """The value of a header sent exactly once."""
    values = headers.get_all(name) or []
    assert len(values) == 1, f"{name}: {values}"
    return str(values[0])


def assert_protected(headers: Any) -> None:
    """The headers docs/dashboard.md promises, as the browser receives them."""
    csp = one(headers, "Content-Security-Policy")
    directives = {}
    for part in csp.split(";"):
        name, *values = part.split()
        directives[name] = values
    assert directives["default-src"] == ["'none'"]
    assert directives["script-src"] == ["'self'"]  # no 'unsafe-inline', no 'unsafe-eval'
    assert directives["style-src"] == ["'self'"]
    assert directives["connect-src"] == ["'self'"]
    assert directives["img-src"] == ["'self'"]
    assert directives["form-action"] == ["'self'"]
    assert directives["base-uri"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert "unsafe" not in csp
    assert one(headers, "X-Content-Type-Options") == "nosniff"
    assert one(headers, "X-Frame-Options") == "DENY"
    assert one(headers, "Referrer-Policy") == "no-referrer"
    assert one(headers, "Cache-Control") == "no-store"


def test_every_dashboard_answer_reaches_the_browser_with_its_security_headers(
    tmp_path: Path,
) -> None:
    with listening(write_config(tmp_path)) as address:
        for path in PAGES:
            answer = get(address, path)
            assert answer.status == 200, path
            assert_protected(answer.headers)
        page = get(address, "/")
        assert one(page.headers, "Content-Type") == "text/html; charset=utf-8"
        assert b"<h1>Overview</h1>" in page.body
        script = get(address, "/static/syncd.js")  # nosniff: the type must be right
        assert one(script.headers, "Content-Type") == "text/javascript; charset=utf-8"
        # The dashboard's refusals too: an unknown stack or file, another name (rebinding).
        for path, host, code in [
            ("/stacks/nope", None, 404),
            ("/static/nope.js", None, 404),
            ("/", "rebound.attacker.example", 403),
        ]:
            answer = get(address, path, {"Host": host} if host else None)
            assert answer.status == code, path
            assert_protected(answer.headers)


def test_the_pages_need_the_token_or_a_users_password(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN + "\n")
    (tmp_path / "users").write_text("# who may look\nalice:s3cret\n")
    config = write_config(tmp_path, token_file="token", users_file="users")  # relative paths
    with listening(config) as address:
        for path in PAGES:
            refused = get(address, path)
            assert refused.status == 401, path
            challenge = one(refused.headers, "WWW-Authenticate")
            assert challenge.startswith('Basic realm="syncd"')
            assert b"Overview" not in refused.body and b"db" not in refused.body
            assert_protected(refused.headers)
        page = get(address, "/", {"Authorization": f"Bearer {TOKEN}"})
        assert page.status == 200 and b'href="/stacks/db"' in page.body
        assert get(address, "/stacks/db", basic("alice", "s3cret")).status == 200
        assert get(address, "/live", basic("anyone", TOKEN)).status == 200  # a browser's way
        for wrong in (
            {"Authorization": "Bearer t0ken"},
            {"Authorization": f"Bearer {TOKEN}x"},
            {"Authorization": f"Basic {TOKEN}"},
            basic("alice", "wrong"),
            basic("mallory", "s3cret"),
        ):
            assert get(address, "/", wrong).status == 401, wrong
        # With access set, a proxy's name may be used; health needs no credentials.
        named = get(address, "/", {"Host": "syncd.example.com", "Authorization": f"Bearer {TOKEN}"})
        assert named.status == 200
        assert get(address, "/healthz").status == 200


@pytest.mark.parametrize(
    ("token", "users", "culprit", "why"),
    [
        pytest.param(None, "alice:pw\n", "token", "cannot read", id="token-file-missing"),
        pytest.param("", "alice:pw\n", "token", "one word", id="token-file-empty"),
        pytest.param(None, "alice:pw\n", "token_dir", "cannot read", id="token-file-a-folder"),
        pytest.param(TOKEN, "# nobody\n", "users", "names no user", id="users-file-no-user"),
        pytest.param(TOKEN, "alice\n", "users", "line 1: not user:password", id="users-no-colon"),
    ],
)
def test_an_access_file_that_cannot_be_used_stops_syncd_run_and_is_named(
    tmp_path: Path, token: str | None, users: str, culprit: str, why: str
) -> None:
    if token is not None:
        (tmp_path / "token").write_text(token)
    (tmp_path / "token_dir").mkdir()
    (tmp_path / "users").write_text(users)
    token_file = "token_dir" if culprit == "token_dir" else "token"
    config = write_config(tmp_path, token_file=token_file, users_file="users")
    run = subprocess.run(
        [sys.executable, "-m", "syncd", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert run.returncode == 2, run.stderr
    assert f"syncd: config error in {config}" in run.stderr
    problem = next(line for line in run.stderr.splitlines() if line.strip().startswith("http: "))
    assert str(tmp_path / culprit) in problem and why in problem, problem
    assert "alice" not in run.stderr and TOKEN not in run.stderr  # what they hold: never shown
    assert not (tmp_path / "state").exists()  # nothing started
