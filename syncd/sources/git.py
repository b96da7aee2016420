"""Git sources: a bare mirror of each repo's branch in state_dir, and a commit's files.

The only importer of `git` (GitPython). Every git process runs in a hermetic environment: no
system or user git config, no prompts (a missing credential fails at once instead of hanging
the daemon), only the transports syncd supports. Credentials in URLs never reach a log or the
journal: every message leaving this module goes through `redact`. Nor do they reach a command
line, which every local user can read (/proc/*/cmdline): git is given the URL without them and
asks for them through a credential helper that reads them from its environment, which only
syncd's own user (and root) can read.

Anyone who can push to a followed branch is untrusted, so what one commit can cost is bounded:
a fetch writes one pack, which the kernel stops past MAX_FETCH_FILE_BYTES (`prlimit --fsize`;
what it wrote is then deleted), a blob's size is checked
before any of it is read (a symlink's too), the listing of a commit stops at MAX_TREE_FILES, and a
fetched commit is loaded once before it is taken (`fetch`): one past a limit of
syncd.core.deployments is refused as a SourceError, the last commit is kept, and nothing of it is
applied.

Hazards: a force-push is detected (the old commit is not an ancestor of the new one) and
reported, not refused; a deleted branch raises `BranchMissing` and keeps the last commit, so a
vanished branch never reads as "every deployment file was deleted".
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import posixpath
import re
import resource
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import git

from syncd.core.config import RepoConfig
from syncd.core.deployments import (
    MAX_COMMIT_BYTES,
    MAX_FILE_BYTES,
    MAX_TREE_FILES,
    CommitTooLarge,
    TreeError,
    load_stacks,
)
from syncd.core.text import PATH_LIMIT, bounded, quoted
from syncd.errors import BranchMissing, SourceError, UntrustedCommit
from syncd.sources.signatures import UNCHECKED, SignatureCheck

TRACKING_REF = "refs/syncd/head"  # the last commit taken
FETCHED_REF = "refs/syncd/fetched"  # the branch's head as fetched, before it is taken
_SYMLINK = "120000"
MAX_SYMLINK_HOPS = 8
MAX_SYMLINK_BYTES = 4096  # a symlink's blob is its target path (PATH_MAX on Linux)
MAX_RECORD = 64 * 1024  # bytes of one line of `git ls-tree` (a path, with its mode and id)
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
# The largest pack one fetch may write (a fetch writes one pack, never loose objects). A branch
# that gains a huge blob would otherwise fill state_dir's disk, and the journal with it.
# Enforced with util-linux's `prlimit`; where it is missing or refused, the daemon warns at
# start (`fetch_limit_problem`) and fetches are bounded in time only.
MAX_FETCH_FILE_BYTES = 1024**3
PRLIMIT = shutil.which("prlimit")
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


# The credential helper git runs (`sh -c`) when an HTTP(S) server asks who syncd is: it answers
# with the user name and password of the repo's URL, which syncd puts in the environment of
# that one git command (never its command line), and only for the URL's own protocol and host,
# so a redirect elsewhere gets nothing. The empty value first drops any other helper.
CREDENTIAL_HELPER = (
    '!f() { test "$1" = get || exit 0; p=; h=; '
    'while IFS= read -r line && test -n "$line"; do case $line in '
    "protocol=*) p=${line#protocol=};; host=*) h=${line#host=};; esac; done; "
    'test "$p" = "$SYNCD_GIT_PROTOCOL" && test "$h" = "$SYNCD_GIT_HOST" || exit 0; '
    "printf 'username=%s\\n' \"$SYNCD_GIT_USERNAME\"; "
    'test -z "${SYNCD_GIT_PASSWORD+set}" || printf \'password=%s\\n\' "$SYNCD_GIT_PASSWORD"; '
    "}; f"
)


@dataclass(frozen=True)
class Remote:
    """A repo URL as git is given it: `url` holds no secret; `env` (for that one command)
    carries the user name and password the URL had, for CREDENTIAL_HELPER."""

    url: str
    env: dict[str, str]


def remote(url: str) -> Remote:
    """Split the credentials off a repo URL. http(s): the user and password go to the
    credential helper. ssh: the user stays (it is the login, not a secret), a password is
    dropped (ssh never takes one from a URL). Other schemes (git://, file://) carry none."""
    if "://" not in url:
        return Remote(url, {})
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at:
        return Remote(url, {})
    scheme = parts.scheme.lower()
    user, colon, password = userinfo.partition(":")
    if scheme in ("ssh", "git+ssh", "ssh+git"):
        netloc = f"{user}@{host}" if user else host
        return Remote(urlunsplit(parts._replace(netloc=netloc)), {})
    bare = urlunsplit(parts._replace(netloc=host))
    if scheme not in ("http", "https"):
        return Remote(bare, {})
    user, password = unquote(user), unquote(password)
    if any(c in user + password for c in "\n\r\0"):  # git refuses these too
        return Remote(bare, {})
    env = {
        "GIT_CONFIG_COUNT": "2",
        "GIT_CONFIG_KEY_0": "credential.helper",
        "GIT_CONFIG_VALUE_0": "",
        "GIT_CONFIG_KEY_1": "credential.helper",
        "GIT_CONFIG_VALUE_1": CREDENTIAL_HELPER,
        "SYNCD_GIT_PROTOCOL": scheme,
        "SYNCD_GIT_HOST": host,
        "SYNCD_GIT_USERNAME": user,
    }
    if colon:
        env["SYNCD_GIT_PASSWORD"] = password
    return Remote(bare, env)


UNTRUSTED = "untrusted:"  # marks a cached verdict that is about a signature


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
        self,
        repo: RepoConfig,
        state_dir: Path,
        fetch_timeout: float = FETCH_TIMEOUT,
        signatures: SignatureCheck | None = None,
        max_fetch_file: int = MAX_FETCH_FILE_BYTES,
    ) -> None:
        """`signatures`: the repo's trusted keys (`verify`); its head is checked at each fetch."""
        self.config = repo
        self.signatures = signatures
        self.path = state_dir / "repos" / f"{repo.name}.git"
        self.fetch_timeout = fetch_timeout
        self.max_fetch_file = max_fetch_file
        self._repo: git.Repo | None = None
        self._remote = remote(repo.url)
        # Commits checked against the limits: "" taken, else why refused (the latest few).
        self._verdicts: dict[str, str] = {}
        self._admitted: GitTree | None = None  # loaded when fetched; the pass takes it over

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
        previous = self.current()
        branch = self.config.branch
        try:
            self._fetch(f"+refs/heads/{branch}:{FETCHED_REF}")
        except git.GitCommandError as exc:
            message = self._redact(f"{exc.stderr or exc}".strip())
            if "couldn't find remote ref" in message or "not our ref" in message:
                raise BranchMissing(
                    f"branch {branch!r} is gone from {self.display_url}; keeping commit "
                    f"{(previous or 'none')[:12]} until it returns"
                ) from None
            raise SourceError(f"cannot fetch {self.display_url}: {_reason(message)}") from None
        try:
            commit = str(self._git().git.rev_parse("--verify", f"{FETCHED_REF}^{{commit}}"))
        except git.GitCommandError:  # pragma: no cover - fetch succeeded but wrote no ref
            raise SourceError(f"fetch of {self.display_url} produced no commit") from None
        self._admit(commit, previous)
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
                        self._fetch("+refs/heads/*:refs/syncd/branches/*")
                with contextlib.suppress(git.GitCommandError):
                    return str(repo.git.rev_parse("--verify", "--quiet", f"{ref}^{{commit}}"))
        try:
            self._fetch(f"+{ref}:refs/syncd/plan")
            return str(repo.git.rev_parse("--verify", "refs/syncd/plan^{commit}"))
        except git.GitCommandError as exc:
            raise SourceError(
                f"cannot fetch {ref!r} from {self.display_url}: "
                f"{_reason(self._redact(str(exc.stderr or exc)))}"
            ) from None

    def _fetch(self, refspec: str) -> None:
        """`git fetch` of one refspec from the repo's URL, credentials kept off the command
        line (see `remote`), into one pack (never loose objects) that the kernel stops past
        `max_fetch_file` bytes (SIGXFSZ): what the fetch left is then deleted and the fetch
        refused. One fetch at a time in a mirror (a `plan` fetches into the daemon's), so a
        failed one deletes only what it wrote."""
        repo = self._git()
        command = [
            repo.git.GIT_PYTHON_GIT_EXECUTABLE or "git",
            "-c",
            "fetch.unpackLimit=1",  # one pack, however few the objects: one file to bound
            "fetch",
            "--no-tags",
            "--quiet",
        ]
        limit = _file_size_limit(self.max_fetch_file) if fetch_limit_problem() is None else None
        if limit is not None:
            command = [str(PRLIMIT), f"--fsize={limit}", "--core=0", *command]
        with _fetch_lock(self.path):
            before = set(self._partial_files())
            try:
                repo.git.execute(
                    [*command, "--", self._remote.url, refspec],
                    kill_after_timeout=self.fetch_timeout,
                    env=self._remote.env or None,
                )
            except git.GitCommandError:
                largest = 0
                for path in set(self._partial_files()) - before:
                    with contextlib.suppress(OSError):
                        largest = max(largest, path.stat().st_size)
                        path.unlink()
                if limit is not None and largest >= limit:
                    raise SourceError(
                        f"cannot fetch {self.display_url}: it sent a pack of more than "
                        f"{limit:,} bytes, the limit for a fetch (the fetch was stopped and "
                        "what it wrote deleted)"
                    ) from None
                raise

    def _partial_files(self) -> list[Path]:
        """git's half-written files in the mirror (tmp_pack_*, tmp_obj_*, tmp_idx_*)."""
        return list((self.path / "objects").glob("**/tmp_*"))

    def _admit(self, commit: str, previous: str | None) -> None:
        """Load `commit` once (the pass takes the load over, see `tree`); one past the limits
        is refused, and so is one that its repo's `verify` does not trust: the fetch went to
        FETCHED_REF, and only a commit taken moves TRACKING_REF, so the last commit taken is
        kept (a crash in between takes nothing) and nothing of this one is applied. Raises
        SourceError (UntrustedCommit for a signature), the same each time."""
        verdict = self._verdicts.get(commit)
        if verdict is None:
            verdict = self._judge(commit, previous)
            if not verdict.startswith(UNTRUSTED + UNCHECKED):  # that one is tried again
                if len(self._verdicts) >= 16:
                    self._verdicts.pop(next(iter(self._verdicts)))
                self._verdicts[commit] = verdict
        if not verdict:
            if commit != previous:
                self._git().git.update_ref(TRACKING_REF, commit)
            return
        if verdict.startswith(UNTRUSTED):
            kept = f"keeping commit {previous[:12]}" if previous else "no commit taken yet"
            raise UntrustedCommit(commit, verdict[len(UNTRUSTED) :], kept)
        raise SourceError(verdict)

    def _judge(self, commit: str, previous: str | None) -> str:
        """Empty when `commit` may be applied, else why not (UNTRUSTED + why, for a signature)."""
        untrusted = self.untrusted(commit)
        if untrusted is not None:
            return UNTRUSTED + untrusted
        try:
            tree = GitTree(self._git(), commit)
            load_stacks(self.config, tree)
        except CommitTooLarge as exc:
            kept = f"keeping commit {previous[:12]}" if previous else "no commit taken yet"
            return f"commit {commit[:12]} is refused, nothing of it is applied: {exc}; {kept}"
        self._admitted = tree
        return ""

    def untrusted(self, commit: str) -> str | None:
        """Why `commit` is not to be applied under the repo's `verify` (None: it is, or the
        repo verifies nothing)."""
        if self.signatures is None:
            return None
        env = {**os.environ, **hermetic_env()}
        return self.signatures.untrusted(self.path, env, commit)

    def close(self) -> None:
        if self.signatures is not None:
            self.signatures.close()

    def tree(self, commit: str) -> GitTree:
        admitted, self._admitted = self._admitted, None
        if admitted is not None and admitted.commit == commit:
            return admitted  # already loaded: load_stacks finds its result there
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
            listing = _listing(repo, new, "-r", "--name-only", "-z")
            return tuple(("A", p) for p in listing)
        # --no-renames: a renamed deployment file is a deleted stack plus a new one.
        out = repo.git.diff("--name-status", "--no-renames", "-z", old, new)
        parts = [p for p in out.split("\0") if p]
        return tuple((parts[i], parts[i + 1]) for i in range(0, len(parts) - 1, 2))

    def has_commit(self, sha: str) -> bool:
        """Whether the mirror holds commit `sha` (an old one may be gone after a force-push)."""
        return self._has_commit(sha)

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


def commit_summaries(path: Path, commits: Iterable[str]) -> dict[str, dict[str, str]]:
    """Each commit's subject and author in the mirror at `path` ({} for one it does not hold),
    read through a repo object of its own: the repo's worker keeps its handle to itself."""
    out: dict[str, dict[str, str]] = {c: {} for c in commits}
    if not (path / "HEAD").exists():
        return out
    isolate_process_environment()
    mirror = None
    try:
        mirror = git.Repo(path)
        mirror.git.update_environment(**hermetic_env())
        for commit in out:
            try:
                found = mirror.commit(commit)
                out[commit] = {
                    "subject": bounded(str(found.summary), 200),
                    "author": bounded(str(found.author.name), 100),
                }
            except Exception:  # gitdb's BadName, ValueError: not there (a force-push), not a commit
                continue
    except (git.GitError, OSError):  # not a repository syncd can read: shown without
        pass
    finally:
        if mirror is not None:
            mirror.close()
    return out


@contextlib.contextmanager
def _fetch_lock(mirror: Path) -> Iterator[None]:
    """Hold the mirror's fetch lock (flock: let go by the kernel if syncd dies)."""
    with open(mirror / "syncd-fetch.lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


@functools.cache
def fetch_limit_problem() -> str | None:
    """Why a fetch here cannot be bounded in size (then it is bounded in time only), or None:
    `prlimit` is missing, or cannot set a limit (a sandbox that refuses the system call)."""
    if PRLIMIT is None:
        return "prlimit (util-linux) is not installed"
    try:
        subprocess.run(
            [PRLIMIT, f"--fsize={MAX_FETCH_FILE_BYTES}", "--core=0", "true"],
            check=True,
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        said = (getattr(exc, "stderr", b"") or b"").decode(errors="replace").strip()
        return f"prlimit cannot set a file size limit here: {bounded(said or str(exc))}"
    return None


def _file_size_limit(wanted: int) -> int:
    """`wanted`, or the hard limit on file size syncd runs under if lower (an unprivileged
    process cannot raise it, so prlimit would refuse, and every fetch with it)."""
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    return wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)


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
    return bounded(
        "; ".join(line.removeprefix("fatal: ").removeprefix("error: ") for line in chosen)
    )


def _listing(repo: git.Repo, commit: str, *options: str) -> Iterable[str]:
    """The NUL-separated records of `git ls-tree OPTIONS COMMIT`, read as git writes them and
    stopped past MAX_TREE_FILES (a few tree objects can name a billion paths)."""
    proc = repo.git.ls_tree(*options, "--full-tree", commit, as_process=True)
    count = 0
    pending = b""
    try:
        while chunk := proc.stdout.read(1 << 16):
            *records, pending = (pending + chunk).split(b"\0")
            for record in (*records, pending):
                if len(record) > MAX_RECORD:  # Git takes a path of any length, nothing else
                    raise CommitTooLarge(f"it names a path of more than {MAX_RECORD:,} bytes")
            for record in records:
                count += 1
                if count > MAX_TREE_FILES:
                    raise CommitTooLarge(
                        f"it has more than {MAX_TREE_FILES:,} files (blobs, symlinks and "
                        "submodules), the limit for a commit"
                    )
                yield record.decode("utf-8", "surrogateescape")
        proc.wait()
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.proc.kill()  # stopped early: GitPython's AutoInterrupt reaps it


def link_parts(path: str, link: str, target: str) -> list[str]:
    """Where the symlink `link` (met while resolving `path`) leads, as the path parts to resolve
    next; TreeError if it leads outside the repo. The one rule for a commit and a working
    tree alike."""
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(link), target))
    if target.startswith("/") or joined == ".." or joined.startswith("../"):
        raise TreeError(f"{quoted(path)} is a symlink pointing outside the repo ({quoted(target)})")
    return [p for p in joined.split("/") if p and p != "."]


class GitTree:
    """The files of one commit (the `Tree` the deployment-file loader reads).

    Nothing larger than the limits is ever read: each blob's size comes from the listing and
    is checked before any of its bytes are (MAX_SYMLINK_BYTES for a symlink's target,
    MAX_FILE_BYTES for a file), and the blobs read from one tree add up to MAX_COMMIT_BYTES
    at most, each counted once (CommitTooLarge past it)."""

    def __init__(self, repo: git.Repo, commit: str, budget: int | None = None) -> None:
        self._repo = repo
        self.commit = commit
        self.budget = MAX_COMMIT_BYTES if budget is None else budget
        self.bytes_read = 0
        self.loaded: object = None  # load_stacks keeps its result here
        self._counted: set[str] = set()
        self._targets: dict[str, str] = {}  # symlink blob -> its target
        self._entries: dict[str, tuple[bool, str, int]] = {}  # path -> (symlink?, sha, size)
        self._submodules: list[str] = []  # gitlinks: listed, never followed or fetched
        for item in _listing(repo, commit, "-r", "-l", "-z"):
            meta, _, path = item.partition("\t")
            mode, kind, sha, size = meta.split()
            if kind == "blob":
                self._entries[path] = (mode == _SYMLINK, sha, int(size))
            elif kind == "commit":
                self._submodules.append(path)

    def paths(self) -> Iterable[str]:
        return self._entries.keys()

    def blob_id(self, path: str) -> str:
        return self._entry(path)[1]

    def read(self, path: str) -> bytes:
        _, sha, size = self._entry(path)
        if size > MAX_FILE_BYTES:
            raise TreeError(f"is {size} bytes; the limit is {MAX_FILE_BYTES}")
        return self._blob(sha, size, path)

    def _entry(self, path: str) -> tuple[bool, str, int]:
        resolved = self._resolve(path)
        entry = self._entries.get(resolved)
        if entry is None:
            missing = f"{quoted(path)} does not exist at commit {self.commit[:12]}"
            # A submodule's files are in another repository, which syncd does not fetch: say
            # so, rather than leave a file the user can see in their checkout "missing".
            for link in self._submodules:
                if resolved == link or resolved.startswith(link + "/"):
                    raise TreeError(
                        f"{missing}: it is {'' if resolved == link else 'inside '}the submodule "
                        f"{quoted(link)}, whose files syncd does not fetch"
                    )
            raise TreeError(missing)
        return entry

    def _resolve(self, path: str) -> str:
        """Follow symlinks in every component of `path`, never leaving the repo."""
        parts = [p for p in path.split("/") if p]
        done: list[str] = []
        hops = 0
        while parts:
            candidate = "/".join([*done, parts[0]])
            entry = self._entries.get(candidate)
            if entry is None or not entry[0]:
                done.append(parts.pop(0))
                continue
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                raise TreeError(f"{quoted(path)}: too many symlinks")
            target = self._target(candidate, entry[1], entry[2])
            parts = link_parts(path, candidate, target) + parts[1:]
            done = []
        return "/".join(done)

    def _target(self, link: str, sha: str, size: int) -> str:
        target = self._targets.get(sha)
        if target is None:
            if size > MAX_SYMLINK_BYTES:
                raise TreeError(
                    f"{quoted(link)} is a symlink of {size} bytes; a symlink's target is at "
                    f"most {MAX_SYMLINK_BYTES} bytes"
                )
            target = self._blob(sha, size, link).decode("utf-8", "replace")
            self._targets[sha] = target
        return target

    def _blob(self, sha: str, size: int, path: str) -> bytes:
        """A blob's bytes, `size` (from the listing) checked first against what this tree
        may still read: CommitTooLarge past MAX_COMMIT_BYTES."""
        if sha not in self._counted:
            if self.bytes_read + size > self.budget:
                raise CommitTooLarge(
                    f"reading {bounded(path, PATH_LIMIT)} ({size:,} bytes) takes the bytes "
                    f"read from the commit past {self.budget:,}, the limit for a commit (read "
                    f"so far: {self.bytes_read:,} bytes in {len(self._counted):,} files)"
                )
            self._counted.add(sha)
            self.bytes_read += size
        stream = self._repo.odb.stream(bytes.fromhex(sha))
        if stream.size != size:  # pragma: no cover - a blob's size is part of its name
            raise TreeError(f"{quoted(path)}: blob {sha} is {stream.size} bytes, not {size}")
        return bytes(stream.read())
