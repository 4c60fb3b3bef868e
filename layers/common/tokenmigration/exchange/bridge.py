"""The bridge request (``POST /auth/migration/bridge``): the Laravel app's server asks, for one browser, which
Laravel session carries that browser's Express login.

The caller is trusted (IAM-signed, the app's own role); the browser is not. So the body names the browser's
``connect.sid`` cookie value exactly as the browser sent it and, optionally, the browser's IP address as the
app sees it, which is what the failure throttle counts by (never the caller's address: every request of a
given app comes from the same few servers). The contract is docs/api.md, "Server route: POST /bridge":

- ``{"session_cookie": "<value>", "client_ip"?: "<ip>"}`` as JSON; anything else is ``InvalidRequest``.
- Unknown fields are ignored, so the package can send more than this version reads.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from tokenmigration.exchange.errors import NO_STORE, InvalidRequest
from tokenmigration.exchange.request import MAX_TOKEN_CHARS, body_text

# Keys of the bridge's failure counters: apart from the exchange's, and per kind of source.
IP_SOURCE = "bridge-ip:"
SESSION_SOURCE = "bridge-sid:"


@dataclass(frozen=True, slots=True)
class BridgeRequest:
    session_cookie: str = field(repr=False)  # the signed connect.sid value: a credential
    client_ip: str | None = None

    def throttle_sources(self) -> list[str]:
        """What failures count against: the browser's address (when given) and the Express session id the
        cookie claims (checked or not: someone guessing signatures for one session is slowed down the same)."""
        sources = [SESSION_SOURCE + claimed_session_id(self.session_cookie)]
        if self.client_ip is not None:
            sources.insert(0, IP_SOURCE + self.client_ip)
        return sources


def claimed_session_id(cookie: str) -> str:
    """The session id part of a cookie value (``s:<sid>.<sig>``), unchecked; the whole value when it has no
    such shape. Only ever used hashed, as a throttle key."""
    decoded = unquote(cookie)
    if decoded.startswith("s:") and "." in decoded[2:]:
        return decoded[2:decoded.rfind(".")]
    return decoded


def _client_ip(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest()
    try:
        # One spelling per address (::ffff:1.2.3.4 and 1.2.3.4 count together), so a caller cannot split
        # one browser's failures over several counters by writing its address differently.
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        raise InvalidRequest() from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


def parse_bridge_request(body: str | bytes | None, is_base64: bool = False) -> BridgeRequest:
    """A ``BridgeRequest`` from the raw body, or ``InvalidRequest`` (400 ``invalid_request``)."""
    if body is None:
        raise InvalidRequest()
    try:
        document = json.loads(body_text(body, is_base64))  # base64, size and UTF-8 as the exchange checks them
    except (ValueError, RecursionError):
        raise InvalidRequest() from None
    if not isinstance(document, dict):
        raise InvalidRequest()
    cookie = document.get("session_cookie")
    if not isinstance(cookie, str) or not cookie or len(cookie) > MAX_TOKEN_CHARS:
        raise InvalidRequest()
    return BridgeRequest(cookie, _client_ip(document.get("client_ip")))


@dataclass(frozen=True)
class BridgeResult:
    user_id: int
    session_id: str = field(repr=False)  # names a logged-in Laravel session: a credential
    lifetime_minutes: int
    session_cookie_name: str | None = None
    migrated_now: bool = False

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"user_id": self.user_id, "session_id": self.session_id}
        if self.session_cookie_name:
            body["session_cookie_name"] = self.session_cookie_name
        body["lifetime_minutes"] = self.lifetime_minutes
        body["auth_mode"] = "dual"
        return body

    def headers(self) -> dict[str, str]:
        return dict(NO_STORE)  # the session id is a credential: no cache keeps it
