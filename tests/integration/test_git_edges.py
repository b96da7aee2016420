"""`syncd.sources.git` against repositories and remotes nobody planned for: submodules, Git LFS
pointers, binary files, a 10,000-file tree, a 50 MB history, a branch force-pushed a hundred
times while syncd fetches, refs and URLs that try to smuggle in git options, and remotes that
answer nonsense. Through GitSource's public API only, against real git.

Large repositories are built with one `git fast-import` run (tests/support/fastimport.py).
"""

from __future__ import annotations

import os
import random
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncd.core.config import RepoConfig, parse_config
from syncd.core.deployments import LoadResult, load_stacks
from syncd.core.text import printable
from syncd.errors import BranchMissing, ConfigError, SourceError
from syncd.sources.git import GitSource
from tests.support.fastimport import Blob, FastImport, Gitlink
from tests.support.garbage_server import endless, garbage_server, reply, then_silence
from tests.support.git_servers import git_http_server
from tests.support.gitrepo import GitRepo, git
from tests.support.timing import PATIENCE

TEMPLATE = b"""\
Parameters:
  N: {Type: String}
Resources:
  Topic:
    Type: AWS::SNS::Topic
    Properties:
      TopicName: !Sub "topic-${N}"
"""


def deployment(template: str, n: str = "0") -> bytes:
    return f"template-file-path: {template}\nparameters: {{N: '{n}'}}\n".encode()


@pytest.fixture
def server(tmp_path: Path) -> GitRepo:
    return GitRepo(tmp_path / "server")


def source_for(url: str, state: Path, **options: Any) -> GitSource:
    return GitSource(RepoConfig(name="app", url=url, **options), state)


def load(source: GitSource, commit: str) -> LoadResult:
    return load_stacks(source.config, source.tree(commit))


# --- what a tree may hold ------------------------------------------------------------------


def test_a_submodule_is_not_followed_and_a_file_inside_it_is_a_clear_invalid_reason(
    server: GitRepo, tmp_path: Path
) -> None:
    inner = GitRepo(tmp_path / "inner")
    inner_commit = inner.commit({"templates/t.yaml": TEMPLATE.decode()})
    marker = tmp_path / "submodule-contacted"
    stream = FastImport()
    stream.commit(
        "refs/heads/main",
        {
            # Where the submodule says it lives: a command, were git ever to fetch it.
            ".gitmodules": (
                f'[submodule "vendor"]\n\tpath = vendor\n\turl = ext::sh -c touch% {marker}\n'
            ).encode(),
            "vendor": Gitlink(inner_commit),
            "templates/ok.yaml": TEMPLATE,
            "deployments/inside.yaml": deployment("vendor/templates/t.yaml"),
            "deployments/gitlink.yaml": deployment("vendor"),
            "deployments/ok.yaml": deployment("templates/ok.yaml"),
        },
    )
    tip = stream.run(server.bare)[":1"]

    source = source_for(str(server.bare), tmp_path / "state")
    result = source.fetch()
    assert result.commit == tip
    assert ("A", "vendor") in result.changes  # the gitlink is listed, not entered
    assert not source.has_commit(inner_commit)  # the submodule's history was never fetched
    assert not marker.exists()
    loaded = load(source, tip)
    assert sorted(loaded.stacks) == ["ok"]
    inside = loaded.invalid["inside"]
    assert inside.file == "vendor/templates/t.yaml"
    assert inside.reason == (
        f"template 'vendor/templates/t.yaml' does not exist at commit {tip[:12]}: it is inside "
        "the submodule 'vendor', whose files syncd does not fetch "
        "(the template of deployments/inside.yaml)"
    )
    assert loaded.invalid["gitlink"].reason == (
        f"template 'vendor' does not exist at commit {tip[:12]}: it is the submodule 'vendor', "
        "whose files syncd does not fetch (the template of deployments/gitlink.yaml)"
    )
    assert "vendor" not in set(source.tree(tip).paths())


def test_a_git_lfs_pointer_as_a_template_fails_its_stack_saying_so(
    server: GitRepo, tmp_path: Path
) -> None:
    pointer = (
        "version https://git-lfs.github.com/spec/v1\n"
        "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
        "size 12345\n"
    )
    tip = server.commit(
        {
            ".gitattributes": "templates/*.yaml filter=lfs diff=lfs merge=lfs -text\n",
            "templates/big.yaml": pointer,
            "deployments/big.yaml": deployment("templates/big.yaml").decode(),
        }
    )
    source = source_for(str(server.bare), tmp_path / "state")
    assert source.fetch().commit == tip  # no LFS filter runs, and none is needed
    stack = load(source, tip).invalid["big"]
    assert stack.file == "templates/big.yaml"
    assert stack.reason == (
        "template is a Git LFS pointer, not the template itself: syncd reads the commit as Git "
        "stores it and does not fetch LFS objects (the template of deployments/big.yaml)"
    )


def test_binary_files_and_binary_templates_fail_only_their_own_stacks(
    server: GitRepo, tmp_path: Path
) -> None:
    noise = bytes(range(256)) * 64
    stream = FastImport()
    stream.commit(
        "refs/heads/main",
        {
            "assets/logo.png": b"\x89PNG\r\n\x1a\n" + noise,
            "assets/zeros.bin": b"\x00" * 100_000,
            "templates/ok.yaml": TEMPLATE,
            "templates/image.yaml": noise,  # not UTF-8
            "templates/nul.yaml": b"Resources:\n  A: {Type: T}\nB: \x00\x01\n",  # UTF-8, NULs
            "deployments/ok.yaml": deployment("templates/ok.yaml"),
            "deployments/image.yaml": deployment("templates/image.yaml"),
            "deployments/nul.yaml": deployment("templates/nul.yaml"),
            "deployments/binary.yaml": b"\xff\xfe\x00" + noise,
            "deployments/asset.yaml": deployment("assets/zeros.bin"),
        },
    )
    tip = stream.run(server.bare)[":1"]
    source = source_for(str(server.bare), tmp_path / "state")
    assert source.fetch().commit == tip
    loaded = load(source, tip)
    assert sorted(loaded.stacks) == ["ok"]
    reasons = {name: (s.file, s.reason) for name, s in loaded.invalid.items()}
    assert reasons == {
        "image": (
            "templates/image.yaml",
            "template is not UTF-8 text (the template of deployments/image.yaml)",
        ),
        "nul": (
            "templates/nul.yaml",
            "template not valid YAML: line 3, column 4: the character U+0000 is not allowed in "
            "YAML (is this a binary file?) (the template of deployments/nul.yaml)",
        ),
        "binary": ("deployments/binary.yaml", "deployment file is not UTF-8 text"),
        "asset": (
            "assets/zeros.bin",
            "template not valid YAML: line 1, column 1: the character U+0000 is not allowed in "
            "YAML (is this a binary file?) (the template of deployments/asset.yaml)",
        ),
    }


def test_a_tree_of_10000_files_is_fetched_listed_and_loaded(
    server: GitRepo, tmp_path: Path
) -> None:
    stream = FastImport()
    files: dict[str, bytes | Blob | Gitlink] = {
        f"docs/{i // 100:03d}/page-{i:05d}.md": b"page %d\n" % i for i in range(10_000)
    }
    files["templates/t.yaml"] = TEMPLATE
    files["deployments/app.yaml"] = deployment("templates/t.yaml")
    stream.commit("refs/heads/main", files)
    tip = stream.run(server.bare)[":1"]

    source = source_for(f"file://{server.bare}", tmp_path / "state")
    result = source.fetch()
    assert result.commit == tip
    assert len(result.changes) == 10_002
    assert set(result.changes) == {("A", path) for path in files}
    assert len(list(source.tree(tip).paths())) == 10_002
    assert list(load(source, tip).stacks) == ["app"]

    # One file changed: exactly that change, nothing re-listed.
    nxt = FastImport()
    nxt.commit("refs/heads/main", {**files, "docs/000/page-00007.md": b"new\n"}, parent=tip)
    second = nxt.run(server.bare)[":1"]
    again = source.fetch()
    assert (again.commit, again.previous, again.forced) == (second, tip, False)
    assert again.changes == (("M", "docs/000/page-00007.md"),)


BLOB = 50 * 1024 * 1024 // 5000 + 1  # bytes: 5,000 of them make 50 MiB


def test_a_50_mb_history_of_many_blobs_is_fetched_and_only_the_tip_is_read(
    server: GitRepo, tmp_path: Path
) -> None:
    # 100 commits, each rewriting the same 50 files with 10 KiB of fresh random bytes: 5,000
    # blobs and 50 MiB that no delta or compression can shrink; the tip's tree is 512 KiB.
    stream = FastImport()
    parent = None
    for commit in range(100):
        files: dict[str, bytes | Blob | Gitlink] = {
            f"data/blob-{i:02d}.bin": stream.blob(os.urandom(BLOB)) for i in range(50)
        }
        files["templates/t.yaml"] = TEMPLATE
        files["deployments/app.yaml"] = deployment("templates/t.yaml", str(commit))
        parent = stream.commit("refs/heads/main", files, parent=parent)
    shas = stream.run(server.bare)
    tip = shas[parent or ""]

    source = source_for(f"file://{server.bare}", tmp_path / "state")
    result = source.fetch()
    assert result.commit == tip
    counted = git("count-objects", "-v", cwd=source.path)
    packed = dict(line.split(": ") for line in counted.splitlines())
    assert int(packed["size-pack"]) >= 50 * 1024  # KiB: the whole history is in the mirror
    assert int(packed["in-pack"]) >= 5000
    tree = source.tree(tip)
    loaded = load_stacks(source.config, tree)
    assert dict(loaded.stacks["app"].parameters) == {"N": "99"}
    assert tree.bytes_read < 1024  # the deployment file and its template, nothing else


@pytest.mark.parametrize(
    "files",
    [
        {"data/huge.txt": 400_000},  # git would keep a few objects loose, each its own file
        {f"data/{i:03d}.txt": 2 for i in range(150)} | {"data/huge.txt": 400_000},
        {f"data/part-{i}.txt": 100_000 for i in range(5)},  # each under the limit, not all
    ],
    ids=["one big object", "many objects", "small objects adding up"],
)
def test_a_fetch_past_the_size_limit_is_stopped_and_leaves_nothing_behind(
    server: GitRepo, tmp_path: Path, files: dict[str, int]
) -> None:
    server.commit(
        {
            "templates/t.yaml": TEMPLATE.decode(),
            "deployments/app.yaml": deployment("templates/t.yaml").decode(),
        }
    )
    state = tmp_path / "state"
    url = f"file://{server.bare}"
    source = GitSource(RepoConfig(name="app", url=url), state, max_fetch_file=200_000)
    first = source.fetch().commit
    objects = source.path / "objects"
    before = {p for p in objects.rglob("*") if p.is_file()}
    # Random hex: compressed, each byte of it still takes half a byte.
    server.commit({path: os.urandom(size // 2).hex() for path, size in files.items()})

    with pytest.raises(SourceError) as refused:
        source.fetch()
    assert str(refused.value) == (
        f"cannot fetch {url}: it sent a pack of more than 200,000 bytes, the limit for a fetch "
        "(the fetch was stopped and what it wrote deleted)"
    )
    assert source.current() == first
    assert {p for p in objects.rglob("*") if p.is_file()} == before  # nothing kept of it

    # Under the limit, the same source fetches as ever.
    roomy = GitSource(RepoConfig(name="app", url=url), state)
    assert roomy.fetch().commit == server.head()


def test_a_failed_fetch_deletes_only_what_it_wrote_and_says_the_limit_it_had(
    server: GitRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from syncd.sources import git as source_module

    server.commit({"deployments/app.yaml": deployment("templates/t.yaml").decode()})
    source = source_for(f"file://{server.bare}", tmp_path / "state")
    source.fetch()
    # Another git's file in the making (a `syncd plan`'s fetch, a `gc --auto`): not this one's.
    theirs = source.path / "objects" / "pack" / "tmp_pack_theirs"
    theirs.write_bytes(b"x" * 1000)
    with pytest.raises(SourceError, match="couldn't find remote ref"):
        source.resolve("refs/heads/nothing-here")
    assert theirs.exists()

    # A host whose hard limit is lower than syncd's: the message names the limit git had.
    monkeypatch.setattr(source_module, "_file_size_limit", lambda wanted: 100_000)
    server.commit({"data/big.txt": os.urandom(200_000).hex()})
    with pytest.raises(SourceError, match=r"a pack of more than 100,000 bytes, the limit"):
        source.fetch()
    assert theirs.exists()


def test_where_prlimit_is_missing_or_refused_fetches_go_on_unbounded_in_size(
    server: GitRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from syncd.sources import git as source_module

    head = server.commit({"deployments/app.yaml": deployment("templates/t.yaml").decode()})
    for prlimit, problem in [
        (None, "prlimit (util-linux) is not installed"),
        ("/bin/false", "prlimit cannot set a file size limit here: Command '['/bin/false'"),
    ]:
        monkeypatch.setattr(source_module, "PRLIMIT", prlimit)
        source_module.fetch_limit_problem.cache_clear()
        try:
            assert (source_module.fetch_limit_problem() or "").startswith(problem)
            source = source_for(f"file://{server.bare}", tmp_path / f"state-{prlimit is None}")
            assert source.fetch().commit == head
        finally:
            source_module.fetch_limit_problem.cache_clear()
    monkeypatch.undo()
    assert source_module.fetch_limit_problem() is None  # this machine has a working prlimit


def test_the_fetch_limit_stays_under_a_hard_limit_syncd_cannot_raise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import resource

    from syncd.sources import git as source

    monkeypatch.setattr(resource, "getrlimit", lambda _: (1000, 5000))
    assert source._file_size_limit(10**9) == 5000  # prlimit would refuse more
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1000, resource.RLIM_INFINITY))
    assert source._file_size_limit(10**9) == 10**9


def test_a_branch_force_pushed_100_times_while_syncd_fetches_is_always_one_whole_commit(
    server: GitRepo, tmp_path: Path
) -> None:
    # 101 unrelated root commits, each a whole and different version of the repo, built in a
    # repo of their own and force-pushed to the server one after another.
    builder = tmp_path / "builder.git"
    builder.mkdir()
    git("init", "--quiet", "--bare", cwd=builder)
    stream = FastImport()
    marks = [
        stream.commit(
            f"refs/heads/c{i}",
            {
                "templates/t.yaml": TEMPLATE,
                "deployments/app.yaml": deployment("templates/t.yaml", str(i)),
                f"only-in/{i}.txt": b"%d\n" % i,
            },
        )
        for i in range(101)
    ]
    shas = stream.run(builder)
    commits = [shas[m] for m in marks]
    index = {sha: i for i, sha in enumerate(commits)}

    def push(i: int) -> None:
        git(
            "push",
            "--quiet",
            "--force",
            str(server.bare),
            f"{commits[i]}:refs/heads/main",
            cwd=builder,
        )

    push(0)
    source = source_for(f"file://{server.bare}", tmp_path / "state")
    seen = [source.fetch()]
    pushed = threading.Thread(target=lambda: [push(i) for i in range(1, 101)])
    pushed.start()
    while pushed.is_alive():
        seen.append(source.fetch())
    pushed.join()
    seen.append(source.fetch())

    assert seen[0].commit == commits[0] and seen[-1].commit == commits[100]
    previous = None
    for result in seen:
        assert result.commit in index, result  # a commit that was on the branch
        assert result.previous == previous
        assert result.forced == (previous is not None and result.commit != previous)
        if result.moved:
            expected = set(git_changes(builder, previous, result.commit))
            assert set(result.changes) == expected, result
        # Never a mix: the files read at a commit are that commit's, whole.
        loaded = load(source, result.commit)
        assert dict(loaded.stacks["app"].parameters) == {"N": str(index[result.commit])}
        previous = result.commit


def git_changes(repo: Path, old: str | None, new: str) -> list[tuple[str, str]]:
    if old is None:
        return [("A", p) for p in git("ls-tree", "-r", "--name-only", new, cwd=repo).split("\n")]
    out = git("diff", "--name-status", "--no-renames", old, new, cwd=repo)
    return [(line[0], line.split("\t", 1)[1]) for line in out.splitlines()]


# --- refs and URLs that try to smuggle in options -----------------------------------------


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[Path]:
    """A file that only an injected command would create: it must never exist."""
    path = tmp_path / "injected"
    yield path
    assert not path.exists(), "a command smuggled into git ran"


def test_a_branch_named_like_an_option_is_refused_by_the_config_and_harmless_below_it(
    server: GitRepo, tmp_path: Path, marker: Path
) -> None:
    server.commit({"deployments/a.yaml": "x: 1\n"})
    branch = f"--upload-pack=touch {marker}"
    text = yaml.safe_dump(
        {"state_dir": str(tmp_path / "s"), "repos": [{"name": "a", "url": "/r", "branch": branch}]}
    )
    with pytest.raises(ConfigError) as refused:
        parse_config(text, "syncd.yaml", tmp_path)
    assert refused.value.problems == [f"repos[0].branch: {branch!r} is not a branch name"]

    # A RepoConfig made some other way still cannot turn the name into an option.
    source = source_for(str(server.bare), tmp_path / "state", branch=branch)
    with pytest.raises(SourceError):
        source.fetch()
    with pytest.raises(SourceError):
        source_for(str(server.bare), tmp_path / "state2", branch="-c").fetch()
    assert not marker.exists()


@pytest.mark.parametrize(
    "url",
    [
        "--upload-pack=touch {marker}",
        "--upload-pack=touch {marker} ",
        "-u touch {marker}",
        "ext::sh -c touch% {marker}",
        "ext::sh -c 'touch {marker}'",
        "fd::17",
        "ssh://-oProxyCommand=touch%20{marker}/x.git",
        "ssh://-oProxyCommand=touch {marker}/x.git",
        "ssh://host/x.git -oProxyCommand=touch {marker}",
        "-oProxyCommand=touch {marker}:x.git",
        "file://--upload-pack=touch {marker}",
    ],
)
def test_a_url_that_tries_to_be_an_option_or_a_command_is_refused(
    url: str, tmp_path: Path, marker: Path
) -> None:
    source = source_for(url.format(marker=marker), tmp_path / "state")
    with pytest.raises(SourceError) as refused:
        source.fetch()
    assert not isinstance(refused.value, BranchMissing)
    assert str(refused.value).startswith("cannot fetch ")
    assert source.current() is None
    assert not marker.exists()


@pytest.mark.parametrize(
    "ref",
    [
        "--upload-pack=touch {marker}",
        "--output={marker}",
        "-oProxyCommand=touch {marker}",
        "--exec=touch {marker}",
        "refs/heads/main --upload-pack=touch {marker}",
    ],
)
def test_a_ref_that_tries_to_be_an_option_is_refused(
    server: GitRepo, ref: str, tmp_path: Path, marker: Path
) -> None:
    server.commit({"deployments/a.yaml": "x: 1\n"})
    source = source_for(str(server.bare), tmp_path / "state")
    with pytest.raises(SourceError) as refused:
        source.resolve(ref.format(marker=marker))
    assert str(refused.value).startswith(f"cannot fetch {ref.format(marker=marker)!r} from ")
    assert not marker.exists()


def test_credentials_full_of_shell_reach_the_server_as_text(
    server: GitRepo, tmp_path: Path, marker: Path
) -> None:
    server.commit({"deployments/a.yaml": "x: 1\n"})
    user = f"$(touch {marker})"
    password = f"`touch {marker}`;touch {marker}"
    with git_http_server(server.bare.parent, credentials=(user, password)) as web:
        good = source_for(web.url(server.bare.name, user, password), tmp_path / "state")
        assert good.fetch().commit == server.head()
        bad = source_for(web.url(server.bare.name, user, "'; touch x; '"), tmp_path / "bad")
        with pytest.raises(SourceError):
            bad.fetch()
    assert {r.user for r in web.requests if r.status == 200} == {user}
    assert not marker.exists()


# --- remotes that answer nonsense ----------------------------------------------------------

PKT_NONSENSE = b"0032this is not a ref advertisement at all\n0000"


@pytest.mark.timeout(60)  # the hang it guards against would be the suite's 120 s otherwise
@pytest.mark.parametrize(
    ("scheme", "answer", "says"),
    [
        pytest.param("git", reply(b"HELLO, I am not git\n"), "protocol error", id="git-text"),
        pytest.param("git", reply(random.Random(7).randbytes(4096)), "", id="git-random-bytes"),
        pytest.param("git", endless(b"garbage!"), "protocol error", id="git-endless"),
        pytest.param("git", reply(PKT_NONSENSE), "", id="git-pkt-lines-of-nonsense"),
        pytest.param(
            "git",
            then_silence(b"0100# a line that never ends"),
            "no answer within 2 s",
            id="git-stalls-mid-line",
        ),
        pytest.param("http", reply(b"NOT HTTP AT ALL\r\n\r\n"), "HTTP/0.9", id="http-not-http"),
        pytest.param(
            "http",
            reply(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nnot git!\n"),
            "is this a git repository?",
            id="http-not-git",
        ),
        pytest.param(
            "http",
            reply(
                b"HTTP/1.1 200 OK\r\n"
                b"Content-Type: application/x-git-upload-pack-advertisement\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(PKT_NONSENSE), PKT_NONSENSE)
            ),
            "",
            id="http-pkt-lines-of-nonsense",
        ),
        pytest.param(
            "http",
            reply(b"HTTP/1.1 301 Moved\r\nLocation: /x.git/info/refs\r\n\r\n"),
            "redirects",
            id="http-redirect-loop",
        ),
        pytest.param(
            "http", endless(b"HTTP/1.1 200 OK\r\nX-Junk: " + b"x" * 4096), "", id="http-endless"
        ),
        pytest.param(
            "http",
            then_silence(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n0000"),
            "no answer within 2 s",
            id="http-stalls-mid-body",
        ),
    ],
)
def test_a_remote_that_answers_garbage_is_a_clear_source_error_not_a_hang(
    scheme: str, answer: object, says: str, tmp_path: Path
) -> None:
    with garbage_server(answer) as port:  # type: ignore[arg-type]
        url = f"{scheme}://127.0.0.1:{port}/x.git"
        # The stalling servers are given up on after 2 s; the others answer at once, and are
        # given all the time a busy machine needs.
        patience = 2 if "no answer within" in says else PATIENCE
        source = GitSource(RepoConfig(name="app", url=url), tmp_path / "state", patience)
        with pytest.raises(SourceError) as failed:
            source.fetch()
    with pytest.raises(ConnectionRefusedError):  # and nothing of the server outlives the test
        socket.create_connection(("127.0.0.1", port), timeout=10).close()
    message = str(failed.value)
    assert not isinstance(failed.value, BranchMissing)
    assert message.startswith(f"cannot fetch {url}: ")
    assert len(message) > len(f"cannot fetch {url}: ")
    assert printable(message) == message and len(message) <= 1100
    assert says in message, message
    assert source.current() is None
