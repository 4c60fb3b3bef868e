"""Laravel database-session rows, written the way ``Illuminate\\Session\\Store`` reads them."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any, Literal

from tokenmigration.formats import phpserialize
from tokenmigration.formats.randomness import random_alnum_block

SESSION_ID_LENGTH = 40
CSRF_TOKEN_LENGTH = 40
IP_ADDRESS_MAX = 45
USER_AGENT_MAX = 500

Serialization = Literal["php", "json"]
_SESSION_GUARD_SHA1 = hashlib.sha1(b"Illuminate\\Auth\\SessionGuard").hexdigest()


def login_key(guard: str = "web") -> str:
    """``'login_' . $guard . '_' . sha1(SessionGuard::class)``."""
    return f"login_{guard}_{_SESSION_GUARD_SHA1}"


LOGIN_WEB_KEY = login_key("web")


def is_valid_session_id(session_id: str) -> bool:
    """``Store::isValidId``: a string of exactly 40 alphanumeric characters."""
    return len(session_id) == SESSION_ID_LENGTH and session_id.isascii() and session_id.isalnum()


def session_attributes(user_id: int, csrf_token: str) -> dict[str, Any]:
    # No password_hash_* key: Laravel fills it in itself and a wrong one logs the user out.
    return {"_token": csrf_token, LOGIN_WEB_KEY: user_id}


def serialize_attributes(attributes: dict[str, Any], serialization: Serialization = "php") -> str:
    if serialization == "php":
        return phpserialize.serialize(attributes)
    # PHP's json_encode escapes "/" by default; ensure_ascii matches its \uXXXX escapes.
    return json.dumps(attributes, separators=(",", ":"), ensure_ascii=True).replace("/", "\\/")


def encode_payload(attributes: dict[str, Any], serialization: Serialization = "php") -> str:
    """The ``payload`` column: base64, once, of the serialized attribute array."""
    return base64.b64encode(serialize_attributes(attributes, serialization).encode("utf-8")).decode("ascii")


def decode_payload(payload: str, serialization: Serialization = "php", app_key: str | bytes | None = None
                   ) -> dict[str, Any]:
    """The attributes of a ``payload`` column (with ``app_key``: of an encrypted session)."""
    text = base64.b64decode(payload, validate=True).decode("utf-8")
    return decode_session_string(text, serialization, app_key)


def decode_session_string(text: str, serialization: Serialization = "php", app_key: str | bytes | None = None
                          ) -> dict[str, Any]:
    """What ``Store::readFromHandler`` makes of the string its handler read (``EncryptedStore`` decrypts first)."""
    if app_key is not None:
        text = decrypt_session_string(text, app_key)
    value = phpserialize.unserialize(text) if serialization == "php" else json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("session payload is not an array")
    return value


def encrypt_session_string(text: str, app_key: str | bytes) -> str:
    """``EncryptedStore::prepareForStorage``: ``Encrypter::encrypt($data)``, whose ``$serialize`` defaults to
    true, so the serialized session is PHP-serialized once more (``s:<bytes>:"...";``) before AES-256-CBC."""
    from tokenmigration.formats.laravel_cookie import encrypt  # laravel_cookie imports config, which imports us

    return encrypt(phpserialize.serialize(text), app_key)


def decrypt_session_string(text: str, app_key: str | bytes) -> str:
    """``EncryptedStore::prepareForUnserialize``: ``Encrypter::decrypt($data)`` (unserializes the result)."""
    from tokenmigration.formats.laravel_cookie import decrypt, parse_app_key

    key = parse_app_key(app_key) if isinstance(app_key, str) else app_key
    value = phpserialize.unserialize(decrypt(text, key).decode("utf-8"))
    if not isinstance(value, str):
        raise ValueError("the decrypted session is not a string")
    return value


def redis_value(session_string: str) -> bytes:
    """What ``RedisStore::put`` stores for the session string: ``serialize($value)`` (a session string is
    never numeric, so never stored bare)."""
    return phpserialize.serialize(session_string).encode("utf-8")


def decode_redis_value(value: bytes, serialization: Serialization = "php", app_key: str | bytes | None = None
                       ) -> dict[str, Any]:
    """The attributes of a Redis session value: ``RedisStore::get`` unserializes, then the store reads it."""
    text = phpserialize.unserialize(value)
    if not isinstance(text, str):
        raise ValueError("the Redis session value is not a serialized string")
    return decode_session_string(text, serialization, app_key)


class PayloadFactory:
    """Builds login payloads for many users fast.

    The attribute array of a migrated session has one shape, so the serialized
    text is a fixed frame around two holes (CSRF token, user id). The frame is
    cut from the general encoder's own output, so both always agree.
    """

    _CSRF_HOLE = "C" * CSRF_TOKEN_LENGTH
    _USER_HOLE = 987654321

    def __init__(self, serialization: Serialization = "php", app_key: str | bytes | None = None) -> None:
        self.serialization = serialization
        text = serialize_attributes(session_attributes(self._USER_HOLE, self._CSRF_HOLE), serialization)
        head, rest = text.split(self._CSRF_HOLE)
        middle, tail = rest.split(str(self._USER_HOLE))
        self._head, self._middle, self._tail = head, middle, tail
        self._key: bytes | None = None
        if app_key is not None:
            from tokenmigration.formats.laravel_cookie import parse_app_key

            self._key = parse_app_key(app_key) if isinstance(app_key, str) else app_key

    @property
    def encrypted(self) -> bool:
        """Sessions are encrypted (``session.encrypt``): each payload has its own IV, so no shared frame."""
        return self._key is not None

    @property
    def frame(self) -> tuple[str, str, str]:
        """The serialized text around the CSRF token and the user id: (head, middle, tail)."""
        if self._key is not None:
            raise ValueError("encrypted sessions have no common frame")
        return self._head, self._middle, self._tail

    def session_strings(self, user_ids: list[int], csrf_tokens: list[str]) -> list[str]:
        """What the session handler is given to write (``Store::save``, through ``EncryptedStore``)."""
        texts = [f"{self._head}{tok}{self._middle}{uid}{self._tail}"
                 for uid, tok in zip(user_ids, csrf_tokens, strict=True)]
        if self._key is None:
            return texts
        return [encrypt_session_string(text, self._key) for text in texts]

    def redis_values(self, user_ids: list[int], csrf_tokens: list[str]) -> list[bytes]:
        """Values for Laravel's ``redis`` session driver (``CacheBasedSessionHandler`` over ``RedisStore``)."""
        return [redis_value(text) for text in self.session_strings(user_ids, csrf_tokens)]

    def payload(self, user_id: int, csrf_token: str) -> str:
        # The frame has the token's length baked in; anything else would be unreadable to Laravel.
        if not (len(csrf_token) == CSRF_TOKEN_LENGTH and csrf_token.isascii() and csrf_token.isalnum()):
            raise ValueError("csrf_token must be 40 ASCII letters or digits")
        if isinstance(user_id, bool) or not isinstance(user_id, int):
            raise ValueError("user_id must be an int")
        return self._fill(user_id, csrf_token)

    def _fill(self, user_id: int, csrf_token: str) -> str:
        text = f"{self._head}{csrf_token}{self._middle}{user_id}{self._tail}"
        if self._key is not None:
            text = encrypt_session_string(text, self._key)
        return base64.b64encode(text.encode("ascii")).decode("ascii")

    def payloads(self, user_ids: list[int], csrf_tokens: list[str] | None = None) -> list[str]:
        """One payload per user id (ints from the users table); fresh CSRF tokens unless given
        (callers pass tokens from ``new_csrf_tokens``)."""
        tokens = csrf_tokens if csrf_tokens is not None else new_csrf_tokens(len(user_ids))
        return [self._fill(uid, tok) for uid, tok in zip(user_ids, tokens, strict=True)]


def new_csrf_tokens(count: int) -> list[str]:
    """``_token`` values as ``Str::random(40)`` makes them."""
    return random_alnum_block(count, CSRF_TOKEN_LENGTH)


def new_session_ids(count: int) -> list[str]:
    """Fresh ids as ``Str::random(40)`` makes them."""
    return random_alnum_block(count, SESSION_ID_LENGTH)


# Characters of a batch's shared prefix: 62^8 (47 bits) places in the key space, so two chunks' rows meet
# in one index page about never; the 32 characters after it are random per id, 190 bits, far beyond guessing
# (and Laravel encrypts the session cookie that carries an id with APP_KEY, unless the app opts out).
BATCH_PREFIX_LENGTH = 8


def new_session_ids_for_batch(count: int) -> list[str]:
    """``count`` fresh session ids that share one random prefix: Laravel reads them as any other id (40
    letters and digits), and their entries in ``sessions_pkey`` land on a few neighbouring pages instead of one
    random page each. A bulk chunk's rows then dirty and log tens of index pages instead of thousands: 16 % less
    WAL per row and a third less insert time in an index larger than the buffer cache, which at 100 million
    users the sessions index is. Unsorted within the batch: sorted ids would split pages half-empty."""
    if not count:
        return []
    prefix = random_alnum_block(1, BATCH_PREFIX_LENGTH)[0]
    return [prefix + suffix for suffix in random_alnum_block(count, SESSION_ID_LENGTH - BATCH_PREFIX_LENGTH)]


# C0 controls and DEL: no HTTP header or address holds them, PostgreSQL's text cannot hold NUL, and the
# chunk SQL uses two of them to separate values (engine.writers). Lone surrogates cannot be encoded as UTF-8.
_CONTROLS = dict.fromkeys([*range(0x20), 0x7F])
_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_ip(value: Any) -> str | None:
    """The address as Express kept it, or None when it does not fit Laravel's column or is not text."""
    if not isinstance(value, str) or not value or len(value) > IP_ADDRESS_MAX:
        return None
    if not value.isprintable() and (value != value.translate(_CONTROLS) or _SURROGATE.search(value)):
        return None
    return value


def clean_user_agent(value: Any) -> str | None:
    """The user agent cut to Laravel's 500 characters, without control characters (a header has none);
    a lone surrogate becomes U+FFFD."""
    if not isinstance(value, str):
        return None
    if not value.isprintable():  # fast path: an ordinary user agent is printable
        value = _SURROGATE.sub("\ufffd", value.translate(_CONTROLS))
    return value[:USER_AGENT_MAX] or None
