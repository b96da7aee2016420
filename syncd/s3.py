"""The journal mirror's object store: S3 under `backup.url`, written only with conditional puts.

An adapter (boto3, like `syncd.cloudformation`, whose error translation it shares). Keys are
relative to the URL's prefix. `put_new` never overwrites: S3 refuses it (412) when the key
exists, which is how a retry of an upload that S3 stored though the client saw an error is
recognised. Timeouts are short and botocore retries few times: the mirror has its own cadence,
and an S3 outage must not hold a journal flush for long.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import botocore.config

from syncd.cloudformation import call
from syncd.errors import AwsError, ObjectExists, ObjectTooLarge

# The largest object syncd writes is a whole journal segment: a little over 4 MiB (the segment
# size, syncd.journal.store.SEGMENT_BYTES, plus its last record). Four times that is read; more
# is refused unread (a restore downloads 8 objects at a time: at most 128 MiB held).
MAX_OBJECT_BYTES = 16 * 1024 * 1024

_CONFIG = botocore.config.Config(
    retries={"mode": "standard", "max_attempts": 3},
    connect_timeout=5,
    read_timeout=20,
    user_agent_extra="syncd-mirror",
    s3={"addressing_style": "path"},
)


def split_url(url: str) -> tuple[str, str]:
    """s3://bucket/some/prefix/ -> ("bucket", "some/prefix/")."""
    bucket, _, prefix = url[len("s3://") :].partition("/")
    return bucket, (prefix.rstrip("/") + "/" if prefix.strip("/") else "")


class S3Store:
    """Objects under one s3:// URL."""

    def __init__(
        self,
        session: boto3.Session,
        url: str,
        *,
        endpoint_url: str | None = None,
        sse: str | None = None,
        kms_key_id: str | None = None,
    ) -> None:
        self.url = url.rstrip("/") + "/"
        self.bucket, self.prefix = split_url(url)
        self._s3 = session.client("s3", endpoint_url=endpoint_url, config=_CONFIG)
        self._encryption: dict[str, str] = {}
        if sse:
            self._encryption["ServerSideEncryption"] = sse
        if kms_key_id:
            self._encryption["SSEKMSKeyId"] = kms_key_id

    def _call(self, what: str, method: Any, **kwargs: Any) -> Any:
        try:
            return call(what, method, **kwargs)
        except AwsError as exc:
            if exc.code == "PreconditionFailed":  # If-None-Match: the key is taken
                raise ObjectExists(f"{what}: the key exists", code=exc.code) from None
            # 409 ConditionalRequestConflict: another write to the key is in flight; an
            # ordinary (retryable) error, so the next cycle looks again.
            raise

    def put_new(self, key: str, data: bytes) -> None:
        """Store `data` at `key` only if no object is there (ObjectExists otherwise)."""
        self._call(
            f"PutObject {self.url}{key}",
            self._s3.put_object,
            Bucket=self.bucket,
            Key=self.prefix + key,
            Body=data,
            IfNoneMatch="*",
            **self._encryption,
        )

    def get(self, key: str) -> bytes | None:
        """The object at `key`, None if there is none. ObjectTooLarge, unread, past
        MAX_OBJECT_BYTES: whoever can write to the bucket must not make syncd hold gigabytes."""

        def fetch(**kwargs: Any) -> bytes:
            # The body is read inside the translated call: a connection cut mid-body or a
            # checksum mismatch is an AwsError like any other, not a stray botocore exception.
            answer = self._s3.get_object(**kwargs)
            body = answer["Body"]
            size = answer.get("ContentLength") or 0
            data = b"" if size > MAX_OBJECT_BYTES else bytes(body.read(MAX_OBJECT_BYTES + 1))
            if size > MAX_OBJECT_BYTES or len(data) > MAX_OBJECT_BYTES:
                body.close()
                raise ObjectTooLarge(
                    f"{self.url}{key}: {max(size, len(data)):,} bytes, more than any object "
                    f"syncd writes ({MAX_OBJECT_BYTES:,}): not read",
                    code="TooLarge",
                )
            return data

        try:
            return self._call(  # type: ignore[no-any-return]
                f"GetObject {self.url}{key}", fetch, Bucket=self.bucket, Key=self.prefix + key
            )
        except AwsError as exc:
            if exc.code in ("NoSuchKey", "404"):
                return None
            raise

    def first_key(self, under: str) -> str | None:
        """The first key under `under` in S3's order (one request)."""
        page = self._call(
            f"ListObjectsV2 {self.url}{under}",
            self._s3.list_objects_v2,
            Bucket=self.bucket,
            Prefix=self.prefix + under,
            MaxKeys=1,
        )
        contents = page.get("Contents", [])
        return str(contents[0]["Key"])[len(self.prefix) :] if contents else None

    def keys(self, under: str, start_after: str | None = None) -> Iterator[str]:
        """Keys under `under`, in S3's (lexicographic) order, after `start_after` if given."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix + under}
        if start_after:
            kwargs["StartAfter"] = self.prefix + start_after
        while True:
            page = self._call(
                f"ListObjectsV2 {self.url}{under}", self._s3.list_objects_v2, **kwargs
            )
            for item in page.get("Contents", []):
                yield str(item["Key"])[len(self.prefix) :]
            if not page.get("IsTruncated"):
                return
            kwargs["ContinuationToken"] = page["NextContinuationToken"]
            kwargs.pop("StartAfter", None)

    def folders(self, under: str) -> list[str]:
        """The names of the folders directly under `under` (S3's common prefixes)."""
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": self.prefix + under,
            "Delimiter": "/",
        }
        names: list[str] = []
        while True:
            page = self._call(
                f"ListObjectsV2 {self.url}{under}", self._s3.list_objects_v2, **kwargs
            )
            for common in page.get("CommonPrefixes", []):
                names.append(str(common["Prefix"])[len(self.prefix + under) :].rstrip("/"))
            if not page.get("IsTruncated"):
                return sorted(names)
            kwargs["ContinuationToken"] = page["NextContinuationToken"]

    def deleted(self, under: str) -> list[str] | None:
        """Keys under `under` that were deleted (their delete markers), when the bucket keeps
        versions; None when it does not, so deletions cannot be seen."""
        versioning = self._call(
            f"GetBucketVersioning {self.bucket}",
            self._s3.get_bucket_versioning,
            Bucket=self.bucket,
        )
        if versioning.get("Status") not in ("Enabled", "Suspended"):
            return None
        found: list[str] = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix + under}
        while True:
            page = self._call(
                f"ListObjectVersions {self.url}{under}", self._s3.list_object_versions, **kwargs
            )
            found += [str(m["Key"])[len(self.prefix) :] for m in page.get("DeleteMarkers", [])]
            if not page.get("IsTruncated"):
                return sorted(set(found))
            kwargs["KeyMarker"] = page.get("NextKeyMarker")
            kwargs["VersionIdMarker"] = page.get("NextVersionIdMarker")

    def ensure_bucket(self) -> None:
        """Create the bucket if missing (the embedded emulator's own)."""
        try:
            self._call("HeadBucket", self._s3.head_bucket, Bucket=self.bucket)
        except AwsError:
            self._call("CreateBucket", self._s3.create_bucket, Bucket=self.bucket)
