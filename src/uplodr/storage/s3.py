"""A store in an S3-compatible bucket (Tigris, AWS S3, Cloudflare R2, MinIO, Swift's s3api).

Built on obstore: async, a Rust HTTP client, multipart uploads and conditional PUT
(`If-None-Match: *`) built in, typed stubs, and no boto dependency tree.

Retries: obstore's own retry loop is switched off (`max_retries=0`) and every call goes through
one stamina caller: exponential backoff (0.1 s doubling, at most 2 s apart, plus up to 0.5 s of
jitter) on throttling (429, 503 SlowDown), other 5xx, 408, timeouts and connection errors, never
on 4xx auth or validation errors; all attempts of one call are bounded by `deadline_s`
(20 s by default), enforced with `asyncio.timeout` so a hung attempt cannot stretch it.

Errors become StorageUnavailable naming the store (`s3://bucket/prefix`) and the reason in plain
words (`storage.s3_errors`: obstore's exception types first, its message only for what they do
not say); obstore's own message (URLs, request ids, the string to sign) is never shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from contextvars import ContextVar
from datetime import timedelta
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import quote, urlsplit

import obstore
import stamina
from obstore.exceptions import AlreadyExistsError, BaseError, PreconditionError
from obstore.store import S3Store as _ObstoreS3

from uplodr.errors import StorageUnavailable
from uplodr.storage.base import READ_CHUNK, StoredObject, is_check_key, write_read_delete
from uplodr.storage.s3_errors import classify, explain, is_retryable

if TYPE_CHECKING:
    from obstore import GetResult, ObjectMeta
    from obstore.store import ClientConfig, S3Config

T = TypeVar("T")

DEFAULT_DEADLINE_S = 20.0
DEFAULT_REGION = "us-east-1"
# Objects larger than this go up in 5 MiB parts (S3's minimum part size), several at once.
MULTIPART_THRESHOLD = 8 * 1024 * 1024
MULTIPART_CHUNK = 5 * 1024 * 1024
LIST_PAGE = 1000  # keys per listing request (S3's maximum)

# True while a call's failure will be one line that already says how long it tried.
_QUIET: ContextVar[bool] = ContextVar("uplodr_s3_quiet_retries", default=False)


class _QuietRetries(logging.Filter):
    """stamina logs every scheduled retry at WARNING. During the start-up check, and in commands
    like `uplodr sweep`, those notices would bury the one clear line printed at the end, so they
    are dropped there (and only there: a retry during a job stays in the log)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _QUIET.get()


logging.getLogger("stamina").addFilter(_QuietRetries())


@contextlib.contextmanager
def quiet_retries() -> Iterator[None]:
    """Drop stamina's retry notices in this context (the final error says it all)."""
    token = _QUIET.set(True)
    try:
        yield
    finally:
        _QUIET.reset(token)


class S3Store:
    """One bucket (and optional prefix) of an S3-compatible service."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        region: str | None = None,
        virtual_hosted: bool = False,
        public_url: str | None = None,
        deadline_s: float = DEFAULT_DEADLINE_S,
        multipart_threshold: int = MULTIPART_THRESHOLD,
    ) -> None:
        if not bucket:
            raise ValueError("an S3 store needs a bucket name")
        if public_url is not None and "{key}" not in public_url:
            raise ValueError("public_url must contain {key}")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint = endpoint.rstrip("/") if endpoint else None
        self.region = region or DEFAULT_REGION
        self.virtual_hosted = virtual_hosted
        self.deadline_s = deadline_s
        self.multipart_threshold = multipart_threshold
        self.description = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.public_url = public_url or self._default_public_url()

        config: S3Config = {
            "region": self.region,
            # Path style whenever a custom endpoint is set, unless asked otherwise.
            "virtual_hosted_style_request": virtual_hosted,
        }
        if self.endpoint:
            config["endpoint"] = self._endpoint_for_client()
        if access_key_id:
            config["access_key_id"] = access_key_id
        if secret_access_key:
            config["secret_access_key"] = secret_access_key
        if session_token:
            config["session_token"] = session_token
        per_request = timedelta(seconds=max(1.0, min(deadline_s, 30.0)))
        client: ClientConfig = {
            "allow_http": bool(self.endpoint and self.endpoint.startswith("http://")),
            "connect_timeout": timedelta(seconds=max(0.5, min(deadline_s / 4, 5.0))),
            "timeout": per_request,
        }
        try:
            self._store = _ObstoreS3(
                bucket,
                prefix=self.prefix or None,
                config=config,
                client_options=client,
                retry_config={"max_retries": 0},  # stamina retries, with one overall deadline
            )
        except BaseError as error:
            reason = "incomplete configuration"
            if "SecretAccessKey" in str(error):
                reason = "an access key without a secret (set AWS_SECRET_ACCESS_KEY)"
            elif "AccessKeyId" in str(error):
                reason = "a secret without an access key (set AWS_ACCESS_KEY_ID)"
            raise StorageUnavailable(f"{self.description}: {reason}") from None
        self._retry = stamina.AsyncRetryingCaller(
            attempts=None,
            timeout=deadline_s * 0.8,  # asyncio.timeout(deadline_s) is the hard bound
            wait_initial=0.1,
            wait_max=2.0,
            wait_jitter=0.5,
        ).on(is_retryable)

    @classmethod
    def from_env(
        cls,
        bucket: str,
        prefix: str,
        env: Mapping[str, str],
        *,
        public_url: str | None = None,
        virtual_hosted: bool | None = None,
        deadline_s: float | None = None,
    ) -> S3Store:
        """Endpoint, credentials and region from the variables Tigris sets on Fly."""
        if virtual_hosted is None:
            virtual_hosted = env.get("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "").lower() in (
                "1",
                "true",
                "yes",
            )
        if deadline_s is None:
            deadline_s = float(env.get("UPLODR_STORAGE_DEADLINE", DEFAULT_DEADLINE_S))
        return cls(
            bucket,
            prefix,
            endpoint=env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None,
            access_key_id=env.get("AWS_ACCESS_KEY_ID"),
            secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"),
            session_token=env.get("AWS_SESSION_TOKEN"),
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
            virtual_hosted=virtual_hosted,
            public_url=public_url,
            deadline_s=deadline_s,
        )

    # -- the Store contract --------------------------------------------------------------------

    async def put(self, key: str, data: bytes, content_type: str, cache_control: str) -> None:
        await self._put(key, data, content_type, cache_control, create=False)

    async def put_new(self, key: str, data: bytes, content_type: str, cache_control: str) -> bool:
        if len(data) > self.multipart_threshold:
            # obstore sends conditional PUTs as one request; a multipart upload cannot carry
            # If-None-Match everywhere, so big objects check first (a small race, see README).
            if await self.info(key) is not None:
                return False
            await self.put(key, data, content_type, cache_control)
            return True
        try:
            await self._put(key, data, content_type, cache_control, create=True)
        except (AlreadyExistsError, PreconditionError):
            return False
        return True

    async def info(self, key: str) -> StoredObject | None:
        try:
            meta = await self._call(
                "read",
                key,
                lambda: obstore.head_async(self._store, key),
                passthrough=(FileNotFoundError,),
            )
        except FileNotFoundError:
            return None
        return _stored_object(meta)

    async def get(self, key: str) -> bytes | None:
        async def fetch() -> bytes:
            result = await obstore.get_async(self._store, key)
            return bytes(await result.bytes_async())

        try:
            return await self._call("read", key, fetch, passthrough=(FileNotFoundError,))
        except FileNotFoundError as error:
            self._unless_no_bucket(error)
            return None

    async def get_stream(self, key: str) -> AsyncGenerator[bytes] | None:
        async def open_() -> GetResult:
            return await obstore.get_async(self._store, key)

        try:
            result = await self._call("read", key, open_, passthrough=(FileNotFoundError,))
        except FileNotFoundError as error:
            self._unless_no_bucket(error)
            return None
        return self._chunks(key, result)

    async def _chunks(self, key: str, result: GetResult) -> AsyncGenerator[bytes]:
        """The body of an answered GET; its whole read is bounded by the client's per-request
        `timeout` (obstore's BytesStream), a failure mid-way is one StorageUnavailable."""
        try:
            async for chunk in result.stream(min_chunk_size=READ_CHUNK):
                yield bytes(chunk)
        except (BaseError, OSError) as error:
            raise StorageUnavailable(
                f"{self.description}: cannot read {key!r}: {explain(error)}"
            ) from None

    async def delete(self, key: str) -> None:
        try:
            await self._call(
                "delete",
                key,
                lambda: obstore.delete_async(self._store, key),
                passthrough=(FileNotFoundError,),
            )
        except FileNotFoundError as error:
            self._unless_no_bucket(error)

    async def list_objects(self, prefix: str = "") -> AsyncIterator[StoredObject]:
        folder = prefix.strip("/") or None
        after: str | None = None
        while True:
            # One page per call, so that the deadline and the retries apply to each request,
            # and a retried page starts after the last key already seen.
            async def page(after: str | None = after) -> Sequence[ObjectMeta]:
                stream = obstore.list(self._store, folder, offset=after, chunk_size=LIST_PAGE)
                async for batch in stream:
                    return batch
                return []

            batch = await self._call("list keys under", prefix or "/", page)
            for meta in batch:
                yield _stored_object(meta)
            if not batch:
                return
            after = batch[-1]["path"]

    def is_debris(self, key: str) -> bool:
        return is_check_key(key)  # writes are atomic in S3: nothing temporary but check objects

    def url(self, key: str) -> str:
        full = f"{self.prefix}/{key}" if self.prefix else key
        return self.public_url.replace("{key}", quote(full, safe="/"))

    async def check_writable(self) -> None:
        with quiet_retries():
            await write_read_delete(self)

    async def aclose(self) -> None:
        return None

    # -- helpers -------------------------------------------------------------------------------

    def _unless_no_bucket(self, error: FileNotFoundError) -> None:
        """A missing key is an answer; a missing bucket is a broken store."""
        if classify(error).kind == "no_bucket":
            raise StorageUnavailable(f"{self.description}: {explain(error)}") from None

    async def _put(
        self, key: str, data: bytes, content_type: str, cache_control: str, *, create: bool
    ) -> None:
        """One write. `create`: only if the key is free (one request, so never multipart);
        the refusal comes back as AlreadyExistsError or PreconditionError."""
        attributes: dict[str, str] = {"Content-Type": content_type, "Cache-Control": cache_control}
        await self._call(
            "write",
            key,
            lambda: obstore.put_async(
                self._store,
                key,
                data,
                attributes=attributes,
                mode="create" if create else "overwrite",
                use_multipart=not create and len(data) > self.multipart_threshold,
                chunk_size=MULTIPART_CHUNK,
                max_concurrency=4,
            ),
            passthrough=(AlreadyExistsError, PreconditionError) if create else (),
        )

    async def _call(
        self,
        verb: str,
        key: str,
        fn: Callable[[], Awaitable[T]],
        passthrough: tuple[type[BaseException], ...] = (),
    ) -> T:
        """Run one storage call with retries and the overall deadline; translate errors."""
        failures: list[BaseException] = []

        async def attempt() -> T:
            try:
                return await fn()
            except Exception as error:
                failures.append(error)
                raise

        try:
            async with asyncio.timeout(self.deadline_s):
                return await self._retry(attempt)
        except passthrough:
            raise
        except TimeoutError:
            # The hard deadline cut a retry short: report why the attempts before it failed.
            reason = explain(failures[-1]) if failures else "no answer"
            raise StorageUnavailable(
                f"{self.description}: cannot {verb} {key!r}: {reason} "
                f"(gave up after {self.deadline_s:g} s)"
            ) from None
        except (BaseError, OSError) as error:
            raise StorageUnavailable(
                f"{self.description}: cannot {verb} {key!r}: {explain(error)}"
            ) from None

    def _endpoint_for_client(self) -> str:
        assert self.endpoint is not None
        if not self.virtual_hosted:
            return self.endpoint
        parts = urlsplit(self.endpoint)
        if parts.hostname and parts.hostname.startswith(f"{self.bucket}."):
            return self.endpoint
        # obstore expects the bucket in a virtual-hosted endpoint.
        return f"{parts.scheme}://{self.bucket}.{parts.netloc}{parts.path}"

    def _default_public_url(self) -> str:
        if self.endpoint and not self.virtual_hosted:
            return f"{self.endpoint}/{quote(self.bucket)}/{{key}}"
        if self.endpoint:
            return f"{self._endpoint_for_client()}/{{key}}"
        return f"https://{self.bucket}.s3.{self.region}.amazonaws.com/{{key}}"


def _stored_object(meta: ObjectMeta) -> StoredObject:
    return StoredObject(meta["path"], int(meta["size"]), meta["last_modified"].timestamp())
