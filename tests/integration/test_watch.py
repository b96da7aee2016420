"""RefWatcher on real Git repositories: pushes, branch deletes, packed refs, working clones."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from syncd.sources.watch import RefWatcher, is_ref_change
from tests.support.gitrepo import GitRepo, git
from tests.support.timing import PATIENCE


class Calls:
    def __init__(self) -> None:
        self.count = 0
        self.event = threading.Event()

    def __call__(self) -> None:
        self.count += 1
        self.event.set()

    def wait(self, timeout: float = PATIENCE) -> None:
        """Until the next call (fails the test if none comes). Nothing else calls: no poll runs
        here. How soon the call comes is bench/watch.py's to measure."""
        assert self.event.wait(timeout), "no call"
        self.event.clear()


@pytest.fixture
def watched(repo: GitRepo):
    repo.commit({"a.txt": "1"})
    calls = Calls()
    # A debounce far longer than syncd's: the events of one push arrive within it even on a
    # loaded machine, so "one push, one call" holds whatever the load.
    watcher = RefWatcher(repo.bare, calls, debounce=0.5)
    assert watcher.start() is None
    yield repo, calls
    watcher.stop()


def test_a_push_is_seen_at_once_and_a_burst_makes_one_call(watched) -> None:
    repo, calls = watched
    repo.commit({"a.txt": "2"})  # commit + push: the push returns after the ref moved
    calls.wait()
    time.sleep(1.0)  # twice the debounce: a second call would have come
    assert calls.count == 1


def test_a_deleted_branch_and_packed_refs_are_seen(watched) -> None:
    repo, calls = watched
    git("pack-refs", "--all", cwd=repo.bare)
    calls.wait()
    repo.delete_branch()
    calls.wait()


def test_git_temporary_files_are_ignored(tmp_path: Path) -> None:
    folder = tmp_path / "r.git"
    assert is_ref_change(folder, str(folder / "refs/heads/main"))
    assert is_ref_change(folder, str(folder / "packed-refs"))
    assert not is_ref_change(folder, str(folder / "refs/heads/main.lock"))
    assert not is_ref_change(folder, str(folder / "packed-refs.new"))
    assert not is_ref_change(folder, str(folder / "objects/ab/cdef"))
    assert not is_ref_change(folder, str(folder / "FETCH_HEAD"))


def test_a_working_clone_is_watched_through_its_git_folder(repo: GitRepo) -> None:
    repo.commit({"a.txt": "1"})
    calls = Calls()
    watcher = RefWatcher(repo.work, calls)
    assert watcher.start() is None
    try:
        repo.commit({"a.txt": "2"}, push=False)  # a local commit moves refs/heads/main
        calls.wait()
    finally:
        watcher.stop()


def test_a_folder_that_is_not_a_repository_says_why(tmp_path: Path) -> None:
    reason = RefWatcher(tmp_path, lambda: None).start()
    assert reason is not None and "not a Git repository" in reason


def test_reading_the_refs_asks_for_nothing(watched, tmp_path: Path) -> None:
    repo, calls = watched
    clone = tmp_path / "reader"
    for _ in range(3):  # what syncd's own fetch does to a watched repo: it only reads
        git("fetch", "--quiet", str(repo.bare), "+refs/heads/*:refs/remotes/x/*", cwd=repo.work)
    git("clone", "--quiet", "--bare", str(repo.bare), str(clone), cwd=tmp_path)
    time.sleep(0.5)
    assert calls.count == 0
