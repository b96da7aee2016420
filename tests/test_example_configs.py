"""The example configs in config/ are what users copy: each must load as it is shipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncd.configfile import load_config

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"
EXAMPLES = sorted(CONFIG_DIR.glob("*.yaml"))


def test_there_are_examples() -> None:
    assert {p.name for p in EXAMPLES} >= {"local.yaml", "production.example.yaml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_each_example_config_loads(path: Path) -> None:
    config = load_config(path)
    assert config.repos
    assert config.state_dir.is_absolute()
