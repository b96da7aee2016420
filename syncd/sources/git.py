"""Git sources: a bare mirror of each repo's branch in state_dir, and a commit's files.

The only importer of `git` (GitPython). Every git process runs in a hermetic environment: no
system or user git config, no prompts (a missing credential fails at once instead of hanging
the daemon), only the transports syncd supports. Credentials in URLs never reach a log or the
journal: every message leaving this module goes through `redact`.

Hazards: a force-push is detected (the old commit is not an ancestor of the new one) and
reported, not refused; a deleted branch raises `BranchMissing` and keeps the last commit, so a
vanished branch never reads as "every deployment file was deleted".
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import git

from syncd.core.config import RepoConfig
from syncd.core.deployments import MAX_FILE_BYTES, TreeError
from syncd.errors import BranchMissing, SourceError

TRACKING_REF = "refs/syncd/head"
_SYMLINK = "120000"
_MAX_SYMLINK_HOPS = 8
_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")


def redact(text: str, url: str | None = None) -> str:
    """Hide the userinfo of every URL in `text`, and `url`'s own password wherever it
    appears (git quotes it outside a URL too: "unable to look up user:secret@host")."""
    if url and "://" in url:
        userinfo = urlsplit(url).netloc.rpartition("@")[0]
        user, _, password = userinfo.partition(":")
        if password:
            text = text.replace(userinfo, "***").replace(password, "***")
        elif user:
            text = text.replace(f"{user}@", "***@")  # a token given as the user name
    return _CREDENTIALS.sub(r"\g<scheme>***@", text)


# Git variables an operator may set for syncd (how to reach and trust their Git servers);
# every other GIT_* variable is dropped. GitPython starts each git command from a copy of
# os.environ, so an inherited GIT_DIR (syncd run from a hook), GIT_CONFIG_PARAMETERS or
# GIT_SSL_NO_VERIFY would otherwise reach git whatever syncd passes.
OPERATOR_GIT_VARIABLES = frozenset(
    {
        "GIT_SSH_COMMAND",
        "GIT_SSH",
        "GIT_SSL_CAINFO",
        "GIT_SSL_CAPATH",
        "GIT_SSL_CERT",
        "GIT_SSL_KEY",
    }
)


def isolate_process_environment() -> None:
    """Drop inherited git variables that syncd does not allow."""
    for key in [k for k in os.environ if k.startswith("GIT_")]:
        if key not in OPERATOR_GIT_VARIABLES:
            del os.environ[key]


# The longest a fetch may take before it is stopped and retried with back-off: a server that
# accepts and then never answers must not hold the repo's worker (or a reload) forever.
FETCH_TIMEOUT = 300.0
DEFAULT_SSH_COMMAND = (
    "ssh -o BatchMode=yes -o ConnectTimeout=30 -o ServerAliveInterval=15 -o ServerAliveCountMax=4"
)


def hermetic_env() -> dict[str, str]:
    """What syncd sets for every git command: no system or user config, no prompt of any kind
    (git's, the credential helper's, or ssh's: askpass is forced and always fails), only the
    transports syncd supports, and messages in English."""
    return {
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "/bin/false",
        "SSH_ASKPASS": "/bin/false",
        "SSH_ASKPASS_REQUIRE": "force",
        "GIT_ALLOW_PROTOCOL": "file:git:http:https:ssh",
        "GIT_SSH_COMMAND": os.environ.get("GIT_SSH_COMMAND", DEFAULT_SSH_COMMAND),
        # A server that stops sending mid-transfer fails the fetch instead of holding it.
        "GIT_HTTP_LOW_SPEED_LIMIT": "1000",
        "GIT_HTTP_LOW_SPEED_TIME": "60",
        "LC_ALL": "C",
    }


@dataclass(frozen=True)
class FetchResult:
    commit: str
    previous: str | None
    forced: bool
    changes: tuple[tuple[str, str], ...]  # (A|M|D|T, path), renames shown as D + A

    @property
    def moved(self) -> bool:
        return self.commit != self.previous


class GitSource:
    """One repo's branch, mirrored into `state_dir/repos/<name>.git`."""

    def __init__(
        self, repo: RepoConfig, state_dir: Path, fetch_timeout: float = FETCH_TIMEOUT
    ) -> None:
        self.config = repo
        self.path = state_dir / "repos" / f"{repo.name}.git"
        self.fetch_timeout = fetch_timeout
        self._repo: git.Repo | None = None

    @property
    def display_url(self) -> str:
        return self._redact(self.config.url)

    def _redact(self, text: str) -> str:
        return redact(text, self.config.url)

    def _git(self) -> git.Repo:
        isolate_process_environment()
        if self._repo is None:
            if not (self.path / "HEAD").exists():
                self.path.mkdir(parents=True, exist_ok=True)
                # Hermetic from the start: no user or system config, and no templates (a
                # user's init.templateDir would copy in hooks that fetches then run).
                init = git.Git(str(self.path))
                with init.custom_environment(**hermetic_env()):
                    init.init("--bare", "--template=")
            self._repo = git.Repo(self.path)
            self._repo.git.update_environment(**hermetic_env())
        return self._repo

    def current(self) -> str | None:
        """The last fetched commit, or None before the first fetch."""
        try:
            return self._git().git.rev_parse("--verify", "--quiet", TRACKING_REF) or None
        except git.GitCommandError:
            return None

    def fetch(self) -> FetchResult:
        """Fetch the branch; report the new commit, whether it was forced, what changed."""
        self.seed_if_missing()
        repo = self._git()
        previous = self.current()
        branch = self.config.branch
        try:
            repo.git.fetch(
                "--no-tags",
                "--quiet",
                "--",
                self.config.url,
                f"+refs/heads/{branch}:{TRACKING_REF}",
                kill_after_timeout=self.fetch_timeout,
            )
        except git.GitCommandError as exc:
            message = self._redact(f"{exc.stderr or exc}".strip())
            if "couldn't find remote ref" in message or "not our ref" in message:
                raise BranchMissing(
                    f"branch {branch!r} is gone from {self.display_url}; keeping commit "
                    f"{(previous or 'none')[:12]} until it returns"
                ) from None
            raise SourceError(f"cannot fetch {self.display_url}: {_reason(message)}") from None
        commit = self.current()
        if commit is None:  # pragma: no cover - fetch succeeded but wrote no ref
            raise SourceError(f"fetch of {self.display_url} produced no commit")
        forced = (
            previous is not None and commit != previous and not self._is_ancestor(previous, commit)
        )
        changes = self._changes(previous, commit) if commit != previous else ()
        return FetchResult(commit, previous, forced, changes)

    def resolve(self, ref: str) -> str:
        """Fetch any ref (branch, tag, SHA, refs/pull/N/head) and return its commit."""
        repo = self._git()
        if re.fullmatch(r"[0-9a-f]{7,40}", ref):
            # A SHA: known already, or on one of the remote's branches (servers seldom let a
            # client ask for a bare SHA, and never for a short one).
            for fetch_branches in (False, True):
                if fetch_branches:
                    with contextlib.suppress(git.GitCommandError):
                        repo.git.fetch(
                            "--no-tags",
                            "--quiet",
                            "--",
                            self.config.url,
                            "+refs/heads/*:refs/syncd/branches/*",
                            kill_after_timeout=self.fetch_timeout,
                        )
                with contextlib.suppress(git.GitCommandError):
                    return str(repo.git.rev_parse("--verify", "--quiet", f"{ref}^{{commit}}"))
        try:
            repo.git.fetch(
                "--no-tags",
                "--quiet",
                "--",
                self.config.url,
                f"+{ref}:refs/syncd/plan",
                kill_after_timeout=self.fetch_timeout,
            )
            return str(repo.git.rev_parse("--verify", "refs/syncd/plan^{commit}"))
        except git.GitCommandError as exc:
            raise SourceError(
                f"cannot fetch {ref!r} from {self.display_url}: "
                f"{_reason(self._redact(str(exc.stderr or exc)))}"
            ) from None

    def tree(self, commit: str) -> GitTree:
        return GitTree(self._git(), commit)

    def _is_ancestor(self, old: str, new: str) -> bool:
        try:
            self._git().git.merge_base("--is-ancestor", old, new)
            return True
        except git.GitCommandError:
            return False

    def _changes(self, old: str | None, new: str) -> tuple[tuple[str, str], ...]:
        repo = self._git()
        if old is None or not self._has_commit(old):
            out = repo.git.ls_tree("-r", "--name-only", "-z", new)
            return tuple(("A", p) for p in out.split("\0") if p)
        # --no-renames: a renamed deployment file is a deleted stack plus a new one.
        out = repo.git.diff("--name-status", "--no-renames", "-z", old, new)
        parts = [p for p in out.split("\0") if p]
        return tuple((parts[i], parts[i + 1]) for i in range(0, len(parts) - 1, 2))

    def _has_commit(self, sha: str) -> bool:
        try:
            self._git().git.cat_file("-e", f"{sha}^{{commit}}")
            return True
        except git.GitCommandError:
            return False

    def seed_if_missing(self) -> None:
        """Create a local repo from `init_from` on first run (the quick start's sample repo)."""
        target = self.config.local_path
        source = self.config.init_from
        if target is None or source is None or target.exists():
            return
        if not source.is_dir():
            raise SourceError(f"init_from {source} is not a folder")
        isolate_process_environment()
        env = hermetic_env() | {
            "GIT_AUTHOR_NAME": "syncd",
            "GIT_AUTHOR_EMAIL": "syncd@localhost",
            "GIT_COMMITTER_NAME": "syncd",
            "GIT_COMMITTER_EMAIL": "syncd@localhost",
        }
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp) / "work"
            shutil.copytree(source, work)
            g = git.Git(work)
            g.update_environment(**env)
            g.init("--quiet", "--initial-branch", self.config.branch)
            g.add("--all")
            g.commit("--quiet", "-m", f"Initial templates from {source.name}")
            target.parent.mkdir(parents=True, exist_ok=True)
            g.clone("--quiet", "--bare", str(work), str(target))


# git's own closing words on any transport failure; the reason is on the lines before them.
_BOILERPLATE = (
    "Could not read from remote repository",
    "Please make sure you have the correct access rights",
    "and the repository exists",
)


def _reason(text: str) -> str:
    """The informative lines of git's stderr (ssh's "Permission denied (publickey)", curl's
    "The requested URL returned error: 401"), joined; git's generic last line only if alone."""
    timeout = re.search(r"did not complete in (\S+) secs", text)
    if timeout:  # GitPython killed it; its message quotes the whole command line
        return f"no answer within {timeout.group(1)} s (the fetch was stopped)"
    text = text.replace("stderr: '", "").strip().strip("'")
    lines = [line.strip() for line in text.splitlines() if line.strip().strip("@")]
    useful = [line for line in lines if not any(b in line for b in _BOILERPLATE)]
    chosen = (useful or lines or ["unknown error"])[-3:]  # ssh and curl end with the reason
    return "; ".join(line.removeprefix("fatal: ").removeprefix("error: ") for line in chosen)


class GitTree:
    """The files of one commit (the `Tree` the deployment-file loader reads)."""

    def __init__(self, repo: git.Repo, commit: str) -> None:
        self._repo = repo
        self.commit = commit
        self._entries: dict[str, tuple[str, str, int]] = {}
        out = repo.git.ls_tree("-r", "-l", "-z", "--full-tree", commit)
        for item in out.split("\0"):
            if not item:
                continue
            meta, path = item.split("\t", 1)
            mode, kind, sha, size = meta.split()
            if kind == "blob":
                self._entries[path] = (mode, sha, int(size) if size != "-" else 0)

    def paths(self) -> Iterable[str]:
        return self._entries.keys()

    def read(self, path: str) -> bytes:
        resolved = self._resolve(path)
        entry = self._entries.get(resolved)
        if entry is None:
            raise TreeError(f"{path!r} does not exist at commit {self.commit[:12]}")
        _, sha, size = entry
        if size > MAX_FILE_BYTES:
            raise TreeError(f"is {size} bytes; the limit is {MAX_FILE_BYTES}")
        return self._blob(sha)

    def _resolve(self, path: str) -> str:
        """Follow symlinks in every component of `path`, never leaving the repo."""
        parts = [p for p in path.split("/") if p]
        done: list[str] = []
        hops = 0
        while parts:
            candidate = "/".join([*done, parts[0]])
            entry = self._entries.get(candidate)
            if entry is None or entry[0] != _SYMLINK:
                done.append(parts.pop(0))
                continue
            hops += 1
            if hops > _MAX_SYMLINK_HOPS:
                raise TreeError(f"{path!r}: too many symlinks")
            target = self._blob(entry[1]).decode("utf-8", "replace")
            joined = posixpath.normpath(posixpath.join(posixpath.dirname(candidate), target))
            if target.startswith("/") or joined == ".." or joined.startswith("../"):
                raise TreeError(f"{path!r} is a symlink pointing outside the repo ({target})")
            parts = [p for p in joined.split("/") if p and p != "."] + parts[1:]
            done = []
        return "/".join(done)

    def _blob(self, sha: str) -> bytes:
        return bytes(self._repo.odb.stream(bytes.fromhex(sha)).read())
