"""The session exchange (``POST /auth/migration/exchange``), free of any HTTP framework.

An API handler builds one ``ExchangeService`` per process and, per request::

    try:
        request = service.parse(headers, body, is_base64, source=source_ip)
        result = service.exchange(request)
    except ExchangeError as refused:
        return refused.status, refused.body(), refused.headers()
    return 200, result.body(), result.headers()
"""

from tokenmigration.exchange.errors import (
    ExchangeDisabled,
    ExchangeError,
    HoldsTokens,
    InvalidGrant,
    InvalidRequest,
    TooManyRequests,
    UserBusy,
)
from tokenmigration.exchange.request import (
    ACCESS_TOKEN_TYPE,
    GRANT_TYPE,
    SUBJECT_TOKEN_TYPE,
    ExchangeRequest,
    parse_exchange_request,
)
from tokenmigration.exchange.service import EXCHANGE_RUN_ID, ExchangeResult, ExchangeService
from tokenmigration.exchange.throttle import FailureThrottle, InMemoryFailureThrottle, RedisFailureThrottle

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "EXCHANGE_RUN_ID",
    "GRANT_TYPE",
    "SUBJECT_TOKEN_TYPE",
    "ExchangeDisabled",
    "ExchangeError",
    "ExchangeRequest",
    "ExchangeResult",
    "ExchangeService",
    "FailureThrottle",
    "HoldsTokens",
    "InMemoryFailureThrottle",
    "InvalidGrant",
    "InvalidRequest",
    "RedisFailureThrottle",
    "TooManyRequests",
    "UserBusy",
    "parse_exchange_request",
]
