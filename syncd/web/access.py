"""Who may read the dashboard's pages (`http.token_file`, `http.users_file`), and how a
request proves it. Apart from the dashboard so that a command that only reads the config (a
`syncd sync`) does not load the pages' template engine."""

from __future__ import annotations

import base64
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Access:
    """Who may read the pages: a bearer token, users with passwords (Basic); neither: anyone
    who reaches the listener."""

    token: bytes | None = None
    users: Mapping[bytes, bytes] | None = None

    @property
    def open(self) -> bool:
        return self.token is None and not self.users

    def allows(self, header: str | None) -> bool:
        """Whether an Authorization header lets its sender read the pages: the bearer token,
        or Basic credentials of a user (or any user name with the token as its password, so a
        browser can use the token too)."""
        if self.open:
            return True
        scheme, _, value = (header or "").partition(" ")
        given = value.strip().encode()
        if scheme.lower() == "bearer" and self.token is not None:
            return hmac.compare_digest(given, self.token)
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(given, validate=True).partition(b":")
        except ValueError:
            return False
        if self.token is not None and hmac.compare_digest(password, self.token):
            return True
        users = self.users or {}
        # An unknown user costs the same comparison as a known one.
        known = users.get(user, b"\0" * 32)
        return hmac.compare_digest(password, known) and user in users


def read_access(token_file: Path | None, users_file: Path | None) -> Access:
    """The dashboard's access from its files (at start and on SIGHUP); OSError or ValueError
    (never quoting what they hold) when one cannot be used."""
    token = None
    if token_file is not None:
        token = token_file.read_bytes().strip()
        if not token or any(c <= 32 or c > 126 for c in token):
            raise ValueError(f"{token_file} must hold one word of printable ASCII")
    users: dict[bytes, bytes] = {}
    if users_file is not None:
        for number, line in enumerate(users_file.read_bytes().splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith(b"#"):
                continue
            user, colon, password = line.partition(b":")
            if not colon or not user or not password:
                raise ValueError(f"{users_file}, line {number}: not user:password")
            users[user] = password
        if not users:
            raise ValueError(f"{users_file} names no user")
    return Access(token, users or None)
