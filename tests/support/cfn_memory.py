"""An in-memory CloudFormation on loopback, for tests and benchmarks with many stacks.

moto's server is too slow for 10,000 stacks (minutes to create them, seconds a listing, paging
that grows with the square) and not thread-safe. This one keeps stacks and change sets in
dicts behind one lock, answers at once, and speaks the AWS query protocol (form-encoded POST,
XML answers, `<ErrorResponse>` errors) well enough for boto3 and syncd:

- CreateChangeSet: CREATE_COMPLETE/AVAILABLE at once, with Add/Modify/Remove `Changes`; an
  UPDATE that changes nothing (template, parameters and tags as deployed) is FAILED with AWS's
  "didn't contain changes" reason. A CREATE change set of a new stack makes the stack
  REVIEW_IN_PROGRESS. ExecuteChangeSet: CREATE_/UPDATE_COMPLETE with the change set's template,
  parameters, tags and evaluated outputs (`cfn_template`), a few stack events, the other change
  sets of the stack deleted. DeleteStack: gone by name, DELETE_COMPLETE by ARN.
- DescribeStacks (by name or ARN; or all, 100 a page, by position: a page costs its own size),
  DescribeChangeSet, DeleteChangeSet, ListChangeSets, DescribeStackEvents (100 a page, newest
  first), ListStackResources, GetTemplate, ValidateTemplate. Anything else: 400 InvalidAction.

Not modelled: S3 (no TemplateURL), capabilities, rollbacks, failures, time passing, regions or
accounts (one namespace; ARNs name the caller's region). `calls` counts requests by action
and `log` lists each one's (action, StackName); `POST /moto-api/reset` (moto's path, so
benchmarks reset either alike) or `reset()` forgets everything. Run it in a process of its own
with `python -m tests.support.cfn_memory --port N` (it prints its URL).
"""

from __future__ import annotations

import argparse
import bisect
import re
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from syncd.core.cfn_yaml import TemplateSyntaxError, parse_template
from tests.support.cfn_template import (
    ACCOUNT,
    NO_ECHO_MASK,
    TemplateError,
    evaluate_outputs,
    no_echo,
    physical_id,
    resolve_parameters,
    resource_changes,
    to_xml,
)

NS = "http://cloudformation.amazonaws.com/doc/2010-05-15/"
PAGE = 100
ACTIONS = frozenset(
    {
        "CreateChangeSet",
        "DeleteChangeSet",
        "DeleteStack",
        "DescribeChangeSet",
        "DescribeStackEvents",
        "DescribeStacks",
        "ExecuteChangeSet",
        "GetTemplate",
        "ListChangeSets",
        "ListStackResources",
        "ValidateTemplate",
    }
)
NO_CHANGES = (
    "The submitted information didn't contain changes. Submit different information to create "
    "a change set."
)
_NAME = re.compile(r"^[a-zA-Z][-a-zA-Z0-9]{0,127}$")
_REGION = re.compile(r"Credential=[^/,]*/[^/,]*/([^/,]*)/")


class CfnError(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def _invalid(message: str) -> CfnError:
    return CfnError("ValidationError", message)


@dataclass
class _Stack:
    name: str
    stack_id: str
    region: str
    seq: int  # its place in the listing
    created: datetime
    status: str = "REVIEW_IN_PROGRESS"
    updated: datetime | None = None
    template: str = ""
    parsed: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    outputs: list[dict[str, str]] = field(default_factory=list)
    last_change_set: str | None = None
    change_sets: dict[str, str] = field(default_factory=dict)  # name -> ARN
    events: list[dict[str, Any]] = field(default_factory=list)  # oldest first
    member: str | None = None  # DescribeStacks <member> XML, until the stack changes

    def xml(self) -> str:
        if self.member is None:
            masked = no_echo(self.parsed)
            self.member = to_xml(
                {
                    "StackId": self.stack_id,
                    "StackName": self.name,
                    "ChangeSetId": self.last_change_set,
                    "Description": self.parsed.get("Description"),
                    "Parameters": [
                        {"ParameterKey": k, "ParameterValue": NO_ECHO_MASK if k in masked else v}
                        for k, v in self.parameters.items()
                    ],
                    "CreationTime": self.created,
                    "LastUpdatedTime": self.updated,
                    "StackStatus": self.status,
                    "DisableRollback": False,
                    "NotificationARNs": [],
                    "Outputs": self.outputs,
                    "Tags": [{"Key": k, "Value": v} for k, v in self.tags.items()],
                    "EnableTerminationProtection": False,
                    "DriftInformation": {"StackDriftStatus": "NOT_CHECKED"},
                }
            )
        return self.member


@dataclass
class _ChangeSet:
    arn: str
    name: str
    stack: _Stack
    kind: str
    template: str
    parsed: dict[str, Any]
    parameters: dict[str, str]
    tags: dict[str, str]
    description: str | None
    created: datetime
    changes: list[dict[str, Any]]
    status: str = "CREATE_COMPLETE"
    execution: str = "AVAILABLE"
    reason: str | None = None
    token: str | None = None  # the ClientRequestToken it was executed with


class MemoryCloudFormation:
    """`MemoryCloudFormation().start()` (or `with MemoryCloudFormation() as cfn:`), then point
    boto3 at `.url`; `stop()` ends it."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.url = ""
        self.calls: Counter[str] = Counter()
        self.log: list[tuple[str, str | None]] = []  # (action, StackName given) of every call
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.log.clear()
            self._stacks: dict[str, _Stack] = {}  # live (and in review), by name
            self._by_id: dict[str, _Stack] = {}  # every stack ever, deleted ones too
            self._order: list[_Stack] = []  # the listing, by seq; deleted ones until compacted
            self._seqs: list[int] = []
            self._holes = 0
            self._next_seq = 0
            self._change_sets: dict[str, _ChangeSet] = {}
            self._last = datetime.now(UTC)

    def start(self) -> MemoryCloudFormation:
        handler = type("Handler", (_Handler,), {"cfn": self})
        server = ThreadingHTTPServer(("127.0.0.1", self.port), handler, bind_and_activate=False)
        server.request_queue_size = 256
        server.daemon_threads = True
        server.server_bind()
        server.server_activate()
        self._server = server
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

    def __enter__(self) -> MemoryCloudFormation:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- one request ---------------------------------------------------------------------------
    def answer(self, form: dict[str, str], region: str) -> tuple[int, bytes]:
        action = form.get("Action", "")
        try:
            with self._lock:
                self.calls[action] += 1
                self.log.append((action, form.get("StackName")))
                if action not in ACTIONS:
                    raise CfnError("InvalidAction", f"{action or 'no action'} is not supported")
                result = getattr(self, f"_{_snake(action)}")(form, region)
        except CfnError as exc:
            return exc.status, _error(exc.code, exc.message, "Sender")
        except Exception as exc:  # a bug here: say so to the client rather than hang up
            return 500, _error("InternalFailure", f"{type(exc).__name__}: {exc}", "Receiver")
        body = (
            f'<{action}Response xmlns="{NS}"><{action}Result>{result}</{action}Result>'
            f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>"
            f"</{action}Response>"
        )
        return 200, body.encode()

    def _now(self) -> datetime:
        """Wall time, strictly later than any time handed out before (events stay ordered)."""
        now = datetime.now(UTC)
        self._last = now if now > self._last else self._last + timedelta(microseconds=1)
        return self._last

    def _stack(self, name_or_id: str) -> _Stack:
        """A live stack by name, or any stack by ARN; else CloudFormation's ValidationError."""
        stack = self._by_id.get(name_or_id) or self._stacks.get(name_or_id)
        if stack is None:
            raise _invalid(f"Stack with id {name_or_id} does not exist")
        return stack

    def _change_set(self, form: dict[str, str]) -> _ChangeSet:
        name = form.get("ChangeSetName", "")
        cs = self._change_sets.get(name)
        if cs is None and not name.startswith("arn:") and form.get("StackName"):
            stack = self._by_id.get(form["StackName"]) or self._stacks.get(form["StackName"])
            arn = stack.change_sets.get(name) if stack else None
            cs = self._change_sets.get(arn or "")
        if cs is None:
            raise CfnError("ChangeSetNotFound", f"ChangeSet [{name}] does not exist", 404)
        return cs

    def _stack_event(self, stack: _Stack, status: str, reason: str | None = None) -> datetime:
        self._event(stack, stack.name, "AWS::CloudFormation::Stack", status, reason)
        when: datetime = stack.events[-1]["Timestamp"]
        return when

    def _event(
        self, stack: _Stack, logical: str, rtype: str, status: str, reason: str | None = None
    ) -> None:
        stack.events.append(
            {
                "StackId": stack.stack_id,
                "EventId": str(uuid.uuid4()),
                "StackName": stack.name,
                "LogicalResourceId": logical,
                "PhysicalResourceId": stack.stack_id
                if logical == stack.name
                else physical_id(stack.stack_id, logical),
                "ResourceType": rtype,
                "Timestamp": self._now(),
                "ResourceStatus": status,
                "ResourceStatusReason": reason,
            }
        )

    # -- stacks ---------------------------------------------------------------------------------
    def _describe_stacks(self, form: dict[str, str], region: str) -> str:
        if form.get("StackName"):
            return f"<Stacks><member>{self._stack(form['StackName']).xml()}</member></Stacks>"
        token = form.get("NextToken")
        try:
            start = bisect.bisect_left(self._seqs, int(token)) if token else 0
        except ValueError:
            raise _invalid("Invalid NextToken") from None
        members, i = [], start
        while i < len(self._order) and len(members) < PAGE:
            if self._order[i].status != "DELETE_COMPLETE":
                members.append(f"<member>{self._order[i].xml()}</member>")
            i += 1
        while i < len(self._order) and self._order[i].status == "DELETE_COMPLETE":
            i += 1
        more = f"<NextToken>{self._seqs[i]}</NextToken>" if i < len(self._order) else ""
        return f"<Stacks>{''.join(members)}</Stacks>{more}"

    def _delete_stack(self, form: dict[str, str], region: str) -> str:
        name = form.get("StackName", "")
        stack = self._by_id.get(name) or self._stacks.get(name)
        if stack is None or stack.status == "DELETE_COMPLETE":
            return ""  # as on AWS: deleting what is not there succeeds
        self._stack_event(stack, "DELETE_IN_PROGRESS", "User Initiated")
        for logical, spec in (stack.parsed.get("Resources") or {}).items():
            self._event(stack, logical, str(spec.get("Type", "")), "DELETE_COMPLETE")
        self._stack_event(stack, "DELETE_COMPLETE")
        stack.status, stack.member = "DELETE_COMPLETE", None
        for arn in stack.change_sets.values():
            self._change_sets.pop(arn, None)
        stack.change_sets.clear()
        del self._stacks[stack.name]
        self._holes += 1
        if self._holes > 1000 and self._holes * 2 > len(self._order):
            self._order = [s for s in self._order if s.status != "DELETE_COMPLETE"]
            self._seqs = [s.seq for s in self._order]
            self._holes = 0
        return ""

    def _describe_stack_events(self, form: dict[str, str], region: str) -> str:
        stack = self._stack(form.get("StackName", ""))
        token = form.get("NextToken") or "0"
        if not token.isdigit():
            raise _invalid("Invalid NextToken")
        start = int(token)
        newest_first = stack.events[::-1][start : start + PAGE]
        more = start + PAGE < len(stack.events)
        token = f"<NextToken>{start + PAGE}</NextToken>" if more else ""
        return f"<StackEvents>{to_xml(newest_first)}</StackEvents>{token}"

    def _list_stack_resources(self, form: dict[str, str], region: str) -> str:
        stack = self._stack(form.get("StackName", ""))
        done = "CREATE_COMPLETE" if stack.updated is None else "UPDATE_COMPLETE"
        summaries = [
            {
                "LogicalResourceId": logical,
                "PhysicalResourceId": physical_id(stack.stack_id, logical),
                "ResourceType": str(spec.get("Type", "")),
                "LastUpdatedTimestamp": stack.updated or stack.created,
                "ResourceStatus": done,
                "DriftInformation": {"StackResourceDriftStatus": "NOT_CHECKED"},
            }
            for logical, spec in (stack.parsed.get("Resources") or {}).items()
        ]
        return f"<StackResourceSummaries>{to_xml(summaries)}</StackResourceSummaries>"

    def _get_template(self, form: dict[str, str], region: str) -> str:
        stack = self._stack(form.get("StackName", ""))
        return to_xml({"TemplateBody": stack.template, "StagesAvailable": ["Original"]})

    def _validate_template(self, form: dict[str, str], region: str) -> str:
        parsed = _parse(form)
        params = [
            {"ParameterKey": k, "DefaultValue": s.get("Default"), "NoEcho": k in no_echo(parsed)}
            for k, s in (parsed.get("Parameters") or {}).items()
        ]
        return to_xml({"Parameters": params, "Description": parsed.get("Description")})

    # -- change sets ------------------------------------------------------------------------
    def _create_change_set(self, form: dict[str, str], region: str) -> str:
        name, cs_name = form.get("StackName", ""), form.get("ChangeSetName", "")
        kind = form.get("ChangeSetType", "UPDATE")
        if not _NAME.match(name):
            raise _invalid(f"1 validation error detected: Value '{name}' at 'stackName' failed")
        if not _NAME.match(cs_name):
            raise _invalid(f"ChangeSet name {cs_name!r} is not valid")
        stack = self._stacks.get(name)
        reviewing = stack is not None and stack.status == "REVIEW_IN_PROGRESS"
        if kind == "CREATE" and stack is not None and not reviewing:
            raise _invalid(
                f"Stack [{name}] already exists and cannot be created again with the "
                f"changeSet [{cs_name}]."
            )
        if kind == "UPDATE" and (stack is None or reviewing):
            raise _invalid(f"Stack [{name}] does not exist")
        if stack is not None and cs_name in stack.change_sets:
            raise CfnError("AlreadyExistsException", f"ChangeSet [{cs_name}] already exists")
        parsed = _parse(form)
        given = {
            p["ParameterKey"]: p.get("ParameterValue", "")
            for p in _members(form, "Parameters") or []
        }
        keep = {
            p["ParameterKey"]
            for p in _members(form, "Parameters") or []
            if p.get("UsePreviousValue") == "true"
        }
        previous = stack.parameters if stack else {}
        try:
            params = resolve_parameters(parsed, given, previous, keep)
        except TemplateError as exc:
            raise _invalid(str(exc)) from None
        tag_list = _members(form, "Tags")
        tags = {t["Key"]: t.get("Value", "") for t in tag_list} if tag_list is not None else None
        now = self._now()
        if stack is None:
            seq, self._next_seq = self._next_seq, self._next_seq + 1
            stack_id = f"arn:aws:cloudformation:{region}:{ACCOUNT}:stack/{name}/{uuid.uuid4()}"
            stack = _Stack(name, stack_id, region, seq, now)
            self._stacks[name] = self._by_id[stack_id] = stack
            self._order.append(stack)
            self._seqs.append(seq)
            self._stack_event(stack, "REVIEW_IN_PROGRESS", "User Initiated")
        tags = stack.tags if tags is None else tags
        old = None if kind == "CREATE" else stack.parsed
        changes = resource_changes(
            old, parsed, stack.parameters, params, tags != stack.tags, stack.stack_id
        )
        arn = f"arn:aws:cloudformation:{region}:{ACCOUNT}:changeSet/{cs_name}/{uuid.uuid4()}"
        cs = _ChangeSet(
            arn,
            cs_name,
            stack,
            kind,
            form.get("TemplateBody", ""),
            parsed,
            params,
            tags,
            form.get("Description"),
            now,
            changes,
        )
        same = (cs.template, params, tags) == (stack.template, stack.parameters, stack.tags)
        if kind == "UPDATE" and same:
            cs.status, cs.execution, cs.reason = "FAILED", "UNAVAILABLE", NO_CHANGES
        self._change_sets[arn] = cs
        stack.change_sets[cs_name] = arn
        return to_xml({"Id": arn, "StackId": stack.stack_id})

    def _describe_change_set(self, form: dict[str, str], region: str) -> str:
        cs = self._change_set(form)
        masked = no_echo(cs.parsed)
        return to_xml(
            {
                "ChangeSetName": cs.name,
                "ChangeSetId": cs.arn,
                "StackId": cs.stack.stack_id,
                "StackName": cs.stack.name,
                "Description": cs.description,
                "Parameters": [
                    {"ParameterKey": k, "ParameterValue": NO_ECHO_MASK if k in masked else v}
                    for k, v in cs.parameters.items()
                ],
                "CreationTime": cs.created,
                "ExecutionStatus": cs.execution,
                "Status": cs.status,
                "StatusReason": cs.reason,
                "NotificationARNs": [],
                "Capabilities": [],
                "Tags": [{"Key": k, "Value": v} for k, v in cs.tags.items()],
                "Changes": cs.changes,
                "IncludeNestedStacks": False,
            }
        )

    def _list_change_sets(self, form: dict[str, str], region: str) -> str:
        stack = self._stack(form.get("StackName", ""))
        summaries = []
        for arn in stack.change_sets.values():
            cs = self._change_sets[arn]
            summaries.append(
                {
                    "StackId": stack.stack_id,
                    "StackName": stack.name,
                    "ChangeSetId": cs.arn,
                    "ChangeSetName": cs.name,
                    "ExecutionStatus": cs.execution,
                    "Status": cs.status,
                    "StatusReason": cs.reason,
                    "CreationTime": cs.created,
                    "Description": cs.description,
                }
            )
        return f"<Summaries>{to_xml(summaries)}</Summaries>"

    def _delete_change_set(self, form: dict[str, str], region: str) -> str:
        cs = self._change_set(form)
        del self._change_sets[cs.arn]
        cs.stack.change_sets.pop(cs.name, None)
        return ""

    def _execute_change_set(self, form: dict[str, str], region: str) -> str:
        cs = self._change_set(form)
        token = form.get("ClientRequestToken")
        if cs.execution == "EXECUTE_COMPLETE" and token and token == cs.token:
            return ""  # a retry of the execute that ran
        if cs.execution != "AVAILABLE":
            raise CfnError(
                "InvalidChangeSetStatus",
                f"ChangeSet [{cs.arn}] cannot be executed in its current status of "
                f"[{cs.execution}]",
            )
        stack, verb = cs.stack, "CREATE" if cs.kind == "CREATE" else "UPDATE"
        started = self._stack_event(stack, f"{verb}_IN_PROGRESS", "User Initiated")
        for change in cs.changes:
            rc = change["ResourceChange"]
            step = {"Add": "CREATE", "Modify": "UPDATE", "Remove": "DELETE"}[rc["Action"]]
            self._event(stack, rc["LogicalResourceId"], rc["ResourceType"], f"{step}_IN_PROGRESS")
            self._event(stack, rc["LogicalResourceId"], rc["ResourceType"], f"{step}_COMPLETE")
        self._stack_event(stack, f"{verb}_COMPLETE")
        stack.status, stack.updated, stack.member = f"{verb}_COMPLETE", started, None
        stack.template, stack.parsed = cs.template, cs.parsed
        stack.parameters, stack.tags, stack.last_change_set = cs.parameters, cs.tags, cs.arn
        stack.outputs = evaluate_outputs(
            cs.parsed, cs.parameters, stack.name, stack.stack_id, stack.region
        )
        cs.execution, cs.token = "EXECUTE_COMPLETE", token
        for name, arn in list(stack.change_sets.items()):  # as on AWS: the others go
            if arn != cs.arn:
                self._change_sets.pop(arn, None)
                del stack.change_sets[name]
        return ""


def _error(code: str, message: str, kind: str) -> bytes:
    return (
        f'<ErrorResponse xmlns="{NS}"><Error><Type>{kind}</Type><Code>{code}</Code>'
        f"<Message>{to_xml(message)}</Message></Error>"
        f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
    ).encode()


def _snake(action: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", action).lower()


def _members(form: dict[str, str], name: str) -> list[dict[str, str]] | None:
    """A query-protocol list (`Name.member.N.Field`) as dicts; None when not given at all
    (`Name=` alone is an empty list)."""
    prefix = f"{name}.member."
    items: dict[int, dict[str, str]] = {}
    for key, value in form.items():
        if key.startswith(prefix):
            index, _, attr = key[len(prefix) :].partition(".")
            items.setdefault(int(index), {})[attr] = value
    if not items:
        return [] if name in form else None
    return [items[i] for i in sorted(items)]


def _parse(form: dict[str, str]) -> dict[str, Any]:
    if form.get("TemplateURL"):
        raise _invalid("TemplateURL is not supported by the in-memory CloudFormation")
    if not form.get("TemplateBody"):
        raise _invalid("Either Template URL or Template Body must be specified.")
    try:
        return parse_template(form["TemplateBody"])
    except TemplateSyntaxError as exc:
        raise _invalid(f"Template format error: {exc}") from None


class _Handler(BaseHTTPRequestHandler):
    cfn: MemoryCloudFormation
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore and the proxies expect
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.rstrip("/") in ("/moto-api/reset", "/reset"):
            self.cfn.reset()
            return self._reply(200, b"{}", "application/json")
        if not self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
            message = f"<Error><Code>NotImplemented</Code><Message>{self.path}</Message></Error>"
            return self._reply(501, message.encode(), "text/xml")
        form = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        match = _REGION.search(self.headers.get("Authorization", ""))
        status, data = self.cfn.answer(form, match.group(1) if match else "us-east-1")
        self._reply(status, data, "text/xml")

    def do_GET(self) -> None:
        self._reply(200 if self.path == "/" else 404, b"", "text/plain")

    def _reply(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free)")
    args = parser.parse_args(argv)
    cfn = MemoryCloudFormation(args.port).start()
    print(cfn.url, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
