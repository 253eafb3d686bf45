"""Storage failures in words: what went wrong with an object store and how to fix it.

Commands call :func:`explain_storage_failure` at their edge (``logitcache.cli.main``) so that a
missing credential or an unreachable endpoint reads as one line naming the URI and the likely
fix, instead of a botocore traceback. It walks the exception chain (s3fs re-raises botocore
and aiohttp errors as ``OSError`` with the original as the cause) and classifies by exception
type and S3 error *code*, never by message text.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from logitcache.storage.conditional import s3_error_code

NO_CREDENTIALS = (
    "no credentials for object storage: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or "
    "AWS_PROFILE, or run on a machine with an instance role); for a public bucket pass "
    "--storage-options '{\"anon\": true}'"
)
ACCESS_DENIED = (
    "access denied: the credentials in use may not read or write this bucket/prefix; check the "
    "IAM policy, the bucket policy and AWS_PROFILE, or use a URI you have access to"
)
NO_BUCKET = "the bucket does not exist: check the URI for typos, or create the bucket first"
THROTTLED = (
    "the store kept throttling (SlowDown) after retries: retry later, or lower --workers so "
    "fewer writers share the prefix"
)

_ACCESS_CODES = {
    "AccessDenied",
    "403",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AllAccessDisabled",
}
_THROTTLE_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "503"}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _endpoint() -> str:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""


def explain_storage_failure(exc: BaseException) -> str | None:
    """The reason and the fix for a storage failure behind ``exc``; None if it is not one."""
    for e in _chain(exc):
        name = type(e).__name__
        module = type(e).__module__ or ""
        if name in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"):
            return NO_CREDENTIALS
        if name in ("EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError"):
            where = _endpoint()
            return f"the storage endpoint {where or '(default AWS endpoint)'} is unreachable: " + (
                "check AWS_ENDPOINT_URL and that the server is up"
                if where
                else "check the network, or set AWS_ENDPOINT_URL for an S3-compatible store"
            )
        code = s3_error_code(e) if module.startswith("botocore") else None
        if code in _ACCESS_CODES:
            return ACCESS_DENIED
        if code == "NoSuchBucket":
            return NO_BUCKET
        if code in _THROTTLE_CODES:
            return THROTTLED
    return None


@contextlib.contextmanager
def blame(uri: str) -> Iterator[None]:
    """Re-raise a storage failure inside the block as a :class:`StorageError` naming ``uri``
    and the likely fix; other errors pass unchanged."""
    from logitcache.errors import LogitCacheError, StorageError
    from logitcache.storage import redact_uri

    try:
        yield
    except LogitCacheError:
        raise
    except Exception as exc:
        reason = explain_storage_failure(exc)
        if reason is None:
            raise
        raise StorageError(f"{redact_uri(str(uri))}: {reason}") from exc


__all__ = ["blame", "explain_storage_failure"]
