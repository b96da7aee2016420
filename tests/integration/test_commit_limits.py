"""What one commit can cost syncd, tried as someone with push access would: real commits in
real Git repos (crafted with git's plumbing where a work tree cannot hold them), read through
`GitSource` and `GitTree`, the code the daemon reads commits with."""

from __future__ import annotations

import subprocess
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

import syncd.sources.git as git_source
from syncd.core import deployments
from syncd.core.config import RepoConfig
from syncd.core.deployments import (
    MAX_DEPLOYMENT_FILES,
    MAX_FILE_BYTES,
    MAX_TREE_FILES,
    CommitTooLarge,
    TreeError,
    load_stacks,
)
from syncd.errors import SourceError
from syncd.sources.git import MAX_SYMLINK_BYTES, GitSource, GitTree
from tests.support.gitrepo import GitRepo, git
from tests.support.timing import PATIENCE

TEMPLATE = "Parameters:\n  Env:\n    Type: String\n    Default: x\nResources:\n  T:\n    Type: X\n"


def deployment(template: str = "templates/app.yaml") -> str:
    return f"template-file-path: {template}\n"


@pytest.fixture
def server(tmp_path: Path) -> GitRepo:
    return GitRepo(tmp_path / "server")


@pytest.fixture
def source(server: GitRepo, tmp_path: Path) -> GitSource:
    return GitSource(RepoConfig(name="app", url=str(server.bare)), tmp_path / "state")


@pytest.fixture
def streamed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, int]]]:
    """Every blob any GitTree reads, as (sha, size): what reached memory."""
    seen: list[tuple[str, int]] = []
    real = GitTree._blob

    def spy(self: GitTree, sha: str, size: int, path: str) -> bytes:
        data = real(self, sha, size, path)
        seen.append((sha, len(data)))
        return data

    monkeypatch.setattr(GitTree, "_blob", spy)
    yield seen


def blob(repo: Path, data: bytes) -> str:
    out = subprocess.run(
        ["git", "hash-object", "-w", "--stdin"], input=data, cwd=repo, capture_output=True
    )
    return out.stdout.decode().strip()


def commit_symlink(server: GitRepo, path: str, target: bytes) -> str:
    """Commit a symlink at `path` whose blob (its target) is `target`, however long."""
    sha = blob(server.work, target)
    git("update-index", "--add", "--cacheinfo", f"120000,{sha},{path}", cwd=server.work)
    # No file system can hold it: keep it in the index only, and out of `git add --all`.
    git("update-index", "--skip-worktree", path, cwd=server.work)
    git("commit", "--quiet", "-m", "symlink", cwd=server.work)
    server.push()
    return sha


# --- a blob's size is checked before any of it is read ------------------------------------


def test_a_huge_symlink_is_refused_without_reading_it(
    server: GitRepo, source: GitSource, streamed: list[tuple[str, int]]
) -> None:
    server.commit({"templates/app.yaml": TEMPLATE, "deployments/ok.yaml": deployment()})
    size = 40 * 1024 * 1024
    huge = commit_symlink(server, "deployments/link.yaml", b"x" * size)
    commit_symlink(server, "templates/via-link/app.yaml", b"a" * (MAX_SYMLINK_BYTES + 1))
    server.commit({"deployments/uses-link.yaml": deployment("templates/via-link/app.yaml")})
    tree = source.tree(source.fetch().commit)

    tracemalloc.start()
    try:
        with pytest.raises(TreeError) as caught:
            tree.read("deployments/link.yaml")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024, peak  # 40 MiB symlink, nothing of it read
    assert f"is a symlink of {size} bytes" in str(caught.value)
    assert f"at most {MAX_SYMLINK_BYTES} bytes" in str(caught.value)
    assert huge not in {sha for sha, _ in streamed}

    loaded = load_stacks(source.config, tree)
    assert list(loaded.stacks) == ["ok"]
    assert "is a symlink of" in loaded.invalid["link"].reason
    assert "is a symlink of 4097 bytes" in loaded.invalid["uses-link"].reason
    assert all(size <= MAX_FILE_BYTES for _, size in streamed)


def test_no_blob_over_the_limits_is_ever_read(
    server: GitRepo, source: GitSource, streamed: list[tuple[str, int]], tmp_path: Path
) -> None:
    big = "x" * (3 * MAX_FILE_BYTES)
    server.commit(
        {
            "templates/app.yaml": TEMPLATE,
            "templates/big.yaml": big,
            "deployments/ok.yaml": deployment(),
            "deployments/big.yaml": big,  # a deployment file over the limit
            "deployments/big-template.yaml": deployment("templates/big.yaml"),
        }
    )
    for name, target in {
        "templates/to-big.yaml": "big.yaml",
        "templates/hop.yaml": "to-big.yaml",
        "deployments/link-to-big.yaml": "../templates/big.yaml",
    }.items():
        (server.work / name).symlink_to(target)
    server.commit({"deployments/via-hops.yaml": deployment("templates/hop.yaml")})
    loaded = load_stacks(source.config, source.tree(source.fetch().commit))
    assert list(loaded.stacks) == ["ok"]
    for name in ("big", "big-template", "link-to-big", "via-hops"):
        assert f"is {3 * MAX_FILE_BYTES} bytes" in loaded.invalid[name].reason, name
    assert streamed and all(size <= MAX_FILE_BYTES for _, size in streamed)


def test_files_sharing_a_template_read_it_once(
    server: GitRepo, source: GitSource, streamed: list[tuple[str, int]]
) -> None:
    files = {f"deployments/s{i:03d}.yaml": deployment() for i in range(300)}
    (server.work / "templates").mkdir()
    (server.work / "templates" / "link.yaml").symlink_to("app.yaml")
    files |= {f"deployments/l{i:03d}.yaml": deployment("templates/link.yaml") for i in range(50)}
    server.commit({"templates/app.yaml": TEMPLATE, **files})
    commit = source.fetch().commit
    template = git("rev-parse", f"{commit}:templates/app.yaml", cwd=server.bare)
    tree = source.tree(commit)
    loaded = load_stacks(source.config, tree)
    assert len(loaded.stacks) == 350
    assert [sha for sha, _ in streamed].count(template) == 1
    # The deployment files are two blobs (two texts), each read once, and the symlink one.
    assert len(streamed) == 4
    assert tree.bytes_read == sum(size for _, size in streamed)


def test_the_pass_takes_over_the_load_made_when_the_commit_was_fetched(
    server: GitRepo, source: GitSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.commit({"templates/app.yaml": TEMPLATE, "deployments/a.yaml": deployment()})
    parsed: list[str] = []
    real = deployments.parse_template
    monkeypatch.setattr(
        deployments, "parse_template", lambda text, budget=None: parsed.append(text) or real(text)
    )
    commit = source.fetch().commit
    assert len(parsed) == 1  # loaded once, to check its limits
    loaded = load_stacks(source.config, source.tree(commit))
    assert list(loaded.stacks) == ["a"] and len(parsed) == 1  # ... and not again
    load_stacks(source.config, source.tree(commit))  # a later pass reads it anew
    assert len(parsed) == 2
    source.fetch()  # an unchanged commit is not checked again
    assert len(parsed) == 2


# --- a commit past a limit is refused whole ------------------------------------------------


def refused(source: GitSource) -> str:
    with pytest.raises(SourceError) as caught:
        source.fetch()
    return str(caught.value)


def test_too_many_deployment_files_refuse_the_commit_and_keep_the_last_one(
    server: GitRepo, source: GitSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = server.commit({"templates/app.yaml": TEMPLATE, "deployments/app.yaml": deployment()})
    assert source.fetch().commit == good

    files = {f"deployments/s{i:04d}.yaml": deployment() for i in range(MAX_DEPLOYMENT_FILES)}
    bad = server.commit({**files, "deployments/app.yaml": deployment() + "tags: {v: 2}\n"})
    message = refused(source)
    assert message == (
        f"commit {bad[:12]} is refused, nothing of it is applied: "
        f"{MAX_DEPLOYMENT_FILES + 1:,} files match the deployments globs (deployments/*.yaml), "
        f"past the limit of {MAX_DEPLOYMENT_FILES:,} deployment files for a repo; "
        f"keeping commit {good[:12]}"
    )
    assert source.current() == good  # the last commit taken is kept
    assert load_stacks(source.config, source.tree(good)).stacks["app"].tags == ()

    # Asked again (every poll), the same answer, without loading the commit again.
    calls: list[object] = []
    monkeypatch.setattr(git_source, "load_stacks", lambda *a: calls.append(a))
    assert refused(source) == message
    assert calls == [] and source.current() == good
    monkeypatch.undo()

    # A commit back within the limits is taken, its changes counted from the last one taken.
    fixed = server.commit({path: None for path in files})
    result = source.fetch()
    assert (result.previous, result.commit, result.forced) == (good, fixed, False)
    assert result.changes == (("M", "deployments/app.yaml"),)


def test_a_commit_past_the_byte_budget_is_refused_naming_the_file(
    server: GitRepo, source: GitSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(git_source, "MAX_COMMIT_BYTES", 300_000)
    padding = "#" * 100_000 + "\n"
    shared = {f"deployments/s{i:03d}.yaml": deployment() for i in range(100)}
    server.commit({"templates/app.yaml": TEMPLATE + padding, **shared})
    source.fetch()  # one 100 KB template shared by 100 files: counted once

    bad = server.commit(
        {
            f"templates/t{i}.yaml": TEMPLATE + padding + f"# {i}\n"
            for i in range(3)  # three more distinct ones: 400 KB in all
        }
        | {f"deployments/t{i}.yaml": deployment(f"templates/t{i}.yaml") for i in range(3)}
    )
    message = refused(source)
    assert message.startswith(f"commit {bad[:12]} is refused, nothing of it is applied: ")
    assert (
        "reading templates/t1.yaml (100,084 bytes) takes the bytes read from the commit past "
        "300,000, the limit for a commit (read so far: 200,279 bytes in 5 files); keeping commit"
    ) in message


def test_a_commit_past_the_parse_budget_is_refused_naming_the_file(
    server: GitRepo, source: GitSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deployments, "MAX_COMMIT_PARSE", 20_000)
    dense = "Resources: {T: {Type: X}}\nPad: [" + ",".join(["1"] * 8000) + "]\n"
    server.commit(
        {f"templates/t{i}.yaml": dense + f"# {i}\n" for i in range(3)}
        | {f"deployments/t{i}.yaml": deployment(f"templates/t{i}.yaml") for i in range(3)}
    )
    assert "parsing templates/t2.yaml takes the commit past 20,000 YAML events" in refused(source)
    assert source.current() is None


def craft_commit(bare: Path, fanout: int, levels: int) -> str:
    """A commit of fanout ** levels files built from `levels` tree objects (each naming the
    one below `fanout` times): a few hundred bytes that list as a billion paths."""
    sha = blob(bare, b"x\n")
    tree = _mktree(bare, "".join(f"100644 blob {sha}\tf{i}\n" for i in range(fanout)))
    for _ in range(levels - 1):
        tree = _mktree(bare, "".join(f"040000 tree {tree}\td{i}\n" for i in range(fanout)))
    commit = git("commit-tree", tree, "-m", "crafted", cwd=bare)
    git("update-ref", "refs/heads/main", commit, cwd=bare)
    return commit


def _mktree(bare: Path, entries: str) -> str:
    out = subprocess.run(["git", "mktree"], input=entries, cwd=bare, capture_output=True, text=True)
    return out.stdout.strip()


def test_a_commit_listing_a_billion_files_is_refused_in_a_few_seconds(
    server: GitRepo, source: GitSource
) -> None:
    bad = craft_commit(server.bare, 1000, 3)
    start = time.monotonic()
    message = refused(source)
    assert time.monotonic() - start < PATIENCE  # listed, it would take hours
    assert message == (
        f"commit {bad[:12]} is refused, nothing of it is applied: it has more than "
        f"{MAX_TREE_FILES:,} files (blobs, symlinks and submodules), the limit for a commit; "
        "no commit taken yet"
    )
    assert source.current() is None


def test_listing_stops_at_the_limit_and_the_limit_itself_is_allowed(
    server: GitRepo, source: GitSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(git_source, "MAX_TREE_FILES", 100)
    craft_commit(server.bare, 10, 2)  # exactly 100 files
    assert len(list(source.tree(source.fetch().commit).paths())) == 100
    craft_commit(server.bare, 101, 1)
    assert "more than 100 files" in refused(source)


def test_a_refused_commit_never_reaches_plan_or_validate_unbounded(
    server: GitRepo, source: GitSource
) -> None:
    """`syncd plan` reads a ref through `resolve` and `tree`: the same limits stop it."""
    craft_commit(server.bare, 1000, 2)
    commit = source.resolve("refs/heads/main")
    with pytest.raises(CommitTooLarge, match="more than 100,000 files"):
        load_stacks(source.config, source.tree(commit))


def test_a_path_longer_than_any_file_system_takes_is_refused(
    server: GitRepo, source: GitSource
) -> None:
    sha = blob(server.bare, b"x\n")
    tree = _mktree(server.bare, f"100644 blob {sha}\t{'p' * 100_000}\n")
    git(
        "update-ref",
        "refs/heads/main",
        git("commit-tree", tree, "-m", "long", cwd=server.bare),
        cwd=server.bare,
    )
    assert "it names a path of more than 65,536 bytes" in refused(source)
