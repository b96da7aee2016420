"""Approval requests: `syncd approve` asks, the repo's next pass answers.

A request is a file, `state_dir/approvals/<stack>.json` ({change_set, by, at}), written
atomically by whoever approves; the daemon (or `syncd approve` itself, when no daemon runs)
reads it in the stack's repo pass, executes the change set only if it is still the one waiting,
records APPROVED or APPROVAL_REFUSED in the journal, and removes the request. A file and not a
socket: the request survives a restart of the daemon, and needs nothing listening.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from syncd.requests import read_request


@dataclass(frozen=True)
class Approval:
    stack: str
    change_set: str
    by: str


class Approvals:
    def __init__(self, state_dir: Path) -> None:
        self.folder = state_dir / "approvals"

    def request(self, approval: Approval) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{approval.stack}.json"
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"change_set": approval.change_set, "by": approval.by}))
        os.replace(tmp, path)

    def pending(self) -> dict[str, Approval]:
        found: dict[str, Approval] = {}
        if not self.folder.is_dir():
            return found
        for path in self.folder.glob("*.json"):
            try:
                doc = json.loads(read_request(path))
                found[path.stem] = Approval(path.stem, str(doc["change_set"]), str(doc["by"]))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # being written, or not ours
        return found

    def done(self, approval: Approval) -> None:
        """Remove the request answered, unless a newer one has taken its place meanwhile."""
        if self.pending().get(approval.stack) == approval:
            (self.folder / f"{approval.stack}.json").unlink(missing_ok=True)
