"""Where the config file is and what it says: kept apart from `syncd.app` so that commands that
only read the journal (`status`, `history`) never import boto3 or GitPython."""

from __future__ import annotations

import os
from pathlib import Path

from syncd.core.config import Config, parse_config
from syncd.errors import ConfigError

DEFAULT_CONFIG = Path("/etc/syncd/syncd.yaml")


def config_path(arg: str | None) -> Path:
    """-c/--config, else $SYNCD_CONFIG, else /etc/syncd/syncd.yaml."""
    return Path(arg or os.environ.get("SYNCD_CONFIG") or DEFAULT_CONFIG)


def load_config(path: Path) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read the config file: {exc.strerror}"]) from None
    return parse_config(text, str(path), path.resolve().parent)
