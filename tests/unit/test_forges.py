"""Each forge's commit status request and webhook authentication, as its API documents them
(syncd.core.forges), and the event bodies receivers get (syncd.outbox)."""

from __future__ import annotations

import hashlib
import hmac
import json
from email.message import Message

import pytest

from syncd.core.events import CommitStatus, Event
from syncd.core.forges import (
    Unreadable,
    authenticate,
    bitbucket_key,
    delivered,
    read_push,
    status_request,
)
from syncd.outbox import cloud_event, shown_url, slack_text

SHA = "c" * 40
STATUS = CommitStatus(SHA, "syncd/app-db", "pending", "app-db: version 2 started " + "x" * 200)


def headers(**values: str) -> Message:
    message = Message()
    for name, value in values.items():
        message[name.replace("_", "-")] = value
    return message


def test_github_status_request() -> None:
    r = status_request("github", "https://api.github.com", "org/app", "tok", STATUS, "https://x/")
    assert (r.method, r.url) == ("POST", f"https://api.github.com/repos/org/app/statuses/{SHA}")
    assert r.headers["Authorization"] == "Bearer tok"
    assert r.headers["X-GitHub-Api-Version"] == "2022-11-28"
    body = json.loads(r.body)
    assert body["state"] == "pending" and body["context"] == "syncd/app-db"
    assert len(body["description"]) == 140 and body["target_url"] == "https://x/"


def test_github_enterprise_is_its_api_url() -> None:
    r = status_request("github", "https://ghe.example.com/api/v3/", "o/r", "t", STATUS)
    assert r.url == f"https://ghe.example.com/api/v3/repos/o/r/statuses/{SHA}"
    assert "target_url" not in json.loads(r.body)


def test_gitlab_status_request() -> None:
    done = CommitStatus(SHA, "syncd", "failure", "failed: db")
    r = status_request("gitlab", "https://gitlab.com/api/v4", "group/sub/app", "tok", done)
    assert r.url == f"https://gitlab.com/api/v4/projects/group%2Fsub%2Fapp/statuses/{SHA}"
    assert r.headers["PRIVATE-TOKEN"] == "tok" and "Authorization" not in r.headers
    body = json.loads(r.body)
    assert (body["state"], body["name"]) == ("failed", "syncd")
    pending = json.loads(status_request("gitlab", "https://g/api/v4", "1", "t", STATUS).body)
    assert pending["state"] == "running"


def test_gitea_status_request() -> None:
    r = status_request("gitea", "https://git.example.com/api/v1", "o/r", "tok", STATUS)
    assert r.url == f"https://git.example.com/api/v1/repos/o/r/statuses/{SHA}"
    assert r.headers["Authorization"] == "token tok"
    assert json.loads(r.body)["state"] == "pending"


def test_bitbucket_status_request() -> None:
    long = CommitStatus(SHA, "syncd/" + "a-very-long-stack-name" * 3, "success", "ok")
    r = status_request(
        "bitbucket", "https://api.bitbucket.org/2.0", "ws/app", "tok", long, "https://l/"
    )
    assert r.url == f"https://api.bitbucket.org/2.0/repositories/ws/app/commit/{SHA}/statuses/build"
    assert r.headers["Authorization"] == "Bearer tok"
    body = json.loads(r.body)
    assert body["state"] == "SUCCESSFUL" and body["url"] == "https://l/"
    assert len(body["key"]) <= 40 and body["key"] == bitbucket_key(long.context)
    assert bitbucket_key("syncd/db") == "syncd/db"
    assert bitbucket_key(long.context) != bitbucket_key(long.context + "x")


def test_what_counts_as_delivered() -> None:
    assert delivered("github", 201, b"")
    assert not delivered("github", 422, b"")
    # GitLab refuses a status that would not change a running one's state: it is there.
    assert delivered("gitlab", 400, b'{"message":"Cannot transition status via :run"}')
    assert not delivered("gitlab", 400, b'{"message":"state is invalid"}')


BODY = json.dumps({"ref": "refs/heads/main"}).encode()
SECRET = b"s3cret"


def sign(body: bytes = BODY, secret: bytes = SECRET) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


@pytest.mark.parametrize(
    ("given", "forge"),
    [
        ({"X-Hub-Signature-256": f"sha256={sign()}", "X-GitHub-Event": "push"}, "github"),
        ({"X-Gitlab-Token": "s3cret", "X-Gitlab-Event": "Push Hook"}, "gitlab"),
        ({"X-Gitea-Signature": sign(), "X-Gitea-Event": "push"}, "gitea"),
        ({"X-Forgejo-Signature": sign(), "X-Forgejo-Event": "push"}, "gitea"),
        (
            {"X-Hub-Signature-256": f"sha256={sign()}", "X-Gitea-Event": "push"},
            "gitea",
        ),
        ({"X-Hub-Signature": f"sha256={sign()}", "X-Event-Key": "repo:push"}, "bitbucket"),
    ],
)
def test_each_forge_is_authenticated(given: dict[str, str], forge: str) -> None:
    h = headers(**given)
    assert authenticate(h, BODY, SECRET) == forge
    assert authenticate(h, BODY + b" ", SECRET) in (None, "gitlab")  # a token signs no body
    assert authenticate(h, BODY, b"other") is None


def test_wrong_or_weak_signatures_are_refused() -> None:
    sha1 = hmac.new(SECRET, BODY, hashlib.sha1).hexdigest()
    assert authenticate(headers(X_Hub_Signature=f"sha1={sha1}"), BODY, SECRET) is None
    assert authenticate(headers(X_Hub_Signature_256=sign()), BODY, SECRET) is None  # no prefix
    assert authenticate(headers(X_Gitlab_Token="s3cre"), BODY, SECRET) is None
    assert authenticate(headers(), BODY, SECRET) is None


def test_pushes_are_read_per_forge() -> None:
    gitlab = read_push(
        "gitlab", headers(X_Gitlab_Event="Push Hook", X_Gitlab_Event_UUID="u1"), BODY
    )
    assert (gitlab.event, gitlab.branches, gitlab.delivery) == ("push", ("main",), "u1")
    tag = read_push("github", headers(X_GitHub_Event="push"), b'{"ref": "refs/tags/v1"}')
    assert tag.branches == ()
    assert read_push("gitlab", headers(X_Gitlab_Event="Merge Request Hook"), b"{}").event == (
        "Merge Request Hook"
    )
    bitbucket = {
        "push": {
            "changes": [
                {"new": {"type": "tag", "name": "v1"}},
                {"new": None},
                {"new": {"type": "branch", "name": "main"}},
            ]
        }
    }
    push = read_push("bitbucket", headers(X_Event_Key="repo:push"), json.dumps(bitbucket).encode())
    assert push.branches == ("main",)
    assert read_push("bitbucket", headers(X_Event_Key="diagnostics:ping"), b"").event == "ping"
    no_ref = read_push("gitea", headers(X_Gitea_Event="push"), b"{}")
    assert no_ref.branches is None  # it does not say: a pass is asked for


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b"[" * 100_000, b"\xff\xfe"])
def test_unreadable_payloads(body: bytes) -> None:
    with pytest.raises(Unreadable):
        read_push("github", headers(X_GitHub_Event="push"), body)


EVENT = Event(
    seq=12,
    type="failed",
    time="2026-12-02T10:00:00.000Z",
    message="<db>: version 3 failed: a & b <!channel>",
    repo="app",
    stack="<db>",
    commit=SHA,
    version=3,
    data={"result": "failed"},
)


def test_cloud_events_are_structured_json() -> None:
    body = cloud_event(EVENT, "lineage-12", "host1")
    assert body["specversion"] == "1.0" and body["id"] == "lineage-12"
    assert (body["type"], body["source"], body["subject"]) == (
        "syncd.failed",
        "syncd://host1/app",
        "<db>",
    )
    assert body["data"]["version"] == 3 and body["data"]["result"] == "failed"


def test_slack_text_escapes_its_control_characters() -> None:
    text = slack_text(EVENT)
    assert "<" not in text and ">" not in text
    assert "&amp;" in text and "&lt;!channel&gt;" in text and "commit cccccccccccc" in text


def test_receiver_urls_are_shown_without_their_secrets() -> None:
    assert shown_url("https://hooks.slack.com/services/T0/B0/SECRET") == "https://hooks.slack.com"
    assert shown_url("https://user:pw@example.com:8443/h?token=x") == "https://example.com:8443"
