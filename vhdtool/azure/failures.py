"""How a failed request to Azure Storage is told: worth retrying, or final. One classifier for every path.

The SDK calls (:mod:`vhdtool.azure.storage`) and the direct Put Page / Get Blob requests
(:mod:`vhdtool.azure.rest`) both end here, so the same answer is the same error whichever way it
came: 408/429/5xx and broken connections are :class:`RetryableError` (with the server's wait, if it
gave one), everything else :class:`PermanentError`, a refused credential said plainly by the
``explain`` callback (see :func:`vhdtool.azure.signin.explain_refusal`). Callers pass text already
scrubbed of secrets.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from typing import Any

from vhdtool.errors import TransferError

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})

# (what was being done, HTTP status, x-ms-error-code, the service's authentication detail) -> a
# PermanentError naming the refused credential, or None when the answer is not about a credential.
Explain = Callable[[str, int, "str | None", "str | None"], "PermanentError | None"]


class RetryableError(TransferError):
    """A failure worth retrying: a timeout, a dropped connection, or a 408/429/5xx answer."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class PermanentError(TransferError):
    """A failure that retrying cannot fix (403, 404, 409, 412, bad request): the upload stops at once.

    ``reason`` names a refused credential (``"sas-expired"``, ``"sas-permission"``, ``"rbac"``...; see
    :mod:`vhdtool.azure.signin`) and ``advice`` what to do, so a command can give its own advice instead.
    """

    def __init__(self, message: str, status: int | None = None, reason: str | None = None,
                 advice: str | None = None) -> None:
        super().__init__(f"{message}; {advice}" if advice else message)
        self.status = status
        self.reason = reason
        self.detail = message
        self.advice = advice


def retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or an HTTP date) or ``x-ms-retry-after-ms``.

    ``headers`` is anything with ``get``: the SDK's response headers or ``http.client``'s.
    """
    if headers is None:
        return None
    millis = headers.get("x-ms-retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def hint(status: int) -> str:
    """What a permanent status usually means, as a parenthesis to append."""
    if status == 403:
        return " (check the SAS token's permissions and expiry, or the credential's role on the container)"
    if status == 404:
        return " (does the container exist?)"
    if status == 409:
        return " (the blob is in a conflicting state, e.g. leased, or is not a page blob)"
    return ""


def answer_error(name: str, what: str, status: int, error_code: str | None, *, reason: str | None = None,
                 summary: str = "", headers: Any = None, detail: str | None = None,
                 explain: Explain | None = None, clean: Callable[[str], str] = str) -> TransferError:
    """The error for an HTTP answer ``status`` to ``what`` on the blob ``name``.

    ``error_code`` is the service's ``x-ms-error-code``, ``reason`` the HTTP reason phrase (shown
    when there is no code), ``summary`` the service's own message, ``detail`` its
    ``AuthenticationErrorDetail`` (for ``explain``), ``clean`` the scrubber applied to every text.
    """
    code = error_code or reason or ""
    message = clean(f"{name}: {what}: HTTP {status} {code}".rstrip() + (f": {summary}" if summary else ""))
    if status in RETRYABLE_STATUS:
        return RetryableError(message, status, retry_after(headers))
    if explain is not None:
        refused = explain(what, status, error_code, detail)
        if refused is not None:
            return refused
    return PermanentError(message + hint(status), status)


def connection_error(name: str, what: str, err: BaseException, clean: Callable[[str], str] = str) -> RetryableError:
    """A request that got no (complete) answer: the connection broke, timed out or was refused."""
    return RetryableError(clean(f"{name}: {what}: connection failed: {type(err).__name__}: {first_line(err)}"))


def cut_short(name: str, what: str, got: int, wanted: int, clean: Callable[[str], str] = str) -> RetryableError:
    """An answer whose body ended early: retryable, the service did not refuse."""
    return RetryableError(clean(f"{name}: {what}: answer cut short ({got} of {wanted} bytes)"))


def first_line(err: BaseException) -> str:
    """The first line of an exception's text, or its type's name when it has none."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
