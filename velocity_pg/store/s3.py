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
  in seconds with one clear line, and one that stalls (accepts the connection,
  then stops reading or answering) fails within :data:`STALL_LIMIT` seconds,
  naming the object (and part) and the endpoint.
* Signals: the parts of an upload go out from daemon threads while the main
  thread only reads the source and waits, in short steps: Ctrl+C or SIGTERM
  ends an upload at once (its unfinished upload is aborted, within
  :data:`CLEANUP_LIMIT` seconds, best effort), and a thread stuck on a stalled
  connection never keeps the process alive. A stop is never caught as a failure
  here: only ``Exception`` is caught, and a stop is a ``BaseException``.
"""

from __future__ import annotations

import builtins
import io
import threading
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

from velocity_pg.errors import ConfigError, OperationFailed
from velocity_pg.settings import OffSite
from velocity_pg.store import pipe
from velocity_pg.store.remote import CLEANUP_LIMIT, Changed, Progress, RemoteObject, Upload, within

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

#: Parts of 6 MiB, at most 3 in memory (each read, then sent): a push stays under
#: 100 MiB up to 900 parts (5.3 GiB); bigger dumps get bigger parts, so no upload has
#: more than about 900: OpenStack Swift's S3 layer allows 1,000 parts by default (AWS
#: 10,000), and an encrypted copy is a little larger than the dump that sizes its parts.
PART_SIZE = 6 * 1024 * 1024
MAX_PARTS = 900
CONCURRENCY = 3

#: Every request: at most CONNECT_TIMEOUT seconds to connect and, while it is sent,
#: without the store taking a byte (urllib3 keeps the connect timeout on the socket
#: while sending); at most READ_TIMEOUT seconds without a byte of the answer; and
#: ATTEMPTS attempts in all (botocore's "standard" retries, back-off under a second).
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 20
ATTEMPTS = 3
#: The longest one request to a store that stalls takes to fail.
REQUEST_LIMIT = ATTEMPTS * (CONNECT_TIMEOUT + READ_TIMEOUT)
#: Clean-up after a failure or a stop (:meth:`S3Store.hurried`): one attempt with these
#: short timeouts, each step given up after ``remote.CLEANUP_LIMIT`` seconds.
CLEANUP_CONNECT_TIMEOUT = 2
CLEANUP_READ_TIMEOUT = 3
#: How long a transfer to (or from) a store that stalls takes to fail, at most: the
#: stalled request, then up to two clean-up steps (the upload's, the push's), and
#: botocore's back-off. The README gives this bound.
STALL_LIMIT = REQUEST_LIMIT + 2 * CLEANUP_LIMIT + 2
#: The main thread waits for the upload threads in steps this long.
WAIT_STEP = 0.5

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

        def client(connect: float, read: float, attempts: int) -> S3Client:
            config = Config(
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                connect_timeout=connect,
                read_timeout=read,
                retries={"total_max_attempts": attempts, "mode": "standard"},
                s3={"addressing_style": "path"} if offsite.endpoint_url else None,
                max_pool_connections=CONCURRENCY + 2,
            )
            region = session.region_name or ("us-east-1" if offsite.endpoint_url else None)
            made: S3Client = session.client(
                "s3", endpoint_url=offsite.endpoint_url, region_name=region, config=config
            )
            return made

        self.client = client(CONNECT_TIMEOUT, READ_TIMEOUT, ATTEMPTS)
        #: For clean-up after a failure or a stop: one short attempt (see :meth:`hurried`).
        self._quick_client = client(CLEANUP_CONNECT_TIMEOUT, CLEANUP_READ_TIMEOUT, 1)

    def hurried(self) -> S3Store:
        """This store for clean-up after a failure or a stop: each call one attempt with
        short timeouts (CLEANUP_CONNECT_TIMEOUT, CLEANUP_READ_TIMEOUT)."""
        import copy

        quick = copy.copy(self)
        quick.client = self._quick_client
        return quick

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
        part_size = upload_part_size(size_hint)
        first = _read_part(source, part_size)
        if first.size < part_size:  # one part: one PUT
            try:
                self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=first.body)
            except Exception as exc:
                self._fail(exc, f"upload {key}")
            if progress is not None:
                progress(first.size)
            return
        try:
            started = self.client.create_multipart_upload(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            self._fail(exc, f"start the upload of {key}")
        upload_id = started["UploadId"]
        parts = _Parts(self, key, upload_id, progress)
        number, data = 1, first
        del first  # each part is held only while it is read or in flight
        try:
            while data.size:
                parts.submit(number, data)
                number, data = number + 1, _Part.empty()
                data = _read_part(source, part_size)
            done = parts.finish()
            try:
                self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=self._key(key),
                    UploadId=upload_id,
                    MultipartUpload={"Parts": done},  # type: ignore[typeddict-item]
                )
            except Exception as exc:
                self._fail(exc, f"finish the upload of {key} ({len(done)} parts)")
        except BaseException:
            # A failure, or a stop (Ctrl+C, SIGTERM): the threads stop taking parts, and
            # the unfinished upload is aborted, best effort and briefly. A thread stuck on
            # a stalled connection is left to its timeout; it never holds the process.
            parts.cancel()
            quick = self.hurried()
            with _suppressed():
                within(
                    CLEANUP_LIMIT,
                    lambda: quick.abort_upload(Upload(key, upload_id, datetime.now(UTC))),
                )
            raise

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


class _Part:
    """One part of an upload, in memory once (no joined copy): a body to send (botocore
    rewinds it for a retry) and its size."""

    def __init__(self, body: io.BytesIO, size: int) -> None:
        self.body = body
        self.size = size

    @classmethod
    def empty(cls) -> _Part:
        return cls(io.BytesIO(), 0)


def _read_part(source: pipe.Reader, size: int) -> _Part:
    """Up to ``size`` bytes of ``source``: fewer only at its end."""
    body = io.BytesIO()
    left = size
    while left > 0:
        chunk = source.read(min(left, pipe.CHUNK))
        if not chunk:
            break
        body.write(chunk)
        left -= len(chunk)
    body.seek(0)
    return _Part(body, size - left)


class _suppressed:
    r"""Ignore a clean-up's failure (never a stop: those are not ``Exception``\ s)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> bool:
        return kind is not None and issubclass(kind, Exception)


class _Parts:
    """The parts of one multipart upload, sent by up to CONCURRENCY daemon threads.

    The main thread reads the source and hands parts over (:meth:`submit`), waiting
    in short steps while CONCURRENCY parts are in flight, so memory stays flat and a
    signal is acted on at once. A part that fails (after botocore's retries) fails
    the upload: the main thread raises it, naming the part.
    """

    def __init__(self, store: S3Store, key: str, upload_id: str, progress: Progress | None) -> None:
        self._store = store
        self._key = key
        self._upload_id = upload_id
        self._progress = progress
        self._cond = threading.Condition()
        self._waiting: deque[tuple[int, _Part]] = deque()
        self._in_flight = 0  # handed over and not yet uploaded
        self._etags: dict[int, str] = {}
        self._failure: tuple[int, BaseException] | None = None
        self._stopped = False
        self._threads: builtins.list[threading.Thread] = []
        self._sent = 0  # bytes uploaded, not yet reported to ``progress``

    def submit(self, number: int, data: _Part) -> None:
        self._wait(lambda: self._in_flight < CONCURRENCY)
        with self._cond:
            self._waiting.append((number, data))
            self._in_flight += 1
            if len(self._threads) < min(CONCURRENCY, self._in_flight):
                thread = threading.Thread(
                    target=self._work, name=f"velocity-pg-upload-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            self._cond.notify_all()

    def finish(self) -> builtins.list[dict[str, object]]:
        """Wait for every part; their numbers and ETags, in order."""
        self._wait(lambda: self._in_flight == 0)
        self.cancel()  # the threads end
        return [{"PartNumber": n, "ETag": etag} for n, etag in sorted(self._etags.items())]

    def cancel(self) -> None:
        with self._cond:
            self._stopped = True
            self._waiting.clear()
            self._cond.notify_all()

    def _wait(self, ready: Callable[[], bool]) -> None:
        while True:
            with self._cond:
                if self._failure is None and not ready():
                    self._cond.wait(WAIT_STEP)
                failure = self._failure
                done = ready()
                sent, self._sent = self._sent, 0
            if sent and self._progress is not None:
                self._progress(sent)
            if failure is not None:
                number, exc = failure
                self._store._fail(exc, f"upload part {number} of {self._key}")
            if done:
                return

    def _work(self) -> None:
        client = self._store.client
        while True:
            with self._cond:
                while not self._waiting and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                number, data = self._waiting.popleft()
            try:
                answer = client.upload_part(
                    Bucket=self._store.bucket,
                    Key=self._store._key(self._key),
                    UploadId=self._upload_id,
                    PartNumber=number,
                    Body=data.body,
                )
            except BaseException as exc:  # the main thread raises it
                with self._cond:
                    if self._failure is None:
                        self._failure = (number, exc)
                    self._cond.notify_all()
                return
            with self._cond:
                self._etags[number] = str(answer["ETag"])
                self._in_flight -= 1
                self._sent += data.size
                self._cond.notify_all()
            del data  # never held while this thread waits for the next part


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


def _send_timed_out(exc: BaseException) -> bool:
    """A request whose sending timed out: the store stopped reading it (botocore calls
    that a closed connection; the send timeout is the connect timeout)."""
    from botocore import exceptions as bx

    if not isinstance(exc, bx.ConnectionClosedError):
        return False
    cause = getattr(exc, "kwargs", {}).get("error")
    return any(isinstance(arg, TimeoutError) for arg in getattr(cause, "args", ()))


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
    if isinstance(exc, bx.ReadTimeoutError) or _send_timed_out(exc):
        return (
            f"the storage stalled: no data moved within the timeouts ({CONNECT_TIMEOUT} s to "
            f"send, {READ_TIMEOUT} s to answer; up to {ATTEMPTS} attempts); is the endpoint, a "
            "proxy or the network stuck?"
        )
    if isinstance(exc, bx.ConnectionClosedError):
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
