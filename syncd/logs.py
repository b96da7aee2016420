"""Structured logs: one `structlog.configure` for the whole process.

Events have stable names (`commit.detected`, `change_set.created`, `stack.event`, ...) and carry
bound context (repo, commit, stack). JSON lines when stderr is not a terminal (systemd's
journal, CI), a readable console format when it is. Logs go to stderr; stdout is for command
output. Secrets never get here: URLs are redacted by the Git adapter, NoEcho parameters are
redacted before they are logged.
"""

from __future__ import annotations

import logging
import sys

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure(*, json_output: bool | None = None, level: str = "info") -> None:
    if json_output is None:
        json_output = not sys.stderr.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if json_output
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Libraries log through the standard library: keep their chatter out of syncd's stream.
    for noisy in ("botocore", "boto3", "urllib3", "werkzeug", "git", "watchdog"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
