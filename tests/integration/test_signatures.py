"""Signed commits (`verify`): real repositories, keys made here with ssh-keygen and gpg, and
syncd's real App against moto's server. Only a head signed by a trusted key is applied."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from syncd.core.journal_state import Kind
from syncd.errors import ConfigError
from syncd.metrics import Metrics
from tests.conftest import TOPIC_TEMPLATE, deployment
from tests.support.gitrepo import GitRepo, git
from tests.support.signing import GpgKey, allowed_signers, gpg_key, ssh_key


@pytest.fixture
def gpg_keys() -> Iterator[tuple[GpgKey, GpgKey]]:
    trusted, other = gpg_key("trusted"), gpg_key("other")
    yield trusted, other
    trusted.close()
    other.close()


def files(name: str) -> dict[str, str | None]:
    return {"templates/topic.yaml": TOPIC_TEMPLATE, "deployments/t.yaml": deployment(Name=name)}


@pytest.fixture(params=["ssh", "openpgp"])
def keys(request: Any, tmp_path: Path, gpg_keys: tuple[GpgKey, GpgKey]) -> dict[str, Any]:
    """The trusted key, another key, and the `verify` block that trusts the first."""
    if request.param == "ssh":
        trusted, other = ssh_key(tmp_path / "keys", "trusted"), ssh_key(tmp_path / "keys", "other")
        verify = {"allowed_signers_file": str(allowed_signers(tmp_path / "signers", trusted))}
    else:
        trusted, other = gpg_keys
        verify = {"keyring": str(trusted.export(tmp_path / "trusted.asc"))}
    return {"trusted": trusted, "other": other, "verify": verify}


def test_only_commits_signed_by_a_trusted_key_are_applied(
    syncd: Any, tmp_path: Path, keys: dict[str, Any]
) -> None:
    repo = GitRepo(tmp_path / "repo")
    first = repo.commit(files("one"), signed_by=keys["trusted"])
    s = syncd({"r": repo}, repo_options={"r": {"verify": keys["verify"]}})
    report = s.sync()
    assert report.ok and report.commit == first
    assert s.state.stacks["t"].version == 1

    for signer, why in ((None, "it is not signed"), (keys["other"], "not trusted")):
        head = repo.commit(files(f"by-{why}"), signed_by=signer)
        before = len(list(s.app.journal.records()))
        with structlog.testing.capture_logs() as logs:
            report = s.sync()
        assert not report.ok and why in (report.source_error or "")
        [logged] = [e for e in logs if e["event"] == "commit.untrusted"]
        assert logged["commit"] == head[:12] and why in logged["reason"], logged
        assert 'syncd_repo_untrusted{repo="r"} 1.0' in Metrics(lambda: s.app).render().decode()
        assert f"commit {head[:12]} is not applied" in (report.source_error or "")
        untrusted = s.state.repos["r"].untrusted
        assert untrusted["commit"] == head and why in untrusted["reason"]
        # Nothing of it was applied: the stack is as the trusted commit left it.
        new = [r.kind for r in s.app.journal.records() if r.seq > before]
        assert Kind.VERSION not in new and Kind.COMMIT not in new
        assert s.state.stacks["t"].version == 1 and s.state.repos["r"].commit == first
        # Said once: the same head, passed over again, adds no record.
        s.sync()
        assert [r.kind for r in s.app.journal.records() if r.seq > before] == [Kind.UNTRUSTED]

    later = repo.commit(files("two"), signed_by=keys["trusted"])
    report = s.sync()
    assert report.ok and report.commit == later
    assert s.state.stacks["t"].version == 2 and s.state.repos["r"].untrusted is None
    assert 'syncd_repo_untrusted{repo="r"} 0.0' in Metrics(lambda: s.app).render().decode()


def test_a_first_commit_that_is_not_trusted_takes_nothing(
    syncd: Any, tmp_path: Path, keys: dict[str, Any]
) -> None:
    repo = GitRepo(tmp_path / "repo")
    repo.commit(files("one"), signed_by=keys["other"])
    s = syncd({"r": repo}, repo_options={"r": {"verify": keys["verify"]}})
    report = s.sync()
    assert not report.ok and "no commit taken yet" in (report.source_error or "")
    assert "t" not in s.state.stacks


# A checker that calls every signature good: ssh-keygen's answers for `-Y find-principals` and
# `-Y verify`, else gpg's status lines for a good signature by an ultimately trusted key.
YES_MAN = """#!/bin/sh
case "$*" in
  *find-principals*) echo trusted; exit 0 ;;
  *"-Y verify"*) echo 'Good "git" signature for trusted with ED25519 key SHA256:AAAA'; exit 0 ;;
esac
cat >/dev/null
fpr=0123456789ABCDEF0123456789ABCDEF01234567
echo "[GNUPG:] NEWSIG"
echo "[GNUPG:] GOODSIG 89ABCDEF01234567 trusted"
echo "[GNUPG:] VALIDSIG $fpr 2026-01-01 1767225600 0 4 0 22 10 00 $fpr"
echo "[GNUPG:] TRUST_ULTIMATE 0 pgp"
exit 0
"""


def yes_man(folder: Path) -> Path:
    path = folder / "yes-man"
    path.write_text(YES_MAN)
    path.chmod(0o755)
    return path


def test_a_repo_config_cannot_swap_the_programs_that_check(
    syncd: Any, tmp_path: Path, keys: dict[str, Any]
) -> None:
    repo = GitRepo(tmp_path / "repo")
    repo.commit(files("one"), signed_by=keys["other"])
    s = syncd({"r": repo}, repo_options={"r": {"verify": keys["verify"]}})
    # Someone who can write the mirror's config (it is syncd's own) tries to make every
    # signature good: the programs and keys are set on git's command line, which wins.
    mirror = tmp_path / "state" / "repos" / "r.git"
    s.sync()
    head = repo.head()
    fake = yes_man(tmp_path)
    config = mirror / "config"
    config.write_text(
        config.read_text()
        + f'[gpg]\n\tprogram = {fake}\n\tminTrustLevel = undefined\n[gpg "ssh"]\n'
        + f"\tprogram = {fake}\n\tallowedSignersFile = {fake}\n"
    )
    # The fake does make it good for a git that is not told otherwise (so this test can fail)...
    plain = git("log", "-1", "--format=%G?", head, cwd=mirror)
    assert plain == "G", plain
    # ...but not for syncd.
    assert s.app.syncs["r"].source.untrusted(head) is not None
    assert s.sync().ok is False


def test_the_users_and_the_machines_keys_are_never_consulted(
    syncd: Any, tmp_path: Path, keys: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A HOME whose git config trusts every SSH key and a GNUPGHOME that holds the other key
    (its own, so ultimately trusted) change nothing: only `verify`'s keys count."""
    home = tmp_path / "home"
    home.mkdir()
    everyone = tmp_path / "everyone"
    other = keys["other"]
    if isinstance(other, GpgKey):
        monkeypatch.setenv("GNUPGHOME", str(other.home))
    else:
        allowed_signers(everyone, other)
    (home / ".gitconfig").write_text(f'[gpg "ssh"]\n\tallowedSignersFile = {everyone}\n')
    monkeypatch.setenv("HOME", str(home))
    repo = GitRepo(tmp_path / "repo")
    head = repo.commit(files("one"), signed_by=other)
    # The user's setup does trust it (so this test can fail)...
    users_git = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1"}  # HOME's .gitconfig is read
    plain = subprocess.run(
        ["git", "log", "-1", "--format=%G?", head],
        cwd=repo.bare,
        env=users_git,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert plain == "G", plain
    # ...syncd does not.
    s = syncd({"r": repo}, repo_options={"r": {"verify": keys["verify"]}})
    report = s.sync()
    assert not report.ok and "not trusted" in (report.source_error or "")


def test_keys_that_cannot_be_read_are_a_config_error(syncd: Any, tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "repo")
    repo.commit(files("one"))
    empty = tmp_path / "empty.asc"
    empty.write_text("")
    with pytest.raises(ConfigError) as info:
        syncd({"r": repo}, repo_options={"r": {"verify": {"keyring": str(empty)}}})
    assert "verify.keyring" in str(info.value.problems) and "is empty" in str(info.value.problems)
    garbage = tmp_path / "garbage.asc"
    garbage.write_text("not a key\n")
    with pytest.raises(ConfigError) as info:
        syncd({"r": repo}, repo_options={"r": {"verify": {"keyring": str(garbage)}}})
    assert "holds no public key" in str(info.value.problems)


def test_the_commit_being_checked_is_never_the_one_taken(
    syncd: Any, tmp_path: Path, keys: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A crash while a head is checked must leave the last commit taken as it was: the next
    # start must not find the unchecked head taken.
    repo = GitRepo(tmp_path / "repo")
    first = repo.commit(files("one"), signed_by=keys["trusted"])
    s = syncd({"r": repo}, repo_options={"r": {"verify": keys["verify"]}})
    s.sync()
    repo.commit(files("unsigned"))
    source = s.app.syncs["r"].source
    seen: list[str | None] = []
    check = source.signatures.untrusted

    def spy(git_dir: Path, env: dict[str, str], commit: str) -> str | None:
        seen.append(source.current())
        return check(git_dir, env, commit)

    monkeypatch.setattr(source.signatures, "untrusted", spy)
    s.sync()
    assert seen and set(seen) == {first} and source.current() == first


def test_a_branch_pushed_back_to_the_trusted_commit_is_no_longer_blocked(
    syncd: Any, tmp_path: Path, keys: dict[str, Any]
) -> None:
    repo = GitRepo(tmp_path / "repo")
    first = repo.commit(files("one"), signed_by=keys["trusted"])
    s = syncd({"r": repo}, repo_options={"r": {"verify": keys["verify"]}})
    s.sync()
    repo.commit(files("unsigned"))
    assert not s.sync().ok and s.state.repos["r"].untrusted is not None
    git("reset", "--quiet", "--hard", first, cwd=repo.work)
    repo.push(force=True)
    report = s.sync()
    assert report.ok and report.commit == first
    assert s.state.repos["r"].untrusted is None
