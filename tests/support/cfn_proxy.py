"""An HTTP fault-injection proxy in front of moto's server, for the test suite.

moto's CloudFormation is synchronous and never fails part-way: every operation is `*_COMPLETE`
when the call returns, and nothing rolls back. `FaultProxy` forwards every request to moto and
changes CloudFormation traffic (AWS query protocol, recognised like moto does, by the SigV4
credential scope) so that tests can show what moto cannot:

- `throttle` / `error`: the next N requests of an action get an error reply from the proxy
  itself and never reach moto.
- `slow`: after the stack's next ExecuteChangeSet or DeleteStack, N DescribeStacks responses that
  include it show CREATE_/UPDATE_/DELETE_IN_PROGRESS. A stack moto has already deleted is put
  back into those responses (from a snapshot taken just before the delete).
- `fail`: the stack's next execute shows N times *_IN_PROGRESS, once (UPDATE_)ROLLBACK_IN_PROGRESS,
  then ROLLBACK_COMPLETE (create) or UPDATE_ROLLBACK_COMPLETE (update), which stays until a
  DeleteStack (or, for the update, a later execute). DescribeStackEvents gets the resource's
  *_FAILED event and the rollback events as those states are shown, all newer than moto's.
  While an update shows its rollback, DescribeStacks also shows the parameters, outputs and tags
  the stack had before that execute, as CloudFormation would after rolling back.
- `hold`: DescribeStacks shows a fixed status (someone else's update) until `release`.
- S3: `s3_error` fails the next N requests of a method with an error reply (`store=True`:
  forwards the request first, so S3 keeps what the client is told failed); `s3_down`/`s3_up`
  answer every S3 request with 503 in between. `events` lists CloudFormation actions and S3
  requests ("PUT /bucket/key") in the order they arrived.

"Shown" means one scripted status per DescribeStacks response that includes the stack, by name,
by ARN or in the paginated listing; `hold` wins over the script and pauses it.

Not modelled: moto has applied the change (resources, template) whatever status is shown, and
a "failed" change is not undone beyond what DescribeStacks shows; no request is refused because
of a shown status (a held or ROLLBACK_COMPLETE stack still takes change sets: add an `error()`
for that); resources (DescribeStackResources, ListStackResources) keep moto's states; the failed
resource's type is made up (`fail(..., resource=)` names it). S3 and all other traffic passes
through untouched, and `calls` lists CloudFormation only. Request bodies are read by
Content-Length (botocore always sends one); chunked uploads are not supported.
"""

from __future__ import annotations

import copy
import datetime as dt
import http.client
import re
import threading
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit
from xml.sax.saxutils import escape

NS = "http://cloudformation.amazonaws.com/doc/2010-05-15/"
_SCOPE = re.compile(r"Credential=[^/,]*/[^/,]*/[^/,]*/([^/,]*)/aws4_request")
_HOP = {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "expect"}
_EVENT = tuple[str | None, str, str]  # (logical resource id, None for the stack; status; reason)
_NO_STACKS = (
    f'<DescribeStacksResponse xmlns="{NS}"><DescribeStacksResult><Stacks/></DescribeStacksResult>'
    "</DescribeStacksResponse>"
).encode()


@dataclass(frozen=True)
class _Frame:
    status: str  # shown as StackStatus
    events: tuple[_EVENT, ...] = ()  # published the first time the frame is shown
    reason: str | None = None  # shown as StackStatusReason
    sticky: bool = False  # keep showing it once the script has run out
    rolled_back: bool = False  # show the parameters, outputs and tags from before the execute


@dataclass
class _Stack:
    slow: int | None = None
    fail: tuple[int, str, str] | None = None  # (polls, reason, logical resource id)
    held: str | None = None
    script: list[_Frame] = field(default_factory=list)
    sticky: _Frame | None = None
    events: list[ET.Element] = field(default_factory=list)
    ghost: ET.Element | None = None  # DescribeStacks member of a stack being (slowly) deleted
    before: ET.Element | None = None  # its member before a failing update's execute


class FaultProxy:
    """`FaultProxy(emulator.url).start()`, then point boto3 at `.url`; `reset()` between tests."""

    def __init__(self, upstream_url: str) -> None:
        self.upstream = urlsplit(upstream_url).netloc  # host:port
        self.url = ""
        self.calls: list[str] = []
        self.events: list[str] = []
        self._s3_faults: list[tuple[str, int, str, bool]] = []  # (method, status, code, store)
        self._s3_down = False
        self._lock = threading.Lock()
        self._faults: dict[str, list[tuple[int, str, str]]] = {}  # action -> (status, code, msg)
        self._stacks: dict[str, _Stack] = {}
        self._change_sets: dict[Any, tuple[str, str]] = {}  # ARN | (stack, name) -> (stack, type)
        self._last_event = dt.datetime.now(dt.UTC)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

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
        """Forget every rule, scripted status, injected event and call."""
        with self._lock:
            self.calls.clear()
            self.events.clear()
            self._faults.clear()
            self._stacks.clear()
            self._s3_faults.clear()
            self._s3_down = False

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
        if scope and scope.group(1) == "s3":
            return self._serve_s3(h, body)
        if not (scope and scope.group(1) == "cloudformation" and form):
            return _reply(h, *self._forward(h, body))
        params = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        action = params.get("Action", "")
        with self._lock:
            self.calls.append(action)
            self.events.append(action)
            fault = self._faults[action].pop(0) if self._faults.get(action) else None
            st = self._stacks.get(_name(params.get("StackName", "")))
            slow_delete = action == "DeleteStack" and st is not None and bool(st.slow)
            known = self._known(params) if action == "ExecuteChangeSet" else None
            failing_update = (
                known is not None
                and known[1] == "UPDATE"
                and self._stack(known[0]).fail is not None
            )
        if fault:
            return _reply(h, fault[0], [("Content-Type", "text/xml")], _error_xml(*fault))
        ghost = self._snapshot(h, params["StackName"]) if slow_delete else None
        before = self._snapshot(h, known[0]) if known and failing_update else None
        status, headers, data = self._forward(h, body)
        with self._lock:
            if status == 200 and action == "CreateChangeSet":
                self._on_create_change_set(params, data)
            elif status == 200 and action == "ExecuteChangeSet":
                self._on_execute(params, before)
            elif status == 200 and action == "DeleteStack":
                self._on_delete(params["StackName"], ghost)
            elif action == "DescribeStacks" and status in (200, 400):
                status, data = self._describe_stacks(params, status, data)
            elif status == 200 and action == "DescribeStackEvents" and "NextToken" not in params:
                data = self._describe_events(_name(params["StackName"]), data)
        _reply(h, status, headers, data)

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

    # -- state changes, with the lock held -------------------------------------------------
    def _on_create_change_set(self, params: dict[str, str], data: bytes) -> None:
        stack = _name(params["StackName"])
        known = (stack, params.get("ChangeSetType", "CREATE"))  # moto's default is CREATE
        self._change_sets[(stack, params["ChangeSetName"])] = known
        if arn := ET.fromstring(data).findtext(f".//{_q('Id')}"):
            self._change_sets[arn] = known

    def _known(self, params: dict[str, str]) -> tuple[str, str] | None:
        """(stack, ChangeSetType) of the change set an ExecuteChangeSet names."""
        name = params["ChangeSetName"]
        stack = _name(params.get("StackName", ""))
        return self._change_sets.get(name) or self._change_sets.get((stack, name))

    def _on_execute(self, params: dict[str, str], before: ET.Element | None) -> None:
        known = self._known(params)
        if known is None:
            return
        st, kind = self._stack(known[0]), known[1]
        if st.sticky and st.sticky.status == "UPDATE_ROLLBACK_COMPLETE":
            st.sticky = None
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

    def _on_delete(self, stack: str, ghost: ET.Element | None) -> None:
        st = self._stack(stack)
        st.sticky, st.script, st.events, st.ghost = None, [], [], ghost
        if st.slow is not None:
            st.script, st.slow = [_Frame("DELETE_IN_PROGRESS")] * st.slow, None

    def _next_frame(self, member: ET.Element) -> _Frame | None:
        """What DescribeStacks shows for this stack now (None: moto's status)."""
        name, stack_id = member.findtext(_q("StackName"), ""), member.findtext(_q("StackId"), "")
        st = self._stacks.get(name)
        if st is None:
            return None
        if st.held:
            return _Frame(st.held)
        if not st.script:
            return st.sticky
        frame = st.script.pop(0)
        for resource, status, reason in frame.events:
            now = dt.datetime.now(dt.UTC)
            self._last_event = max(now, self._last_event + dt.timedelta(microseconds=1))
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
        if frame.sticky:
            st.sticky = frame
        return frame

    # -- response rewriting, with the lock held --------------------------------------------
    def _describe_stacks(
        self, params: dict[str, str], status: int, data: bytes
    ) -> tuple[int, bytes]:
        wanted = _name(params["StackName"]) if "StackName" in params else None
        deleting = {
            name: st.ghost
            for name, st in self._stacks.items()
            if st.ghost is not None and st.script and wanted in (None, name)
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
            if frame := self._next_frame(member):
                _set(member, "StackStatus", frame.status)
                if frame.reason:
                    _set(member, "StackStatusReason", frame.reason)
                before = self._stacks[member.findtext(_q("StackName"), "")].before
                if frame.rolled_back and before is not None:
                    _restore(member, before)
        return 200, ET.tostring(root, encoding="unicode", default_namespace=NS).encode()

    def _describe_events(self, stack: str, data: bytes) -> bytes:
        st = self._stacks.get(stack)
        if st is None or not st.events:
            return data
        root = ET.fromstring(data)
        events = root.find(f".//{_q('StackEvents')}")
        if events is None:
            return data
        events.extend(copy.deepcopy(st.events))
        events[:] = sorted(events, key=lambda m: _when(m.findtext(_q("Timestamp"))), reverse=True)
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


def _error_xml(status: int, code: str, message: str) -> bytes:
    kind = "Receiver" if status >= 500 else "Sender"
    return (
        f'<ErrorResponse xmlns="{NS}"><Error><Type>{kind}</Type><Code>{escape(code)}</Code>'
        f"<Message>{escape(message)}</Message></Error><RequestId>{uuid.uuid4()}</RequestId>"
        "</ErrorResponse>"
    ).encode()


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
