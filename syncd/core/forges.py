"""Git forges, as their public APIs document them: the request that posts a commit status, and
how a push webhook from each is authenticated and read.

Pure. Commit statuses (`notify.commit_status`):

    github     POST {api}/repos/{owner}/{repo}/statuses/{sha}         Authorization: Bearer
    gitlab     POST {api}/projects/{url-encoded path}/statuses/{sha}   PRIVATE-TOKEN
    gitea      POST {api}/repos/{owner}/{repo}/statuses/{sha}         Authorization: token
    bitbucket  POST {api}/repositories/{workspace}/{slug}/commit/{sha}/statuses/build
                                                                      Authorization: Bearer

A later status with the same context (GitHub, Gitea: `context`; GitLab: `name`; Bitbucket:
`key`) replaces the earlier one on the forge's page. GitLab refuses a status that would not
change a pending or running one's state (400 "Cannot transition status"): that is taken as
delivered. Webhooks in (POST /hooks/<repo>), each checked in constant time:

    GitHub     X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>
    GitLab     X-Gitlab-Token: <the secret itself>
    Gitea      X-Gitea-Signature: <hex HMAC-SHA256> (Forgejo: X-Forgejo-Signature; both also
               send GitHub's header)
    Bitbucket  X-Hub-Signature: sha256=<hex HMAC-SHA256> (Bitbucket Cloud's webhook secret)
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qs, quote

from syncd.core.events import ERROR, FAILURE, PENDING, SUCCESS, CommitStatus


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes


# --- commit statuses ------------------------------------------------------------------------

GITHUB_DESCRIPTION = 140  # GitHub refuses a longer description (422)
GITLAB_DESCRIPTION = 255
BITBUCKET_KEY = 40  # Bitbucket refuses a longer key


def status_request(
    forge: str,
    api_url: str,
    repository: str,
    token: str,
    status: CommitStatus,
    target_url: str | None = None,
) -> Request:
    """The request that posts `status` to `forge`'s API at `api_url`."""
    build = _BUILDERS[forge]
    method, path, headers, body = build(repository, token, status, target_url)
    headers = {"Content-Type": "application/json", "User-Agent": "syncd", **headers}
    return Request(method, api_url.rstrip("/") + path, headers, json.dumps(body).encode())


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _github(
    repository: str, token: str, s: CommitStatus, target_url: str | None
) -> tuple[str, str, dict[str, str], dict[str, Any]]:
    body: dict[str, Any] = {
        "state": s.state,
        "context": s.context,
        "description": _short(s.description, GITHUB_DESCRIPTION),
    }
    if target_url:
        body["target_url"] = target_url
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
    }
    return "POST", f"/repos/{repository}/statuses/{s.commit}", headers, body


_GITLAB_STATES = {PENDING: "running", SUCCESS: "success", FAILURE: "failed", ERROR: "failed"}


def _gitlab(
    repository: str, token: str, s: CommitStatus, target_url: str | None
) -> tuple[str, str, dict[str, str], dict[str, Any]]:
    body: dict[str, Any] = {
        "state": _GITLAB_STATES[s.state],
        "name": s.context,
        "description": _short(s.description, GITLAB_DESCRIPTION),
    }
    if target_url:
        body["target_url"] = target_url
    project = quote(repository, safe="")
    return "POST", f"/projects/{project}/statuses/{s.commit}", {"PRIVATE-TOKEN": token}, body


def _gitea(
    repository: str, token: str, s: CommitStatus, target_url: str | None
) -> tuple[str, str, dict[str, str], dict[str, Any]]:
    body: dict[str, Any] = {"state": s.state, "context": s.context, "description": s.description}
    if target_url:
        body["target_url"] = target_url
    headers = {"Authorization": f"token {token}", "Accept": "application/json"}
    return "POST", f"/repos/{repository}/statuses/{s.commit}", headers, body


_BITBUCKET_STATES = {
    PENDING: "INPROGRESS",
    SUCCESS: "SUCCESSFUL",
    FAILURE: "FAILED",
    ERROR: "FAILED",
}


def bitbucket_key(context: str) -> str:
    """A context as a Bitbucket key: itself when short enough, else its start and a hash."""
    if len(context) <= BITBUCKET_KEY:
        return context
    digest = hashlib.sha256(context.encode()).hexdigest()[:12]
    return f"{context[: BITBUCKET_KEY - 13]}-{digest}"


def _bitbucket(
    repository: str, token: str, s: CommitStatus, target_url: str | None
) -> tuple[str, str, dict[str, str], dict[str, Any]]:
    body: dict[str, Any] = {
        "key": bitbucket_key(s.context),
        "name": s.context,
        "state": _BITBUCKET_STATES[s.state],
        "description": s.description,
        "url": target_url or "",
    }
    path = f"/repositories/{repository}/commit/{s.commit}/statuses/build"
    return "POST", path, {"Authorization": f"Bearer {token}"}, body


_BUILDERS: dict[str, Callable[..., tuple[str, str, dict[str, str], dict[str, Any]]]] = {
    "github": _github,
    "gitlab": _gitlab,
    "gitea": _gitea,
    "bitbucket": _bitbucket,
}


def delivered(forge: str, code: int, body: bytes) -> bool:
    """Whether the forge's answer means the status is there: a 2xx, or GitLab refusing a
    status that would not change the state it has (the same state posted again)."""
    if 200 <= code < 300:
        return True
    return forge == "gitlab" and code == 400 and b"Cannot transition status" in body


# --- webhooks in ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Push:
    """What an authenticated webhook says: which forge sent it, its event (push, ping, or
    another), the branches it moved (None: it does not say), and its delivery id."""

    forge: str
    event: str
    branches: tuple[str, ...] | None
    delivery: str | None


class Headers(Protocol):
    """A request's headers, looked up by name case-insensitively (an http.client message)."""

    def get(self, name: str, /) -> str | None: ...


class Unreadable(ValueError):
    """An authenticated payload that is not JSON syncd can read."""


SIGNATURE_HEADERS = (
    "X-Hub-Signature-256",
    "X-Gitlab-Token",
    "X-Gitea-Signature",
    "X-Forgejo-Signature",
    "X-Hub-Signature",
)

_DELIVERY_HEADERS = (
    "X-GitHub-Delivery",
    "X-Forgejo-Delivery",
    "X-Gitea-Delivery",
    "X-Gogs-Delivery",
    "X-Gitlab-Event-UUID",
    "X-Request-UUID",  # Bitbucket Cloud
)


def _hex_hmac(secret: bytes, body: bytes) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.strip().encode(), b.encode())


def authenticate(headers: Headers, body: bytes, secret: bytes) -> str | None:
    """The forge whose signature (or token) on this request is right, or None."""
    github = headers.get("X-Hub-Signature-256")
    if github and _same(github, "sha256=" + _hex_hmac(secret, body)):
        return "gitea" if _gitea_event(headers) else "github"
    token = headers.get("X-Gitlab-Token")
    if token and hmac.compare_digest(token.strip().encode(), secret):
        return "gitlab"
    for name in ("X-Forgejo-Signature", "X-Gitea-Signature"):
        value = headers.get(name)
        if value and _same(value, _hex_hmac(secret, body)):
            return "gitea"
    bitbucket = headers.get("X-Hub-Signature")
    if bitbucket and _same(bitbucket, "sha256=" + _hex_hmac(secret, body)):
        return "bitbucket"  # GitHub's X-Hub-Signature is sha1=: never equal, never taken
    return None


def _gitea_event(headers: Headers) -> str | None:
    return headers.get("X-Forgejo-Event") or headers.get("X-Gitea-Event")


def read_push(forge: str, headers: Headers, body: bytes) -> Push:
    """The event of an authenticated webhook. Raises Unreadable when a push's payload is not
    a JSON object (deep nesting included: a 400, never a crash)."""
    delivery = next((headers.get(h) for h in _DELIVERY_HEADERS if headers.get(h)), None)
    event = _event(forge, headers)
    branches = None
    if event == "push":
        payload = _payload(body, headers.get("Content-Type") or "")
        branches = _bitbucket_branches(payload) if forge == "bitbucket" else _ref_branch(payload)
    return Push(forge, event, branches, delivery[:100] if delivery else None)


def _event(forge: str, headers: Headers) -> str:
    if forge == "gitlab":
        name = headers.get("X-Gitlab-Event") or "Push Hook"
        return "push" if name == "Push Hook" else name
    if forge == "bitbucket":
        key = headers.get("X-Event-Key") or "repo:push"
        return {"repo:push": "push", "diagnostics:ping": "ping"}.get(key, key)
    if forge == "gitea":
        return _gitea_event(headers) or headers.get("X-GitHub-Event") or "push"
    return headers.get("X-GitHub-Event") or "push"


def _payload(body: bytes, content_type: str) -> Any:
    try:
        if content_type.startswith("application/x-www-form-urlencoded"):  # GitHub's form
            body = parse_qs(body.decode()).get("payload", [""])[0].encode()
        payload = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise Unreadable from None
    if not isinstance(payload, dict):
        raise Unreadable
    return payload


def _ref_branch(payload: Mapping[str, Any]) -> tuple[str, ...] | None:
    """GitHub, GitLab, Gitea, Forgejo: `ref` is refs/heads/<branch> (refs/tags/... for tags)."""
    ref = payload.get("ref")
    if not isinstance(ref, str):
        return None
    return (ref[len("refs/heads/") :],) if ref.startswith("refs/heads/") else ()


def _bitbucket_branches(payload: Mapping[str, Any]) -> tuple[str, ...] | None:
    """Bitbucket Cloud: push.changes[].new is {type: branch | tag, name} (null: deleted)."""
    push = payload.get("push")
    changes = push.get("changes") if isinstance(push, dict) else None
    if not isinstance(changes, list):
        return None
    names = []
    for change in changes[:100]:
        new = change.get("new") if isinstance(change, dict) else None
        if (
            isinstance(new, dict)
            and new.get("type") == "branch"
            and isinstance(new.get("name"), str)
        ):
            names.append(new["name"])
    return tuple(names)
