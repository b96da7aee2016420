"""`syncd.sources.git` over the network transports, against real servers on 127.0.0.1: smart
HTTP and HTTPS (git's own `git http-backend` behind HTTP Basic auth) and SSH (a private sshd).

The tests configure syncd the way an operator does: credentials in the URL for HTTP(S), and
GIT_SSH_COMMAND naming a deploy key and a pinned known_hosts file for SSH.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from syncd.errors import BranchMissing, SourceError
from syncd.sources.git import GitSource
from tests.integration.test_git_source import LIMIT_SECONDS, bounded, changes, source_for
from tests.support.git_servers import (
    LOOPBACK,
    GitHttpServer,
    Request,
    SshKey,
    SshServer,
    Tls,
    fetch_in_terminal,
    git_http_server,
    make_tls,
    ssh_command,
    ssh_key,
    sshd,
)
from tests.support.gitrepo import GitRepo
from tests.support.timing import eventually

USER = "deploy"
PASSWORD = "Pw-7f3c9e1d-secret"  # distinctive, so that a leak is easy to spot
# What ssh and git say when they ask for something on the terminal.
PROMPTS = re.compile(r"continue connecting|Enter passphrase|[Pp]assword( for [^:]*)?:|Username for")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reach the loopback servers directly (libcurl honours the proxy variables), and start
    from no TLS or ssh settings of the machine's (CI images often set GIT_SSL_CAINFO)."""
    for name in list(os.environ):
        if name.lower().endswith("_proxy") or name.startswith(("GIT_SSL_", "GIT_SSH")):
            monkeypatch.delenv(name)


@pytest.fixture
def server(tmp_path: Path) -> GitRepo:
    return GitRepo(tmp_path / "server")


def files_containing(folder: Path, secret: str) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


# --- smart HTTP(S) -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(params=["http", "https"])
def web(
    request: pytest.FixtureRequest, server: GitRepo, tls: Tls, monkeypatch: pytest.MonkeyPatch
) -> Iterator[GitHttpServer]:
    """`server.bare` over smart HTTP, or HTTPS with a certificate from the private CA `tls`
    which the operator trusts through GIT_SSL_CAINFO, behind HTTP Basic auth as
    USER:PASSWORD."""
    https = request.param == "https"
    if https:
        monkeypatch.setenv("GIT_SSL_CAINFO", str(tls.ca))
    with git_http_server(server.bare.parent, (USER, PASSWORD), tls if https else None) as web:
        yield web


def http_source(web: GitHttpServer, state: Path, **userinfo: str | None) -> GitSource:
    return source_for(web.url("remote.git", **userinfo), state)


def test_fetch_over_smart_http_with_basic_auth_sees_new_commits(
    web: GitHttpServer, server: GitRepo, tmp_path: Path
) -> None:
    first = server.commit({"deployments/app.yaml": "v1\n", "templates/app.yaml": "{}\n"})
    source = http_source(web, tmp_path / "state", user=USER, password=PASSWORD)
    assert source.display_url == f"{web.scheme}://***@{LOOPBACK}:{web.port}/remote.git"

    result, _ = bounded(source.fetch)
    assert not isinstance(result, BaseException), result
    assert (result.previous, result.commit, result.forced) == (None, first, False)
    assert changes(result) == {("A", "deployments/app.yaml"), ("A", "templates/app.yaml")}

    # Smart HTTP (git-upload-pack, not dumb file reads), served to the configured user only.
    assert Request("POST", "/remote.git/git-upload-pack", USER, 200) in web.requests
    assert {r.user for r in web.requests if r.status != 401} == {USER}

    second = server.commit({"deployments/app.yaml": "v2\n"})
    result, _ = bounded(source.fetch)
    assert not isinstance(result, BaseException), result
    assert (result.previous, result.commit, result.forced) == (first, second, False)
    assert changes(result) == {("M", "deployments/app.yaml")}
    assert source.tree(second).read("deployments/app.yaml") == b"v2\n"

    # The password is written nowhere in syncd's state (FETCH_HEAD, config, logs...).
    assert files_containing(tmp_path / "state", PASSWORD) == []


@pytest.mark.parametrize(
    "userinfo",
    [
        pytest.param({"user": USER, "password": "wrong-" + PASSWORD}, id="wrong-password"),
        pytest.param({"user": USER}, id="no-password"),
        pytest.param({}, id="anonymous"),
    ],
)
def test_a_wrong_or_missing_password_fails_quickly_without_prompting(
    web: GitHttpServer,
    server: GitRepo,
    userinfo: dict[str, str],
    prompt_trap: Path,
    tmp_path: Path,
) -> None:
    server.commit({"deployments/app.yaml": "v1\n"})
    source = http_source(web, tmp_path / "state", **userinfo)
    error, _ = bounded(source.fetch)

    assert isinstance(error, SourceError), error
    assert not isinstance(error, BranchMissing)
    assert not prompt_trap.exists(), prompt_trap.read_text()
    # The server turned every request down for want of a credential: nothing was served.
    assert web.requests
    assert {r.status for r in web.requests} == {401}
    assert "Authentication failed" in str(error) or "terminal prompts disabled" in str(error)
    # No trace of the password (the wrong one contains the right one) anywhere.
    text = f"{error} {error!r} {error.args} {source.display_url}"
    assert PASSWORD not in text
    assert error.__cause__ is None
    assert error.__suppress_context__ is True
    assert files_containing(tmp_path / "state", PASSWORD) == []
    assert source.current() is None


@pytest.mark.parametrize(
    "inherited",
    [
        pytest.param({}, id="plain"),
        # hermetic_env drops every GIT_* variable but the two ssh ones, so a switch left in
        # the daemon's environment must not turn certificate checking off either.
        pytest.param({"GIT_SSL_NO_VERIFY": "1"}, id="GIT_SSL_NO_VERIFY"),
    ],
)
def test_https_refuses_a_certificate_from_a_ca_nobody_trusted(
    server: GitRepo,
    tls: Tls,
    inherited: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server.commit({"deployments/app.yaml": "v1\n"})
    for name, value in inherited.items():
        monkeypatch.setenv(name, value)
    with git_http_server(server.bare.parent, (USER, PASSWORD), tls) as web:
        source = source_for(web.url("remote.git", USER, PASSWORD), tmp_path / "state")
        error, _ = bounded(source.fetch)

    assert isinstance(error, SourceError), error
    assert "certificate" in str(error)
    assert PASSWORD not in f"{error} {error!r}"
    assert web.requests == []  # no request, so no password, crossed the untrusted connection
    assert source.current() is None


def _ca_folder(tls: Tls, folder: Path) -> Path:
    folder.mkdir()
    shutil.copy(tls.ca, folder / "private-ca.pem")
    return folder


@pytest.mark.parametrize("variable", ["GIT_SSL_CAINFO", "GIT_SSL_CAPATH"])
def test_https_trusts_a_private_ca_named_in_the_environment(
    server: GitRepo,
    tls: Tls,
    variable: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Git server whose certificate comes from a company CA: the operator names the CA in
    git's own variables, GIT_SSL_CAINFO (a file) or GIT_SSL_CAPATH (a folder). syncd runs git
    with no system or user config, so the environment is the only per-daemon place left for
    this (SSL_CERT_FILE, SSL_CERT_DIR and CURL_CA_BUNDLE do not reach Debian's git, which uses
    libcurl-gnutls). Keeping GIT_SSL_NO_VERIFY out must not take these two with it."""
    head = server.commit({"deployments/app.yaml": "v1\n"})
    value = tls.ca if variable == "GIT_SSL_CAINFO" else _ca_folder(tls, tmp_path / "cas")
    monkeypatch.setenv(variable, str(value))
    with git_http_server(server.bare.parent, (USER, PASSWORD), tls) as web:
        url = web.url("remote.git", USER, PASSWORD)
        # Control: git itself, run with the same variable and no config, trusts the server.
        plain = subprocess.run(
            ["git", "ls-remote", url, "refs/heads/main"],
            env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull},
            capture_output=True,
            text=True,
            cwd=tmp_path,
            check=False,
        )
        assert plain.stdout.split() == [head, "refs/heads/main"], plain.stderr

        source = source_for(url, tmp_path / "state")
        result, _ = bounded(source.fetch)
    assert not isinstance(result, BaseException), result
    assert result.commit == head


# --- SSH -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ssh:
    server: SshServer
    deploy: SshKey  # authorized
    locked: SshKey  # authorized, but protected by a passphrase nobody gives
    stranger: SshKey  # not authorized
    known_hosts: Path  # pins the server's real host key

    def refusal(self, kind: str, folder: Path) -> tuple[SshKey, Path]:
        """(client key, known_hosts) that the server or the client refuses, by `kind`."""
        folder.mkdir(exist_ok=True)
        empty = folder / "known_hosts.empty"
        empty.write_text("")
        impostor = folder / "known_hosts.changed"
        impostor.write_text(self.server.known_hosts_line(self.stranger) + "\n")
        return {
            "unauthorized-key": (self.stranger, self.known_hosts),
            "passphrase-key": (self.locked, self.known_hosts),
            "unknown-host": (self.deploy, empty),
            "changed-host-key": (self.deploy, impostor),
        }[kind]


REFUSALS = ["unauthorized-key", "passphrase-key", "unknown-host", "changed-host-key"]


@pytest.fixture
def ssh(tmp_path: Path) -> Iterator[Ssh]:
    keys = tmp_path / "keys"
    deploy = ssh_key(keys / "deploy")
    locked = ssh_key(keys / "locked", passphrase="nobody types this")
    stranger = ssh_key(keys / "stranger")
    with sshd(tmp_path / "sshd", [deploy, locked]) as server:
        known_hosts = keys / "known_hosts"
        known_hosts.write_text(server.known_hosts_line() + "\n")
        yield Ssh(server, deploy, locked, stranger, known_hosts)


@pytest.mark.parametrize("form", ["ssh-url", "scp-like"])
def test_fetch_over_ssh_with_a_deploy_key_and_a_pinned_host_key(
    ssh: Ssh, server: GitRepo, form: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    command = ssh_command(ssh.deploy, ssh.known_hosts)
    if form == "ssh-url":
        url = ssh.server.url(server.bare)
    else:  # user@host:path names no port: the operator's ssh options do
        url = f"{ssh.server.user}@{LOOPBACK}:{server.bare}"
        command += f" -o Port={ssh.server.port}"
    monkeypatch.setenv("GIT_SSH_COMMAND", command)
    first = server.commit({"deployments/app.yaml": "v1\n", "templates/app.yaml": "{}\n"})
    source = source_for(url, tmp_path / "state")
    assert source.config.local_path is None  # really remote, not read as a folder

    result, _ = bounded(source.fetch)
    assert not isinstance(result, BaseException), result
    assert (result.previous, result.commit) == (None, first)
    assert changes(result) == {("A", "deployments/app.yaml"), ("A", "templates/app.yaml")}
    # sshd's monitor writes the log line: it may come a moment after git has its answer.
    accepted = f"Accepted publickey for {ssh.server.user} from {LOOPBACK}"
    eventually(lambda: accepted in ssh.server.log.read_text())

    second = server.commit({"deployments/app.yaml": "v2\n"})
    result, _ = bounded(source.fetch)
    assert not isinstance(result, BaseException), result
    assert (result.previous, result.commit, result.forced) == (first, second, False)
    assert changes(result) == {("M", "deployments/app.yaml")}
    assert source.tree(second).read("deployments/app.yaml") == b"v2\n"


@pytest.mark.parametrize("refusal", REFUSALS)
def test_an_ssh_refusal_fails_quickly_without_prompting(
    ssh: Ssh,
    server: GitRepo,
    refusal: str,
    prompt_trap: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key, known_hosts = ssh.refusal(refusal, tmp_path / "refusal")
    monkeypatch.setenv("GIT_SSH_COMMAND", ssh_command(key, known_hosts))
    server.commit({"deployments/app.yaml": "v1\n"})
    url = ssh.server.url(server.bare)
    source = source_for(url, tmp_path / "state")

    error, _ = bounded(source.fetch)
    assert isinstance(error, SourceError), error
    assert not isinstance(error, BranchMissing)
    assert not prompt_trap.exists(), prompt_trap.read_text()
    assert source.current() is None
    if refusal == "unauthorized-key":  # it got as far as the key
        failed = f"Failed publickey for {ssh.server.user}"
        eventually(lambda: failed in ssh.server.log.read_text())
    assert "Accepted publickey" not in ssh.server.log.read_text()

    # Again with a terminal ssh could prompt on: BatchMode still fails at once.
    run = fetch_in_terminal(url, tmp_path / "state-tty", LIMIT_SECONDS)
    assert run.finished, f"still waiting after {LIMIT_SECONDS} s at: {run.transcript!r}"
    assert run.outcome is not None, run.transcript
    assert run.outcome.get("error") == "SourceError", run.outcome
    assert not PROMPTS.search(run.transcript), run.transcript


@pytest.mark.parametrize("refusal", ["unknown-host", "passphrase-key"])
def test_an_operators_ssh_command_without_batchmode_still_never_prompts(
    ssh: Ssh, server: GitRepo, refusal: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hermetic_env adds `-o BatchMode=yes` only when GIT_SSH_COMMAND is unset. An operator's
    own command for a deploy key ("ssh -i KEY ...", as in test_git_source) without BatchMode
    must not let ssh ask on syncd's terminal (`syncd run` from a shell) whether to trust a
    new host key or for a key's passphrase: the module promises that no git process
    prompts, and a prompt nobody answers stops the daemon for good."""
    key, known_hosts = ssh.refusal(refusal, tmp_path / "refusal")
    monkeypatch.setenv(
        "GIT_SSH_COMMAND",
        f"ssh -F /dev/null -o IdentitiesOnly=yes -i {key.private} "
        f"-o UserKnownHostsFile={known_hosts} -o GlobalKnownHostsFile=/dev/null",
    )
    server.commit({"deployments/app.yaml": "v1\n"})
    run = fetch_in_terminal(ssh.server.url(server.bare), tmp_path / "state", LIMIT_SECONDS)
    assert run.finished, f"still waiting after {LIMIT_SECONDS} s at: {run.transcript!r}"
    assert run.outcome is not None, run.transcript
    assert run.outcome.get("error") == "SourceError", run.outcome


@pytest.mark.parametrize(
    ("refusal", "cause"),
    [
        ("unauthorized-key", "Permission denied (publickey)"),
        ("unknown-host", "Host key verification failed"),
        ("changed-host-key", "Host key verification failed"),
    ],
)
def test_an_ssh_refusal_says_why(
    ssh: Ssh,
    server: GitRepo,
    refusal: str,
    cause: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The journal's message is all an operator sees. git's last word on any ssh failure is
    "fatal: Could not read from remote repository." (the same for a key the server refuses
    and a host key that changed); the reason is on ssh's own line before it."""
    key, known_hosts = ssh.refusal(refusal, tmp_path / "refusal")
    monkeypatch.setenv("GIT_SSH_COMMAND", ssh_command(key, known_hosts))
    server.commit({"deployments/app.yaml": "v1\n"})
    source = source_for(ssh.server.url(server.bare), tmp_path / "state")
    error, _ = bounded(source.fetch)
    assert isinstance(error, SourceError), error
    assert cause in str(error), str(error)


def test_an_ssh_url_keeps_its_host_and_path_in_the_journal(
    ssh: Ssh, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """display_url and error messages hide an ssh URL's user (as `redact` hides any userinfo)
    and change nothing else. The repo lives in the ssh user's home, as with the usual `git`
    account (ssh://git@host/home/git/app.git)."""
    repo = GitRepo(tmp_path / "home" / ssh.server.user / "repos")
    repo.commit({"deployments/app.yaml": "v1\n"})
    expected = f"ssh://***@{LOOPBACK}:{ssh.server.port}{repo.bare}"
    monkeypatch.setenv("GIT_SSH_COMMAND", ssh_command(ssh.stranger, ssh.known_hosts))
    source = source_for(ssh.server.url(repo.bare), tmp_path / "state")
    assert source.display_url == expected

    error, _ = bounded(source.fetch)
    assert isinstance(error, SourceError), error
    assert expected in str(error)
