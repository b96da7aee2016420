"""A working tree read as the next commit would hold it, within a commit's limits
(syncd.sources.worktree), on real folders and a real Git repository."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from syncd.core.config import RepoConfig
from syncd.core.deployments import MAX_FILE_BYTES, CommitTooLarge, TreeError, load_stacks
from syncd.errors import UsageError
from syncd.sources import worktree
from syncd.sources.worktree import WorkTree, commit_tree, local_commit, open_local
from tests.conftest import TOPIC_TEMPLATE, deployment
from tests.support.gitrepo import git


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A checkout with one commit: a template and a deployment file."""
    work = tmp_path / "work"
    work.mkdir()
    git("init", "--quiet", "--initial-branch", "main", cwd=work)
    write(work, "templates/topic.yaml", TOPIC_TEMPLATE)
    write(work, "deployments/app.yaml", deployment(Name="app"))
    write(work, ".gitignore", "ignored/\n")
    git("add", "--all", cwd=work)
    git("commit", "--quiet", "-m", "first", cwd=work)
    return work


def write(root: Path, path: str, text: str) -> None:
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def test_it_holds_uncommitted_and_untracked_files_not_ignored_or_deleted_ones(root: Path) -> None:
    write(root, "templates/topic.yaml", TOPIC_TEMPLATE + "# edited\n")
    write(root, "deployments/new.yaml", deployment(Name="new"))
    write(root, "ignored/secret.yaml", "x: 1\n")
    (root / "deployments/app.yaml").unlink()
    index = (root / ".git/index").read_bytes()

    tree = WorkTree(open_local(root))

    assert sorted(tree.paths()) == [".gitignore", "deployments/new.yaml", "templates/topic.yaml"]
    assert tree.read("templates/topic.yaml").endswith(b"# edited\n")
    for gone in ("ignored/secret.yaml", "deployments/app.yaml"):
        with pytest.raises(TreeError, match="does not exist in the working tree"):
            tree.read(gone)
    assert (root / ".git/index").read_bytes() == index  # the index is only read


def test_it_loads_as_the_commit_of_the_same_files_does(root: Path) -> None:
    repo = RepoConfig(name="r", url=str(root), stack_prefix="")
    local = open_local(root)
    from_commit = load_stacks(repo, commit_tree(local, local_commit(local, "HEAD")))
    from_disk = load_stacks(repo, WorkTree(local))
    assert from_disk == from_commit and set(from_disk.stacks) == {"app"}


def test_symlinks_are_followed_inside_the_repo_only(root: Path, tmp_path: Path) -> None:
    (tmp_path / "outside.yaml").write_text(TOPIC_TEMPLATE)
    (tmp_path / "outside").mkdir()
    (root / "templates/same.yaml").symlink_to("topic.yaml")
    (root / "shared").symlink_to("templates")
    (root / "templates/up.yaml").symlink_to("../../outside.yaml")
    (root / "templates/abs.yaml").symlink_to(tmp_path / "outside.yaml")
    (root / "elsewhere").symlink_to(tmp_path / "outside")
    (root / "templates/loop.yaml").symlink_to("loop.yaml")
    tree = WorkTree(open_local(root))

    assert (
        tree.read("templates/same.yaml")
        == tree.read("shared/topic.yaml")
        == TOPIC_TEMPLATE.encode()
    )
    assert tree.blob_id("shared/topic.yaml") == tree.blob_id("templates/topic.yaml")
    for path in ("templates/up.yaml", "templates/abs.yaml", "elsewhere/outside.yaml"):
        with pytest.raises(TreeError, match="is a symlink pointing outside the repo"):
            tree.read(path)
    with pytest.raises(TreeError, match="too many symlinks"):
        tree.read("templates/loop.yaml")


def test_a_fifo_is_refused_without_being_opened_for_reading(root: Path) -> None:
    (root / "templates/topic.yaml").unlink()
    os.mkfifo(root / "templates/topic.yaml")  # tracked, so Git lists it: it must not block
    tree = WorkTree(open_local(root))
    with pytest.raises(TreeError, match="is not a regular file"):
        tree.read("templates/topic.yaml")


def test_sizes_are_checked_before_reading(root: Path) -> None:
    write(root, "templates/big.yaml", "#" * (MAX_FILE_BYTES + 1))
    tree = WorkTree(open_local(root), budget=len(TOPIC_TEMPLATE) + 10)
    with pytest.raises(TreeError, match=f"is {MAX_FILE_BYTES + 1} bytes; the limit is"):
        tree.read("templates/big.yaml")
    assert tree.read("templates/topic.yaml") == TOPIC_TEMPLATE.encode()
    tree.read("templates/topic.yaml")  # counted once
    with pytest.raises(CommitTooLarge, match="bytes read from the working tree past"):
        tree.read("deployments/app.yaml")


def test_the_listing_stops_past_the_file_limit(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worktree, "MAX_TREE_FILES", 4)
    WorkTree(open_local(root))  # three files
    write(root, "a.txt", "")
    WorkTree(open_local(root))  # four: the limit itself is allowed
    write(root, "b.txt", "")
    with pytest.raises(CommitTooLarge, match="more than 4 files"):
        WorkTree(open_local(root))


def test_a_folder_swapped_for_a_symlink_after_the_listing_is_not_followed(
    root: Path, tmp_path: Path
) -> None:
    tree = WorkTree(open_local(root))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "topic.yaml").write_text("stolen: true\n")
    (root / "templates").rename(tmp_path / "moved")
    (root / "templates").symlink_to(outside)
    with pytest.raises(TreeError, match="a folder on its path changed"):
        tree.read("templates/topic.yaml")


def test_only_the_top_of_a_repository_is_taken(root: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not the top folder of a Git repository"):
        open_local(root / "templates")
    with pytest.raises(UsageError, match="not a folder"):
        open_local(tmp_path / "nope")
    with pytest.raises(UsageError, match="no such commit"):
        local_commit(open_local(root), "no-such-branch")
    with pytest.raises(UsageError, match="not a ref"):
        local_commit(open_local(root), "--output=/tmp/x")


def test_a_program_the_repository_config_names_is_not_run(root: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    program = tmp_path / "fsmonitor.sh"
    program.write_text(f"#!/bin/sh\necho ran >> {marker}\n")
    program.chmod(0o755)
    git("config", "core.fsmonitor", str(program), cwd=root)
    git("ls-files", "--others", cwd=root)  # git itself runs it for a listing
    assert marker.exists()
    marker.unlink()
    WorkTree(open_local(root))
    assert not marker.exists()
