"""Ray dashboard token authentication for job submission, without ever exposing the token.

Ray 2.60 turns token authentication on by default for clusters it starts: the dashboard's HTTP
API (which JobSubmissionClient talks to) answers 401 without ``Authorization: Bearer <token>``
(or ``X-Ray-Authorization`` behind proxies). Ray's own client adds the header only when
``RAY_AUTH_MODE=token`` is set in the submitting process, so logitcache resolves the token
itself, in Ray's order, and passes it as a request header:

1. ``RAY_AUTH_TOKEN`` (the token itself),
2. ``RAY_AUTH_TOKEN_PATH`` (a file holding it),
3. ``~/.ray/auth_token`` (written by ``ray get-auth-token --generate`` or by a local
   ``ray start``).

The token lives only in the HTTP headers of the client. It is never logged, printed, put in a
job's metadata or runtime environment, nor written into a cache: :class:`Secret` has a
redacted ``repr`` so an accidental ``log.debug(...)`` or traceback shows ``Secret(***)``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from logitcache.errors import ConfigError

log = logging.getLogger(__name__)

TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
DEFAULT_TOKEN_PATH = Path("~/.ray/auth_token")


class Secret:
    """A string that does not show itself in logs, reprs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__

    def __reduce__(self):  # never pickled into a Ray task or a job's metadata by accident
        raise TypeError("a Secret cannot be pickled")


def resolve_token() -> tuple[Secret | None, str]:
    """The dashboard token and where it came from (``"none"`` when there is none)."""
    value = os.environ.get(TOKEN_ENV, "").strip()
    if value:
        return Secret(value), f"${TOKEN_ENV}"
    path_env = os.environ.get(TOKEN_PATH_ENV, "").strip()
    path = Path(path_env).expanduser() if path_env else DEFAULT_TOKEN_PATH.expanduser()
    if path_env and not path.is_file():
        raise ConfigError(
            f"${TOKEN_PATH_ENV} names {path}, which is not a file; point it at the cluster's "
            f"token file or set ${TOKEN_ENV}"
        )
    if path.is_file():
        value = path.read_text().strip()
        if value:
            return Secret(value), str(path)
    return None, "none"


def auth_headers(token: Secret | None) -> dict[str, str]:
    """Request headers for the dashboard; empty when there is no token (auth disabled)."""
    if token is None:
        return {}
    return {"Authorization": f"Bearer {token.reveal()}"}


__all__ = ["Secret", "auth_headers", "resolve_token"]
