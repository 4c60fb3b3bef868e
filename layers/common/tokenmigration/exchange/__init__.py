"""The session exchange (``POST /auth/migration/exchange``), free of any HTTP framework.

An API handler builds one ``ExchangeService`` per process and, per request::

    try:
        request = service.parse(headers, body, is_base64, source=source_ip)
        result = service.exchange(request)
    except ExchangeError as refused:
        return refused.status, refused.body(), refused.headers()
    return 200, result.body(), result.headers()
"""

from tokenmigration.exchange.bridge import BridgeRequest, BridgeResult, parse_bridge_request
from tokenmigration.exchange.errors import (
    BridgeOff,
    ExchangeDisabled,
    ExchangeError,
    InvalidGrant,
    InvalidRequest,
    SlowDown,
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
from tokenmigration.exchange.service import BRIDGE_RUN_ID, EXCHANGE_RUN_ID, ExchangeResult, ExchangeService
from tokenmigration.exchange.throttle import FailureThrottle, InMemoryFailureThrottle, RedisFailureThrottle

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "BRIDGE_RUN_ID",
    "EXCHANGE_RUN_ID",
    "GRANT_TYPE",
    "SUBJECT_TOKEN_TYPE",
    "BridgeOff",
    "BridgeRequest",
    "BridgeResult",
    "ExchangeDisabled",
    "ExchangeError",
    "ExchangeRequest",
    "ExchangeResult",
    "ExchangeService",
    "FailureThrottle",
    "InMemoryFailureThrottle",
    "InvalidGrant",
    "InvalidRequest",
    "RedisFailureThrottle",
    "SlowDown",
    "TooManyRequests",
    "UserBusy",
    "parse_bridge_request",
    "parse_exchange_request",
]
