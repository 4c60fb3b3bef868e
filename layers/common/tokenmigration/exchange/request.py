"""The exchange request: the Express session as a cookie, or as an RFC 8693 token-exchange body.

``parse_exchange_request`` takes what any HTTP front end has (headers, body, whether the body is
base64, the caller's address) and returns an ``ExchangeRequest`` or raises ``InvalidRequest``:

- Body (JSON or ``application/x-www-form-urlencoded``; without a content type, a body starting with
  ``{`` is JSON, anything else a form) holding any of ``grant_type``, ``subject_token``,
  ``subject_token_type``: all three must be there, as strings, with ``grant_type`` =
  ``urn:ietf:params:oauth:grant-type:token-exchange`` and ``subject_token_type`` =
  ``urn:tokenmigration:express-session``; ``requested_token_type``, if given, must be the access-token
  URN. Form parameters must not repeat (RFC 6749 section 3.2). Other parameters are ignored.
- Otherwise the session cookie (``EXPRESS_SESSION_COOKIE``, first occurrence wins as in the ``cookie``
  package express-session uses) from the ``Cookie`` header(s).
- Neither, an empty value, an unreadable or oversized body: ``InvalidRequest``.

The subject token is kept as it was sent (URL-encoded or not); verification decodes it.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl

from tokenmigration.exchange.errors import InvalidRequest

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
SUBJECT_TOKEN_TYPE = "urn:tokenmigration:express-session"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
MAX_BODY_BYTES = 16 * 1024
MAX_TOKEN_CHARS = 4096  # browsers cap a cookie at 4096 bytes
UNKNOWN_SOURCE = "unknown"
_FIELDS = ("grant_type", "subject_token", "subject_token_type")


@dataclass(frozen=True, slots=True)
class ExchangeRequest:
    subject_token: str = field(repr=False)  # the signed connect.sid value: a credential
    via: Literal["cookie", "body"]
    source: str = UNKNOWN_SOURCE  # the caller's address, for the failure throttle


HeaderValue = str | Sequence[str] | None


def _header_values(headers: Mapping[str, HeaderValue] | None, name: str) -> list[str]:
    out: list[str] = []
    for key, value in (headers or {}).items():
        if key.lower() != name or value is None:
            continue
        out += [value] if isinstance(value, str) else [v for v in value if isinstance(v, str)]
    return out


def cookie_from_headers(headers: Mapping[str, HeaderValue] | None, cookie_name: str) -> str | None:
    """The named cookie's value (first occurrence, surrounding quotes removed), not decoded."""
    for header in _header_values(headers, "cookie"):
        for pair in header.split(";"):
            name, eq, value = pair.partition("=")
            if not eq or name.strip() != cookie_name:
                continue
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return value
    return None


def client_address(headers: Mapping[str, HeaderValue] | None, source_ip: str | None, trusted_header: str | None,
                   hops: int = 1) -> str | None:
    """The client's address for the failure throttle: ``source_ip``, or, with a trusted proxy header configured,
    the right-most address in that header that no trusted proxy wrote.

    Every proxy in front of the function appends the address of whoever connected to it, so the right end of
    ``X-Forwarded-For`` is written by trusted infrastructure and its left part by the client (anything). With
    ``hops`` trusted proxies appending to the header (API Gateway's own regional front counts as one: it appends
    the address that connected to it), the client is the ``hops``-th entry from the right: the address the
    outermost trusted proxy saw. Repeated header lines are read as one list, in order. A header with fewer
    entries, or no address at that place, means the request did not come the configured way: ``source_ip``.
    """
    if not trusted_header:
        return source_ip
    entries = [part.strip() for value in _header_values(headers, trusted_header.lower()) for part in value.split(",")]
    if len(entries) < hops:
        return source_ip
    return _address(entries[-hops]) or source_ip


def _address(entry: str) -> str | None:
    """An IP address from a forwarded entry (``1.2.3.4``, ``1.2.3.4:567``, ``[2001:db8::1]:80``), normalised."""
    candidates = [entry]
    if entry.startswith("[") and "]" in entry:
        candidates.append(entry[1:entry.index("]")])
    elif entry.count(":") == 1:
        candidates.append(entry.split(":", 1)[0])
    for candidate in candidates:
        try:
            address = ipaddress.ip_address(candidate)
        except ValueError:
            continue
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return str(address)
    return None


def _content_type(headers: Mapping[str, HeaderValue] | None) -> str | None:
    values = _header_values(headers, "content-type")
    return values[-1].split(";", 1)[0].strip().lower() if values else None


def body_text(body: str | bytes | None, is_base64: bool) -> str:
    """The body as text: base64 undone, size bounded, UTF-8 required; ``InvalidRequest`` otherwise."""
    if body is None:
        return ""
    raw = body.encode("utf-8") if isinstance(body, str) else body
    if is_base64:
        try:
            raw = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest() from None
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidRequest()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest() from None


def _json_fields(text: str) -> dict[str, object]:
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        raise InvalidRequest() from None
    if not isinstance(document, dict):
        raise InvalidRequest()
    return document


def _form_fields(text: str) -> dict[str, object]:
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True, max_num_fields=32)
    except ValueError:
        raise InvalidRequest() from None
    fields: dict[str, object] = {}
    for name, value in pairs:
        if name in fields:  # RFC 6749 3.2: parameters must not be included more than once
            raise InvalidRequest()
        fields[name] = value
    return fields


def _body_fields(text: str, content_type: str | None) -> dict[str, object]:
    if not text.strip():
        return {}
    if content_type is None:
        return _json_fields(text) if text.lstrip().startswith("{") else _form_fields(text)
    if content_type == "application/json" or content_type.endswith("+json"):
        return _json_fields(text)
    if content_type == "application/x-www-form-urlencoded":
        return _form_fields(text)
    raise InvalidRequest()


def parse_exchange_request(
    headers: Mapping[str, HeaderValue] | None,
    body: str | bytes | None,
    is_base64: bool = False,
    *,
    source: str | None = None,
    cookie_name: str = "connect.sid",
) -> ExchangeRequest:
    """An ``ExchangeRequest`` from an HTTP request, or ``InvalidRequest`` (400 ``invalid_request``)."""
    source = (source or "").strip() or UNKNOWN_SOURCE
    fields = _body_fields(body_text(body, is_base64), _content_type(headers))
    if any(name in fields for name in _FIELDS):
        grant_type, token, token_type = (fields.get(name) for name in _FIELDS)
        requested = fields.get("requested_token_type", ACCESS_TOKEN_TYPE)
        if (grant_type != GRANT_TYPE or token_type != SUBJECT_TOKEN_TYPE or requested != ACCESS_TOKEN_TYPE
                or not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS):
            raise InvalidRequest()
        return ExchangeRequest(token, "body", source)
    cookie = cookie_from_headers(headers, cookie_name)
    if not cookie or len(cookie) > MAX_TOKEN_CHARS:
        raise InvalidRequest()
    return ExchangeRequest(cookie, "cookie", source)
