"""What the exchange refuses, with the HTTP status and OAuth-style body the API answers.

The API handler maps every ``ExchangeError`` the same way: ``status``, ``body()``, ``headers()``.
Bodies carry no detail that tells a caller holding no valid session anything (``invalid_grant``
is one fixed body for every bad session).
"""

from __future__ import annotations

from typing import Any

# RFC 6749 section 5.1/5.2: token responses and their errors must not be cached.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class ExchangeError(Exception):
    status = 500
    error = "server_error"
    description: str | None = None

    def __init__(self, retry_after: int | None = None) -> None:
        super().__init__(self.error)
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.error}
        if self.description:
            body["error_description"] = self.description
        return body

    def headers(self) -> dict[str, str]:
        headers = dict(NO_STORE)
        if self.retry_after is not None:
            headers["Retry-After"] = str(int(self.retry_after))
        return headers


class InvalidRequest(ExchangeError):
    """400: no session presented, or a malformed body (RFC 8693 fields missing or wrong)."""

    status = 400
    error = "invalid_request"


class InvalidGrant(ExchangeError):
    """401: bad signature, missing or expired key, anonymous session, unknown user, no live token."""

    status = 401
    error = "invalid_grant"


class ExchangeDisabled(ExchangeError):
    """403: the ``exchange_enabled`` flag is off (raised by the handler, which reads the flags)."""

    status = 403
    error = "exchange_disabled"


class UserBusy(ExchangeError):
    """409: another transaction held the user's row past MIGRATION_LOCK_TIMEOUT_MS; retrying is safe."""

    status = 409
    error = "user_locked"
    description = "the user is being updated; try again"

    def __init__(self, retry_after: int | None = 1) -> None:
        super().__init__(retry_after)


class TooManyRequests(ExchangeError):
    """429: this source failed too often in the current window."""

    status = 429
    error = "too_many_requests"


class BridgeOff(ExchangeError):
    """403 on the bridge: the exchange is switched off or the app is token-only; the caller backs off."""

    status = 403
    error = "bridge_off"

    def __init__(self, auth_mode: str, exchange_enabled: bool) -> None:
        super().__init__()
        self.auth_mode, self.exchange_enabled = auth_mode, exchange_enabled

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "auth_mode": self.auth_mode, "exchange_enabled": self.exchange_enabled}


class SlowDown(TooManyRequests):
    """429 on the bridge: the browser's address or its Express session failed too often in this window."""

    error = "slow_down"
