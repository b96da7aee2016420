"""Signing keys made in a test, with ssh-keygen and gpg (no network, a private GnuPG home), and
the git options that sign a commit with them."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SshKey:
    path: Path  # the private key; its public key is path.pub

    @property
    def public(self) -> str:
        return Path(f"{self.path}.pub").read_text().strip()

    def sign_options(self) -> list[str]:
        return ["-c", "gpg.format=ssh", "-c", f"user.signingkey={self.path}"]


def ssh_key(folder: Path, name: str) -> SshKey:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)], check=True
    )
    return SshKey(path)


def allowed_signers(path: Path, *keys: SshKey) -> Path:
    path.write_text("".join(f"* {key.public}\n" for key in keys))
    return path


@dataclass
class GpgKey:
    home: Path  # the GnuPG home that holds its secret key (a short path: gpg's sockets)
    fingerprint: str

    def sign_options(self) -> list[str]:
        return ["-c", "gpg.format=openpgp", "-c", f"user.signingkey={self.fingerprint}"]

    def env(self) -> dict[str, str]:
        return {"GNUPGHOME": str(self.home)}

    def export(self, path: Path, armor: bool = True) -> Path:
        args = ["gpg", "--export"] + (["--armor"] if armor else []) + [self.fingerprint]
        out = subprocess.run(
            args, env={**os.environ, **self.env()}, check=True, capture_output=True
        )
        path.write_bytes(out.stdout)
        return path

    def close(self) -> None:
        subprocess.run(
            ["gpgconf", "--kill", "all"], env={**os.environ, **self.env()}, capture_output=True
        )
        shutil.rmtree(self.home, ignore_errors=True)


def gpg_key(name: str) -> GpgKey:
    home = Path(tempfile.mkdtemp(prefix="t-gpg-"))
    env = {**os.environ, "GNUPGHOME": str(home)}
    user = f"{name} <{name}@example.com>"
    subprocess.run(
        ["gpg", "--batch", "--passphrase", "", "--quick-gen-key", user, "ed25519", "sign", "never"],
        env=env,
        check=True,
        capture_output=True,
    )
    listing = subprocess.run(
        ["gpg", "--with-colons", "--list-secret-keys"], env=env, check=True, capture_output=True
    ).stdout.decode()
    fingerprint = next(
        line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr")
    )
    return GpgKey(home, fingerprint)
