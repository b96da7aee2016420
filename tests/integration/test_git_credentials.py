"""Credentials in repo URLs never reach a command line: every local user can read any
process's command line (/proc/*/cmdline), while a process's environment is readable only by
its own user and root. Real fetches over smart HTTP behind Basic auth (`git http-backend`)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import git as gitpython
import pytest

import syncd.sources.git as git_source
from syncd.errors import SourceError
from syncd.sources.git import CREDENTIAL_HELPER, Remote, remote
from tests.integration.test_git_source import bounded, source_for
from tests.support.git_servers import LOOPBACK, GitHttpServer, git_http_server
from tests.support.gitrepo import GitRepo

USER = "deploy"
PASSWORD = "Pw-5e0b2c71-secret"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param(
            "https://deploy:s3cret@git.example.com/o/r.git",
            Remote(
                "https://git.example.com/o/r.git",
                {"SYNCD_GIT_USERNAME": "deploy", "SYNCD_GIT_PASSWORD": "s3cret"},
            ),
            id="user-and-password",
        ),
        pytest.param(
            "http://user:p%40ss%3Aw@10.0.0.1:8080/r",
            Remote(
                "http://10.0.0.1:8080/r",
                {"SYNCD_GIT_USERNAME": "user", "SYNCD_GIT_PASSWORD": "p@ss:w"},
            ),
            id="percent-encoded",
        ),
        pytest.param(
            "HTTPS://ghp_token123@GitHub.com/o/r.git",
            Remote("https://GitHub.com/o/r.git", {"SYNCD_GIT_USERNAME": "ghp_token123"}),
            id="token-as-user",
        ),
        pytest.param(
            "ssh://git:pw@host:2222/srv/r.git",
            Remote("ssh://git@host:2222/srv/r.git", {}),
            id="ssh",
        ),
        pytest.param("git://user:secret@host/r", Remote("git://host/r", {}), id="git"),
        pytest.param("git@github.com:o/r.git", Remote("git@github.com:o/r.git", {}), id="scp"),
        pytest.param(
            "https://host/path@v1/r.git", Remote("https://host/path@v1/r.git", {}), id="at"
        ),
        pytest.param("/srv/git/app.git", Remote("/srv/git/app.git", {}), id="path"),
        pytest.param("https://u:a%0Ab@h/r", Remote("https://h/r", {}), id="newline-refused"),
    ],
)
def test_remote_takes_the_credentials_out_of_the_url(url: str, expected: Remote) -> None:
    got = remote(url)
    assert got.url == expected.url
    secrets = {
        k: v for k, v in got.env.items() if k in ("SYNCD_GIT_USERNAME", "SYNCD_GIT_PASSWORD")
    }
    assert secrets == expected.env
    if got.env:
        assert got.env["GIT_CONFIG_VALUE_1"] == CREDENTIAL_HELPER
        assert "secret" not in CREDENTIAL_HELPER and "s3cret" not in got.env["GIT_CONFIG_VALUE_1"]


@pytest.fixture(autouse=True)
def _direct(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)


@pytest.fixture
def server(tmp_path: Path) -> GitRepo:
    return GitRepo(tmp_path / "server")


@pytest.fixture
def web(server: GitRepo) -> Iterator[GitHttpServer]:
    with git_http_server(server.bare.parent, (USER, PASSWORD)) as web:
        yield web


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """What syncd hands git: every argv it runs (GitPython's `execute`), and through
    GIT_TRACE every command git itself starts, remote helpers and credential helpers too."""
    seen: dict[str, Any] = {"argv": [], "trace": tmp_path / "git-trace"}
    real_execute = gitpython.Git.execute
    real_env = git_source.hermetic_env

    def execute(self: Any, command: Any, *args: Any, **kwargs: Any) -> Any:
        seen["argv"].append([str(part) for part in command])
        return real_execute(self, command, *args, **kwargs)

    monkeypatch.setattr(gitpython.Git, "execute", execute)
    monkeypatch.setattr(
        git_source, "hermetic_env", lambda: {**real_env(), "GIT_TRACE": str(seen["trace"])}
    )
    yield seen


def test_no_command_line_carries_the_password_and_the_fetch_still_authenticates(
    web: GitHttpServer, server: GitRepo, commands: dict[str, Any], tmp_path: Path
) -> None:
    first = server.commit({"deployments/app.yaml": "v1\n"})
    source = source_for(web.url("remote.git", USER, PASSWORD), tmp_path / "state")
    result, _ = bounded(source.fetch)
    assert not isinstance(result, BaseException), result
    assert result.commit == first
    assert source.resolve("refs/heads/main") == first  # plan's fetches too
    assert {r.user for r in web.requests if r.status == 200} == {USER}  # it did authenticate

    fetches = [argv for argv in commands["argv"] if "fetch" in argv]
    assert len(fetches) == 2
    for argv in fetches:
        assert argv[argv.index("--") + 1] == f"http://{LOOPBACK}:{web.port}/remote.git"
    trace = commands["trace"].read_text()
    assert "remote-http" in trace and "get" in trace  # git ran its remote and our helper
    for text in (repr(commands["argv"]), trace):
        assert PASSWORD not in text
        assert f"{USER}:" not in text and f"{USER}@" not in text


def test_a_wrong_password_still_fails_without_a_prompt_and_without_a_trace(
    web: GitHttpServer, server: GitRepo, commands: dict[str, Any], tmp_path: Path
) -> None:
    server.commit({"deployments/app.yaml": "v1\n"})
    wrong = "wrong-" + PASSWORD
    source = source_for(web.url("remote.git", USER, wrong), tmp_path / "state")
    error, _ = bounded(source.fetch)
    assert isinstance(error, SourceError), error
    assert "Authentication failed" in str(error)
    assert wrong not in f"{error} {commands['argv']} {commands['trace'].read_text()}"


class _Redirect(BaseHTTPRequestHandler):
    target = ""

    def do_GET(self) -> None:
        self.send_response(302)
        self.send_header("Location", self.target + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_credentials_go_to_the_urls_own_host_only(
    web: GitHttpServer, server: GitRepo, tmp_path: Path
) -> None:
    """The repo's URL answers with a redirect to another server: the helper gives that
    server nothing (it would take the password), and the fetch fails."""
    server.commit({"deployments/app.yaml": "v1\n"})
    handler = type("Redirect", (_Redirect,), {"target": web.base})
    redirector = ThreadingHTTPServer((LOOPBACK, 0), handler)
    threading.Thread(target=redirector.serve_forever, daemon=True).start()
    try:
        url = f"http://{USER}:{PASSWORD}@{LOOPBACK}:{redirector.server_port}/remote.git"
        error, _ = bounded(source_for(url, tmp_path / "state").fetch)
    finally:
        redirector.shutdown()
        redirector.server_close()
    assert isinstance(error, SourceError), error
    assert web.requests and all(r.user is None and r.status == 401 for r in web.requests)
    assert PASSWORD not in str(error)
