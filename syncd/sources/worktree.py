"""A local repository, as `syncd validate --path` checks it: its working tree (what a developer
is about to commit, uncommitted and untracked files included), or one of its commits.

The other half of the Git room (`sources/git.py` fetches and reads followed repos; this module
opens a checkout on disk), and so a second importer of `git` (GitPython). Git runs here as the
developer's own git does, with their git config (their checkout: `safe.directory`, global
ignore files), but with no prompt, no fsmonitor (a config can name a program for git to run
on every listing) and no optional locks: syncd never writes the developer's index.

A working tree is read within the limits a commit is read within (syncd.core.deployments,
sources/git.py), since the next push turns it into one: the listing stops past MAX_TREE_FILES,
a file is read only if it is a regular file of at most MAX_FILE_BYTES (a FIFO or a device is
refused, never opened for reading), a symlink is followed only inside the repo and only through
the files Git lists, and the bytes read add up to MAX_COMMIT_BYTES at most.

Hazard: the tree can change while it is read (an editor saving). Each file is opened one
folder at a time from the repo's root, never following a symlink the resolution did not
choose, so a folder swapped for a symlink between the listing and the read fails that file
instead of reading outside the repo.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

import git

from syncd.core.deployments import (
    MAX_COMMIT_BYTES,
    MAX_FILE_BYTES,
    MAX_TREE_FILES,
    CommitTooLarge,
    TreeError,
)
from syncd.core.text import PATH_LIMIT, bounded, printable, quoted
from syncd.errors import SourceError, UsageError
from syncd.sources.git import (
    MAX_RECORD,
    MAX_SYMLINK_BYTES,
    MAX_SYMLINK_HOPS,
    GitTree,
    hermetic_env,
    isolate_process_environment,
    link_parts,
)


def _local_env() -> dict[str, str]:
    """Every git command's environment in the developer's repository: hermetic_env's prompts
    and messages, not its blank config; fsmonitor off at the command line's level, which
    outranks every config file."""
    env = hermetic_env()
    del env["GIT_CONFIG_NOSYSTEM"], env["GIT_CONFIG_GLOBAL"]
    return env | {
        "GIT_OPTIONAL_LOCKS": "0",
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "core.fsmonitor",
        "GIT_CONFIG_VALUE_0": "false",
    }


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO put in a file's place after it was checked opens at once, unread.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def open_local(root: Path) -> git.Repo:
    """The Git repository whose top folder (or, bare, whose Git folder) is `root`. Raises
    UsageError for anything else: paths in deployment files are from the repo's top."""
    isolate_process_environment()
    if not root.is_dir():
        raise UsageError(f"--path {root}: not a folder")
    try:
        repo = git.Repo(root)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise UsageError(
            f"--path {root}: not the top folder of a Git repository (deployment files name "
            "templates from there)"
        ) from None
    repo.git.update_environment(**_local_env())
    return repo


def local_commit(repo: git.Repo, ref: str) -> str:
    """The commit `ref` (branch, tag, SHA, refs/pull/N/head) names in the local repository,
    without a fetch. Raises UsageError when it names none."""
    if ref.startswith("-"):  # git would read it as an option
        raise UsageError(printable(f"--ref {ref!r}: not a ref"))
    try:
        return str(repo.git.rev_parse("--verify", "--quiet", f"{ref}^{{commit}}"))
    except git.GitCommandError as exc:
        # --quiet leaves git's stderr empty for a missing ref; anything there says more
        # (a repository owned by another user, say).
        said = _said(exc)
        why = f" ({said})" if said else ""
        raise UsageError(
            printable(f"--ref {ref!r}: no such commit in {repo.git_dir}{why}")
        ) from None


def commit_tree(repo: git.Repo, commit: str) -> GitTree:
    """One commit of the local repository, read as a followed repo's commit is."""
    return GitTree(repo, commit)


class WorkTree:
    """The files of a working tree as the next commit would hold them: Git's tracked files
    still on disk and its untracked files that no .gitignore leaves out (the `Tree` the
    deployment-file loader reads)."""

    def __init__(self, repo: git.Repo, budget: int | None = None) -> None:
        if repo.working_tree_dir is None:
            raise UsageError(f"--path {repo.git_dir}: a bare repository has no working tree")
        self.root = Path(repo.working_tree_dir)
        self.budget = MAX_COMMIT_BYTES if budget is None else budget
        self.bytes_read = 0
        self.loaded: object = None  # load_stacks keeps its result here
        self._counted: set[str] = set()
        self._entries: dict[str, bool] = {}  # path -> whether it is a symlink
        try:
            for path in _listing(repo):
                try:
                    mode = os.lstat(self.root / path).st_mode
                except OSError:  # tracked, but deleted in the working tree
                    continue
                if not stat.S_ISDIR(mode):  # a submodule, or a nested repository
                    self._entries[path] = stat.S_ISLNK(mode)
        except git.GitCommandError as exc:
            raise SourceError(
                f"cannot list the files of {self.root}: {_said(exc) or 'git failed'}"
            ) from None

    def paths(self) -> Iterable[str]:
        return self._entries.keys()

    def blob_id(self, path: str) -> str:
        return self._entry(path)  # one path of this tree holds one content while it is read

    def read(self, path: str) -> bytes:
        real = self._entry(path)
        parent, name = self._folder(real, path)
        try:
            info = os.stat(name, dir_fd=parent, follow_symlinks=False)
            self._check(path, info)
            self._charge(real, path, info.st_size)
            fd = os.open(name, _FILE_FLAGS, dir_fd=parent)
        except OSError as exc:
            raise TreeError(f"{quoted(path)} cannot be read: {exc.strerror}") from None
        finally:
            os.close(parent)
        try:
            self._check(path, os.fstat(fd))  # what was opened, if it changed since
            chunks: list[bytes] = []
            size = 0
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_FILE_BYTES:  # it grew since it was checked
                    raise TreeError(f"grew past the limit of {MAX_FILE_BYTES} bytes as it was read")
        except OSError as exc:
            raise TreeError(f"{quoted(path)} cannot be read: {exc.strerror}") from None
        finally:
            os.close(fd)
        return b"".join(chunks)

    def _check(self, path: str, info: os.stat_result) -> None:
        if stat.S_ISLNK(info.st_mode):
            raise TreeError(f"{quoted(path)} changed while it was read (now a symlink)")
        if not stat.S_ISREG(info.st_mode):
            raise TreeError(f"{quoted(path)} is not a regular file (a FIFO, device or socket)")
        if info.st_size > MAX_FILE_BYTES:
            raise TreeError(f"is {info.st_size} bytes; the limit is {MAX_FILE_BYTES}")

    def _charge(self, real: str, path: str, size: int) -> None:
        """Count a file's bytes against what the tree may read, before reading them."""
        if real in self._counted:
            return
        if self.bytes_read + size > self.budget:
            raise CommitTooLarge(
                f"reading {bounded(path, PATH_LIMIT)} ({size:,} bytes) takes the bytes read "
                f"from the working tree past {self.budget:,}, the limit for a commit (read so "
                f"far: {self.bytes_read:,} bytes in {len(self._counted):,} files)"
            )
        self._counted.add(real)
        self.bytes_read += size

    def _entry(self, path: str) -> str:
        """`path` with its symlinks followed: a file Git lists, not a symlink."""
        real = self._resolve(path)
        if self._entries.get(real) is not False:
            raise TreeError(
                f"{quoted(path)} does not exist in the working tree (or Git ignores it)"
            )
        return real

    def _resolve(self, path: str) -> str:
        """Follow symlinks in every component of `path`, never leaving the repo (the rules
        a commit's symlinks are followed by: sources/git.py's GitTree)."""
        parts = [p for p in path.split("/") if p]
        done: list[str] = []
        hops = 0
        while parts:
            candidate = "/".join([*done, parts[0]])
            if not self._entries.get(candidate):
                done.append(parts.pop(0))
                continue
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                raise TreeError(f"{quoted(path)}: too many symlinks")
            target = self._target(candidate)
            parts = link_parts(path, candidate, target) + parts[1:]
            done = []
        return "/".join(done)

    def _target(self, link: str) -> str:
        parent, name = self._folder(link, link)
        try:
            info = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if not stat.S_ISLNK(info.st_mode):
                raise TreeError(f"{quoted(link)} changed while it was read (no longer a symlink)")
            if info.st_size > MAX_SYMLINK_BYTES:
                raise TreeError(
                    f"{quoted(link)} is a symlink of {info.st_size} bytes; a symlink's target "
                    f"is at most {MAX_SYMLINK_BYTES} bytes"
                )
            return os.fsdecode(os.readlink(name, dir_fd=parent))
        except OSError as exc:
            raise TreeError(f"{quoted(link)} cannot be read: {exc.strerror}") from None
        finally:
            os.close(parent)

    def _folder(self, real: str, shown: str) -> tuple[int, str]:
        """An open descriptor of the folder holding `real` (reached one folder at a time,
        following no symlink) and the name in it. The caller closes the descriptor."""
        *folders, name = real.split("/")
        if any(part in ("", ".", "..") for part in (*folders, name)):  # git lists none
            raise TreeError(f"{quoted(shown)} is not a path inside the repo")
        fd = os.open(self.root, _DIR_FLAGS)
        try:
            for folder in folders:
                inner = os.open(folder, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = inner
        except OSError as exc:
            os.close(fd)
            why = "a folder on its path changed" if exc.errno in _SWAPPED else exc.strerror
            raise TreeError(f"{quoted(shown)} cannot be read: {why}") from None
        return fd, name


_SWAPPED = (errno.ELOOP, errno.ENOTDIR)  # a folder became a symlink or a file


def _said(exc: git.GitCommandError) -> str:
    """What git wrote on stderr, without GitPython's wrapping, on one bounded line."""
    text = str(exc.stderr or "").strip().removeprefix("stderr: '").removesuffix("'")
    return bounded("; ".join(line.strip() for line in text.splitlines() if line.strip()), 300)


def _listing(repo: git.Repo) -> Iterator[str]:
    """`git ls-files` of the tracked and untracked (not ignored) files, read as git writes
    them and stopped past MAX_TREE_FILES (as a commit's listing is)."""
    proc = repo.git.ls_files(
        "-z", "--cached", "--others", "--exclude-standard", "--full-name", as_process=True
    )
    count = 0
    pending = b""
    seen: set[bytes] = set()  # a path with a merge conflict is listed once per stage
    try:
        while chunk := proc.stdout.read(1 << 16):
            *records, pending = (pending + chunk).split(b"\0")
            for record in (*records, pending):
                if len(record) > MAX_RECORD:
                    raise CommitTooLarge(f"it names a path of more than {MAX_RECORD:,} bytes")
            for record in records:
                if record in seen:
                    continue
                seen.add(record)
                count += 1
                if count > MAX_TREE_FILES:
                    raise CommitTooLarge(
                        f"it has more than {MAX_TREE_FILES:,} files, the limit for a commit"
                    )
                yield record.decode("utf-8", "surrogateescape")
        proc.wait()
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.proc.kill()
