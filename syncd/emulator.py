"""The embedded local emulator: moto's CloudFormation + S3 server on a loopback port.

`aws.embedded: true` starts it inside syncd so that the quick start needs no AWS account; the
tests start the same thing in a fixture. Its state lives in memory and is gone when it stops.

Hazard: moto 5.x applies a change set's resources on execute but leaves the stack's outputs,
exports, parameters and tags as they were before it (it rebuilds them only in create_stack /
update_stack), and it answers "No updates are to be performed" to a change set that changes
only the stack's tags. syncd deploys through change sets alone, so `_patch_moto` brings both in
line with what CloudFormation does. The patch touches this process's moto only.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

EMULATOR_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
}

_patch_lock = threading.Lock()
_patched = False


class EmulatorUnavailable(RuntimeError):
    """moto[server] is not installed."""


@dataclass
class Emulator:
    """A running moto server; `url` is its endpoint, `stop()` ends it."""

    url: str
    _server: Any

    def stop(self) -> None:
        self._server.stop()

    def reset(self) -> None:
        """Forget every stack, change set and bucket (between tests)."""
        import urllib.request

        req = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(req, timeout=10):
            pass


def start_emulator(port: int = 0) -> Emulator:
    """Start moto's server on 127.0.0.1 (a free port unless `port` is given)."""
    # Dummy credentials so that botocore signs requests; moto accepts any.
    for key, value in EMULATOR_CREDENTIALS.items():
        os.environ.setdefault(key, value)
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise EmulatorUnavailable(
            "aws.embedded needs the local emulator: pip install 'syncd[local]'"
        ) from exc
    _patch_moto()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    host, bound_port = server.get_host_and_port()
    return Emulator(url=f"http://{host}:{bound_port}", _server=server)


def _patch_moto() -> None:
    global _patched
    with _patch_lock:
        if _patched:
            return
        from moto.cloudformation.models import CloudFormationBackend

        original = CloudFormationBackend.execute_change_set

        def execute_change_set(
            self: Any, change_set_name: str, stack_name: str | None = None
        ) -> None:
            change_set = self.change_sets.get(change_set_name)
            if change_set is None:
                for candidate in self.change_sets.values():
                    if candidate.change_set_name == change_set_name and (
                        stack_name is None or candidate.stack_name == stack_name
                    ):
                        change_set = candidate
            original(self, change_set_name, stack_name)
            if change_set is None:
                return
            stack = self.stacks[change_set.stack_id]
            stack.parameters = change_set.parameters
            if change_set.tags is not None:
                stack.tags = change_set.tags
            stack._parse_template()
            stack.output_map = stack._create_output_map()
            for export in stack.exports:
                self.exports[export.name] = export

        CloudFormationBackend.execute_change_set = execute_change_set  # type: ignore[method-assign]

        create = CloudFormationBackend.create_change_set

        def create_change_set(self: Any, *args: Any, **kwargs: Any) -> tuple[str, str]:
            change_set_id, stack_id = create(self, *args, **kwargs)
            change_set = self.change_sets[change_set_id]
            new_tags = change_set.tags is not None and change_set.tags != self.stacks[stack_id].tags
            if change_set.status == "FAILED" and new_tags:  # "didn't contain changes"
                change_set.status, change_set.execution_status = "CREATE_COMPLETE", "AVAILABLE"
                change_set.status_reason = None
            return change_set_id, stack_id

        CloudFormationBackend.create_change_set = create_change_set  # type: ignore[method-assign]

        from moto.cloudformation.responses import CloudFormationResponse

        validate = CloudFormationResponse._validate_different_update

        def validate_different_update(
            self: Any, incoming_params: Any, stack_body: str, old_stack: Any
        ) -> None:
            # CloudFormation takes new stack tags alone as an update; moto says "No updates".
            tags = {item["Key"]: item["Value"] for item in self._get_param("Tags", [])}
            if tags != (old_stack.tags or {}):
                return
            validate(self, incoming_params, stack_body, old_stack)

        CloudFormationResponse._validate_different_update = validate_different_update  # type: ignore[method-assign]
        _patched = True
