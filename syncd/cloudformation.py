"""The CloudFormation gateway: every CloudFormation call syncd makes, and the template uploads
to S3 that large templates need, go through here.

With `syncd.s3` (the journal mirror's store), the only importer of boto3/botocore. Throttling and
transient errors are retried by botocore's own `standard` retry mode, paced by syncd's shared
call budget (`syncd.ratelimit`) rather than botocore's `adaptive` bucket; what is left is
translated once, by `translate`, into syncd's errors (`AwsError` with `retryable`, `NoChanges`,
`NotFound`).
"""

from __future__ import annotations

import contextlib
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import boto3
import botocore.config
import botocore.exceptions
import botocore.parsers
from botocore.credentials import AssumeRoleCredentialFetcher, DeferredRefreshableCredentials

from syncd.core.stack_status import means_no_changes
from syncd.core.targets import Target
from syncd.errors import AwsError
from syncd.ratelimit import RateLimiter

INLINE_TEMPLATE_LIMIT = 51_200  # bytes CloudFormation accepts in TemplateBody
DEFAULT_CALLS_PER_SECOND = 20.0  # the budget's ceiling when none is given

_RETRY_CONFIG = botocore.config.Config(
    # botocore retries; the pacing is syncd's own (ratelimit.py): botocore's `adaptive` bucket
    # sinks under throttling that lowering the rate does not cure.
    retries={"mode": "standard", "max_attempts": 10},
    connect_timeout=10,
    read_timeout=60,
    user_agent_extra="syncd",
)
# Polls come round again: the shared look (syncd.world) a tick later, a change set's next look
# a pause later. A throttled poll is not retried with back-off (which would hold up every stack
# waiting on it, up to 20 s a retry), it is simply missed.
_LOOK_CONFIG = _RETRY_CONFIG.merge(
    botocore.config.Config(retries={"mode": "standard", "total_max_attempts": 1})
)
# Events are for the log, read once a stack has settled: a few tries, not ten with a back-off
# that held a whole `syncd sync` for a minute under heavy throttling.
_BRIEF_CONFIG = _RETRY_CONFIG.merge(
    botocore.config.Config(retries={"mode": "standard", "total_max_attempts": 3})
)

# Error codes that a later pass may succeed on without a new commit.
_RETRYABLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "InternalFailure",
        "InternalError",
        "TokenAlreadyExistsException",
        "OperationInProgressException",
        "ExpiredToken",
        "RequestExpired",
    }
)


# CloudFormation refusing work on a stack that another operation is changing:
# "Stack:arn:... is in UPDATE_IN_PROGRESS state and can not be updated." (CreateChangeSet,
# ExecuteChangeSet, UpdateStack) and "Stack [arn] cannot be deleted while in status ..." (Delete).
STACK_BUSY = "StackBusy"
_BUSY = re.compile(
    r"is in \w+_IN_PROGRESS state and can ?not be updated|cannot be deleted while in status"
)

_TITLE = re.compile(r"<title>([^<]*)</title>", re.IGNORECASE)

THROTTLING_CODES = frozenset(
    {"Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException"}
)


class NoChanges(AwsError):
    """CloudFormation says the change set would change nothing."""


class NotFound(AwsError):
    """The stack or change set does not exist."""


class AlreadyExists(AwsError):
    """A change set of that name exists already (a crashed run created it)."""


@dataclass(frozen=True)
class ObservedStack:
    """A stack as DescribeStacks shows it."""

    name: str
    stack_id: str
    status: str
    reason: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    last_updated: str = ""  # LastUpdatedTime (else CreationTime): moves when an operation starts


@dataclass(frozen=True)
class ChangeSetInfo:
    arn: str
    name: str
    stack: str
    status: str
    execution_status: str | None
    reason: str | None
    changes: list[dict[str, Any]]
    parameters: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StackEvent:
    event_id: str
    timestamp: datetime
    logical_id: str
    resource_type: str
    status: str
    reason: str | None


@dataclass(frozen=True)
class DriftDetection:
    """A drift detection as DescribeStackDriftDetectionStatus shows it."""

    status: str  # DETECTION_IN_PROGRESS | DETECTION_COMPLETE | DETECTION_FAILED
    stack_drift: str | None  # DRIFTED | IN_SYNC | UNKNOWN | NOT_CHECKED
    reason: str | None


class ResourceDrift(NamedTuple):
    """A drifted resource as DescribeStackResourceDrifts shows it, without its expected and
    actual properties and values: those can hold secrets, and syncd never keeps them."""

    logical_id: str
    resource_type: str
    status: str  # MODIFIED | DELETED
    differences: tuple[tuple[str, str], ...]  # (property path, NOT_EQUAL | ADD | REMOVE)


# Held while a client is made after start-up (from any thread): a botocore session is not
# safe to make clients from in two threads at once.
_LAZY_CLIENTS = threading.Lock()


def make_session(aws: Target, endpoint_url: str | None = None) -> boto3.Session:
    """A boto3 session for a target (region, profile, and the role to assume, if any, with
    its external id and session name).

    The role's credentials are refreshed by botocore before they expire; STS is reached at
    `endpoint_url` too when one is set (an emulator), never at AWS behind its back."""
    session = boto3.Session(profile_name=aws.profile, region_name=aws.region)
    if not aws.role_arn:
        return session
    base = session._session  # botocore session

    def sts_client(service: str, **kwargs: Any) -> Any:
        return base.create_client(service, endpoint_url=endpoint_url, **kwargs)

    fetcher = AssumeRoleCredentialFetcher(
        client_creator=sts_client,
        source_credentials=session.get_credentials(),
        role_arn=aws.role_arn,
        extra_args={"RoleSessionName": aws.session_name or "syncd"}
        | ({"ExternalId": aws.external_id} if aws.external_id else {}),
    )
    creds = DeferredRefreshableCredentials(
        method="assume-role", refresh_using=fetcher.fetch_credentials
    )
    assumed = boto3.Session(region_name=session.region_name)
    assumed._session._credentials = creds  # type: ignore[attr-defined, unused-ignore]
    return assumed


def call(what: str, method: Any, **kwargs: Any) -> Any:
    """`method(**kwargs)`, with every AWS or botocore failure raised as an AwsError."""
    try:
        return method(**kwargs)
    except (
        botocore.exceptions.ClientError,
        botocore.exceptions.BotoCoreError,
        # Not a BotoCoreError: an HTML error page (a proxy, moto's 500 for what it lacks).
        botocore.parsers.ResponseParserError,
    ) as exc:
        raise translate(exc, what) from None


def translate(exc: Exception, what: str) -> AwsError:
    """CloudFormation's and botocore's failures as syncd errors, in one place."""
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        message = str(err.get("Message", "")) or str(exc)
        if means_no_changes(message):
            return NoChanges(message, code=code)
        if code == "AlreadyExistsException":
            return AlreadyExists(f"{what}: {message}", code=code)
        if code in ("ChangeSetNotFound", "ChangeSetNotFoundException", "NoSuchKey") or (
            code == "ValidationError" and "does not exist" in message
        ):
            return NotFound(f"{what}: {message}", code=code)
        if code == "ValidationError" and _BUSY.search(message):
            return AwsError(f"{what}: {message}", code=STACK_BUSY, retryable=True)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        retryable = code in _RETRYABLE_CODES or int(status or 0) >= 500
        return AwsError(f"{what}: {code}: {message}", code=code, retryable=retryable)
    if isinstance(exc, botocore.parsers.ResponseParserError):
        # An HTML error page, not CloudFormation's XML: a proxy's, or an emulator's 500 for
        # what it lacks (moto's server for drift detection).
        title = _TITLE.search(str(exc))
        page = f" ({title.group(1)[:100]})" if title else ""
        return AwsError(f"{what}: the endpoint sent an unreadable answer{page}", retryable=True)
    if isinstance(
        exc,
        botocore.exceptions.EndpointConnectionError
        | botocore.exceptions.ConnectionClosedError
        | botocore.exceptions.ReadTimeoutError
        | botocore.exceptions.ConnectTimeoutError,
    ):
        return AwsError(f"{what}: cannot reach AWS: {exc}", retryable=True)
    if isinstance(exc, botocore.exceptions.NoCredentialsError | botocore.exceptions.NoRegionError):
        return AwsError(f"{what}: {exc}", retryable=False)
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        return AwsError(f"{what}: {exc}", retryable=True)
    raise exc


class CloudFormation:
    """CloudFormation (and S3 for large templates) for one account and region.

    Every attempt botocore sends to CloudFormation, retries included, first takes a token from
    `limiter`, the account and region's shared budget; every answer tells the limiter whether
    it was a throttle."""

    def __init__(
        self,
        session: boto3.Session,
        endpoint_url: str | None = None,
        template_bucket: str | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.region = session.region_name or "us-east-1"
        self.limiter = limiter or RateLimiter(DEFAULT_CALLS_PER_SECOND)
        self._cfn = session.client(
            "cloudformation", endpoint_url=endpoint_url, config=_RETRY_CONFIG
        )
        self._looks = session.client(
            "cloudformation", endpoint_url=endpoint_url, config=_LOOK_CONFIG
        )
        self._brief = session.client(
            "cloudformation", endpoint_url=endpoint_url, config=_BRIEF_CONFIG
        )
        for client in (self._cfn, self._looks, self._brief):
            client.meta.events.register("before-send.cloudformation", self._before_send)
            client.meta.events.register("needs-retry.cloudformation", self._answered)
        self._session, self._endpoint_url = session, endpoint_url
        self._s3_client: Any = None  # made when first needed: most configs never send S3 a call
        self._template_bucket = template_bucket
        self._sts = session.client("sts", endpoint_url=endpoint_url, config=_BRIEF_CONFIG)

    @property
    def _s3(self) -> Any:
        with _LAZY_CLIENTS:  # a botocore session makes one client at a time
            if self._s3_client is None:
                path_style = botocore.config.Config(s3={"addressing_style": "path"})
                self._s3_client = self._session.client(
                    "s3", endpoint_url=self._endpoint_url, config=_RETRY_CONFIG.merge(path_style)
                )
            return self._s3_client

    def account(self) -> str:
        """The account these credentials reach (GetCallerIdentity)."""
        return str(self._call("GetCallerIdentity", self._sts.get_caller_identity)["Account"])

    def _call(self, what: str, method: Any, **kwargs: Any) -> Any:
        return call(what, method, **kwargs)

    def _before_send(self, **_: Any) -> None:
        self.limiter.acquire()  # returns None: botocore sends the request itself

    def _answered(self, response: Any = None, **_: Any) -> None:
        if response is None:
            return  # no answer (a connection error): says nothing about the rate
        http, parsed = response
        code = (parsed or {}).get("Error", {}).get("Code", "")
        if code in THROTTLING_CODES or getattr(http, "status_code", 0) == 429:
            self.limiter.throttled()
        else:
            self.limiter.answered()

    # --- stacks ---------------------------------------------------------------------------

    def describe_all_pages(self, *, once: bool = False) -> tuple[dict[str, ObservedStack], int]:
        """Every live stack, paginated (one call per 100 stacks on AWS, 50 on moto), and how
        many pages that took. `once`: no retries (a look that comes round again)."""
        client = self._looks if once else self._cfn
        stacks: dict[str, ObservedStack] = {}
        token: str | None = None
        pages = 0
        while True:
            kwargs = {"NextToken": token} if token else {}
            page = self._call("DescribeStacks", client.describe_stacks, **kwargs)
            pages += 1
            for raw in page.get("Stacks", []):
                if raw.get("StackStatus") != "DELETE_COMPLETE":
                    stacks[raw["StackName"]] = _observed(raw)
            token = page.get("NextToken")
            if not token:
                return stacks, pages

    def describe(self, name: str, *, once: bool = False) -> ObservedStack | None:
        client = self._looks if once else self._cfn
        try:
            page = self._call(f"DescribeStacks {name}", client.describe_stacks, StackName=name)
        except NotFound:
            return None
        for raw in page.get("Stacks", []):
            if raw.get("StackStatus") != "DELETE_COMPLETE":
                return _observed(raw)
        return None

    def delete_stack(self, name: str) -> None:
        self._call(f"DeleteStack {name}", self._cfn.delete_stack, StackName=name)

    def resources(self, name: str) -> list[tuple[str, str]]:
        """The stack's resources as (logical id, type), paginated."""
        found: list[tuple[str, str]] = []
        kwargs: dict[str, Any] = {"StackName": name}
        while True:
            page = self._call(
                f"ListStackResources {name}", self._cfn.list_stack_resources, **kwargs
            )
            for r in page.get("StackResourceSummaries", []):
                found.append((r.get("LogicalResourceId", ""), r.get("ResourceType", "")))
            if not page.get("NextToken"):
                return found
            kwargs["NextToken"] = page["NextToken"]

    def events(self, name: str, since: datetime, *, once: bool = False) -> list[StackEvent]:
        """The stack's events from `since` on (to the second), oldest first: pages are read
        until one reaches back past `since` (CloudFormation lists the newest first). `once`:
        no retries (the caller asks again after a pause of its own)."""
        client = self._looks if once else self._brief
        found: list[StackEvent] = []
        kwargs: dict[str, Any] = {"StackName": name}
        floor = since.replace(microsecond=0)
        while True:
            try:
                page = self._call(
                    f"DescribeStackEvents {name}", client.describe_stack_events, **kwargs
                )
            except NotFound:
                break
            for e in page.get("StackEvents", []):
                event = _stack_event(e)
                if event.timestamp < floor:
                    return _oldest_first(found)
                found.append(event)
            if not page.get("NextToken"):
                break
            kwargs["NextToken"] = page["NextToken"]
        return _oldest_first(found)

    def events_between(
        self, name: str, since: datetime, until: datetime | None, *, max_pages: int = 20
    ) -> tuple[list[StackEvent], bool]:
        """The stack's events from `since` to `until` (None: now), both included, oldest
        first, and whether the pages read reached back to `since`: at most `max_pages` are read
        (newest first), so an old version of a busy stack may be cut short. `name` may be a
        StackId, which CloudFormation still answers for after the stack is deleted. Raises
        NotFound for a stack it does not know."""
        found: list[StackEvent] = []
        kwargs: dict[str, Any] = {"StackName": name}
        for _ in range(max_pages):
            page = self._call(
                f"DescribeStackEvents {name}", self._brief.describe_stack_events, **kwargs
            )
            for e in page.get("StackEvents", []):
                event = _stack_event(e)
                if event.timestamp < since:
                    return _oldest_first(found), True
                if until is None or event.timestamp <= until:
                    found.append(event)
            if not page.get("NextToken"):
                return _oldest_first(found), True
            kwargs["NextToken"] = page["NextToken"]
        return _oldest_first(found), False

    # --- change sets ----------------------------------------------------------------------

    def create_change_set(
        self,
        *,
        stack: str,
        name: str,
        change_set_type: str,
        template: str,
        digest: str,
        parameters: dict[str, str],
        tags: dict[str, str],
        capabilities: tuple[str, ...],
        description: str,
    ) -> str:
        """Create a change set and return its ARN. Raises NoChanges (the immediate form)."""
        kwargs: dict[str, Any] = {
            "StackName": stack,
            "ChangeSetName": name,
            # Always explicit: without it CloudFormation assumes CREATE.
            "ChangeSetType": change_set_type,
            "Parameters": [{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
            "Capabilities": list(capabilities),
            "Description": description[:1024],
        }
        if len(template.encode()) > INLINE_TEMPLATE_LIMIT:
            kwargs["TemplateURL"] = self._upload_template(stack, digest, template)
        else:
            kwargs["TemplateBody"] = template
        response = self._call(f"CreateChangeSet {stack}", self._cfn.create_change_set, **kwargs)
        return str(response["Id"])

    def describe_change_set(
        self, arn: str, stack: str | None = None, *, once: bool = False
    ) -> ChangeSetInfo | None:
        """The change set (None: gone). `once`: no retries (a poll that comes round again)."""
        client = self._looks if once else self._cfn
        kwargs = {"ChangeSetName": arn}
        if stack:
            kwargs["StackName"] = stack
        try:
            raw = self._call(f"DescribeChangeSet {arn}", client.describe_change_set, **kwargs)
        except NotFound:
            return None
        changes = []
        for change in raw.get("Changes", []):
            rc = change.get("ResourceChange", {})
            changes.append(
                {
                    "action": rc.get("Action"),
                    "logical_id": rc.get("LogicalResourceId"),
                    "type": rc.get("ResourceType"),
                    "replacement": rc.get("Replacement"),
                    "scope": [s for s in rc.get("Scope") or [] if isinstance(s, str)],
                }
            )
        return ChangeSetInfo(
            arn=raw.get("ChangeSetId", arn),
            name=raw.get("ChangeSetName", ""),
            stack=raw.get("StackName", stack or ""),
            status=raw.get("Status", ""),
            execution_status=raw.get("ExecutionStatus"),
            reason=raw.get("StatusReason"),
            changes=changes,
            parameters={
                p["ParameterKey"]: p.get("ParameterValue", "") for p in raw.get("Parameters") or []
            },
            tags={t["Key"]: t["Value"] for t in raw.get("Tags") or []},
        )

    def execute_change_set(self, arn: str, stack: str, token: str) -> None:
        """Execute by ARN; `token` makes botocore's retries of this call one operation."""
        self._call(
            f"ExecuteChangeSet {stack}",
            self._cfn.execute_change_set,
            ChangeSetName=arn,
            StackName=stack,
            ClientRequestToken=token,
        )

    def delete_change_set(self, arn: str, stack: str) -> None:
        with contextlib.suppress(NotFound):
            self._call(
                f"DeleteChangeSet {stack}",
                self._cfn.delete_change_set,
                ChangeSetName=arn,
                StackName=stack,
            )

    # --- drift ----------------------------------------------------------------------------
    # A detection runs on AWS for seconds to minutes: start it, then ask about it on later
    # passes. A few tries each (the brief client): a check that cannot be made now is made at
    # the next interval, and must not hold a pass through ten back-offs.

    def detect_drift(self, stack: str) -> str:
        """Start a drift detection of the stack; returns its StackDriftDetectionId."""
        response = self._call(
            f"DetectStackDrift {stack}", self._brief.detect_stack_drift, StackName=stack
        )
        return str(response["StackDriftDetectionId"])

    def drift_detection(self, detection: str) -> DriftDetection:
        raw = self._call(
            f"DescribeStackDriftDetectionStatus {detection}",
            self._brief.describe_stack_drift_detection_status,
            StackDriftDetectionId=detection,
        )
        return DriftDetection(
            status=str(raw.get("DetectionStatus", "")),
            stack_drift=raw.get("StackDriftStatus"),
            reason=raw.get("DetectionStatusReason"),
        )

    def resource_drifts(self, stack: str) -> list[ResourceDrift]:
        """The stack's resources a detection found MODIFIED or DELETED, every page of them.
        Only property paths and how they differ are kept, never a value."""
        found: list[ResourceDrift] = []
        kwargs: dict[str, Any] = {
            "StackName": stack,
            "StackResourceDriftStatusFilters": ["MODIFIED", "DELETED"],
            "MaxResults": 100,
        }
        while True:
            page = self._call(
                f"DescribeStackResourceDrifts {stack}",
                self._brief.describe_stack_resource_drifts,
                **kwargs,
            )
            for r in page.get("StackResourceDrifts", []):
                found.append(
                    ResourceDrift(
                        logical_id=str(r.get("LogicalResourceId", "")),
                        resource_type=str(r.get("ResourceType", "")),
                        status=str(r.get("StackResourceDriftStatus", "")),
                        differences=tuple(
                            (str(d.get("PropertyPath", "")), str(d.get("DifferenceType", "")))
                            for d in r.get("PropertyDifferences") or []
                        ),
                    )
                )
            if not page.get("NextToken"):
                return found
            kwargs["NextToken"] = page["NextToken"]

    # --- templates in S3 ------------------------------------------------------------------

    def template_problem(self, stack: str, template: str) -> str | None:
        """Why this template cannot be sent with the current config, or None."""
        size = len(template.encode())
        if size > INLINE_TEMPLATE_LIMIT and not self._template_bucket:
            return (
                f"the template is {size} bytes, over CloudFormation's inline limit of "
                f"{INLINE_TEMPLATE_LIMIT}; set aws.template_bucket so syncd can pass it through S3"
            )
        return None

    def _upload_template(self, stack: str, digest: str, template: str) -> str:
        problem = self.template_problem(stack, template)
        if problem or not self._template_bucket:
            raise AwsError(problem or "no template bucket", code="TemplateTooLarge")
        bucket, _, prefix = self._template_bucket[len("s3://") :].partition("/")
        key = f"{prefix.rstrip('/')}/{stack}/{digest}.template".lstrip("/")
        self._call(
            f"PutObject s3://{bucket}/{key}",
            self._s3.put_object,
            Bucket=bucket,
            Key=key,
            Body=template.encode(),
        )
        # Path style works for every bucket name, on AWS and on the emulator.
        return f"https://s3.{self.region}.amazonaws.com/{bucket}/{key}"

    def ensure_bucket(self, url: str) -> None:
        """Create the bucket of an s3:// URL if missing (the embedded emulator's own buckets)."""
        bucket = url[len("s3://") :].split("/", 1)[0]
        try:
            self._call("HeadBucket", self._s3.head_bucket, Bucket=bucket)
        except AwsError:
            self._call("CreateBucket", self._s3.create_bucket, Bucket=bucket)


def _stack_event(e: dict[str, Any]) -> StackEvent:
    return StackEvent(
        event_id=e["EventId"],
        timestamp=_aware(e["Timestamp"]),
        logical_id=e.get("LogicalResourceId", ""),
        resource_type=e.get("ResourceType", ""),
        status=e.get("ResourceStatus", ""),
        reason=e.get("ResourceStatusReason"),
    )


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _oldest_first(events: list[StackEvent]) -> list[StackEvent]:
    """Newest-first pages as one list, oldest first, each event once."""
    seen: set[str] = set()
    out = []
    for event in reversed(events):
        if event.event_id not in seen:
            seen.add(event.event_id)
            out.append(event)
    return out


def _observed(raw: dict[str, Any]) -> ObservedStack:
    return ObservedStack(
        name=raw["StackName"],
        stack_id=raw.get("StackId", ""),
        status=raw.get("StackStatus", ""),
        reason=raw.get("StackStatusReason"),
        parameters={
            p["ParameterKey"]: p.get("ParameterValue", "") for p in raw.get("Parameters") or []
        },
        tags={t["Key"]: t["Value"] for t in raw.get("Tags") or []},
        outputs={o["OutputKey"]: o.get("OutputValue", "") for o in raw.get("Outputs") or []},
        last_updated=str(raw.get("LastUpdatedTime") or raw.get("CreationTime") or ""),
    )
