"""syncd's exceptions, each carrying what to do next.

SyncdError
├── ConfigError          the config file is wrong: report every problem, start nothing (exit 2)
├── UsageError           the command line is wrong (exit 2)
├── StateLocked          another syncd owns state_dir (exit 2)
├── JournalCorrupt       the journal is damaged beyond a torn last record: stop, name the record
├── SourceError          a repo cannot be fetched or read: back off and retry, others go on
│   └── BranchMissing    the branch is gone on the remote: keep the last commit, journal it
└── AwsError             CloudFormation or S3 refused or failed; `retryable` says whether a
    │                    later pass may try again without a new commit
    └── ObjectExists     a conditional put found its S3 key taken (the mirror reads it back)

A bad deployment file or template is not an exception: loading returns it as an InvalidStack
(syncd.core.deployments), so that one bad stack never stops the others.
"""

from __future__ import annotations

from collections.abc import Sequence


class SyncdError(Exception):
    """Base of every error syncd raises on purpose."""


class ConfigError(SyncdError):
    """Every problem found in a config file, each as 'key.path: message'."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__(
            f"{source}: {len(self.problems)} problem(s)\n"
            + "\n".join(f"  {p}" for p in self.problems)
        )


class UsageError(SyncdError):
    """The command line asks for something that cannot be done."""


class StateLocked(SyncdError):
    """Another syncd process holds the state directory."""


class JournalCorrupt(SyncdError):
    """The journal is damaged somewhere other than a torn last record."""


class SourceError(SyncdError):
    """A repository could not be fetched or read; retried with back-off."""


class UntrustedCommit(SourceError):
    """A branch's head is not signed by a key the repo's `verify` trusts: it is not applied."""

    def __init__(self, commit: str, reason: str, kept: str) -> None:
        super().__init__(f"commit {commit[:12]} is not applied: {reason}; {kept}")
        self.commit = commit
        self.reason = reason


class BranchMissing(SourceError):
    """The followed branch no longer exists on the remote."""


class AwsError(SyncdError):
    """An AWS call failed for a reason syncd understands."""

    def __init__(self, message: str, *, code: str = "", retryable: bool = False) -> None:
        self.code = code
        self.retryable = retryable
        super().__init__(message)


class ObjectExists(AwsError):
    """A conditional put found the key taken."""


class ObjectTooLarge(AwsError):
    """An object in the backup bucket is larger than any syncd writes: it was not read."""
