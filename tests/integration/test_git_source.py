"""`syncd.sources.git` against real Git: local paths, file:// and git:// remotes, a real disk."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from syncd.core.config import RepoConfig
from syncd.core.deployments import MAX_FILE_BYTES, TreeError
from syncd.errors import BranchMissing, SourceError
from syncd.sources.git import GitSource, GitTree, hermetic_env, redact
from tests.support.gitrepo import GitRepo, free_port, git, git_daemon
from tests.support.timing import PATIENCE

TRANSPORTS = ["path", "file", "git"]
LIMIT_SECONDS = PATIENCE  # a prompt or a hang; never a speed claim


@pytest.fixture
def server(tmp_path: Path) -> GitRepo:
    return GitRepo(tmp_path / "server")


@pytest.fixture
def exits() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


def url_for(repo: GitRepo, transport: str, exits: ExitStack) -> str:
    """The URL of `repo.bare` as syncd would be given it, over one transport."""
    if transport == "path":
        return str(repo.bare)
    if transport == "file":
        return f"file://{repo.bare}"
    base = exits.enter_context(git_daemon(repo.bare.parent))
    return f"{base}/{repo.bare.name}"


def source_for(url: str, state: Path, **options: Any) -> GitSource:
    return GitSource(RepoConfig(name="app", url=url, **options), state)


def bounded(call: Callable[[], Any], seconds: float = LIMIT_SECONDS) -> tuple[Any, float]:
    """Run `call` in a thread; fail the test if it has not returned within `seconds`.

    Returns (result or the exception it raised, elapsed seconds).
    """
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:
            outcome.append(exc)

    start = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    elapsed = time.monotonic() - start
    assert not thread.is_alive(), f"still running after {seconds} s (a prompt or a hang?)"
    return outcome[0], elapsed


def delete_branch(repo: GitRepo) -> None:
    # A bare repo refuses by default to delete the branch its HEAD names, which is the one
    # GitRepo follows (GitRepo.delete_branch alone fails); allow it on the test server.
    git("config", "receive.denyDeleteCurrent", "ignore", cwd=repo.bare)
    repo.delete_branch()
    assert git("for-each-ref", "refs/heads", cwd=repo.bare) == ""


def changes(result: Any) -> set[tuple[str, str]]:
    assert len(result.changes) == len(set(result.changes)), result.changes
    return set(result.changes)


# --- fetching ------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_first_fetch_adds_everything_then_reports_exactly_the_changes(
    server: GitRepo, transport: str, exits: ExitStack, tmp_path: Path
) -> None:
    first = server.commit(
        {
            "deployments/app.yaml": "app v1\n",
            "deployments/old-name.yaml": "renamed later\n",
            "templates/app.yaml": "Resources: {}\n",
            "docs/with space.md": "spaces are fine\n",
            "README.md": "readme\n",
        }
    )
    source = source_for(url_for(server, transport, exits), tmp_path / "state")
    assert source.current() is None

    result = source.fetch()
    assert result.commit == first
    assert result.previous is None
    assert result.moved is True
    assert result.forced is False
    assert changes(result) == {
        ("A", "deployments/app.yaml"),
        ("A", "deployments/old-name.yaml"),
        ("A", "templates/app.yaml"),
        ("A", "docs/with space.md"),
        ("A", "README.md"),
    }
    assert source.current() == first

    again = source.fetch()
    assert again.commit == first
    assert again.previous == first
    assert again.moved is False
    assert again.forced is False
    assert again.changes == ()

    second = server.commit(
        {
            "deployments/app.yaml": "app v2\n",  # modified
            "deployments/old-name.yaml": None,  # renamed, unchanged content ...
            "deployments/new-name.yaml": "renamed later\n",  # ... to here
            "README.md": None,  # deleted
            "deployments/extra.yaml": "new\n",  # added
        }
    )
    result = source.fetch()
    assert result.commit == second
    assert result.previous == first
    assert result.moved is True
    assert result.forced is False
    assert changes(result) == {
        ("M", "deployments/app.yaml"),
        ("D", "deployments/old-name.yaml"),
        ("A", "deployments/new-name.yaml"),
        ("D", "README.md"),
        ("A", "deployments/extra.yaml"),
    }
    assert source.current() == second


def test_changes_span_every_commit_since_the_last_fetch(server: GitRepo, tmp_path: Path) -> None:
    server.commit({"a.yaml": "a\n", "b.yaml": "b\n"})
    source = source_for(str(server.bare), tmp_path / "state")
    base = source.fetch().commit

    server.commit({"a.yaml": "a2\n"})
    server.commit({"short-lived.yaml": "here\n"})
    server.commit({"short-lived.yaml": None, "b.yaml": None})
    last = server.commit({"c.yaml": "c\n"})

    result = source.fetch()
    assert (result.previous, result.commit) == (base, last)
    assert changes(result) == {("M", "a.yaml"), ("D", "b.yaml"), ("A", "c.yaml")}


def test_a_file_becoming_a_symlink_is_a_type_change(server: GitRepo, tmp_path: Path) -> None:
    server.commit({"t.yaml": "t\n", "d.yaml": "d\n"})
    source = source_for(str(server.bare), tmp_path / "state")
    source.fetch()

    (server.work / "d.yaml").unlink()
    os.symlink("t.yaml", server.work / "d.yaml")
    server.commit({})
    assert changes(source.fetch()) == {("T", "d.yaml")}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_force_push_is_reported_not_refused(
    server: GitRepo, transport: str, exits: ExitStack, tmp_path: Path
) -> None:
    server.commit({"deployments/a.yaml": "a\n"})
    before = server.commit({"deployments/b.yaml": "b\n"})
    source = source_for(url_for(server, transport, exits), tmp_path / "state")
    source.fetch()

    after = server.rewrite_last({"deployments/b.yaml": None, "deployments/c.yaml": "c\n"})
    assert after != before
    result = source.fetch()
    assert result.forced is True
    assert result.moved is True
    assert (result.previous, result.commit) == (before, after)
    assert changes(result) == {("D", "deployments/b.yaml"), ("A", "deployments/c.yaml")}
    assert source.current() == after

    # An ordinary push on top of the rewritten history is not forced.
    later = server.commit({"deployments/a.yaml": "a2\n"})
    result = source.fetch()
    assert (result.previous, result.commit, result.forced) == (after, later, False)
    assert changes(result) == {("M", "deployments/a.yaml")}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_deleted_branch_raises_branch_missing_and_keeps_the_last_commit(
    server: GitRepo, transport: str, exits: ExitStack, tmp_path: Path
) -> None:
    kept = server.commit({"deployments/a.yaml": "a\n"})
    source = source_for(url_for(server, transport, exits), tmp_path / "state")
    source.fetch()

    delete_branch(server)
    with pytest.raises(BranchMissing) as caught:
        source.fetch()
    assert "main" in str(caught.value)
    assert kept[:12] in str(caught.value)
    assert source.current() == kept
    assert set(source.tree(kept).paths()) == {"deployments/a.yaml"}

    # Still missing on the next attempt; still the same commit kept.
    with pytest.raises(BranchMissing):
        source.fetch()
    assert source.current() == kept

    # The branch comes back: fetching goes on from the kept commit.
    server.push()
    result = source.fetch()
    assert (result.previous, result.commit, result.forced) == (kept, kept, False)
    assert result.changes == ()


def test_branch_missing_before_any_fetch(server: GitRepo, tmp_path: Path) -> None:
    server.commit({"a.yaml": "a\n"})
    source = source_for(str(server.bare), tmp_path / "state", branch="does-not-exist")
    with pytest.raises(BranchMissing) as caught:
        source.fetch()
    assert "does-not-exist" in str(caught.value)
    assert source.current() is None


def test_other_branches_are_not_followed(server: GitRepo, tmp_path: Path) -> None:
    main = server.commit({"a.yaml": "a\n"})
    git("checkout", "--quiet", "-b", "feature", cwd=server.work)
    git("commit", "--quiet", "--allow-empty", "-m", "feature", cwd=server.work)
    git("push", "--quiet", "origin", "HEAD:refs/heads/feature", cwd=server.work)

    source = source_for(str(server.bare), tmp_path / "state")
    assert source.fetch().commit == main
    feature = source_for(str(server.bare), tmp_path / "state2", branch="feature").fetch()
    assert feature.commit != main


@pytest.mark.parametrize(
    "make_url",
    [
        pytest.param(lambda tmp: f"git://127.0.0.1:{free_port()}/x.git", id="closed-port"),
        pytest.param(lambda tmp: str(tmp / "missing.git"), id="missing-path"),
        pytest.param(lambda tmp: f"file://{tmp}/missing.git", id="missing-file-url"),
        pytest.param(lambda tmp: "https://user:secret@127.0.0.1:1/x.git", id="https-credentials"),
        pytest.param(lambda tmp: f"git://user:secret@127.0.0.1:{free_port()}/x", id="git-creds"),
    ],
)
def test_unreachable_remote_fails_quickly_with_source_error(
    make_url: Callable[[Path], str], tmp_path: Path
) -> None:
    url = make_url(tmp_path)
    source = source_for(url, tmp_path / "state")
    error, _ = bounded(source.fetch)
    assert isinstance(error, SourceError), error
    assert not isinstance(error, BranchMissing)
    text = f"{error} {error!r} {error.args}"
    assert "secret" not in text
    if "secret" in url:
        assert "***" in text
        assert "secret" not in source.display_url
    assert source.current() is None
    # Nothing leaks through the exception chain either (the GitCommandError names the URL).
    assert error.__cause__ is None
    assert error.__suppress_context__ is True


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A git:// address whose server accepts the connection and then never says a word."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        try:
            while True:
                accepted.append(listener.accept()[0])
        except OSError:
            pass

    threading.Thread(target=accept, daemon=True).start()
    yield f"git://127.0.0.1:{listener.getsockname()[1]}/silent.git"
    # close() alone leaves the thread blocked in accept(), still listening, and answering
    # whatever later connects to that port (a later test's server); shutdown() wakes it.
    with contextlib.suppress(OSError):
        listener.shutdown(socket.SHUT_RDWR)
    listener.close()
    for conn in accepted:
        conn.close()


def test_a_server_that_never_answers_is_given_up_on_after_the_fetch_timeout(
    silent_server: str, tmp_path: Path
) -> None:
    source = GitSource(RepoConfig(name="app", url=silent_server), tmp_path / "state", 1.0)
    error, elapsed = bounded(source.fetch)
    assert isinstance(error, SourceError), error
    assert str(error) == (
        f"cannot fetch {silent_server}: no answer within 1 s (the fetch was stopped)"
    )
    assert elapsed >= 1.0
    error, _ = bounded(lambda: source.resolve("refs/pull/1/head"))
    assert isinstance(error, SourceError) and "no answer within 1 s" in str(error), error


def test_resolve_redacts_credentials_too(tmp_path: Path) -> None:
    source = source_for("https://user:secret@127.0.0.1:1/x.git", tmp_path / "state")
    error, _ = bounded(lambda: source.resolve("refs/pull/1/head"))
    assert isinstance(error, SourceError), error
    assert "secret" not in str(error)
    assert "***" in str(error)


# --- hermetic git --------------------------------------------------------------------------


def test_hermetic_env_shuts_out_config_prompts_and_inherited_git_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GIT_DIR", "/nonexistent")
    monkeypatch.setenv("GIT_CONFIG_PARAMETERS", "'core.bare'='false'")
    monkeypatch.setenv("GIT_TERMINAL_PROMPT", "1")
    monkeypatch.setenv("GIT_SSH_COMMAND", "ssh -i /keys/deploy")
    env = hermetic_env()
    assert env["GIT_CONFIG_NOSYSTEM"] == "1"
    assert env["GIT_CONFIG_GLOBAL"] == os.devnull
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert env["GIT_ASKPASS"] == env["SSH_ASKPASS"] == "/bin/false"
    assert "GIT_DIR" not in env
    assert "GIT_CONFIG_PARAMETERS" not in env
    assert env["GIT_SSH_COMMAND"] == "ssh -i /keys/deploy"  # the operator's key is kept


def _insteadof_home(tmp_path: Path, prefix: str) -> Path:
    home = tmp_path / "home"
    (home / ".config" / "git").mkdir(parents=True)
    rule = f'[url "file:///nonexistent/"]\n\tinsteadOf = {prefix}\n'
    (home / ".gitconfig").write_text(rule)
    (home / ".config" / "git" / "config").write_text(rule)
    return home


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_user_gitconfig_does_not_affect_the_fetch(
    server: GitRepo,
    transport: str,
    exits: ExitStack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    commit = server.commit({"a.yaml": "a\n"})
    url = url_for(server, transport, exits)
    prefix = url.rsplit("/", 1)[0] + "/"
    home = _insteadof_home(tmp_path, prefix)
    for name in ("GIT_CONFIG_GLOBAL", "GIT_CONFIG_NOSYSTEM", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))

    # Control: the rule does break plain git run with this HOME.
    plain = subprocess.run(
        ["git", "ls-remote", url], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert plain.returncode != 0, plain.stdout

    source = source_for(url, tmp_path / "state")
    assert source.fetch().commit == commit


@pytest.mark.parametrize(
    "variables",
    [
        pytest.param(
            lambda prefix: {
                "GIT_CONFIG_PARAMETERS": f"'url.file:///nonexistent/.insteadof'='{prefix}'"
            },
            id="GIT_CONFIG_PARAMETERS",
        ),
        pytest.param(
            lambda prefix: {
                "GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": "url.file:///nonexistent/.insteadOf",
                "GIT_CONFIG_VALUE_0": prefix,
            },
            id="GIT_CONFIG_COUNT",
        ),
        pytest.param(lambda prefix: {"GIT_DIR": "/nonexistent"}, id="GIT_DIR"),
    ],
)
def test_git_variables_in_the_daemons_environment_do_not_reach_git(
    server: GitRepo,
    variables: Callable[[str], dict[str, str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The module promises every git process a hermetic environment; `hermetic_env` drops
    inherited GIT_* variables, so they must not reach git by another way either."""
    commit = server.commit({"a.yaml": "a\n"})
    url = str(server.bare)
    for name, value in variables(str(server.bare.parent) + "/").items():
        monkeypatch.setenv(name, value)
    source = source_for(url, tmp_path / "state")
    result = source.fetch()
    assert result.commit == commit
    assert source.tree(commit).read("a.yaml") == b"a\n"


class _AuthRequired(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="git"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def auth_server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _AuthRequired)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("userinfo", ["", "deploy@", "deploy:wrong@"])
def test_a_missing_credential_fails_at_once_without_prompting(
    auth_server: str, userinfo: str, tmp_path: Path, prompt_trap: Path
) -> None:
    called = prompt_trap
    url = auth_server.replace("http://", f"http://{userinfo}") + "/x.git"
    source = source_for(url, tmp_path / "state")
    error, _ = bounded(source.fetch)
    assert isinstance(error, SourceError), error
    assert not called.exists(), called.read_text()
    assert "wrong" not in str(error)
    if not userinfo:
        assert "terminal prompts disabled" in str(error)


# --- GitTree -------------------------------------------------------------------------------


@pytest.fixture
def tree_repo(server: GitRepo) -> GitRepo:
    server.write(
        {
            "deployments/app.yaml": "template-file-path: templates/app.yaml\n",
            "templates/app.yaml": "Resources: {}\n",
            "exact.bin": "x" * MAX_FILE_BYTES,
            "big.bin": "x" * (MAX_FILE_BYTES + 1),
        }
    )
    (server.work / "binary.dat").write_bytes(b"\x00\xff\xfe binary \x00")
    links = {
        "deployments/linked.yaml": "../templates/app.yaml",
        "hop1": "hop2",
        "hop2": "templates/app.yaml",
        "loop-a": "loop-b",
        "loop-b": "loop-a",
        "dangling": "templates/nope.yaml",
        "to-dir": "templates",
        "to-big": "big.bin",
        "escape-relative": "../../etc/passwd",
        "deployments/escape-deep": "../templates/../../etc/passwd",
        "escape-absolute": "/etc/passwd",
        "escape-via-hop": "deployments/escape-deep",
    }
    for name, target in links.items():
        os.symlink(target, server.work / name)
    sub = server.work / "vendor" / "sub"
    sub.mkdir(parents=True)
    git("init", "--quiet", cwd=sub)
    git("commit", "--quiet", "--allow-empty", "-m", "sub", cwd=sub)
    server.commit({})
    return server


@pytest.fixture
def tree(tree_repo: GitRepo, tmp_path: Path) -> GitTree:
    source = source_for(str(tree_repo.bare), tmp_path / "state")
    return source.tree(source.fetch().commit)


def test_tree_reads_blobs_byte_for_byte(tree: GitTree, tree_repo: GitRepo) -> None:
    assert tree.commit == tree_repo.head()
    assert tree.read("templates/app.yaml") == b"Resources: {}\n"
    assert tree.read("binary.dat") == b"\x00\xff\xfe binary \x00"
    assert tree.read("exact.bin") == b"x" * MAX_FILE_BYTES  # the limit itself is allowed


def test_tree_paths_lists_files_only(tree: GitTree) -> None:
    paths = list(tree.paths())
    assert len(paths) == len(set(paths))
    assert set(paths) == {
        "deployments/app.yaml",
        "templates/app.yaml",
        "exact.bin",
        "big.bin",
        "binary.dat",
        "deployments/linked.yaml",
        "hop1",
        "hop2",
        "loop-a",
        "loop-b",
        "dangling",
        "to-dir",
        "to-big",
        "escape-relative",
        "deployments/escape-deep",
        "escape-absolute",
        "escape-via-hop",
    }
    # no folders, no submodule (gitlink) entries
    assert "deployments" not in paths
    assert "vendor/sub" not in paths and "vendor" not in paths


def test_tree_reads_an_older_commit(server: GitRepo, tmp_path: Path) -> None:
    old = server.commit({"a.yaml": "old\n"})
    server.commit({"a.yaml": "new\n", "b.yaml": "b\n"})
    source = source_for(str(server.bare), tmp_path / "state")
    new = source.fetch().commit
    assert source.tree(old).read("a.yaml") == b"old\n"
    assert set(source.tree(old).paths()) == {"a.yaml"}
    assert source.tree(new).read("a.yaml") == b"new\n"


@pytest.mark.parametrize("path", ["deployments/linked.yaml", "hop1"])
def test_tree_follows_symlinks_inside_the_repo(tree: GitTree, path: str) -> None:
    assert tree.read(path) == b"Resources: {}\n"


@pytest.mark.parametrize(
    "path", ["escape-relative", "deployments/escape-deep", "escape-absolute", "escape-via-hop"]
)
def test_tree_refuses_symlinks_pointing_outside(tree: GitTree, path: str) -> None:
    with pytest.raises(TreeError) as caught:
        tree.read(path)
    assert "outside" in str(caught.value)
    assert path in str(caught.value)


@pytest.mark.parametrize("path", ["big.bin", "to-big"])
def test_tree_refuses_a_file_over_the_limit_naming_its_size(tree: GitTree, path: str) -> None:
    with pytest.raises(TreeError) as caught:
        tree.read(path)
    assert str(MAX_FILE_BYTES + 1) in str(caught.value)


@pytest.mark.parametrize("path", ["missing.yaml", "templates", "dangling", "to-dir", "vendor/sub"])
def test_tree_missing_path_raises(tree: GitTree, path: str) -> None:
    with pytest.raises(TreeError) as caught:
        tree.read(path)
    assert "does not exist" in str(caught.value)


def test_tree_symlink_loop_raises(tree: GitTree) -> None:
    with pytest.raises(TreeError, match="too many symlinks"):
        tree.read("loop-a")


# --- seed_if_missing -----------------------------------------------------------------------


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    folder = tmp_path / "sample"
    (folder / "deployments").mkdir(parents=True)
    (folder / "templates").mkdir()
    (folder / "deployments" / "hello.yaml").write_text("template-file-path: templates/t.yaml\n")
    (folder / "templates" / "t.yaml").write_text("Resources: {}\n")
    return folder


@pytest.mark.parametrize("as_file_url", [False, True])
@pytest.mark.parametrize("branch", ["main", "live"])
def test_seed_creates_a_bare_repo_from_the_folder(
    sample: Path, tmp_path: Path, as_file_url: bool, branch: str
) -> None:
    target = tmp_path / "repos" / "quickstart.git"
    url = f"file://{target}" if as_file_url else str(target)
    source = source_for(url, tmp_path / "state", init_from=sample, branch=branch)

    result = source.fetch()  # seeds first
    assert git("rev-parse", "--is-bare-repository", cwd=target) == "true"
    assert git("rev-list", "--count", f"refs/heads/{branch}", cwd=target) == "1"
    assert git("rev-parse", f"refs/heads/{branch}", cwd=target) == result.commit
    assert changes(result) == {("A", "deployments/hello.yaml"), ("A", "templates/t.yaml")}
    tree = source.tree(result.commit)
    assert tree.read("templates/t.yaml") == b"Resources: {}\n"
    assert not (sample / ".git").exists()  # the sample folder itself is left alone

    # Seeding again (the repo exists now) changes nothing.
    (sample / "templates" / "t.yaml").write_text("changed\n")
    source.seed_if_missing()
    assert git("rev-list", "--count", f"refs/heads/{branch}", cwd=target) == "1"
    again = source.fetch()
    assert again.moved is False


def test_seed_does_nothing_when_the_repo_exists(
    server: GitRepo, sample: Path, tmp_path: Path
) -> None:
    head = server.commit({"own.yaml": "own\n"})
    refs_before = git("for-each-ref", cwd=server.bare)
    source = source_for(str(server.bare), tmp_path / "state", init_from=sample)
    source.seed_if_missing()
    assert git("for-each-ref", cwd=server.bare) == refs_before
    result = source.fetch()
    assert result.commit == head
    assert changes(result) == {("A", "own.yaml")}


def test_seed_without_init_from_does_nothing(tmp_path: Path) -> None:
    target = tmp_path / "absent.git"
    source_for(str(target), tmp_path / "state").seed_if_missing()
    assert not target.exists()


def test_seed_from_a_missing_folder_is_a_source_error(tmp_path: Path) -> None:
    target = tmp_path / "absent.git"
    source = source_for(str(target), tmp_path / "state", init_from=tmp_path / "no-such-folder")
    with pytest.raises(SourceError, match="no-such-folder"):
        source.seed_if_missing()
    assert not target.exists()


# --- redact --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://user:secret@host/x.git", "https://***@host/x.git"),
        ("https://ghp_token123@github.com/o/r.git", "https://***@github.com/o/r.git"),
        ("http://user:p%40ss%3Aw@10.0.0.1:8080/r", "http://***@10.0.0.1:8080/r"),
        ("ssh://git:pw@host:2222/srv/r.git", "ssh://***@host:2222/srv/r.git"),
        ("git+ssh://deploy@host/r", "git+ssh://***@host/r"),
        ("HTTPS://User:Secret@Host/R", "HTTPS://***@Host/R"),
        (
            "fatal: unable to access 'https://a:b@h1/x/': see http://c:d@h2/y",
            "fatal: unable to access 'https://***@h1/x/': see http://***@h2/y",
        ),
        ("https://github.com/o/r.git", "https://github.com/o/r.git"),
        ("https://host/path@v1/r.git", "https://host/path@v1/r.git"),
        ("git@github.com:o/r.git", "git@github.com:o/r.git"),
        ("/srv/git/app.git", "/srv/git/app.git"),
        ("mail ops@example.com", "mail ops@example.com"),
        ("", ""),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert redact(redact(text)) == expected


def test_tree_follows_a_symlinked_folder_inside_the_repo(tree: GitTree) -> None:
    assert tree.read("to-dir/app.yaml") == b"Resources: {}\n"
    with pytest.raises(TreeError, match="outside the repo"):
        tree.read("escape-relative/anything")


def test_resolve_finds_branches_pull_refs_and_shas_never_fetched(
    server: GitRepo, tmp_path: Path
) -> None:
    server.commit({"a.txt": "main"})
    git("checkout", "--quiet", "-b", "feature", cwd=server.work)
    feature = server.commit({"a.txt": "feature"}, push=False)
    git("push", "--quiet", "origin", "feature", cwd=server.work)
    git("push", "--quiet", "origin", f"{feature}:refs/pull/7/head", cwd=server.work)
    source = source_for(str(server.bare), tmp_path / "state")
    source.fetch()  # main only
    assert source.resolve("feature") == feature
    assert source.resolve("refs/pull/7/head") == feature
    fresh = source_for(str(server.bare), tmp_path / "other")
    fresh.fetch()
    assert fresh.resolve(feature[:10]) == feature  # a short SHA on another branch
    error, _ = bounded(lambda: fresh.resolve("0" * 40))
    assert isinstance(error, SourceError)


def test_the_mirror_is_made_without_the_users_git_templates_or_hooks(
    server: GitRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = tmp_path / "hook-ran"
    templates = tmp_path / "templates"
    (templates / "hooks").mkdir(parents=True)
    for hook in ("reference-transaction", "post-checkout", "pre-auto-gc"):
        script = templates / "hooks" / hook
        script.write_text(f"#!/bin/sh\necho {hook} >> {ran}\n")
        script.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text(f"[init]\n\ttemplateDir = {templates}\n")
    monkeypatch.setenv("HOME", str(home))
    server.commit({"deployments/app.yaml": "v1\n"})
    source = source_for(str(server.bare), tmp_path / "state")
    source.fetch()
    assert not (source.path / "hooks").exists() or not any((source.path / "hooks").iterdir())
    assert not ran.exists()
