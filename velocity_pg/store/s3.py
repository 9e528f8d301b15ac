"""The S3 implementation of :class:`velocity_pg.store.remote.RemoteStore`, with boto3.

* The client is built with ``request_checksum_calculation`` and
  ``response_checksum_validation`` set to ``"when_required"``: since boto3
  1.36 the default CRC checksums are rejected by several S3-compatible
  providers, and velocity-pg checks its own SHA-256 anyway.
* Credentials and region come the standard way (``AWS_*`` variables, the AWS
  config and credentials files); they never pass through velocity-pg's
  arguments or output.
* Uploads are multipart with a bounded part size and concurrency, so memory
  stays flat whatever the size; downloads are one streamed GET.
* Listing follows every page (never only the first 1,000 keys).
* Timeouts and retries are short and bounded: an endpoint that is down fails
  in seconds with one clear line.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

from velocity_pg.errors import ConfigError, OperationFailed
from velocity_pg.settings import OffSite
from velocity_pg.store import pipe
from velocity_pg.store.remote import Changed, Progress, RemoteObject, Upload

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

#: Parts of 6 MiB, at most 3 in memory (each read, then sent): a push stays under
#: 100 MiB up to 900 parts (5.3 GiB); bigger dumps get bigger parts, so no upload has
#: more than about 900: OpenStack Swift's S3 layer allows 1,000 parts by default (AWS
#: 10,000), and an encrypted copy is a little larger than the dump that sizes its parts.
PART_SIZE = 6 * 1024 * 1024
MAX_PARTS = 900
CONCURRENCY = 3
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 60
MAX_ATTEMPTS = 3

#: A conditional write's object changed (412) or is gone (404).
_CHANGED_CODES = {
    "PreconditionFailed",
    "412",
    "NoSuchKey",
    "404",
    "ConditionalRequestConflict",
    "409",
}

_CREDENTIAL_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "AccessDenied",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "AuthorizationHeaderMalformed",
    "403",
}


def upload_part_size(size_hint: int) -> int:
    """The part size of an upload of about ``size_hint`` bytes: PART_SIZE, or bigger so
    that it takes at most MAX_PARTS parts."""
    return max(PART_SIZE, -(-size_hint // MAX_PARTS))


def require_boto3() -> None:
    """Off-site copies need boto3: say how to install it, before anything runs."""
    try:
        import boto3  # noqa: F401
    except ImportError:
        raise ConfigError(
            "BACKUP_S3_URL is set but boto3, the S3 client, is not installed: "
            "pip install 'velocity-pg[s3]' (the db image has it); nothing was done"
        ) from None


class S3Store:
    """Objects under ``s3://bucket/prefix``; keys given to it are relative to the prefix."""

    def __init__(self, offsite: OffSite) -> None:
        require_boto3()
        import boto3
        from botocore.config import Config

        self.bucket = offsite.bucket
        self.prefix = offsite.prefix
        #: False once the store refused a conditional PUT (If-Match): checked, then written.
        self._conditional_puts = True
        self.endpoint = offsite.endpoint_url
        aws = offsite.aws
        session = boto3.session.Session(
            aws_access_key_id=aws.get("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=aws.get("AWS_SECRET_ACCESS_KEY"),
            aws_session_token=aws.get("AWS_SESSION_TOKEN"),
            region_name=aws.get("AWS_REGION") or aws.get("AWS_DEFAULT_REGION"),
            profile_name=aws.get("AWS_PROFILE"),
        )
        if session.get_credentials() is None:
            raise ConfigError(
                "BACKUP_S3_URL is set but no S3 credentials were found: set AWS_ACCESS_KEY_ID "
                "and AWS_SECRET_ACCESS_KEY (or an AWS profile); nothing was done"
            )
        config = Config(
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
            s3={"addressing_style": "path"} if offsite.endpoint_url else None,
        )
        region = session.region_name or ("us-east-1" if offsite.endpoint_url else None)
        self.client: S3Client = session.client(
            "s3", endpoint_url=offsite.endpoint_url, region_name=region, config=config
        )

    def describe(self) -> str:
        where = f" at {self.endpoint}" if self.endpoint else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"

    def _key(self, key: str) -> str:
        return self.prefix + key

    def put(
        self,
        key: str,
        source: pipe.Reader,
        progress: Progress | None = None,
        size_hint: int = 0,
    ) -> None:
        from boto3.s3.transfer import TransferConfig

        part = upload_part_size(size_hint)
        transfer = TransferConfig(
            multipart_threshold=part,
            multipart_chunksize=part,
            max_concurrency=CONCURRENCY,
            use_threads=True,
            preferred_transfer_client="classic",
        )
        # A stream is read part by part into memory: at most this many parts wait
        # there, so memory stays flat (about CONCURRENCY + 1 parts) whatever the size.
        transfer.max_in_memory_upload_chunks = CONCURRENCY
        try:
            self.client.upload_fileobj(
                source,  # type: ignore[arg-type]
                self.bucket,
                self._key(key),
                Config=transfer,
                Callback=progress,
            )
        except Exception as exc:
            self._fail(exc, f"upload {key}")

    def put_bytes(self, key: str, data: bytes, if_match: str | None = None) -> None:
        from botocore.exceptions import ClientError

        if if_match is not None and not self._conditional_puts:
            self._put_after_check(key, data, if_match)
            return
        condition = {} if if_match is None else {"IfMatch": if_match}
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=self._key(key),
                Body=data,
                ContentType="application/json",
                **condition,  # type: ignore[arg-type]
            )
        except ClientError as exc:
            if if_match is not None and _code(exc) in ("NotImplemented", "501"):
                # Swift's S3 layer (and others) refuse conditional PUTs: check, then write.
                self._conditional_puts = False
                self._put_after_check(key, data, if_match)
                return
            if if_match is not None and _code(exc) in _CHANGED_CODES:
                raise Changed(f"{key} changed or was deleted in {self.describe()}") from exc
            self._fail(exc, f"upload {key}")
        except Exception as exc:
            self._fail(exc, f"upload {key}")

    def _put_after_check(self, key: str, data: bytes, if_match: str) -> None:
        """A conditional write where the store has none: the ETag is checked just before
        an unconditional write (a window of one request instead of none)."""
        current = self.head(key)
        if current is None or current.etag.strip('"') != if_match.strip('"'):
            raise Changed(f"{key} changed or was deleted in {self.describe()}")
        self.put_bytes(key, data)

    def head(self, key: str) -> RemoteObject | None:
        from botocore.exceptions import ClientError

        try:
            answer = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                self._require_bucket(key)  # a HEAD's 404 is the same for a missing bucket
                return None
            self._fail(exc, f"look at {key}")
        except Exception as exc:
            self._fail(exc, f"look at {key}")
        return RemoteObject(
            key=key,
            size=int(answer["ContentLength"]),
            last_modified=answer["LastModified"].astimezone(UTC),
            etag=str(answer.get("ETag", "")),
        )

    def _require_bucket(self, key: str) -> None:
        """An OperationFailed saying the bucket does not exist, when it does not."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchBucket", "NotFound"):
                self._fail(_NoBucket(), f"look at {key}")
            self._fail(exc, f"look at {key}")
        except Exception as exc:
            self._fail(exc, f"look at {key}")

    def list(self) -> Iterator[RemoteObject]:
        found: builtins.list[RemoteObject] = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for item in page.get("Contents", []):
                    found.append(
                        RemoteObject(
                            key=item["Key"][len(self.prefix) :],
                            size=int(item["Size"]),
                            last_modified=item["LastModified"].astimezone(UTC),
                            etag=str(item.get("ETag", "")),
                        )
                    )
        except Exception as exc:
            self._fail(exc, "list the off-site backups")
        return iter(found)

    def open(self, key: str) -> pipe.Reader:
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            self._fail(exc, f"download {key}")
        return _Body(answer["Body"], self, key)

    def get_bytes(self, key: str) -> bytes:
        reader = self.open(key)
        return reader.read()

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            self._fail(exc, f"delete {key}")

    def incomplete_uploads(self) -> builtins.list[Upload]:
        found: builtins.list[Upload] = []
        try:
            paginator = self.client.get_paginator("list_multipart_uploads")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for item in page.get("Uploads", []):
                    found.append(
                        Upload(
                            key=item["Key"][len(self.prefix) :],
                            upload_id=item["UploadId"],
                            initiated=item["Initiated"].astimezone(UTC),
                        )
                    )
        except Exception as exc:
            self._fail(exc, "list unfinished uploads")
        return found

    def abort_upload(self, upload: Upload) -> None:
        try:
            self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=self._key(upload.key), UploadId=upload.upload_id
            )
        except Exception as exc:
            self._fail(exc, f"abort the unfinished upload of {upload.key}")

    def upload_activity(self, upload: Upload) -> datetime | None:
        """When the upload last showed life: its newest part's time (a live push uploads
        parts all along), else its start; None when it is gone (completed or aborted)."""
        newest = upload.initiated
        try:
            paginator = self.client.get_paginator("list_parts")
            pages = paginator.paginate(
                Bucket=self.bucket, Key=self._key(upload.key), UploadId=upload.upload_id
            )
            for page in pages:
                for part in page.get("Parts", []):
                    newest = max(newest, part["LastModified"].astimezone(UTC))
        except Exception as exc:
            if _code(exc) == "NoSuchUpload":
                return None
            self._fail(exc, f"list the parts of the unfinished upload of {upload.key}")
        return newest

    def _fail(self, exc: BaseException, doing: str) -> NoReturn:
        raise OperationFailed(f"cannot {doing} in {self.describe()}: {explain(exc, self)}") from exc


class _Body:
    """A streamed GET body whose network errors become one clear line."""

    def __init__(self, body: Any, store: S3Store, key: str) -> None:
        self._body = body
        self._store = store
        self._key = key

    def read(self, size: int = -1, /) -> bytes:
        try:
            data: bytes = self._body.read(None if size < 0 else size)
        except Exception as exc:
            self._store._fail(exc, f"download {self._key}")
        return data


class _NoBucket(Exception):
    """The bucket does not exist (found by a HEAD, which carries no error code)."""

    response: ClassVar[dict[str, dict[str, str]]] = {"Error": {"Code": "NoSuchBucket"}}


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def explain(exc: BaseException, store: S3Store) -> str:
    """One line for a boto3/botocore error, naming the fix; never a credential."""
    from botocore import exceptions as bx

    if isinstance(exc, OperationFailed):
        return exc.message
    code = _code(exc)
    if code in ("NoSuchBucket",):
        return f"bucket {store.bucket!r} does not exist; create it or fix BACKUP_S3_URL"
    if code in _CREDENTIAL_CODES:
        return (
            f"the storage refused the credentials ({code}); check AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY and the key's permissions on the bucket"
        )
    if isinstance(exc, bx.EndpointConnectionError | bx.ConnectTimeoutError):
        return (
            f"cannot connect to {store.endpoint or 'the S3 endpoint'} (is it up? check "
            "BACKUP_S3_ENDPOINT_URL and the network)"
        )
    if isinstance(exc, bx.ReadTimeoutError | bx.ConnectionClosedError):
        return "the connection to the storage broke off; try again"
    if isinstance(exc, bx.NoCredentialsError):
        return "no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    if isinstance(exc, bx.ClientError):
        message = str(exc.response.get("Error", {}).get("Message", "")).strip()
        return f"{code}: {message}" if message else code or "the storage refused the request"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)
