"""express-session / connect-redis: stored session values and the signed ``connect.sid`` cookie."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import quote, unquote

from tokenmigration.formats.laravel_session import clean_ip, clean_user_agent


class SessionKind(StrEnum):
    """How a stored Express session value was classified."""

    LOGGED_IN = "logged_in"
    ANONYMOUS = "anonymous"
    NULL_VALUE = "null_value"
    EMPTY_VALUE = "empty_value"
    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    NOT_AN_OBJECT = "not_an_object"
    INVALID_COOKIE = "invalid_cookie"
    INVALID_USER_ID = "invalid_user_id"


# Kinds that are data problems worth an entry in the error ledger; anonymous is normal.
PROBLEM_KINDS = frozenset(SessionKind) - {SessionKind.LOGGED_IN, SessionKind.ANONYMOUS}

KIND_MESSAGES = {
    SessionKind.NULL_VALUE: "session value is JSON null",
    SessionKind.EMPTY_VALUE: "session value is empty",
    SessionKind.NOT_UTF8: "session value is not UTF-8 text",
    SessionKind.NOT_JSON: "session value is not JSON",
    SessionKind.NOT_AN_OBJECT: "session value is not a JSON object",
    SessionKind.INVALID_COOKIE: "session has no cookie object; express-session cannot load it",
    SessionKind.INVALID_USER_ID: "user id is not a non-negative integer",
}

_IP_FIELDS = ("ip", "ipAddress", "ip_address", "remoteAddress")
_UA_FIELDS = ("userAgent", "user_agent", "ua")
_MAX_USER_ID = 2**63 - 1


# Not frozen: a frozen dataclass sets each field through object.__setattr__, and one is built per Express session.
@dataclass(slots=True)
class ParsedSession:
    kind: SessionKind
    user_id: int | None = None
    ip_address: str | None = None
    user_agent: str | None = None


def _walk(document: Any, path: Sequence[str]) -> Any:
    for part in path:
        if not isinstance(document, dict):
            return None
        document = document.get(part)
    return document


def normalize_user_id(value: Any) -> int | None:
    """A users.id from whatever the app serialized; None when it cannot be one."""
    if type(value) is int:  # the common case first; bool is a subclass of int and is refused below
        return value if 0 <= value <= _MAX_USER_ID else None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= _MAX_USER_ID else None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        number = int(value)
        return number if number <= _MAX_USER_ID else None
    return None


class SessionDecoder:
    """Classifies connect-redis values (``JSON.stringify(session)``) and finds the user in them."""

    def __init__(self, user_id_path: str = "passport.user") -> None:
        self.path = tuple(user_id_path.split("."))

    def parse(self, raw: bytes | str | None) -> ParsedSession:
        if raw is None:
            return ParsedSession(SessionKind.NULL_VALUE)
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError:
                return ParsedSession(SessionKind.NOT_UTF8)
        if not raw or raw.isspace():  # not strip(): that copies every value
            return ParsedSession(SessionKind.EMPTY_VALUE)
        try:
            document = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            return ParsedSession(SessionKind.NOT_JSON)
        return self.classify(document)

    def classify(self, document: Any) -> ParsedSession:
        if document is None:
            return ParsedSession(SessionKind.NULL_VALUE)
        if type(document) is not dict:  # json.loads only makes plain dicts; this runs per session
            return ParsedSession(SessionKind.NOT_AN_OBJECT)
        if type(document.get("cookie")) is not dict:
            return ParsedSession(SessionKind.INVALID_COOKIE)
        raw_user = _walk(document, self.path)
        if raw_user is None:
            return ParsedSession(SessionKind.ANONYMOUS)
        if isinstance(raw_user, dict):
            # passport's serializeUser often stores the whole user: {"id": 7, "username": ...};
            # a user object without an id is a logged-in session we cannot place, not an anonymous one.
            raw_user = raw_user.get("id")
        user_id = normalize_user_id(raw_user)
        if user_id is None:
            return ParsedSession(SessionKind.INVALID_USER_ID)
        return ParsedSession(
            SessionKind.LOGGED_IN,
            user_id,
            # Cleaned here, before the run's index stores them: a lone surrogate cannot even be written to Redis.
            clean_ip(_first_str(document, _IP_FIELDS)),
            clean_user_agent(_first_str(document, _UA_FIELDS)),
        )


def _first_str(document: dict[str, Any], fields: Sequence[str]) -> str | None:
    for field in fields:
        value = document.get(field)
        if isinstance(value, str) and value:
            return value
    return None


# --- the signed cookie (cookie-signature 1.0.x) -------------------------------------------------


def sign(session_id: str, secret: str) -> str:
    """``cookie-signature.sign``: ``sid + "." + base64(HMAC-SHA256(secret, sid))`` without ``=``."""
    mac = hmac.new(secret.encode("utf-8"), session_id.encode("utf-8"), hashlib.sha256).digest()
    return f"{session_id}.{base64.b64encode(mac).decode('ascii').rstrip('=')}"


def cookie_value(session_id: str, secret: str) -> str:
    """The ``connect.sid`` value as it travels: ``encodeURIComponent("s:" + signed)``."""
    return quote("s:" + sign(session_id, secret), safe="-_.!~*'()")


def unsign_cookie(value: str, secrets: Sequence[str]) -> str | None:
    """Return the session id when any secret verifies the cookie, else None.

    Every secret is tried even after a match, so the time taken does not say
    which secret (or whether any) matched.
    """
    decoded = unquote(value)
    if not decoded.startswith("s:"):
        return None
    signed = decoded[2:]
    dot = signed.rfind(".")
    if dot <= 0:
        return None
    session_id = signed[:dot]
    found = False
    for secret in secrets:
        expected = sign(session_id, secret).encode("utf-8")
        found |= hmac.compare_digest(expected, signed.encode("utf-8"))
    return session_id if found else None
