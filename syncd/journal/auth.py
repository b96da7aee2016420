"""Authenticating the backup with a key that is not in the bucket.

The journal's hash chain shows that records follow each other unchanged, but whoever can write
to the bucket can compute it too, and could plant a whole history of their own (a lineage that
sorts last, with a stack "deployed" that syncd never managed). So each checkpoint the mirror
writes carries an HMAC-SHA256, keyed by the secret in `backup.key_file`, over the lineage it
belongs to (its id and fork point) and the record it vouches for (seq, hash, time). With the
key, `restore` and `journal verify --remote` take only a lineage whose newest checkpoint they
can verify, and only the records up to that checkpoint: through the hash chain, that
authenticates every record restored, and the lineages it descends from up to its fork. The key
lives on the host (and in the operator's safe), never in the bucket.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import stat
from pathlib import Path
from typing import Any

from syncd.errors import ConfigError

MIN_KEY_BYTES = 32


class BackupKey:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_KEY_BYTES:
            raise ConfigError("backup key", [f"needs at least {MIN_KEY_BYTES} bytes"])
        self._secret = secret

    @classmethod
    def load(cls, path: Path) -> BackupKey:
        """The key in `path` (surrounding whitespace ignored), which only its owner may read."""

        def bad(problem: str) -> ConfigError:
            return ConfigError(str(path), [f"backup.key_file: {problem}"])

        try:
            info = path.stat()
            secret = path.read_bytes().strip()
        except OSError as exc:
            raise bad(f"cannot read it: {exc.strerror}") from None
        if not stat.S_ISREG(info.st_mode):
            raise bad("not a regular file")
        if info.st_mode & 0o077:
            raise bad(f"readable by others (mode {stat.S_IMODE(info.st_mode):o}): chmod 600 it")
        if len(secret) < MIN_KEY_BYTES:
            raise bad(
                f"holds {len(secret)} bytes; a key needs at least {MIN_KEY_BYTES} "
                "(e.g. `head -c 32 /dev/urandom | base64 > FILE`)"
            )
        return cls(secret)

    def sign(self, checkpoint: dict[str, Any], lineage: dict[str, Any]) -> str:
        return hmac.new(self._secret, _message(checkpoint, lineage), hashlib.sha256).hexdigest()

    def verify(self, checkpoint: dict[str, Any], lineage: dict[str, Any]) -> bool:
        mac = checkpoint.get("mac")
        return isinstance(mac, str) and hmac.compare_digest(mac, self.sign(checkpoint, lineage))


def _message(checkpoint: dict[str, Any], lineage: dict[str, Any]) -> bytes:
    signed = {
        "lineage": {k: lineage.get(k) for k in ("id", "parent", "fork_seq", "fork_hash")},
        "checkpoint": {k: checkpoint.get(k) for k in ("seq", "hash", "time")},
    }
    return json.dumps(signed, sort_keys=True, separators=(",", ":")).encode()
