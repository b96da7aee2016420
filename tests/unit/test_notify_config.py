"""The config's `notify` (commit statuses, event webhooks) and `verify` (signed commits)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from syncd.core.config import (
    CommitStatusConfig,
    Config,
    VerifyConfig,
    WebhookConfig,
    parse_config,
)
from syncd.core.events import EVENT_TYPES
from syncd.errors import ConfigError

BASE = Path("/etc/syncd")
HEAD = "state_dir: /var/lib/syncd\n"


def parse(text: str) -> Config:
    return parse_config(HEAD + textwrap.dedent(text), "/etc/syncd/syncd.yaml", BASE)


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return info.value.problems


def test_everything_set() -> None:
    config = parse(
        """
        notify:
          webhooks:
            - name: ops
              url: https://events.example.com/syncd
              secret_file: ops.secret
              events: [failed, blocked]
              repos: [app]
            - name: chat
              url_file: /etc/syncd/slack-url
              format: slack
        repos:
          - name: app
            url: https://git.example.com/app.git
            notify:
              commit_status:
                forge: github
                repository: org/app
                token_file: github-token
                per: commit
              webhooks:
                - name: app-team
                  url: http://127.0.0.1:9000/
            verify:
              allowed_signers_file: allowed_signers
              keyring: /etc/syncd/keys.asc
          - name: infra
            url: https://git.example.com/infra.git
            notify:
              commit_status:
                forge: gitea
                api_url: https://git.example.com/api/v1/
                repository: platform/infra
                token_file: gitea-token
                context: deploy
        """
    )
    ops, chat = config.webhooks
    assert ops == WebhookConfig(
        name="ops",
        url="https://events.example.com/syncd",
        secret_file=BASE / "ops.secret",
        events=("failed", "blocked"),
        repos=("app",),
    )
    assert chat.format == "slack" and chat.events == EVENT_TYPES and chat.repos is None
    app, infra = config.repos
    assert app.commit_status == CommitStatusConfig(
        forge="github",
        repository="org/app",
        token_file=BASE / "github-token",
        api_url="https://api.github.com",
        per="commit",
    )
    assert app.webhooks[0].repos == ("app",)  # a repo's receiver hears that repo only
    assert app.verify == VerifyConfig(BASE / "allowed_signers", Path("/etc/syncd/keys.asc"))
    assert infra.commit_status is not None
    assert infra.commit_status.api_url == "https://git.example.com/api/v1"
    assert infra.commit_status.context == "deploy" and infra.verify is None
    assert [w.name for w in config.receivers()] == ["ops", "chat", "app-team"]


def test_mistakes_are_named_where_they_are() -> None:
    found = problems(
        """
        notify:
          webhooks:
            - name: ops
              url: ftp://hooks.example.com/T0/B0/SECRETPATH
              events: [failled]
              repos: [nope]
            - name: ops
              url: https://x
              url_file: /x
            - url: https://y
              format: slack
              secret_file: s
        repos:
          - name: app
            url: https://git.example.com/app.git
            notify:
              commit_status: {forge: gitea, repository: "../etc", token_file: t}
            verify: {}
          - name: b
            url: https://git.example.com/b.git
            notify:
              commit_status: {forge: bitbucket, repository: ws/b}
        """
    )
    text = "\n".join(found)
    assert "SECRETPATH" not in text  # a receiver's URL may be a secret: never quoted
    expected = [
        "notify.webhooks[0].url: must be an http:// or https:// URL",
        "notify.webhooks[0].events: 'failled' is not an event type",
        "did you mean 'failed'?",
        "notify.webhooks[1]: needs url or url_file (one of them)",
        "notify.webhooks[2].name: required",
        "notify.webhooks[2].secret_file: not for format: slack",
        "repos[0].notify.commit_status.api_url: required for gitea",
        "repos[0].notify.commit_status.repository: must be owner/name",
        "repos[0].verify: needs allowed_signers_file, keyring or both",
        "repos[1].notify.commit_status.token_file: required",
        "repos[1].notify.commit_status.target_url: required for bitbucket",
        "notify.webhooks: 'ops' names two receivers",
        "notify.webhooks[0].repos: 'nope' is not a repo",
    ]
    for piece in expected:
        assert piece in text, piece


def test_a_repo_receiver_takes_no_repos_key() -> None:
    found = problems(
        """
        repos:
          - name: app
            url: https://git.example.com/app.git
            notify:
              webhooks: [{name: w, url: "https://x", repos: [app]}]
              commit_statuses: {}
        """
    )
    assert any("repos[0].notify.webhooks[0].repos: unknown key" in p for p in found)
    assert any("commit_statuses: unknown key (did you mean 'commit_status'?)" in p for p in found)


def test_receiver_names_and_urls_that_cannot_be() -> None:
    found = problems(
        """
        notify:
          webhooks:
            - {name: commit-status-app, url: "https://x"}
            - {name: spaced, url: "https://x/a b"}
            - {name: newline, url: "https://x/\\n"}
        repos:
          - {name: app, url: "https://git.example.com/app.git"}
        """
    )
    text = "\n".join(found)
    assert "names starting commit-status- are the commit statuses'" in text
    assert "notify.webhooks[1].url: must be an http" in text
    assert "notify.webhooks[2].url: must be an http" in text
