"""The reliability campaigns' proxy: CloudFormation's pace, CloudFormation's refusals, and faults
of the network and of the services, for a window of time, on one kind of call.

`FaultyProxy` extends `pace.PacedProxy` (the test suite's `FaultProxy` with CreateStack and
UpdateStack paced too). What the test proxy already models is used as it is: `pace(change_set,
operation)` (change sets pending, operations in progress, busy stacks refusing work, a retried
ExecuteChangeSet with the running operation's ClientRequestToken answered without reaching
moto), `error`/`throttle` (the next N calls of an action), `s3_error(store=True)` and
`s3_down`. Added here, because the campaigns need them:

- **Faults for a window of time on one target**: `inject(target, fault, seconds=, times=)`. A
  target is a CloudFormation action ("CreateChangeSet"; DescribeStacks is two targets:
  "DescribeStacks" by name and "DescribeStacks (listing)", the paginated look at the account)
  or an S3 operation ("S3 PutObject", "S3 GetObject", "S3 ListObjectsV2"). The faults
  (`FAULTS`): `5xx` (500 InternalFailure / InternalError), `throttle` (400 Throttling /
  503 SlowDown), `reset` (the connection is reset, no answer), `timeout` (no answer for longer
  than syncd's read timeout for that service, then a reset), `slow_body` (moto's answer, its
  body sent in ten pieces over `slow_seconds`), `truncated` (moto's answer cut in half, the
  connection closed), `stored_500` and `stored_reset` (moto takes the request, the client gets
  a 500 or a reset). The first four never reach moto; the last four do.
- **CloudFormation's refusals that moto lacks**: moto accepts a second CreateChangeSet of a
  name it holds (making a second change set of that name) and executes a change set as often as
  it is asked. CloudFormation answers AlreadyExistsException to the first and refuses the second
  (InvalidChangeSetStatus, "cannot be executed in its current status of [EXECUTE_COMPLETE]"), so
  the proxy does too, without reaching moto. Assumed: a repeated execute with the token of the
  accepted one is answered 200 while that execute is on its way to moto or its operation runs
  (the test proxy's token rule), and refused like any other repeat once the operation has
  ended (CloudFormation documents the token for retries, not what a late retry gets).
- **A ledger of every ExecuteChangeSet** (`executions`): when it arrived, the change set, its
  token and what became of it: `accepted` (moto executed it), `repeat_refused` /
  `token_retry` (the refusals above, and the test proxy's token rule), `refused_busy`,
  `refused_early`, `moto_error`, or `injected:<fault>`. A change set is executed twice only if
  two of its entries are `accepted` (by ARN, or by stack and name).
- **Listeners** (`listen`): called in the proxy's thread when a request arrives (before moto
  sees it) and when its answer is ready (moto has acted; the client has not heard yet), so a
  campaign can kill syncd at exactly those points.

Not modelled: what a real timeout does to a request already sent (the proxy's `timeout` never
forwards it); more than one page of DescribeStacks (moto pages at 50 stacks); CloudFormation's
removal of a stack's other change sets after an execute (names stay taken until
DeleteChangeSet or DeleteStack, which is stricter).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import random
import re
import socket
import struct
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # syncd, tests.support

from pace import PacedProxy

from syncd import cloudformation as syncd_cfn
from syncd import s3 as syncd_s3
from tests.support.cfn_proxy import (
    _SCOPE,
    Call,
    _error_xml,
    _Handler,
    _name,
    _s3_error_xml,
)

FAULTS = (
    "5xx",
    "throttle",
    "reset",
    "timeout",
    "slow_body",
    "truncated",
    "stored_500",
    "stored_reset",
)
BEFORE_MOTO = frozenset({"5xx", "throttle", "reset", "timeout"})  # never forwarded
LISTING = "DescribeStacks (listing)"
# syncd's own read timeouts (botocore's Config in syncd/cloudformation.py and syncd/s3.py): a
# `timeout` holds the request this much longer than the client waits.
CFN_READ_TIMEOUT = float(syncd_cfn._RETRY_CONFIG.read_timeout)
S3_READ_TIMEOUT = float(syncd_s3._CONFIG.read_timeout)
TIMEOUT_MARGIN = 2.0
_CHANGE_SET_NAME = re.compile(r":changeSet/([^/]+)/")


class Seen(NamedTuple):
    """A request as a listener sees it."""

    phase: str  # "arrive" (moto has not seen it) | "answered" (the client has not heard yet)
    target: str
    stack: str | None
    status: int | None  # the answer's status ("answered" only)
    body: bytes  # the request's body


@dataclass
class Execution:
    """One ExecuteChangeSet as the proxy saw it."""

    at: float  # the proxy's clock
    wall: str  # UTC, ISO: to compare with journal record times
    stack: str
    arn: str
    name: str
    token: str
    outcome: str = "?"
    status: int | None = None
    says: str = ""  # the error's message, for a refusal


@dataclass
class _Rule:
    target: str
    fault: str
    until: float  # the proxy's clock
    times: int | None  # calls left (None: the whole window)


@dataclass
class Hit:
    at: float
    target: str
    fault: str
    stack: str | None


@dataclass
class _Local(threading.local):
    forwarded: int | None = None  # moto's status for this thread's ExecuteChangeSet


class _QuietServer(ThreadingHTTPServer):
    """A client that syncd's kill or a fault leaves behind is not an error worth a traceback,
    and `stop()` does not wait for a request the proxy holds on purpose."""

    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


@dataclass
class _Request:
    target: str
    service: str  # "cloudformation" | "s3" | ""
    action: str
    params: dict[str, str] = field(default_factory=dict)
    stack: str | None = None


class FaultyProxy(PacedProxy):
    """`FaultyProxy(moto_url, seed=...).start()`; `pace_between(change_set, low, high)` gives each
    operation a duration drawn from [low, high]."""

    def __init__(self, upstream_url: str, seed: int = 0, slow_seconds: float = 8.0) -> None:
        super().__init__(upstream_url)
        self.slow_seconds = slow_seconds
        self.executions: list[Execution] = []
        self.hits: list[Hit] = []
        self.s3_calls: list[tuple[float, str, int | None]] = []  # (clock, target, status)
        self._rules: list[_Rule] = []
        self._listeners: list[Callable[[Seen], None]] = []
        self._model = threading.Lock()  # the change set names and executions below
        self._names: dict[tuple[str, str], str] = {}  # (stack, name) -> ARN, live in moto
        self._creating: set[tuple[str, str]] = set()
        self._executed: dict[str, str] = {}  # ARN -> token of its accepted execute
        self._executing: dict[str, str] = {}  # ARN -> token, on its way to moto
        self._op_range: tuple[float, float] | None = None
        self._op_rng = random.Random(seed)
        self._stopping = threading.Event()
        self._local = _Local()

    # -- set-up ---------------------------------------------------------------------------------
    def start(self) -> FaultyProxy:
        handler = type("Handler", (_Handler,), {"proxy": self})
        self._server = server = _QuietServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        super().stop()

    def pace_between(self, change_set: float, low: float, high: float) -> None:
        self.pace(change_set, low)
        with self._lock:
            self._op_range = (low, high)

    def change_set_time(self, seconds: float) -> None:
        """Change sets created from now on take `seconds` to be ready."""
        with self._lock:
            assert self._pace is not None
            self._pace = (seconds, self._pace[1])

    def inject(
        self, target: str, fault: str, seconds: float = 0.0, times: int | None = None
    ) -> None:
        """`fault` on every `target` call for `seconds` (or on the next `times` of them)."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}")
        until = self.clock() + seconds if seconds else float("inf")
        with self._lock:
            self._rules.append(_Rule(target, fault, until, times))

    def clear_faults(self) -> None:
        with self._lock:
            self._rules.clear()

    def listen(self, listener: Callable[[Seen], None]) -> None:
        with self._lock:
            self._listeners.append(listener)

    def unlisten(self, listener: Callable[[Seen], None]) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def busy(self) -> list[str]:
        """The stacks with a paced operation under way now."""
        with self._lock:
            self._advance(self.clock())
            return sorted(name for name, st in self._stacks.items() if st.op is not None)

    # -- one request ----------------------------------------------------------------------------
    def _serve(self, h: Any) -> None:
        expected = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(expected)
        if len(body) < expected:  # the client went away mid-request: nothing reaches moto
            h.close_connection = True
            return
        h.rfile = io.BytesIO(body)
        req = self._classify(h, body)
        self._tell(Seen("arrive", req.target, req.stack, None, body))
        rule = self._rule_for(req)
        if rule is not None and rule.fault in BEFORE_MOTO:
            return self._fault_before(h, req, rule.fault)
        refusal = self._refusal(req)
        if refusal is not None:
            self._note_own(req, refusal[1])
            if rule is not None:  # CloudFormation's answer, spoilt like any other
                return self._fault_after(h, req, rule.fault, _response(*refusal[1:]))
            return _raw_reply(h, *refusal[1:])
        real = h.wfile
        h.wfile = buffer = io.BytesIO()
        self._local.forwarded = None
        try:
            super()._serve(h)
        finally:
            h.wfile = real
        raw = buffer.getvalue()
        status = _status_of(raw)
        self._after(req, status, raw)
        self._tell(Seen("answered", req.target, req.stack, status, body))
        if rule is not None:
            return self._fault_after(h, req, rule.fault, raw)
        with contextlib.suppress(OSError):
            real.write(raw)

    def _forward(self, h: Any, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        if b"Action=ExecuteChangeSet" not in body:
            return super()._forward(h, body)
        params = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        arn = self._arn_of(_Request("ExecuteChangeSet", "cloudformation", "", params))
        with self._model:
            done = arn in self._executed
        if done:  # its operation ended since `_refusal` looked: never to moto a second time
            self._local.forwarded = -1
            msg = (
                f"ChangeSet [{arn}] cannot be executed in its current status of [EXECUTE_COMPLETE]"
            )
            return (
                400,
                [("Content-Type", "text/xml")],
                _error_xml(400, "InvalidChangeSetStatus", msg),
            )
        status, headers, data = super()._forward(h, body)
        self._local.forwarded = status
        return status, headers, data

    def _pace_execute(self, *args: Any, **kwargs: Any) -> None:
        if self._pace is not None and self._op_range is not None:  # the lock is held
            self._pace = (self._pace[0], self._op_rng.uniform(*self._op_range))
        super()._pace_execute(*args, **kwargs)

    # -- what a request is ----------------------------------------------------------------------
    def _classify(self, h: Any, body: bytes) -> _Request:
        scope = _SCOPE.search(h.headers.get("Authorization", ""))
        service = scope.group(2) if scope else ""
        if service == "s3":
            return _Request(f"S3 {_s3_operation(h.command, h.path)}", "s3", h.command)
        form = h.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded")
        if service != "cloudformation" or not form:
            return _Request(f"{service or 'other'} {h.command}", service, h.command)
        params = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        action = params.get("Action", "")
        with self._lock:
            stack = self._stack_of(action, params)
        target = LISTING if action == "DescribeStacks" and not params.get("StackName") else action
        return _Request(target, service, action, params, stack)

    def _rule_for(self, req: _Request) -> _Rule | None:
        with self._lock:
            now = self.clock()
            self._rules = [r for r in self._rules if r.until > now and r.times != 0]
            for rule in self._rules:
                if rule.target == req.target:
                    if rule.times is not None:
                        rule.times -= 1
                    self.hits.append(Hit(now, req.target, rule.fault, req.stack))
                    return rule
        return None

    def _tell(self, seen: Seen) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(seen)

    # -- faults ---------------------------------------------------------------------------------
    def _fault_before(self, h: Any, req: _Request, fault: str) -> None:
        self._note_own(req, None, fault)
        if fault == "5xx":
            return _error_reply(h, req, 500)
        if fault == "throttle":
            return _error_reply(h, req, 400 if req.service == "cloudformation" else 503)
        if fault == "timeout":
            hold = CFN_READ_TIMEOUT if req.service == "cloudformation" else S3_READ_TIMEOUT
            self._stopping.wait(hold + TIMEOUT_MARGIN)
        _reset(h)

    def _fault_after(self, h: Any, req: _Request, fault: str, raw: bytes) -> None:
        head, _, data = raw.partition(b"\r\n\r\n")
        try:
            if fault == "slow_body":
                h.wfile.write(head + b"\r\n\r\n")
                pieces = 10
                size = max(1, -(-len(data) // pieces))
                for i in range(pieces):
                    self._stopping.wait(self.slow_seconds / pieces)
                    if chunk := data[i * size : (i + 1) * size]:
                        h.wfile.write(chunk)
            elif fault == "truncated":
                h.wfile.write(head + b"\r\n\r\n" + data[: len(data) // 2])
                h.connection.shutdown(socket.SHUT_RDWR)
                h.close_connection = True
            elif fault == "stored_500":
                _error_reply(h, req, 500)
            else:  # stored_reset
                _reset(h)
        except OSError:
            h.close_connection = True

    # -- CloudFormation's refusals and the ledger -----------------------------------------------
    def _refusal(self, req: _Request) -> tuple[str, int, str, bytes] | None:
        """(outcome, status, content type, body) of a refusal of the proxy's own, else None (the
        request goes on, and is noted as on its way to moto)."""
        if req.action == "CreateChangeSet" and req.stack:
            key = (req.stack, req.params.get("ChangeSetName", ""))
            with self._model:
                if key in self._names or key in self._creating:
                    msg = f"ChangeSet [{key[1]}] already exists"
                    return "exists", 400, "text/xml", _error_xml(400, "AlreadyExistsException", msg)
                self._creating.add(key)
            return None
        if req.action != "ExecuteChangeSet":
            return None
        arn, token = self._arn_of(req), req.params.get("ClientRequestToken", "")
        with self._lock:
            self._advance(self.clock())
            st = self._stacks.get(req.stack or "")
            running = st is not None and st.op is not None and st.op.change_set == arn
        with self._model:
            accepted, on_its_way = self._executed.get(arn), self._executing.get(arn)
            if accepted is None and on_its_way is None:
                self._executing[arn] = token
                return None
            if accepted is not None and running and token and accepted == token:
                return None  # the test proxy's token rule answers it: the operation under way
            if accepted is None and on_its_way == token and token:
                outcome, answer = "token_retry", (200, "text/xml", _ok(req.action))
            else:
                msg = f"ChangeSet [{arn}] cannot be executed in its current status of "
                msg += "[EXECUTE_COMPLETE]" if accepted and not running else "[EXECUTE_IN_PROGRESS]"
                error = _error_xml(400, "InvalidChangeSetStatus", msg)
                outcome, answer = "repeat_refused", (400, "text/xml", error)
            self.executions.append(self._execution(req, arn, token, outcome, answer[0]))
        return (outcome, *answer)

    def _after(self, req: _Request, status: int | None, raw: bytes = b"") -> None:
        if req.service == "s3":
            with self._lock:
                self.s3_calls.append((self.clock(), req.target, status))
            return
        with self._model:
            if req.action == "CreateChangeSet" and req.stack:
                key = (req.stack, req.params.get("ChangeSetName", ""))
                self._creating.discard(key)
                if status == 200:
                    with self._lock:
                        known = self._change_sets.get(key)
                    self._names[key] = known.arn if known else ""
            elif req.action == "DeleteChangeSet" and status == 200:
                arn = self._arn_of(req)
                for key, value in list(self._names.items()):
                    if arn in (value, key[1]) or key == (req.stack, _change_set_name(arn)):
                        del self._names[key]
            elif req.action == "DeleteStack" and status == 200 and req.stack:
                for key in [k for k in self._names if k[0] == req.stack]:
                    del self._names[key]
            elif req.action == "ExecuteChangeSet":
                arn, token = self._arn_of(req), req.params.get("ClientRequestToken", "")
                self._executing.pop(arn, None)
                forwarded = self._local.forwarded
                if forwarded == -1:
                    outcome = "repeat_refused"
                elif forwarded == 200:
                    outcome = "accepted"
                    self._executed[arn] = token
                elif forwarded is not None:
                    outcome = "moto_error"
                elif status == 200:
                    outcome = "token_retry"  # the test proxy's rule: the operation under way
                else:
                    outcome = "refused_early" if status == 400 and self._was_early(req) else "?"
                    if outcome == "?" and status == 400:
                        outcome = "refused_busy"
                entry = self._execution(req, arn, token, outcome, status)
                if status != 200:
                    entry.says = _message(raw)
                self.executions.append(entry)

    def _was_early(self, req: _Request) -> bool:
        with self._lock:
            known = self._known(req.params)
            return known is not None and known.pending(self.clock()) is not None

    def _note_own(self, req: _Request, status: int | None, fault: str | None = None) -> None:
        """A call the proxy answered without the test proxy's code: into its log all the same."""
        if req.service == "s3":
            with self._lock:
                self.s3_calls.append((self.clock(), req.target, status))
            return
        if req.service != "cloudformation":
            return
        with self._lock:
            call = Call(self.clock(), req.action, req.stack)
            self.calls.append(req.action)
            self.events.append(req.action)
            self.log.append(call)
            if fault == "throttle":
                self.throttled.append(call)
        if fault is not None and req.action == "ExecuteChangeSet":
            with self._model:
                arn, token = self._arn_of(req), req.params.get("ClientRequestToken", "")
                self.executions.append(self._execution(req, arn, token, f"injected:{fault}", None))

    def _arn_of(self, req: _Request) -> str:
        with self._lock:
            known = self._known(req.params)
        return known.arn if known is not None else req.params.get("ChangeSetName", "")

    def _execution(
        self, req: _Request, arn: str, token: str, outcome: str, status: int | None
    ) -> Execution:
        wall = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        stack = req.stack or _name(req.params.get("StackName", ""))
        return Execution(
            self.clock(), wall, stack, arn, _change_set_name(arn), token, outcome, status
        )


# -- helpers --------------------------------------------------------------------------------------
def _s3_operation(method: str, path: str) -> str:
    parts = urlsplit(path)
    key = parts.path.lstrip("/").partition("/")[2]
    query = parse_qs(parts.query, keep_blank_values=True)
    if method == "GET" and not key:
        for marker, name in (
            ("versioning", "GetBucketVersioning"),
            ("versions", "ListObjectVersions"),
        ):
            if marker in query:
                return name
        return "ListObjectsV2" if query.get("list-type") == ["2"] else "ListObjects"
    return {"GET": "GetObject", "PUT": "PutObject", "HEAD": "HeadObject"}.get(method, method) + (
        "" if key else " (bucket)"
    )


def _message(raw: bytes) -> str:
    m = re.search(rb"<Message>(.*?)</Message>", raw, re.S)
    return m.group(1).decode(errors="replace")[:200] if m else ""


def _change_set_name(arn: str) -> str:
    m = _CHANGE_SET_NAME.search(arn)
    return m.group(1) if m else arn


def _status_of(raw: bytes) -> int | None:
    try:
        return int(raw.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None


def _ok(action: str) -> bytes:
    ns = "http://cloudformation.amazonaws.com/doc/2010-05-15/"
    return (
        f'<{action}Response xmlns="{ns}"><{action}Result/><ResponseMetadata><RequestId>'
        f"{random.getrandbits(64):016x}</RequestId></ResponseMetadata></{action}Response>"
    ).encode()


def _response(status: int, content_type: str, data: bytes) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 500: "Internal Server Error"}.get(status, "")
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + data


def _raw_reply(h: Any, status: int, content_type: str, data: bytes) -> None:
    try:
        h.send_response_only(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(data)))
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(data)
    except OSError:
        h.close_connection = True


def _error_reply(h: Any, req: _Request, status: int) -> None:
    if req.service == "cloudformation":
        code = "Throttling" if status == 400 else "InternalFailure"
        message = "Rate exceeded" if status == 400 else "Injected InternalFailure"
        return _raw_reply(h, status, "text/xml", _error_xml(status, code, message))
    code = "SlowDown" if status == 503 else "InternalError"
    _raw_reply(h, status, "application/xml", _s3_error_xml(code))


def _reset(h: Any) -> None:
    """Close the connection with a reset (RST), not an orderly end."""
    with contextlib.suppress(OSError):
        h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        h.connection.close()
    h.close_connection = True
