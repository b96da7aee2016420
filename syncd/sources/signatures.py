"""Whether a commit is signed by a key a repo's `verify` trusts: `git verify-commit`, with the
keys given explicitly and nothing else of the machine's or the user's consulted.

- SSH signatures: `verify.allowed_signers_file`, in ssh-keygen's allowed_signers format
  (`<principal> <key type> <key>`; `*` as the principal for any committer).
- OpenPGP signatures: `verify.keyring`, a file of public keys (armored or binary), imported
  at start and on SIGHUP into a private GnuPG home that holds nothing else and in which each of
  them is trusted; the machine's and the user's keyrings are never read.

A commit is trusted only when `git verify-commit` succeeds and `%G?` is `G` (a good signature
by a trusted key) under `gpg.minTrustLevel=fully`. `U` (a good signature by a key that is not
trusted), `E` (no key to check it), `B` (bad), `N` (none), `X`, `Y` (expired) and `R` (revoked)
are refused, each with its reason. The programs and files git uses for it are set on its
command line, which wins over a repository's own config. Validity dates in allowed_signers
are not relied on: git checks them against the commit's date, which the signer chooses.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from syncd.core.config import VerifyConfig
from syncd.errors import ConfigError

_REASONS = {
    "N": "it is not signed",
    "U": "it is signed by a key that is not trusted",
    "E": "it is signed by a key that is not trusted",  # not in the keyring: cannot be checked
    "B": "its signature is bad (the commit was changed after it was signed)",
    "X": "its signature has expired",
    "Y": "it is signed by a key that has expired",
    "R": "it is signed by a key that has been revoked",
}
TIMEOUT = 30.0
UNCHECKED = "its signature could not be checked"  # a passing failure: checked again next time


class SignatureCheck:
    """A repo's trusted keys, ready for `git verify-commit` (close() removes its GnuPG home)."""

    def __init__(self, verify: VerifyConfig) -> None:
        self.verify = verify
        self._gpg = shutil.which("gpg") or "/usr/bin/gpg"
        self._ssh_keygen = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
        # A short path: gpg's sockets live in its home, and a socket path has ~108 bytes.
        self.home = Path(tempfile.mkdtemp(prefix="syncd-gpg-"))
        nobody = self.home / "no-signers"  # the allowed signers when none are given
        nobody.touch()
        self._signers = verify.allowed_signers_file or nobody
        try:
            self._check_files()
            if verify.keyring is not None:
                self._import(verify.keyring)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                ["gpgconf", "--kill", "all"],
                env=self._env(),
                capture_output=True,
                timeout=TIMEOUT,
            )
        shutil.rmtree(self.home, ignore_errors=True)

    def _env(self) -> dict[str, str]:
        return {"GNUPGHOME": str(self.home), "PATH": "/usr/bin:/bin", "LC_ALL": "C"}

    def _check_files(self) -> None:
        for what, path in (
            ("allowed_signers_file", self.verify.allowed_signers_file),
            ("keyring", self.verify.keyring),
        ):
            if path is None:
                continue
            try:
                if not path.read_bytes().strip():
                    raise ConfigError(str(path), [f"verify.{what}: {path} is empty"])
            except OSError as exc:
                raise ConfigError(
                    str(path), [f"verify.{what}: cannot read {path}: {exc.strerror}"]
                ) from None

    def _import(self, keyring: Path) -> None:
        """Import the keyring's keys and trust each of them (ownertrust 6: ultimate), so that
        a good signature by one of them is `G`; then settle the trust database, so that a
        verify never writes to it."""
        (self.home / "gpg.conf").write_text(
            "batch\nno-autostart\nno-auto-key-retrieve\nno-auto-check-trustdb\n"
        )
        self._gpg_run("--import", str(keyring))
        listing = self._gpg_run("--with-colons", "--list-keys").stdout
        fingerprints = []
        primary = False
        for line in listing.splitlines():
            fields = line.split(":")
            if fields[0] == "pub":
                primary = True
            elif fields[0] == "fpr" and primary and len(fields) > 9:
                fingerprints.append(fields[9])
                primary = False
        if not fingerprints:
            raise ConfigError(str(keyring), [f"verify.keyring: {keyring} holds no public key"])
        trust = "".join(f"{f}:6:\n" for f in fingerprints)
        self._gpg_run("--import-ownertrust", stdin=trust)
        self._gpg_run("--check-trustdb")

    def _gpg_run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        try:
            done = subprocess.run(
                [self._gpg, "--quiet", *args],
                env=self._env(),
                input=stdin,
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise ConfigError(str(self.verify.keyring), [f"verify.keyring: gpg: {exc}"]) from None
        if done.returncode != 0 and args[0] != "--import":  # import says 2 for mere warnings
            detail = done.stderr.strip().splitlines()[-1:] or ["failed"]
            raise ConfigError(
                str(self.verify.keyring), [f"verify.keyring: gpg {args[0]}: {detail[0]}"]
            )
        return done

    def git_options(self) -> list[str]:
        """`-c` options that make git check signatures with these keys and these programs
        only (a repository's own config cannot name another program)."""
        return [
            "-c",
            f"gpg.program={self._gpg}",
            "-c",
            f"gpg.ssh.program={self._ssh_keygen}",
            "-c",
            f"gpg.ssh.allowedSignersFile={self._signers}",
            "-c",
            "gpg.x509.program=/bin/false",
            "-c",
            "gpg.minTrustLevel=fully",
        ]

    def untrusted(self, git_dir: Path, env: dict[str, str], commit: str) -> str | None:
        """Why `commit` is not trusted, or None when it is signed by a trusted key."""
        env = {**env, "GNUPGHOME": str(self.home)}
        base = ["git", "--git-dir", str(git_dir), *self.git_options()]
        try:
            shown = subprocess.run(
                [*base, "log", "-1", "--format=%G?%x00%GK", commit, "--"],
                env=env,
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
            )
            verified = subprocess.run(
                [*base, "verify-commit", commit],
                env=env,
                capture_output=True,
                timeout=TIMEOUT,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return f"{UNCHECKED} ({type(exc).__name__})"
        letter, _, key = shown.stdout.strip().partition("\0")
        if shown.returncode == 0 and letter == "G" and verified.returncode == 0:
            return None
        reason = _REASONS.get(letter, f"{UNCHECKED} ({letter or '?'})")
        return reason + (f" (key {key[:80]})" if key and letter in "UEXYR" else "")
