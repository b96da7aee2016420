"""`syncd run` telling a forge and event receivers what happened, and refusing unsigned commits,
end to end: local HTTP servers play GitHub's status API and the receivers; keys are made here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import TOPIC_TEMPLATE, deployment, topic_stack, write_config
from tests.e2e.conftest import run_syncd, running_daemon, wait_for
from tests.e2e.test_daemon import http_get
from tests.support.gitrepo import GitRepo, free_port
from tests.support.receiver import receiving
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
            events.code = 200
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
    plan = run_syncd("plan", "-c", str(config), "--repo", "r", "--ref", "main")
    assert "! not trusted: it is not signed; syncd will not apply this commit" in plan.stdout
    signed = repo.commit({"deployments/app.yaml": deployment(Name="v3")}, signed_by=key)
    done = run_syncd("sync", "-c", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    assert aws.parameters("app") == {"Name": "v3"} and signed != first
