"""Fixtures for the integration tests: syncd's real App on a config of real Git repos."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from syncd.app import App, open_app
from syncd.configfile import load_config
from syncd.core.journal_state import Kind
from syncd.reconcile import observe_world
from tests.conftest import Aws, write_config
from tests.support.gitrepo import GitRepo


class Syncd:
    """syncd's real App on a config of one or more repos; `restart` reopens it."""

    def __init__(self, tmp_path: Path, aws: Aws, repos: dict[str, GitRepo], **top: Any) -> None:
        options = top.pop("repo_options", {})
        entries = [
            {"name": name, "url": str(r.bare), "poll_interval": "1h", **options.get(name, {})}
            for name, r in repos.items()
        ]
        self.config = write_config(tmp_path, entries, aws.endpoint, **top)
        self.app: App | None = None
        self.restart()

    def restart(self, stop: threading.Event | None = None) -> App:
        self.close()
        self.app = open_app(load_config(self.config), stop=stop)
        observe_world(self.app.world, self.app.journal)
        return self.app

    def sync(self, repo: str = "r") -> Any:
        assert self.app is not None
        return self.app.syncs[repo].run_pass()

    @property
    def state(self) -> Any:
        assert self.app is not None
        return self.app.journal.state

    def kinds(self, stack: str) -> list[Kind]:
        assert self.app is not None
        return [r.kind for r in self.app.journal.records() if r.data.get("stack") == stack]

    def close(self) -> None:
        if self.app is not None:
            self.app.close()
            self.app = None


@pytest.fixture
def syncd(tmp_path: Path, aws: Aws) -> Iterator[Any]:
    made: list[Syncd] = []

    def make(repos: dict[str, GitRepo], **top: Any) -> Syncd:
        s = Syncd(tmp_path, aws, repos, **top)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()
