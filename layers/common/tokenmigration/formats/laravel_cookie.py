"""The Laravel session cookie: encrypted exactly as ``EncryptCookies`` and ``Encrypter`` do (compat.md section 4).

Writing (what the exchange hands a browser):

- plaintext = ``CookieValuePrefix::create(name, key)`` (hex HMAC-SHA1(key, name + "v2") + ``|``) + session id;
- ``Encrypter::encrypt($plaintext, serialize: false)`` with AES-256-CBC: random 16-byte IV, PKCS#7,
  ``value`` = base64(ciphertext), ``iv`` = base64(IV), ``mac`` = hex HMAC-SHA256(key, iv + value), ``tag`` = "";
- cookie value = base64(JSON {iv, value, mac, tag}), URL-encoded as Symfony's ``Cookie`` does
  (``rawurlencode``: PHP decodes ``+`` as a space, so an unencoded value would fail silently).

Reading (``read_session_cookie`` and ``decrypt``) is a port of Laravel's own code, used by the tests to
prove that unmodified Laravel accepts what we write: ``$_COOKIE``'s ``urldecode``,
``Encrypter::getJsonPayload`` / ``validPayload`` / ``validMac`` / ``openssl_decrypt``, then
``CookieValuePrefix::validate``. Only AES-256-CBC, Laravel's default ``app.cipher``, is supported.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import time
from collections.abc import Sequence
from email.utils import formatdate
from urllib.parse import quote, unquote_plus

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tokenmigration.settings_error import ConfigError

KEY_LENGTH = 32  # AES-256-CBC
IV_LENGTH = 16
BLOCK_BITS = 128
PREFIX_LENGTH = 41  # 40 hex chars of HMAC-SHA1 and the "|"

# RFC 6265 cookie-name (an HTTP token): anything else could break the Set-Cookie header.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_B64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


class DecryptException(ValueError):
    """``Illuminate\\Contracts\\Encryption\\DecryptException``: Laravel then treats the cookie as absent."""


# --- the key ---------------------------------------------------------------------------------------


def parse_app_key(raw: str | bytes, variable: str = "LARAVEL_APP_KEY") -> bytes:
    """``APP_KEY`` as ``EncryptionServiceProvider::parseKey`` reads it: ``base64:`` + base64, or raw bytes.

    The error names the variable and the lengths, never the key.
    """
    if isinstance(raw, bytes):
        key = raw
    else:
        text = raw.strip()
        if not text:
            raise ConfigError(f"{variable} must be set")
        if text.startswith("base64:"):
            try:
                key = base64.b64decode(text[len("base64:") :], validate=True)
            except (binascii.Error, ValueError):
                raise ConfigError(f"{variable} starts with base64: but the rest is not valid base64") from None
        else:
            key = text.encode("utf-8")
    if len(key) != KEY_LENGTH:
        raise ConfigError(
            f"{variable} must be a {KEY_LENGTH}-byte key for AES-256-CBC (php artisan key:generate makes "
            f"'base64:' + 44 base64 characters); got {len(key)} bytes"
        )
    return key


def _key(app_key: str | bytes) -> bytes:
    return parse_app_key(app_key)


# --- writing ---------------------------------------------------------------------------------------


def cookie_value_prefix(cookie_name: str, app_key: str | bytes) -> str:
    """``CookieValuePrefix::create``: ``hash_hmac('sha1', $cookieName.'v2', $key) . '|'``."""
    key = _key(app_key)
    return hmac.new(key, (cookie_name + "v2").encode("utf-8"), hashlib.sha1).hexdigest() + "|"


def encrypt(plaintext: str | bytes, app_key: str | bytes, iv: bytes | None = None) -> str:
    """``Encrypter::encrypt($value, false)``: base64 of the JSON payload (not yet URL-encoded)."""
    key = _key(app_key)
    iv = os.urandom(IV_LENGTH) if iv is None else iv
    if len(iv) != IV_LENGTH:
        raise ValueError("the IV must be 16 bytes")
    data = plaintext.encode("utf-8") if isinstance(plaintext, str) else plaintext
    padder = padding.PKCS7(BLOCK_BITS).padder()
    padded = padder.update(data) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    iv_b64 = base64.b64encode(iv).decode("ascii")
    value_b64 = base64.b64encode(ciphertext).decode("ascii")
    mac = _mac(iv_b64, value_b64, key)
    # json_encode(compact('iv', 'value', 'mac', 'tag'), JSON_UNESCAPED_SLASHES): same keys, same order.
    document = json.dumps({"iv": iv_b64, "value": value_b64, "mac": mac, "tag": ""}, separators=(",", ":"))
    return base64.b64encode(document.encode("ascii")).decode("ascii")


def url_encode(value: str) -> str:
    """PHP's ``rawurlencode`` (Symfony ``Cookie::__toString``): only ``A-Za-z0-9-_.~`` stay as they are."""
    return quote(value, safe="-_.~")


def encrypt_cookie_value(plaintext: str, app_key: str | bytes) -> str:
    """An encrypted cookie value as it travels in ``Set-Cookie``: the payload, URL-encoded."""
    return url_encode(encrypt(plaintext, app_key))


def session_cookie_value(cookie_name: str, session_id: str, app_key: str | bytes) -> str:
    """The value of Laravel's session cookie naming ``session_id`` (prefixed, encrypted, URL-encoded)."""
    key = _key(app_key)
    return encrypt_cookie_value(cookie_value_prefix(cookie_name, key) + session_id, key)


def check_cookie_name(name: str, variable: str = "LARAVEL_SESSION_COOKIE") -> str:
    if not name or not _TOKEN.match(name):
        raise ConfigError(f"{variable} must be a cookie name (letters, digits and !#$%&'*+-.^_`|~), got {name!r}")
    return name


def set_cookie_header(
    name: str,
    value: str,
    *,
    max_age: int,
    secure: bool = True,
    domain: str | None = None,
    path: str = "/",
    same_site: str = "Lax",
    http_only: bool = True,
    now: float | None = None,
) -> str:
    """A ``Set-Cookie`` header value as Laravel sends its session cookie (``value`` already URL-encoded)."""
    check_cookie_name(name)
    now = time.time() if now is None else now
    parts = [
        f"{name}={value}",
        f"Expires={formatdate(now + max_age, usegmt=True)}",
        f"Max-Age={int(max_age)}",
        f"Path={path}",
    ]
    if domain:
        parts.append(f"Domain={domain}")
    if secure:
        parts.append("Secure")
    if http_only:
        parts.append("HttpOnly")
    if same_site:
        parts.append(f"SameSite={same_site}")
    return "; ".join(parts)


# --- reading: a port of Laravel's side, for round-trip tests ---------------------------------------


def _mac(iv_b64: str, value_b64: str, key: bytes) -> str:
    """``Encrypter::hash``: ``hash_hmac('sha256', $iv.$value, $key)``."""
    return hmac.new(key, (iv_b64 + value_b64).encode("utf-8"), hashlib.sha256).hexdigest()


def php_base64_decode(data: str | bytes, strict: bool = False) -> bytes | None:
    """PHP's ``base64_decode``: ``None`` where PHP returns ``false``.

    Not strict: characters outside the alphabet and ``=`` are skipped, a lone trailing character is
    dropped. Strict: whitespace is skipped, anything else outside the alphabet, data after padding,
    a lone trailing character or wrong padding fail.
    """
    raw = data.encode("latin-1", "replace") if isinstance(data, str) else data
    chars = bytearray()
    pad = 0
    for byte in raw:
        if byte == ord("="):
            pad += 1
            continue
        if byte in _B64_ALPHABET:
            if strict and pad:
                return None
            chars.append(byte)
        elif strict and byte not in b" \t\r\n":
            return None
    count = len(chars)
    if strict and (count % 4 == 1 or (pad and (pad > 2 or (count + pad) % 4 != 0))):
        return None
    if count % 4 == 1:
        del chars[-1]
    chars += b"=" * (-len(chars) % 4)
    return binascii.a2b_base64(bytes(chars))


def _valid_payload(payload: object) -> bool:
    """``Encrypter::validPayload`` for AES-256-CBC."""
    if not isinstance(payload, dict):
        return False
    for item in ("iv", "value", "mac"):
        if not isinstance(payload.get(item), str):  # isset() && is_string()
            return False
    if payload.get("tag") is not None and not isinstance(payload["tag"], str):
        return False
    iv = php_base64_decode(payload["iv"], strict=True)
    return iv is not None and len(iv) == IV_LENGTH


def _openssl_decrypt(value_b64: str, key: bytes, iv: bytes) -> bytes | None:
    """``openssl_decrypt($value, 'aes-256-cbc', $key, 0, $iv)``: base64 input, PKCS#7; ``None`` for false."""
    data = php_base64_decode(value_b64)
    if data is None or not data or len(data) % (BLOCK_BITS // 8) or len(iv) != IV_LENGTH:
        return None
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(data) + decryptor.finalize()
    unpadder = padding.PKCS7(BLOCK_BITS).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        return None


def decrypt(payload: object, keys: Sequence[bytes] | bytes | str) -> bytes:
    """``Encrypter::decrypt($payload, false)``, with ``keys`` = ``getAllKeys()`` (current, then previous)."""
    if isinstance(keys, (bytes, str)):
        keys = [_key(keys)]
    if not isinstance(payload, str):
        raise DecryptException("The payload is invalid.")
    decoded = php_base64_decode(payload)
    try:
        document = json.loads(decoded) if decoded else None
    except (ValueError, RecursionError):
        document = None
    if not _valid_payload(document):
        raise DecryptException("The payload is invalid.")
    iv = php_base64_decode(document["iv"]) or b""
    tag = document.get("tag")
    if tag:  # empty($payload['tag']) ? null : base64_decode(...): CBC is not AEAD, any tag is refused
        raise DecryptException("Unable to use tag because the cipher algorithm does not support AEAD.")
    found_valid_mac = False
    decrypted = None
    for key in keys:
        found_valid_mac = found_valid_mac or hmac.compare_digest(
            _mac(document["iv"], document["value"], key).encode("utf-8"), document["mac"].encode("utf-8")
        )
        if not found_valid_mac:
            continue
        decrypted = _openssl_decrypt(document["value"], key, iv)
        if decrypted is not None:
            break
    if not found_valid_mac:
        raise DecryptException("The MAC is invalid.")
    if decrypted is None:
        raise DecryptException("Could not decrypt the data.")
    return decrypted


def validate_prefix(cookie_name: str, cookie_value: str, keys: Sequence[bytes]) -> str | None:
    """``CookieValuePrefix::validate``: the value without its prefix, or ``None`` when no key made it."""
    for key in keys:
        if cookie_value.startswith(cookie_value_prefix(cookie_name, key)):
            return cookie_value[PREFIX_LENGTH:]
    return None


def read_session_cookie(cookie_name: str, wire_value: str, app_keys: Sequence[bytes] | bytes | str) -> str | None:
    """What Laravel's ``EncryptCookies`` leaves in ``$request->cookies`` for the session cookie.

    ``wire_value`` is the value as the browser sends it back (what we put in ``Set-Cookie``). ``None``
    means Laravel sees no cookie and starts a fresh, logged-out session.
    """
    keys = [_key(app_keys)] if isinstance(app_keys, (bytes, str)) else list(app_keys)
    value = unquote_plus(wire_value)  # PHP fills $_COOKIE with urldecode(): '+' becomes a space
    try:
        plaintext = decrypt(value, keys)
    except DecryptException:
        return None
    try:
        text = plaintext.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return validate_prefix(cookie_name, text, keys)
