"""An HTTP fault-injection proxy in front of moto's server, for the test suite.

moto's CloudFormation is synchronous and never fails part-way: every operation is `*_COMPLETE`
when the call returns, and nothing rolls back. `FaultProxy` forwards every request to moto and
changes CloudFormation traffic (AWS query protocol, recognised like moto does, by the SigV4
credential scope) so that tests can show what moto cannot:

- `throttle` / `error`: the next N requests of an action get an error reply from the proxy
  itself and never reach moto.
- `slow`: after the stack's next ExecuteChangeSet or DeleteStack, N DescribeStacks responses that
  include it show CREATE_/UPDATE_/DELETE_IN_PROGRESS. A stack moto has already deleted is put
  back into those responses (from a snapshot taken just before the delete), and
  DescribeStackEvents by its name still answers (moto is asked by its ARN).
- `fail`: the stack's next execute shows N times *_IN_PROGRESS, once (UPDATE_)ROLLBACK_IN_PROGRESS,
  then ROLLBACK_COMPLETE (create) or UPDATE_ROLLBACK_COMPLETE (update), which stays until a
  DeleteStack (or, for the update, a later execute). DescribeStackEvents gets the resource's
  *_FAILED event and the rollback events as those states are shown, all newer than moto's.
  While an update shows its rollback, DescribeStacks also shows the parameters, outputs and tags
  the stack had before that execute, as CloudFormation would after rolling back.
- `hold`: DescribeStacks shows a fixed status (someone else's update) until `release`.
- `pace(change_set, operation)`: CloudFormation's timing, in seconds of the proxy's `clock`
  (default `time.monotonic`), for every stack until `reset`. A change set moto accepted shows
  CREATE_PENDING (the first fifth of `change_set`), then CREATE_IN_PROGRESS, with ExecutionStatus
  UNAVAILABLE and no Changes (DescribeChangeSet, ListChangeSets), then moto's answer; executing it
  before that is refused (InvalidChangeSetStatus) and listed in `refused_early`. After an
  ExecuteChangeSet or DeleteStack moto accepted, the stack shows CREATE_/UPDATE_/DELETE_IN_PROGRESS
  for `operation` seconds (DescribeStacks by name, by ARN and in the listing; ListStacks, whose
  StackStatusFilter applies to the status shown), with no outputs during a create and the
  parameters, outputs and tags from before during an update; a deleted stack stays visible (also
  to DescribeStackEvents by name) until then, and the executed change set shows
  EXECUTE_IN_PROGRESS. DescribeStackEvents shows a stack-level *_IN_PROGRESS event at the start
  and the *_COMPLETE event at the end instead of moto's own two (which come at once). With `fail`,
  a paced execute shows *_IN_PROGRESS for `operation` seconds, (UPDATE_)ROLLBACK_IN_PROGRESS for
  as long again, then the sticky rollback status as above (`polls` is ignored) and its change set
  EXECUTE_FAILED. `slow` still counts polls, and wins over `pace` for its stack.
- Busy stacks: while the proxy shows a stack *_IN_PROGRESS (pace, `slow`, `fail` or `hold`),
  CreateChangeSet, ExecuteChangeSet, UpdateStack and DeleteStack naming it are refused with
  CloudFormation's ValidationError, never reach moto, and are listed in `refused_busy`. As on
  AWS, DeleteStack of a stack being deleted succeeds and does nothing more, DeleteStack during
  CREATE_IN_PROGRESS goes through (it cancels the create), and an ExecuteChangeSet retried with
  the ClientRequestToken of the paced execute under way succeeds without reaching moto.
  `refuse_busy = False` turns refusal off for `hold`, `slow` and `fail` (not for `pace`).
- `throttle_rate(fraction, seed)`: that fraction of all CloudFormation calls (a seeded RNG) get
  400 Throttling "Rate exceeded"; `throttle_above(calls_per_second, burst)`: a token bucket per
  region (the proxy cannot tell accounts apart) throttles the calls beyond it. Both come before
  every other rule; `throttled` lists each Throttling reply of the proxy (`throttle`'s too).
- `drift(stack, resources, status, polls, reason)`: drift detection, which moto lacks (it
  answers 500), for that stack until `reset`: DetectStackDrift answers a new detection id
  without reaching moto; DescribeStackDriftDetectionStatus shows it DETECTION_IN_PROGRESS for
  `polls` answers, then `status` (DETECTION_COMPLETE, or DETECTION_FAILED with `reason`), its
  StackDriftStatus DRIFTED when a resource is MODIFIED or DELETED, else IN_SYNC; and
  DescribeStackResourceDrifts pages (MaxResults, NextToken) through `resources` (`Drifted`:
  each with property paths, difference types and expected and actual values, as
  CloudFormation shows them), filtered by StackResourceDriftStatusFilters. `detections` lists
  the stacks asked about. The drift calls for other stacks go to moto.
- `log`: (clock time, action, stack name or None) for every CloudFormation call, throttled and
  refused ones included; a change set named by ARN alone counts for the stack it was made for.
- S3: `s3_error` fails the next N requests of a method with an error reply (`store=True`:
  forwards the request first, so S3 keeps what the client is told failed); `s3_down`/`s3_up`
  answer every S3 request with 503 in between. `events` lists CloudFormation actions and S3
  requests ("PUT /bucket/key") in the order they arrived.

"Shown" means one scripted status per DescribeStacks response that includes the stack, by name,
by ARN or in the paginated listing (a paced status: whatever the clock says); `hold` wins over
the script or the pace and pauses the script.

Not modelled: moto has applied the change (resources, template) whatever status is shown, and
a "failed" change is not undone beyond what DescribeStacks shows; a status that is not
*_IN_PROGRESS refuses nothing (a held or ROLLBACK_COMPLETE stack still takes change sets: add an
`error()` for that); resources (DescribeStackResources, ListStackResources) keep moto's states;
the failed resource's type is made up (`fail(..., resource=)` names it); `pace` times
ExecuteChangeSet and DeleteStack only (CreateStack and UpdateStack stay instant), every operation
takes the same time, and a pending change set can still be deleted. S3 and all other traffic
passes through untouched, and `calls` lists CloudFormation only. Request bodies are read by
Content-Length (botocore always sends one); chunked uploads are not supported.
"""

from __future__ import annotations

import copy
import datetime as dt
import http.client
import json
import random
import re
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlencode, urlsplit
from xml.sax.saxutils import escape

NS = "http://cloudformation.amazonaws.com/doc/2010-05-15/"
_SCOPE = re.compile(r"Credential=[^/,]*/[^/,]*/([^/,]*)/([^/,]*)/aws4_request")  # region, service
_HOP = {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "expect"}
_EVENT = tuple[str | None, str, str]  # (logical resource id, None for the stack; status; reason)
_NO_STACKS = (
    f'<DescribeStacksResponse xmlns="{NS}"><DescribeStacksResult><Stacks/></DescribeStacksResult>'
    "</DescribeStacksResponse>"
).encode()
_CHANGES = {"CreateChangeSet", "ExecuteChangeSet", "UpdateStack", "DeleteStack"}
_PENDING_SHARE = 0.2  # of a paced change set's time, shown CREATE_PENDING (then CREATE_IN_PROGRESS)


class Call(NamedTuple):
    """One CloudFormation call in `FaultProxy.log`."""

    at: float  # the proxy's clock when it arrived
    action: str
    stack: str | None  # the stack it names (by name), None for account-wide calls


@dataclass(frozen=True)
class _Frame:
    status: str  # shown as StackStatus
    events: tuple[_EVENT, ...] = ()  # published the first time the frame is shown
    reason: str | None = None  # shown as StackStatusReason
    sticky: bool = False  # keep showing it once the script has run out
    rolled_back: bool = False  # show the parameters, outputs and tags from before the execute
    no_outputs: bool = False  # show no outputs (a create that has not finished)


@dataclass
class _Op:
    """A paced operation: from each clock time in `steps` on, its frame is shown (None: moto's
    status, the end) and its events are published."""

    stack_id: str
    start: float  # the clock at its start ...
    wall: dt.datetime  # ... and the wall time then, to date its events
    steps: list[tuple[float, _Frame | None, tuple[_EVENT, ...]]]
    change_set: str | None = None  # ARN of the executed change set (None: a delete)
    token: str | None = None  # ClientRequestToken of the execute
    published: int = 0  # steps whose time has come

    def frame(self) -> _Frame | None:
        return self.steps[self.published - 1][1] if self.published else None


@dataclass
class _Stack:
    slow: int | None = None
    fail: tuple[int, str, str] | None = None  # (polls, reason, logical resource id)
    held: str | None = None
    script: list[_Frame] = field(default_factory=list)
    sticky: _Frame | None = None
    events: list[ET.Element] = field(default_factory=list)
    ghost: ET.Element | None = None  # DescribeStacks member of a stack being (slowly) deleted
    before: ET.Element | None = None  # its member before a failing or paced update's execute
    op: _Op | None = None  # a paced operation under way
    stack_id: str = ""  # the latest seen
    quiet: list[tuple[dt.datetime, dt.datetime]] = field(default_factory=list)  # moto's events
    # from these times (its own stack events of a paced operation) are not shown


class Drifted(NamedTuple):
    """A resource a scripted drift detection finds (`FaultProxy.drift`)."""

    logical_id: str
    type: str = "AWS::SNS::Topic"
    status: str = "MODIFIED"  # MODIFIED | DELETED | IN_SYNC | NOT_CHECKED
    # (property path, NOT_EQUAL | ADD | REMOVE, expected value, actual value)
    differences: tuple[tuple[str, str, str, str], ...] = ()


@dataclass(frozen=True)
class _DriftScript:
    resources: tuple[Drifted, ...]
    status: str  # the detection's end: DETECTION_COMPLETE | DETECTION_FAILED
    polls: int  # status answers that show DETECTION_IN_PROGRESS first
    reason: str | None


@dataclass
class _Detection:
    stack: str
    script: _DriftScript
    polls: int  # DETECTION_IN_PROGRESS answers still to give


_DRIFT_ACTIONS = {
    "DetectStackDrift",
    "DescribeStackDriftDetectionStatus",
    "DescribeStackResourceDrifts",
}


@dataclass
class _ChangeSet:
    stack: str
    kind: str  # ChangeSetType
    arn: str
    stack_id: str
    created: float  # clock
    ready: float | None = None  # clock time it is CREATE_COMPLETE (None: at once)
    execution: str | None = None  # ExecutionStatus to show instead of moto's

    def pending(self, now: float) -> str | None:
        """The status a paced change set shows now (None: ready, moto's)."""
        if self.ready is None or now >= self.ready:
            return None
        early = now < self.created + (self.ready - self.created) * _PENDING_SHARE
        return "CREATE_PENDING" if early else "CREATE_IN_PROGRESS"


class FaultProxy:
    """`FaultProxy(emulator.url).start()`, then point boto3 at `.url`; `reset()` between tests.
    `clock` (seconds, default `time.monotonic`) times `pace`, `throttle_above` and `log`."""

    def __init__(self, upstream_url: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.upstream = urlsplit(upstream_url).netloc  # host:port
        self.url = ""
        self.clock = clock
        self.calls: list[str] = []
        self.events: list[str] = []
        self.log: list[Call] = []
        self.throttled: list[Call] = []
        self.refused_busy: list[tuple[str, str]] = []  # (action, stack)
        self.refused_early: list[tuple[str, str]] = []  # (action, stack): change set not ready
        self.refuse_busy = True  # also for `hold`, `slow` and `fail` (always for `pace`)
        self._s3_faults: list[tuple[str, int, str, bool]] = []  # (method, status, code, store)
        self._s3_down = False
        self._lock = threading.Lock()
        self._faults: dict[str, list[tuple[int, str, str]]] = {}  # action -> (status, code, msg)
        self._stacks: dict[str, _Stack] = {}
        self._change_sets: dict[Any, _ChangeSet] = {}  # ARN | (stack, name) -> change set
        self._pace: tuple[float, float] | None = None  # (change set, operation) seconds
        self._rate = 0.0
        self._rng = random.Random(0)
        self._bucket: tuple[float, int] | None = None  # (calls per second, burst)
        self._tokens: dict[str, tuple[float, float]] = {}  # region -> (tokens, clock)
        self._last_event = dt.datetime.now(dt.UTC)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.detections: list[str] = []  # stacks DetectStackDrift was answered for, in order
        self._drift: dict[str, _DriftScript] = {}
        self._detections: dict[str, _Detection] = {}

    def start(self) -> FaultProxy:
        handler = type("Handler", (_Handler,), {"proxy": self})
        self._server = server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = self._thread = None

    def reset(self) -> None:
        """Forget every rule, pace, scripted status, injected event, call and refusal."""
        with self._lock:
            self.calls.clear()
            self.events.clear()
            self.log.clear()
            self.throttled.clear()
            self.refused_busy.clear()
            self.refused_early.clear()
            self.refuse_busy = True
            self._faults.clear()
            self._stacks.clear()
            self._change_sets.clear()
            self._s3_faults.clear()
            self._s3_down = False
            self._pace = None
            self._rate, self._rng = 0.0, random.Random(0)
            self._bucket = None
            self._tokens.clear()
            self.detections.clear()
            self._drift.clear()
            self._detections.clear()

    def s3_error(
        self,
        method: str,
        times: int = 1,
        status: int = 503,
        code: str = "ServiceUnavailable",
        store: bool = False,
    ) -> None:
        with self._lock:
            self._s3_faults.extend([(method, status, code, store)] * times)

    def s3_down(self) -> None:
        with self._lock:
            self._s3_down = True

    def s3_up(self) -> None:
        with self._lock:
            self._s3_down = False

    def count(self, action: str | None = None) -> int:
        with self._lock:
            return len(self.calls) if action is None else self.calls.count(action)

    def throttle(self, action: str, times: int) -> None:
        self.error(action, 400, "Throttling", times, "Rate exceeded")

    def throttle_rate(self, fraction: float, seed: int = 0) -> None:
        """Throttle this fraction of all CloudFormation calls, picked by a seeded RNG."""
        with self._lock:
            self._rate, self._rng = fraction, random.Random(seed)

    def throttle_above(self, calls_per_second: float, burst: int) -> None:
        """Throttle calls beyond a token bucket (per region, full at first), as AWS does."""
        with self._lock:
            self._bucket = (calls_per_second, burst)
            self._tokens.clear()

    def pace(self, change_set: float, operation: float) -> None:
        """Until `reset`, change sets take `change_set` seconds to be ready and executes and
        deletes take `operation` seconds, by the proxy's clock."""
        with self._lock:
            self._pace = (change_set, operation)

    def error(
        self, action: str, status: int, code: str, times: int, message: str | None = None
    ) -> None:
        with self._lock:
            fault = (status, code, message or f"Injected {code}")
            self._faults.setdefault(action, []).extend([fault] * times)

    def slow(self, stack: str, polls: int) -> None:
        with self._lock:
            self._stack(stack).slow = polls

    def fail(
        self,
        stack: str,
        polls: int = 1,
        reason: str = "Injected failure",
        resource: str = "Failing",
    ) -> None:
        with self._lock:
            self._stack(stack).fail = (polls, reason, resource)

    def hold(self, stack: str, status: str) -> None:
        with self._lock:
            self._stack(stack).held = status

    def drift(
        self,
        stack: str,
        resources: list[Drifted] | tuple[Drifted, ...] = (),
        status: str = "DETECTION_COMPLETE",
        polls: int = 0,
        reason: str | None = None,
    ) -> None:
        """Until `reset`, drift detections of `stack` find `resources` (see the module's doc)."""
        with self._lock:
            self._drift[_name(stack)] = _DriftScript(tuple(resources), status, polls, reason)

    def release(self, stack: str) -> None:
        with self._lock:
            self._stack(stack).held = None

    def _stack(self, stack: str) -> _Stack:
        return self._stacks.setdefault(_name(stack), _Stack())

    # -- one request -----------------------------------------------------------------------
    def _serve(self, h: _Handler) -> None:
        expected = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(expected)
        if len(body) < expected:  # the client went away mid-request: nothing reaches moto
            h.close_connection = True
            return
        scope = _SCOPE.search(h.headers.get("Authorization", ""))
        form = h.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded")
        if scope and scope.group(2) == "s3":
            return self._serve_s3(h, body)
        if scope and scope.group(2) == "sts" and form:  # `error("AssumeRole", ...)` fails it
            params = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
            with self._lock:
                faults = self._faults.get(params.get("Action", ""))
                refused = faults.pop(0) if faults else None
            if refused:
                return _reply(h, refused[0], [("Content-Type", "text/xml")], _error_xml(*refused))
        if not (scope and scope.group(2) == "cloudformation" and form):
            return _reply(h, *self._forward(h, body))
        params = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        action = params.get("Action", "")
        filters: set[str] = set()
        with self._lock:
            now = self.clock()
            self._advance(now)
            stack = self._stack_of(action, params)
            call = Call(now, action, stack)
            self.calls.append(action)
            self.events.append(action)
            self.log.append(call)
            if self._throttles(scope.group(1), now):
                fault: tuple[int, str, str] | None = (400, "Throttling", "Rate exceeded")
            else:
                fault = self._faults[action].pop(0) if self._faults.get(action) else None
            if fault and fault[1] == "Throttling":
                self.throttled.append(call)
            gate = None if fault else self._gate(action, params, stack, now)
            drift = None if fault or action not in _DRIFT_ACTIONS else self._drift_answer(params)
            st = self._stacks.get(stack or "")
            paced = self._pace is not None
            slow_delete = action == "DeleteStack" and (paced or (st is not None and bool(st.slow)))
            known = self._known(params) if action == "ExecuteChangeSet" else None
            snap_before = (
                known is not None
                and known.kind == "UPDATE"
                and (self._stack(known.stack).fail is not None or paced)
            )
            ghost_id = st.ghost.findtext(_q("StackId")) if st and st.ghost is not None else None
            if action == "DescribeStackEvents" and st and _deleting(st) and ghost_id:
                # moto forgets the name of a deleted stack, not its ARN
                body = urlencode({**params, "StackName": ghost_id}).encode()
            if action == "ListStacks":  # filtered here, by the status shown
                filters = {v for k, v in params.items() if k.startswith("StackStatusFilter.")}
                kept = {k: v for k, v in params.items() if not k.startswith("StackStatusFilter.")}
                body = urlencode(kept).encode()
        if fault:
            return _reply(h, fault[0], [("Content-Type", "text/xml")], _error_xml(*fault))
        if isinstance(gate, tuple):
            return _reply(h, gate[0], [("Content-Type", "text/xml")], gate[1])
        if drift is not None:
            return _reply(h, 200, [("Content-Type", "text/xml")], drift)
        if isinstance(gate, str):  # a busy stack: (status shown); tell its ARN
            return self._refuse_busy(h, action, stack or "", gate)
        ghost = self._snapshot(h, params["StackName"]) if slow_delete else None
        before = self._snapshot(h, known.stack) if known and snap_before else None
        started = dt.datetime.now(dt.UTC)
        status, headers, data = self._forward(h, body)
        window = (started, dt.datetime.now(dt.UTC))
        with self._lock:
            now = self.clock()
            self._advance(now)
            if status == 200 and action == "CreateChangeSet":
                self._on_create_change_set(params, data, now)
            elif status == 200 and action == "ExecuteChangeSet":
                self._on_execute(params, before, now, window)
            elif status == 200 and action == "DeleteStack":
                self._on_delete(params["StackName"], ghost, now, window)
            elif action == "DescribeStacks" and status in (200, 400):
                status, data = self._describe_stacks(params, status, data)
            elif status == 200 and action == "DescribeStackEvents" and "NextToken" not in params:
                data = self._describe_events(_name(params["StackName"]), data)
            elif status == 200 and action in ("DescribeChangeSet", "ListChangeSets"):
                data = self._change_set_views(data, now)
            elif status == 200 and action == "ListStacks":
                data = self._list_stacks(data, filters)
        _reply(h, status, headers, data)

    def _refuse_busy(self, h: _Handler, action: str, stack: str, shown: str) -> None:
        with self._lock:
            stack_id = self._stack(stack).stack_id
        if not stack_id and (member := self._snapshot(h, stack)) is not None:
            stack_id = member.findtext(_q("StackId"), "")
        arn = stack_id or stack
        # CloudFormation's texts as users quote them: DeleteStack in aws/copilot-cli#1180 and
        # aws-solutions-library-samples/guidance-for-clickstream-analytics-on-aws#573, the other
        # in that issue too and, for CreateChangeSet, in jenseickmeyer/todo-app-nodejs#5.
        # Assumed: ExecuteChangeSet on a busy stack gets the same text as CreateChangeSet.
        if action == "DeleteStack":
            message = f"Stack [{arn}] cannot be deleted while in status {shown}"
        else:
            message = f"Stack:{arn} is in {shown} state and can not be updated."
        error = _error_xml(400, "ValidationError", message)
        _reply(h, 400, [("Content-Type", "text/xml")], error)

    def _serve_s3(self, h: _Handler, body: bytes) -> None:
        with self._lock:
            self.events.append(f"{h.command} {h.path}")
            fault = None
            if self._s3_down:
                fault = (h.command, 503, "ServiceUnavailable", False)
            else:
                index = next((i for i, f in enumerate(self._s3_faults) if f[0] == h.command), None)
                if index is not None:
                    fault = self._s3_faults.pop(index)
        if fault is None:
            return _reply(h, *self._forward(h, body))
        if fault[3]:
            self._forward(h, body)  # S3 keeps it; the client hears of a failure
        _reply(h, fault[1], [("Content-Type", "application/xml")], _s3_error_xml(fault[2]))

    def _forward(self, h: _Handler, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self.upstream, timeout=60)
        try:
            headers = {k: v for k, v in h.headers.items() if k.lower() not in _HOP}
            headers.update({"Host": self.upstream, "Content-Length": str(len(body))})
            conn.request(h.command, h.path, body, headers)
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()

    def _snapshot(self, h: _Handler, stack: str) -> ET.Element | None:
        """The stack's DescribeStacks member, taken before DeleteStack makes moto forget it."""
        body = urlencode({"Action": "DescribeStacks", "Version": "2010-05-15", "StackName": stack})
        status, _, data = self._forward(h, body.encode())
        return (
            ET.fromstring(data).find(f".//{_q('Stacks')}/{_q('member')}") if status == 200 else None
        )

    # -- decisions before forwarding, with the lock held -----------------------------------
    def _stack_of(self, action: str, params: dict[str, str]) -> str | None:
        if params.get("StackName"):
            return _name(params["StackName"])
        if (detection := self._detections.get(params.get("StackDriftDetectionId", ""))) is not None:
            return detection.stack
        if "ChangeSetName" in params and (known := self._known(params)) is not None:
            return known.stack
        return None

    def _throttles(self, region: str, now: float) -> bool:
        if self._rate > 0 and self._rng.random() < self._rate:
            return True
        if self._bucket is None:
            return False
        rate, burst = self._bucket
        tokens, then = self._tokens.get(region, (float(burst), now))
        tokens = min(float(burst), tokens + (now - then) * rate)
        allowed = tokens >= 1
        self._tokens[region] = (tokens - 1 if allowed else tokens, now)
        return not allowed

    def _gate(
        self, action: str, params: dict[str, str], stack: str | None, now: float
    ) -> tuple[int, bytes] | str | None:
        """A reply of the proxy's own (status, body), the status of a busy stack that refuses
        the call, or None: forward it."""
        if action not in _CHANGES or stack is None:
            return None
        known = self._known(params) if action == "ExecuteChangeSet" else None
        if known is not None and (status := known.pending(now)):
            self.refused_early.append((action, stack))
            # CloudFormation's own error, as in saksdirect/nova#10 ("ChangeSet [...] cannot be
            # executed in its current status of [CREATE_IN_PROGRESS]"); 400, like every
            # InvalidChangeSetStatus in the CloudFormation API reference.
            message = (
                f"ChangeSet [{known.arn}] cannot be executed in its current status of [{status}]"
            )
            return 400, _error_xml(400, "InvalidChangeSetStatus", message)
        st = self._stacks.get(stack)
        if st is None or (shown := self._shown(st, None)) is None:
            return None
        if not shown.status.endswith("_IN_PROGRESS") or shown.status == "REVIEW_IN_PROGRESS":
            return None
        if not (self.refuse_busy or (st.op is not None and not st.held)):
            return None
        op = st.op
        token = params.get("ClientRequestToken")
        if op and known and token and (known.arn, token) == (op.change_set, op.token):
            return 200, _ok_xml(action)  # botocore's retry of the execute under way
        if action == "DeleteStack" and shown.status == "DELETE_IN_PROGRESS":
            return 200, _ok_xml(action)  # already being deleted
        if action == "DeleteStack" and shown.status == "CREATE_IN_PROGRESS":
            return None  # CloudFormation cancels the create and deletes the stack
        self.refused_busy.append((action, stack))
        return shown.status

    def _drift_answer(self, params: dict[str, str]) -> bytes | None:
        """The proxy's own answer to a drift call about a scripted stack (None: to moto)."""
        action = params["Action"]
        if action == "DescribeStackDriftDetectionStatus":
            detection = self._detections.get(params.get("StackDriftDetectionId", ""))
            return None if detection is None else self._detection_status(params, detection)
        stack = _name(params.get("StackName", ""))
        script = self._drift.get(stack)
        if script is None:
            return None
        stack_id = self._stack(stack).stack_id or _made_up_arn(stack)
        if action == "DetectStackDrift":
            detection_id = str(uuid.uuid4())
            self._detections[detection_id] = _Detection(stack, script, script.polls)
            self.detections.append(stack)
            return _result_xml(action, [("StackDriftDetectionId", detection_id)])
        wanted = {v for k, v in params.items() if k.startswith("StackResourceDriftStatusFilters.")}
        found = [r for r in script.resources if not wanted or r.status in wanted]
        start = int(params.get("NextToken") or 0)
        size = int(params.get("MaxResults") or 100)
        root = ET.Element(_q(f"{action}Response"))
        result = ET.SubElement(root, _q(f"{action}Result"))
        drifts = ET.SubElement(result, _q("StackResourceDrifts"))
        for r in found[start : start + size]:
            _resource_drift(ET.SubElement(drifts, _q("member")), stack_id, r)
        if start + size < len(found):
            ET.SubElement(result, _q("NextToken")).text = str(start + size)
        return ET.tostring(root, encoding="unicode", default_namespace=NS).encode()

    def _detection_status(self, params: dict[str, str], detection: _Detection) -> bytes:
        script = detection.script
        fields = [
            ("StackId", self._stack(detection.stack).stack_id or _made_up_arn(detection.stack)),
            ("StackDriftDetectionId", params["StackDriftDetectionId"]),
        ]
        if detection.polls > 0:
            detection.polls -= 1
            fields += [
                ("StackDriftStatus", "UNKNOWN"),
                ("DetectionStatus", "DETECTION_IN_PROGRESS"),
            ]
        else:
            drifted = [r for r in script.resources if r.status in ("MODIFIED", "DELETED")]
            complete = script.status == "DETECTION_COMPLETE"
            shown = ("DRIFTED" if drifted else "IN_SYNC") if complete else "UNKNOWN"
            fields += [("StackDriftStatus", shown), ("DetectionStatus", script.status)]
            if script.reason:
                fields.append(("DetectionStatusReason", script.reason))
            fields.append(("DriftedStackResourceCount", str(len(drifted))))
        fields.append(("Timestamp", _now_xml()))
        return _result_xml("DescribeStackDriftDetectionStatus", fields)

    # -- state changes, with the lock held -------------------------------------------------
    def _advance(self, now: float) -> None:
        """Move every paced operation to `now`: publish the events whose time has come; an
        operation at its end leaves moto's status (or a sticky rollback status) shown."""
        for name, st in self._stacks.items():
            op = st.op
            if op is None:
                continue
            while op.published < len(op.steps) and op.steps[op.published][0] <= now:
                at, _, events = op.steps[op.published]
                when = min(op.wall + dt.timedelta(seconds=at - op.start), dt.datetime.now(dt.UTC))
                self._publish(st, name, op.stack_id, events, when)
                op.published += 1
            if op.published == len(op.steps):
                st.op, last = None, op.steps[-1][1]
                if last is not None:
                    st.sticky = last
                known = self._change_sets.get(op.change_set)
                if known is not None and last is not None:
                    known.execution = "EXECUTE_FAILED"

    def _on_create_change_set(self, params: dict[str, str], data: bytes, now: float) -> None:
        stack = _name(params["StackName"])
        root = ET.fromstring(data)
        arn, stack_id = root.findtext(f".//{_q('Id')}", ""), root.findtext(f".//{_q('StackId')}")
        known = _ChangeSet(
            stack,
            params.get("ChangeSetType", "CREATE"),  # moto's default is CREATE
            arn,
            stack_id or "",
            now,
            now + self._pace[0] if self._pace else None,
        )
        self._change_sets[(stack, params["ChangeSetName"])] = known
        if arn:
            self._change_sets[arn] = known
        if stack_id:
            self._stack(stack).stack_id = stack_id

    def _known(self, params: dict[str, str]) -> _ChangeSet | None:
        """The change set an ExecuteChangeSet (or DescribeChangeSet...) names."""
        name = params.get("ChangeSetName", "")
        stack = _name(params.get("StackName", ""))
        return self._change_sets.get(name) or self._change_sets.get((stack, name))

    def _on_execute(
        self,
        params: dict[str, str],
        before: ET.Element | None,
        now: float,
        window: tuple[dt.datetime, dt.datetime],
    ) -> None:
        known = self._known(params)
        if known is None:
            return
        st, kind = self._stack(known.stack), known.kind
        st.op = None
        if st.sticky and st.sticky.status == "UPDATE_ROLLBACK_COMPLETE":
            st.sticky = None
        if known.stack_id:
            st.stack_id = known.stack_id
        if self._pace is not None and st.slow is None:
            return self._pace_execute(st, known, params, before, now, window)
        busy = _Frame(f"{kind}_IN_PROGRESS")
        if st.fail is not None:
            (polls, reason, resource), st.fail = st.fail, None
            verb, pre = ("create", "") if kind == "CREATE" else ("update", "UPDATE_")
            why = f"The following resource(s) failed to {verb}: [{resource}]."
            rolling, done = f"{pre}ROLLBACK_IN_PROGRESS", f"{pre}ROLLBACK_COMPLETE"
            failed: tuple[_EVENT, ...] = (
                (resource, f"{kind}_FAILED", reason),
                (None, rolling, why),
            )
            restore = kind == "UPDATE" and before is not None
            st.before = before
            st.script = [busy] * polls + [
                _Frame(rolling, failed, why, rolled_back=restore),
                _Frame(done, ((None, done, ""),), sticky=True, rolled_back=restore),
            ]
        elif st.slow is not None:
            st.script, st.slow = [busy] * st.slow, None

    def _pace_execute(
        self,
        st: _Stack,
        known: _ChangeSet,
        params: dict[str, str],
        before: ET.Element | None,
        now: float,
        window: tuple[dt.datetime, dt.datetime],
    ) -> None:
        assert self._pace is not None
        took, kind = self._pace[1], known.kind
        st.before, st.script = before, []
        restore, bare = kind == "UPDATE" and before is not None, kind == "CREATE"

        def frame(status: str, reason: str | None = None, sticky: bool = False) -> _Frame:
            return _Frame(status, (), reason, sticky, rolled_back=restore, no_outputs=bare)

        busy = f"{kind}_IN_PROGRESS"
        steps: list[tuple[float, _Frame | None, tuple[_EVENT, ...]]] = [
            (now, frame(busy), ((None, busy, "User Initiated"),))
        ]
        if st.fail is None:
            steps.append((now + took, None, ((None, f"{kind}_COMPLETE", ""),)))
        else:
            (_, reason, resource), st.fail = st.fail, None
            verb, pre = ("create", "") if kind == "CREATE" else ("update", "UPDATE_")
            why = f"The following resource(s) failed to {verb}: [{resource}]."
            rolling, done = f"{pre}ROLLBACK_IN_PROGRESS", f"{pre}ROLLBACK_COMPLETE"
            failed = ((resource, f"{kind}_FAILED", reason), (None, rolling, why))
            steps.append((now + took, frame(rolling, why), failed))
            steps.append((now + 2 * took, frame(done, sticky=True), ((None, done, ""),)))
        st.quiet.append(window)
        token = params.get("ClientRequestToken")
        st.op = _Op(st.stack_id, now, window[1], steps, known.arn, token)
        self._advance(now)

    def _on_delete(
        self,
        stack: str,
        ghost: ET.Element | None,
        now: float,
        window: tuple[dt.datetime, dt.datetime],
    ) -> None:
        st = self._stack(stack)
        st.sticky, st.script, st.ghost, st.op = None, [], ghost, None  # events: by StackId
        if st.slow is not None:
            st.script, st.slow = [_Frame("DELETE_IN_PROGRESS")] * st.slow, None
        elif self._pace is not None and ghost is not None:
            st.stack_id = ghost.findtext(_q("StackId"), "")
            steps: list[tuple[float, _Frame | None, tuple[_EVENT, ...]]] = [
                (
                    now,
                    _Frame("DELETE_IN_PROGRESS"),
                    ((None, "DELETE_IN_PROGRESS", "User Initiated"),),
                ),
                (now + self._pace[1], None, ((None, "DELETE_COMPLETE", ""),)),
            ]
            st.quiet.append(window)
            st.op = _Op(st.stack_id, now, window[1], steps)
            self._advance(now)

    def _shown(self, st: _Stack, stack_id: str | None) -> _Frame | None:
        """What the stack shows now, without moving a script on (None: moto's status).
        `stack_id`: of the stack in a response (a paced operation is of one stack only)."""
        if st.held:
            return _Frame(st.held)
        if st.op is not None:
            return st.op.frame() if stack_id in (None, "", st.op.stack_id) else None
        return st.script[0] if st.script else st.sticky

    def _next_frame(self, member: ET.Element) -> _Frame | None:
        """What DescribeStacks shows for this stack now (None: moto's status)."""
        name, stack_id = member.findtext(_q("StackName"), ""), member.findtext(_q("StackId"), "")
        st = self._stacks.get(name)
        if st is None:
            return None
        if st.held or st.op is not None or not st.script:
            return self._shown(st, stack_id)
        frame = st.script.pop(0)
        self._publish(st, name, stack_id, frame.events)
        if frame.sticky:
            st.sticky = frame
        return frame

    def _publish(
        self,
        st: _Stack,
        name: str,
        stack_id: str,
        events: tuple[_EVENT, ...],
        when: dt.datetime | None = None,
    ) -> None:
        for resource, status, reason in events:
            stamp = when or dt.datetime.now(dt.UTC)
            self._last_event = max(stamp, self._last_event + dt.timedelta(microseconds=1))
            event = ET.Element(_q("member"))
            for tag, text in [
                ("StackId", stack_id),
                ("EventId", str(uuid.uuid4())),
                ("StackName", name),
                ("LogicalResourceId", resource or name),
                ("PhysicalResourceId", "" if resource else stack_id),
                ("ResourceType", "Custom::Injected" if resource else "AWS::CloudFormation::Stack"),
                ("Timestamp", self._last_event.strftime("%Y-%m-%dT%H:%M:%S.%fZ")),
                ("ResourceStatus", status),
                ("ResourceStatusReason", reason),
            ]:
                if text:
                    ET.SubElement(event, _q(tag)).text = text
            st.events.append(event)

    # -- response rewriting, with the lock held --------------------------------------------
    def _describe_stacks(
        self, params: dict[str, str], status: int, data: bytes
    ) -> tuple[int, bytes]:
        wanted = _name(params["StackName"]) if "StackName" in params else None
        deleting = {
            name: st.ghost
            for name, st in self._stacks.items()
            if st.ghost is not None and _deleting(st) and wanted in (None, name)
        }
        if status != 200:  # "Stack with id X does not exist": unless it is still being deleted
            if not deleting:
                return status, data
            data = _NO_STACKS
        root = ET.fromstring(data)
        stacks = root.find(f".//{_q('Stacks')}")
        if stacks is None:
            return status, data
        if root.find(f".//{_q('NextToken')}") is None:  # the last page
            shown = {m.findtext(_q("StackName")) for m in stacks}
            stacks.extend(copy.deepcopy(g) for n, g in deleting.items() if n not in shown)
        for member in stacks:
            name = member.findtext(_q("StackName"), "")
            st = self._stacks.get(name)
            if st is not None and member.findtext(_q("StackStatus")) != "DELETE_COMPLETE":
                st.stack_id = member.findtext(_q("StackId"), "") or st.stack_id
            if frame := self._next_frame(member):
                _set(member, "StackStatus", frame.status)
                if frame.reason:
                    _set(member, "StackStatusReason", frame.reason)
                before = self._stacks[name].before
                if frame.rolled_back and before is not None:
                    _restore(member, before)
                if frame.no_outputs:
                    for outputs in member.findall(_q("Outputs")):
                        member.remove(outputs)
        return 200, ET.tostring(root, encoding="unicode", default_namespace=NS).encode()

    def _describe_events(self, stack: str, data: bytes) -> bytes:
        st = self._stacks.get(stack)
        if st is None or not (st.events or st.quiet):
            return data
        root = ET.fromstring(data)
        events = root.find(f".//{_q('StackEvents')}")
        if events is None:
            return data
        ids = {m.findtext(_q("StackId")) for m in events}
        for member in list(events):  # moto's own events of a paced operation: all at once
            when = _when(member.findtext(_q("Timestamp")))
            if member.findtext(_q("ResourceType")) == "AWS::CloudFormation::Stack" and any(
                start <= when <= end for start, end in st.quiet
            ):
                events.remove(member)
        # the proxy's events of this stack (not of an earlier one of the same name)
        events.extend(copy.deepcopy(e) for e in st.events if e.findtext(_q("StackId")) in ids)
        events[:] = sorted(events, key=lambda m: _when(m.findtext(_q("Timestamp"))), reverse=True)
        return ET.tostring(root, encoding="unicode", default_namespace=NS).encode()

    def _change_set_views(self, data: bytes, now: float) -> bytes:
        """DescribeChangeSet's result or ListChangeSets' summaries as the pace has them."""
        root = ET.fromstring(data)
        views = root.findall(f".//{_q('Summaries')}/{_q('member')}") or root.findall(
            f".//{_q('DescribeChangeSetResult')}"
        )
        changed = False
        for view in views:
            known = self._change_sets.get(view.findtext(_q("ChangeSetId"), ""))
            if known is None:
                continue
            st = self._stacks.get(known.stack)
            executing = st is not None and st.op is not None and st.op.change_set == known.arn
            if status := known.pending(now):
                _set(view, "Status", status)
                _set(view, "ExecutionStatus", "UNAVAILABLE")
                for reason in view.findall(_q("StatusReason")):
                    view.remove(reason)
                for changes in view.findall(_q("Changes")):
                    changes.clear()  # an empty list
            elif executing or known.execution:
                _set(view, "ExecutionStatus", known.execution or "EXECUTE_IN_PROGRESS")
            else:
                continue
            changed = True
        if not changed:
            return data
        return ET.tostring(root, encoding="unicode", default_namespace=NS).encode()

    def _list_stacks(self, data: bytes, filters: set[str]) -> bytes:
        root = ET.fromstring(data)
        summaries = root.find(f".//{_q('StackSummaries')}")
        if summaries is None:
            return data
        for member in list(summaries):
            name, stack_id = member.findtext(_q("StackName"), ""), member.findtext(_q("StackId"))
            st = self._stacks.get(name)
            ghost_id = st.ghost.findtext(_q("StackId")) if st and st.ghost is not None else None
            live = member.findtext(_q("StackStatus")) != "DELETE_COMPLETE" or (
                st is not None and _deleting(st) and stack_id == ghost_id
            )
            frame = self._shown(st, stack_id) if st is not None and live else None
            if frame is not None:
                _set(member, "StackStatus", frame.status)
                for gone in member.findall(_q("DeletionTime")):
                    member.remove(gone)
            if filters and member.findtext(_q("StackStatus")) not in filters:
                summaries.remove(member)
        return ET.tostring(root, encoding="unicode", default_namespace=NS).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # so that `Expect: 100-continue` (S3 uploads) is answered
    proxy: FaultProxy

    def _handle(self) -> None:
        self.proxy._serve(self)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _handle

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _reply(h: _Handler, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
    h.send_response_only(status)
    for key, value in headers:  # a HEAD reply keeps moto's Content-Length and has no body
        if key.lower() not in _HOP or (key.lower() == "content-length" and h.command == "HEAD"):
            h.send_header(key, value)
    if h.command != "HEAD":
        h.send_header("Content-Length", str(len(data)))
    h.send_header("Connection", "close")
    h.end_headers()
    if h.command != "HEAD":
        h.wfile.write(data)


def _deleting(st: _Stack) -> bool:
    """Whether the stack is shown while moto has deleted it (a slow or paced delete)."""
    return st.ghost is not None and (bool(st.script) or st.op is not None)


def _error_xml(status: int, code: str, message: str) -> bytes:
    kind = "Receiver" if status >= 500 else "Sender"
    return (
        f'<ErrorResponse xmlns="{NS}"><Error><Type>{kind}</Type><Code>{escape(code)}</Code>'
        f"<Message>{escape(message)}</Message></Error><RequestId>{uuid.uuid4()}</RequestId>"
        "</ErrorResponse>"
    ).encode()


def _ok_xml(action: str) -> bytes:
    """An empty success reply (ExecuteChangeSet, DeleteStack) from the proxy itself."""
    return (
        f'<{action}Response xmlns="{NS}"><{action}Result/><ResponseMetadata>'
        f"<RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata></{action}Response>"
    ).encode()


def _result_xml(action: str, fields: list[tuple[str, str]]) -> bytes:
    root = ET.Element(_q(f"{action}Response"))
    result = ET.SubElement(root, _q(f"{action}Result"))
    for tag, text in fields:
        ET.SubElement(result, _q(tag)).text = text
    meta = ET.SubElement(root, _q("ResponseMetadata"))
    ET.SubElement(meta, _q("RequestId")).text = str(uuid.uuid4())
    return ET.tostring(root, encoding="unicode", default_namespace=NS).encode()


def _resource_drift(member: ET.Element, stack_id: str, r: Drifted) -> None:
    """One StackResourceDrifts member as CloudFormation writes it: the expected and actual
    properties (as JSON text) and each difference with both values."""
    expected = {path.strip("/"): old for path, _, old, _ in r.differences}
    actual = {path.strip("/"): new for path, _, _, new in r.differences}
    for tag, text in [
        ("StackId", stack_id),
        ("LogicalResourceId", r.logical_id),
        ("PhysicalResourceId", f"{r.logical_id}-physical"),
        ("ResourceType", r.type),
        ("ExpectedProperties", json.dumps(expected)),
        ("ActualProperties", json.dumps(actual) if r.status != "DELETED" else ""),
    ]:
        if text:
            ET.SubElement(member, _q(tag)).text = text
    differences = ET.SubElement(member, _q("PropertyDifferences"))
    for path, kind, old, new in r.differences:
        difference = ET.SubElement(differences, _q("member"))
        for tag, text in [
            ("PropertyPath", path),
            ("ExpectedValue", old),
            ("ActualValue", new),
            ("DifferenceType", kind),
        ]:
            ET.SubElement(difference, _q(tag)).text = text
    ET.SubElement(member, _q("StackResourceDriftStatus")).text = r.status
    ET.SubElement(member, _q("Timestamp")).text = _now_xml()


def _made_up_arn(stack: str) -> str:
    return f"arn:aws:cloudformation:us-east-1:123456789012:stack/{stack}/{uuid.uuid4()}"


def _now_xml() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _q(tag: str) -> str:
    return f"{{{NS}}}{tag}"


def _name(stack: str) -> str:
    """The stack name from a name or a stack ARN (arn:...:stack/NAME/ID)."""
    return stack.split("/")[1] if stack.startswith("arn:") else stack


def _restore(member: ET.Element, before: ET.Element) -> None:
    """Show what a rollback puts back: the earlier parameters, outputs and tags."""
    for tag in ("Parameters", "Outputs", "Tags"):
        for old in member.findall(_q(tag)):
            member.remove(old)
        if (earlier := before.find(_q(tag))) is not None:
            member.append(copy.deepcopy(earlier))


def _s3_error_xml(code: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
        f"<Message>Injected {code}</Message></Error>"
    ).encode()


def _set(parent: ET.Element, tag: str, text: str) -> None:
    child = parent.find(_q(tag))
    (ET.SubElement(parent, _q(tag)) if child is None else child).text = text


def _when(stamp: str | None) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp) if stamp else dt.datetime.min.replace(tzinfo=dt.UTC)
