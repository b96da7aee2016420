"""`syncd run` telling a forge and event receivers what happened, and refusing unsigned commits,
end to end: local HTTP servers play each forge's status API and the receivers; keys are made
here."""

from __future__ import annotations

import json
import re
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TOPIC_TEMPLATE, deployment, topic_stack, write_config
from tests.e2e.conftest import run_syncd, running_daemon, syncd_env, wait_for
from tests.e2e.test_daemon import NotifySocket, http_get
from tests.support.gitrepo import GitRepo, free_port
from tests.support.receiver import Received, receiving
from tests.support.signing import allowed_signers, ssh_key

TOKEN = "ghp_TOKEN_never_shown_0123456789"
HOOK_SECRET = "hook-secret-never-shown-42"
SLACK_PATH = "/services/T000/B000/SLACKSECRETPATH"


def secrets_in(text: str) -> list[str]:
    return [s for s in (TOKEN, HOOK_SECRET, "SLACKSECRETPATH") if s in text]


def test_statuses_events_and_chat_follow_a_push(tmp_path: Path, repo: GitRepo, aws: Any) -> None:
    topic_stack(repo, "app", "v1")
    (tmp_path / "token").write_text(TOKEN + "\n")
    (tmp_path / "hook.secret").write_text(HOOK_SECRET)
    with receiving() as forge, receiving() as events, receiving() as chat:
        (tmp_path / "slack-url").write_text(chat.url + SLACK_PATH)
        entry = {
            "name": "r",
            "url": str(repo.bare),
            "poll_interval": "200ms",
            "notify": {
                "commit_status": {
                    "forge": "github",
                    "api_url": forge.url + "/api/v3",
                    "repository": "org/templates",
                    "token_file": str(tmp_path / "token"),
                }
            },
        }
        hooks = [
            {"name": "ops", "url": events.url, "secret_file": str(tmp_path / "hook.secret")},
            {
                "name": "chat",
                "url_file": str(tmp_path / "slack-url"),
                "format": "slack",
                "events": ["failed"],
            },
        ]
        port = free_port()
        config = write_config(
            tmp_path,
            [entry],
            aws.endpoint,
            notify={"webhooks": hooks},
            http={"listen": f"127.0.0.1:{port}"},
        )
        with running_daemon("-c", str(config)) as daemon:
            wait_for(lambda: aws.stack("app"), what="the first create")
            # A push: pending, then success, on the pushed commit, for its stack.
            pushed = repo.commit({"deployments/app.yaml": deployment(Name="v2")})
            statuses = wait_for(
                lambda: [
                    r.json()
                    for r in forge.requests
                    if r.path.endswith(pushed) and r.json()["state"] == "success"
                ],
                what="the success status",
            )
            got = [
                r
                for r in forge.requests
                if r.path == f"/api/v3/repos/org/templates/statuses/{pushed}"
            ]
            assert [r.json()["state"] for r in got] == ["pending", "success"]
            assert statuses[0]["context"] == "syncd/app"
            assert got[0].headers["Authorization"] == f"Bearer {TOKEN}"

            # The same push as CloudEvents (each receiver has its own outbox: the event may
            # arrive after the commit status).
            def about_pushed() -> list[dict[str, Any]] | None:
                about = [r.json() for r in events.requests if r.json()["data"]["commit"] == pushed]
                return about if about and about[-1]["type"] == "syncd.succeeded" else None

            about = wait_for(about_pushed, what="the succeeded event")
            assert [e["type"] for e in about][-2:] == ["syncd.version.started", "syncd.succeeded"]

            # A failing stack: failure with its reason, and a line in the chat.
            aws.proxy.fail("app", reason="Resource handler returned message: quota exceeded")
            broken = repo.commit({"deployments/app.yaml": deployment(Name="v3")})
            failure = wait_for(
                lambda: [
                    r.json()
                    for r in forge.requests
                    if r.path.endswith(broken) and r.json()["state"] == "failure"
                ],
                what="the failure status",
            )
            assert "quota exceeded" in failure[0]["description"]
            lines = chat.wait_for(1, 60)
            assert lines[0].json()["text"].startswith("syncd failed (repo r, commit ")
            assert "quota exceeded" in lines[0].json()["text"]

            # The receiver is down for a while; every event reaches it afterwards, once each.
            seen = len(events.requests)
            events.code = 503
            aws.proxy.reset()
            mended = repo.commit({"deployments/app.yaml": deployment(Name="v4")})
            wait_for(lambda: aws.parameters("app") == {"Name": "v4"}, what="version 4")
            events.wait_attempts(events.attempts + 2, 60)
            status = run_syncd("status", "-c", str(config))
            assert "notify ops: failing since" in status.stdout and "HTTP 503" in status.stdout
            metrics = http_get(port, "/metrics")
            assert 'syncd_notify_failing{receiver="ops"} 1.0' in metrics
            assert 'syncd_notify_sent_total{receiver="commit-status-r"}' in metrics
            # The daemon stops while they are due; the next one sends them.
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=30) == 0
        events.code = 200
        with running_daemon("-c", str(config)) as again:
            wait_for(
                lambda: any(
                    r.json()["type"] == "syncd.succeeded" and r.json()["data"]["commit"] == mended
                    for r in events.requests[seen:]
                ),
                what="the events held back",
            )
            ids = [r.json()["id"] for r in events.requests]
            assert len(ids) == len(set(ids))
            metrics_out = http_get(port, "/metrics")
            metrics_out += run_syncd("status", "-c", str(config), "--format", "json").stdout
        # No secret in any output, log line, journal record or file syncd wrote.
        outputs = daemon.stdout.read() + daemon.stderr_text + status.stdout + metrics_out
        outputs += again.stdout.read() + again.stderr_text
        assert secrets_in(outputs) == []
        for path in (tmp_path / "state").rglob("*"):
            if path.is_file() and path.suffix in (".jsonl", ".json"):
                assert secrets_in(path.read_text(errors="replace")) == [], path


def test_an_unsigned_commit_is_not_applied(tmp_path: Path, repo: GitRepo, aws: Any) -> None:
    key = ssh_key(tmp_path / "keys", "release")
    signers = allowed_signers(tmp_path / "allowed_signers", key)
    first = repo.commit(
        {"templates/topic.yaml": TOPIC_TEMPLATE, "deployments/app.yaml": deployment(Name="v1")},
        signed_by=key,
    )
    entry = {
        "name": "r",
        "url": str(repo.bare),
        "verify": {"allowed_signers_file": str(signers)},
    }
    config = write_config(tmp_path, [entry], aws.endpoint)
    done = run_syncd("sync", "-c", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    unsigned = repo.commit({"deployments/app.yaml": deployment(Name="v2")})
    aws.proxy.reset()
    done = run_syncd("sync", "-c", str(config))
    assert done.returncode == 1
    assert f"commit {unsigned[:12]} is not applied: it is not signed" in done.stdout + done.stderr
    assert aws.proxy.count("CreateChangeSet") == aws.proxy.count("ExecuteChangeSet") == 0
    assert aws.parameters("app") == {"Name": "v1"}
    status = run_syncd("status", "-c", str(config))
    assert status.returncode == 1
    assert "repo r: blocked since" in status.stdout and "it is not signed" in status.stdout
    # With --format json, stdout is the list of stacks, and the repo's problem is logged.
    status = run_syncd("status", "-c", str(config), "--format", "json")
    assert status.returncode == 1 and json.loads(status.stdout)[0]["state"] == "in_sync"
    assert "status.repo_problem" in status.stderr and "it is not signed" in status.stderr
    plan = run_syncd("plan", "-c", str(config), "--repo", "r", "--ref", "main")
    assert "! not trusted: it is not signed; syncd will not apply this commit" in plan.stdout

    signed = repo.commit({"deployments/app.yaml": deployment(Name="v3")}, signed_by=key)
    done = run_syncd("sync", "-c", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    assert aws.parameters("app") == {"Name": "v3"} and signed != first

    # With a daemon, the forge hears of it: `failure` on the commit, and /metrics says which
    # repo is held.
    (tmp_path / "token").write_text(TOKEN)
    with receiving() as forge:
        entry["notify"] = {
            "commit_status": {
                "forge": "github",
                "api_url": forge.url,
                "repository": "org/templates",
                "token_file": str(tmp_path / "token"),
            }
        }
        entry["poll_interval"] = "200ms"
        port = free_port()
        config = write_config(tmp_path, [entry], aws.endpoint, http={"listen": f"127.0.0.1:{port}"})
        with running_daemon("-c", str(config)):
            passes = re.compile(r'^syncd_passes_total\{repo="r"\} [1-9]', re.M)

            def passed() -> bool:
                try:
                    return passes.search(http_get(port, "/metrics")) is not None
                except OSError:  # not listening yet
                    return False

            wait_for(passed, what="a first pass")
            aws.proxy.reset()
            again = repo.commit({"deployments/app.yaml": deployment(Name="v4")})
            [refused] = wait_for(
                lambda: [r.json() for r in forge.requests if r.path.endswith(again)],
                what="the status of the unsigned commit",
            )
            assert (refused["state"], refused["context"]) == ("failure", "syncd")
            assert "it is not signed" in refused["description"]
            assert 'syncd_repo_untrusted{repo="r"} 1.0' in http_get(port, "/metrics")
        assert aws.proxy.count("CreateChangeSet") == 0


class Forge:
    """What a forge's status API checks: the path, the method, the token in its header and the
    body's fields; a request that is wrong is refused as the forge would (404, 401, 422) and
    kept in `refused`. `down` makes it answer 503. GitLab refuses `running` over `running`."""

    def __init__(self, kind: str, prefix: str, header: str, scheme: str) -> None:
        self.kind, self.prefix, self.header, self.scheme = kind, prefix, header, scheme
        self.token = ""
        self.down = False
        self.refused: list[str] = []
        self.last: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def answer(self, got: Received) -> tuple[int, bytes]:
        if self.down:
            return 503, b"unavailable"
        with self._lock:
            if got.method != "POST" or not got.path.startswith(self.prefix):
                self.refused.append(f"404 {got.method} {got.path}")
                return 404, b"not found"
            if got.headers.get(self.header) != f"{self.scheme}{self.token}":
                self.refused.append(f"401 {got.path}: {self.header} is not the token")
                return 401, b"unauthorized"
            body = got.json()
            name = body.get("name") if self.kind in ("gitlab", "bitbucket") else body["context"]
            state = body.get("state")
            if not name or not state or (self.kind == "bitbucket" and not body.get("key")):
                self.refused.append(f"422 {got.path}: {body}")
                return 422, b"unprocessable"
            commit = got.path.split("/")[-3 if self.kind == "bitbucket" else -1]
            if self.kind == "gitlab" and state == "running" == self.last.get((commit, name)):
                return 400, b'{"message": "Cannot transition status via :run from :running"}'
            self.last[(commit, name)] = state
            return 201, b"{}"

    def states(self, requests: list[Received], commit: str) -> list[str]:
        return [r.json()["state"] for r in requests if commit in r.path]


FORGES = {
    # forge: (config, api path under the server, the path of a status, (token header, its
    #         scheme), (pending, success, failure) as the forge names them)
    "gitlab": (
        {"forge": "gitlab", "repository": "acme/templates"},
        "/api/v4",
        "/api/v4/projects/acme%2Ftemplates/statuses/{sha}",
        ("PRIVATE-TOKEN", ""),
        ("running", "success", "failed"),
    ),
    "gitea": (
        {"forge": "gitea", "repository": "acme/templates"},
        "/api/v1",
        "/api/v1/repos/acme/templates/statuses/{sha}",
        ("Authorization", "token "),
        ("pending", "success", "failure"),
    ),
    "bitbucket": (
        {
            "forge": "bitbucket",
            "repository": "acme/templates",
            "target_url": "https://syncd.example/ui",
        },
        "/2.0",
        "/2.0/repositories/acme/templates/commit/{sha}/statuses/build",
        ("Authorization", "Bearer "),
        ("INPROGRESS", "SUCCESSFUL", "FAILED"),
    ),
}


@pytest.mark.parametrize("kind", sorted(FORGES))
def test_each_forge_hears_of_a_push_a_failure_an_outage_and_a_new_token(
    kind: str, tmp_path: Path, repo: GitRepo, aws: Any
) -> None:
    """GitHub is the test above; here GitLab, Gitea/Forgejo and Bitbucket Cloud, each through
    its own API as its documentation has it."""
    settings, api, status_path, (header, scheme), (pending, success, failure) = FORGES[kind]
    forge = Forge(kind, api, header, scheme)
    tokens = [f"{kind}-token-one-never-shown", f"{kind}-token-two-never-shown"]
    forge.token = tokens[0]
    token_file = tmp_path / "token"
    token_file.write_text(tokens[0] + "\n")
    topic_stack(repo, "app", "v1")
    notify = NotifySocket(tmp_path / "notify.sock")
    env = syncd_env(NOTIFY_SOCKET=str(notify.path))
    with receiving() as server:
        server.answer = forge.answer
        commit_status = {**settings, "api_url": server.url + api, "token_file": str(token_file)}
        entry = {
            "name": "r",
            "url": str(repo.bare),
            "poll_interval": "200ms",
            "notify": {"commit_status": commit_status},
        }
        config = write_config(tmp_path, [entry], aws.endpoint)

        def statuses(commit: str, state: str) -> list[Received]:
            return [r for r in server.requests if commit in r.path and r.json()["state"] == state]

        with running_daemon("-c", str(config), env=env) as daemon:
            wait_for(lambda: aws.stack("app"), what="the first create")
            # A push: pending, then success, on the pushed commit, at the forge's own path.
            pushed = repo.commit({"deployments/app.yaml": deployment(Name="v2")})
            wait_for(lambda: statuses(pushed, success), what=f"{success} on the push")
            assert forge.states(server.requests, pushed) == [pending, success]
            assert {r.path for r in server.requests if pushed in r.path} == {
                status_path.format(sha=pushed)
            }
            body = statuses(pushed, success)[0].json()
            assert (body.get("name") or body.get("context")) == "syncd/app"

            # A failing stack: failure, with CloudFormation's reason.
            aws.proxy.fail("app", reason="Resource handler returned message: quota exceeded")
            broken = repo.commit({"deployments/app.yaml": deployment(Name="v3")})
            failed = wait_for(lambda: statuses(broken, failure), what=f"{failure} on the break")
            assert "quota exceeded" in failed[0].json()["description"]

            # The forge is down: the apply goes on, and the status arrives once it is back.
            forge.down = True
            aws.proxy.reset()
            attempts = server.attempts
            mended = repo.commit({"deployments/app.yaml": deployment(Name="v4")})
            wait_for(lambda: aws.parameters("app") == {"Name": "v4"}, what="version 4")
            server.wait_attempts(attempts + 2, 60)
            forge.down = False
            wait_for(lambda: statuses(mended, success), what=f"{success} after the outage")

            # A new token on disk and SIGHUP: the next status carries it.
            token_file.write_text(tokens[1] + "\n")
            forge.token = tokens[1]
            daemon.send_signal(signal.SIGHUP)
            notify.wait_for("RELOADING=1")
            notify.wait_for("READY=1")
            later = repo.commit({"deployments/app.yaml": deployment(Name="v5")})
            done = wait_for(lambda: statuses(later, success), what=f"{success} with the new token")
            assert done[0].headers[header] == scheme + tokens[1]
            status = run_syncd("status", "-c", str(config))
            status_json = run_syncd("status", "-c", str(config), "--format", "json")
        notify.close()
    assert forge.refused == [], forge.refused
    # Neither token in any output, log line (the 503s and 401s included) or file syncd wrote.
    outputs = daemon.stdout.read() + daemon.stderr_text + status.stdout + status_json.stdout
    assert "notify.send_failed" in daemon.stderr_text or "503" in daemon.stderr_text
    assert [t for t in tokens if t in outputs] == []
    for path in (tmp_path / "state").rglob("*"):
        if path.is_file():
            assert [t for t in tokens if t in path.read_text(errors="replace")] == [], path
