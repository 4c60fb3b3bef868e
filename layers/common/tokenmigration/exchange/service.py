"""The session exchange: a live Express session becomes a working Sanctum token (and a Laravel session cookie).

``ExchangeService.exchange(request)``:

1. A source over its failure limit gets ``TooManyRequests`` (429) before any work.
2. The session is resolved with the same work whatever is wrong with it: the cookie is checked with
   every configured secret in constant time (a cookie too malformed to check pays for a dummy check),
   the Redis key is read (a random dummy key when the signature failed), the value decoded, and the
   user looked up by primary key (a dummy id when there is no logged-in user). Bad signature, missing
   or expired key, anonymous or unreadable session and unknown user all end in the one
   ``InvalidGrant`` (401 ``{"error": "invalid_grant"}``), counted as a failure of the source.
3. A user not migrated yet is migrated on the spot by ``Migrator.migrate_user`` (run id ``exchange``)
   with the presented session as its only session, and the plaintext is delivered; a user holding
   tokens the app made is no exception (api.md: the exchange serves every holder of a valid session,
   and a bulk run skipped such a user for the token only). A migrated user's
   migration token gets a fresh plaintext by ``Migrator.rotate_migration_token``: one UPDATE of the
   stored hash, so the token id and ``users.migration_token_id`` stay, earlier plaintexts die, and a
   retried exchange ends with one working token. A user never holds two live migration tokens.
4. With ``LARAVEL_APP_KEY`` set: the Laravel session row migrated from this very Express session
   (found by the ledger's ``source_hash``, still the user's and within ``LARAVEL_SESSION_LIFETIME``) or
   a new, ledgered row, handed to the browser as Laravel's encrypted session cookie (``Set-Cookie``).

``ExchangeService.bridge(request)`` is the same for the Laravel app's server (``POST /auth/migration/bridge``,
IAM): it answers the id of the Laravel session row carrying this very Express session (created and
ledgered if needed, one per Express session) instead of a token, migrates the user on the spot if needed
(without rotating or delivering any token), and counts failures per browser address and per Express
session id, never per caller (``exchange.bridge``).

Decisions where the contract is silent:

- A migrated user whose migration token is gone (the app revoked it, cleanup pruned it) or expired:
  ``InvalidGrant``. A rotation never mints a second token and never extends a token's life (the
  migration grace period is what ``MIGRATION_TOKEN_EXPIRES_DAYS`` says); the client signs in again.
  Not counted against the source: the session itself was valid.
- The user's row held by another transaction past ``MIGRATION_LOCK_TIMEOUT_MS``: ``UserBusy`` (409
  ``user_locked``, ``Retry-After: 1``); nothing was written, retrying is safe.

Nothing here logs a token, a cookie value, a session id or a secret; log lines carry the user id,
the token id and the outcome only.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from tokenmigration.config import Settings
from tokenmigration.engine import errors as engine_errors
from tokenmigration.engine.clock import utcnow
from tokenmigration.engine.migrator import IssuedToken, Migrator, UserStatus
from tokenmigration.engine.session_index import IndexedSession
from tokenmigration.exchange.bridge import BridgeRequest, BridgeResult
from tokenmigration.exchange.errors import NO_STORE, InvalidGrant, SlowDown, TooManyRequests, UserBusy
from tokenmigration.exchange.request import (
    ACCESS_TOKEN_TYPE,
    ExchangeRequest,
    HeaderValue,
    parse_exchange_request,
)
from tokenmigration.exchange.throttle import FailureThrottle
from tokenmigration.formats.express import ParsedSession, SessionDecoder, SessionKind, cookie_value, unsign_cookie
from tokenmigration.formats.laravel_cookie import (
    check_cookie_name,
    parse_app_key,
    session_cookie_value,
    set_cookie_header,
)
from tokenmigration.redis_client import RedisLike

logger = logging.getLogger(__name__)

EXCHANGE_RUN_ID = "exchange"  # the ledger's run id for everything the exchange creates
BRIDGE_RUN_ID = "bridge"  # ... and the bridge
TOKEN_TYPE = "Bearer"
_DUMMY_USER_ID = -1  # no users.id is negative: the lookup costs what a real one costs and finds nothing


@dataclass(frozen=True)
class ExchangeResult:
    access_token: str = field(repr=False)
    user_id: int
    token_id: int
    migrated_now: bool  # True when this exchange migrated the user, False when it rotated the token
    expires_in: int | None = None
    set_cookie: str | None = field(default=None, repr=False)  # the Laravel session cookie, if configured

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "access_token": self.access_token,
            "token_type": TOKEN_TYPE,
            "issued_token_type": ACCESS_TOKEN_TYPE,
        }
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        return body

    def headers(self) -> dict[str, str]:
        headers = dict(NO_STORE)
        if self.set_cookie is not None:
            headers["Set-Cookie"] = self.set_cookie
        return headers


@dataclass(frozen=True)
class _Resolved:
    session_id: str = field(repr=False)
    parsed: ParsedSession
    user: UserStatus


def _checkable(value: str) -> bool:
    """Whether ``unsign_cookie`` gets as far as computing signatures for this value."""
    decoded = unquote(value)
    return decoded.startswith("s:") and decoded.rfind(".") > 2


class ExchangeService:
    def __init__(self, settings: Settings, migrator: Migrator, redis: RedisLike, throttle: FailureThrottle,
                 *, run_id: str = EXCHANGE_RUN_ID) -> None:
        settings.require("express_session_secrets")
        self.settings, self.migrator, self.redis, self.throttle, self.run_id = (
            settings, migrator, redis, throttle, run_id)
        self._secrets = tuple(settings.express_session_secrets)
        self._decoder = SessionDecoder(settings.express_user_id_path)
        self._app_key: bytes | None = None
        if settings.laravel_app_key:
            self._app_key = parse_app_key(settings.laravel_app_key)
            settings.require("laravel_session_cookie")
            check_cookie_name(settings.laravel_session_cookie)
        # What a well-formed cookie costs to check, for cookies too malformed to get that far.
        self._dummy_cookie = cookie_value(secrets.token_urlsafe(24), secrets.token_urlsafe(24))

    @property
    def sets_laravel_cookie(self) -> bool:
        return self._app_key is not None

    def parse(self, headers: Mapping[str, HeaderValue] | None, body: str | bytes | None, is_base64: bool = False,
              source: str | None = None) -> ExchangeRequest:
        """``parse_exchange_request`` with this service's cookie name."""
        return parse_exchange_request(headers, body, is_base64, source=source,
                                      cookie_name=self.settings.express_session_cookie)

    # --- the exchange -----------------------------------------------------------------------------

    def exchange(self, request: ExchangeRequest) -> ExchangeResult:
        source = request.source
        if self.throttle.blocked(source):
            logger.info("exchange refused: source over its failure limit")
            raise TooManyRequests(retry_after=self.throttle.window_seconds)
        resolved = self._resolve(request.subject_token)
        if resolved is None:
            self.throttle.record_failure(source)
            logger.info("exchange refused: invalid_grant")
            raise InvalidGrant()
        user_id = resolved.user.user_id
        entry = IndexedSession(resolved.session_id, user_id, resolved.parsed.ip_address,
                               resolved.parsed.user_agent)
        issued, migrated_now = self._issue(entry, resolved.user)
        set_cookie = self._laravel_cookie(entry) if self._app_key is not None else None
        logger.info("exchange: user %s %s migration token %s", user_id,
                    "migrated with" if migrated_now else "rotated", issued.token_id)
        return ExchangeResult(
            access_token=issued.plaintext,
            user_id=user_id,
            token_id=issued.token_id,
            migrated_now=migrated_now,
            expires_in=issued.expires_in(utcnow(), self.settings.sanctum_expiration),
            set_cookie=set_cookie,
        )

    def _resolve(self, subject_token: str) -> _Resolved | None:
        """The logged-in session and its user, or None; the same work for every kind of failure."""
        session_id = unsign_cookie(subject_token, self._secrets)
        if session_id is None and not _checkable(subject_token):
            unsign_cookie(self._dummy_cookie, self._secrets)
        lookup_id = session_id if session_id is not None else secrets.token_urlsafe(24)
        raw = self.redis.get(self.settings.express_session_prefix + lookup_id)
        parsed = self._decoder.parse(raw) if raw is not None else None
        logged_in = session_id is not None and parsed is not None and parsed.kind is SessionKind.LOGGED_IN
        user = self.migrator.user_status(parsed.user_id if logged_in else _DUMMY_USER_ID)
        if not logged_in or user is None:
            return None
        return _Resolved(session_id, parsed, user)

    def _issue(self, entry: IndexedSession, user: UserStatus) -> tuple[IssuedToken, bool]:
        if not user.migrated:
            try:
                migration = self.migrator.migrate_user(entry.user_id, self.run_id, [entry], deliver_token=True,
                                                       mint_for_holders=True)
                return self.migrator.issued_token(migration), True
            except engine_errors.AlreadyMigrated:
                pass  # a concurrent exchange (or run) migrated the user first: rotate theirs
            except engine_errors.UserBusy:
                logger.info("exchange refused: user %s is locked", entry.user_id)
                raise UserBusy() from None
            except engine_errors.UnknownUser:  # deleted since the lookup
                raise InvalidGrant() from None
        try:
            return self.migrator.rotate_migration_token(entry.user_id), False
        except engine_errors.NoMigrationToken:
            logger.info("exchange refused: user %s holds no live migration token", entry.user_id)
            raise InvalidGrant() from None

    def _laravel_cookie(self, entry: IndexedSession) -> str:
        s = self.settings
        try:
            laravel_session_id = self.migrator.session_for_express_session(entry, self.run_id)
        except (engine_errors.NotMigrated, engine_errors.UnknownUser):  # rolled back or deleted meanwhile
            raise InvalidGrant() from None
        value = session_cookie_value(s.laravel_session_cookie, laravel_session_id, self._app_key)
        return set_cookie_header(s.laravel_session_cookie, value, max_age=s.laravel_session_lifetime * 60,
                                 secure=s.laravel_session_secure, domain=s.laravel_session_domain)

    # --- the bridge (the Laravel app's server, IAM) -------------------------------------------------------

    def bridge(self, request: BridgeRequest) -> BridgeResult:
        """The Laravel session carrying this browser's Express login (the flags are the caller's to check)."""
        sources = request.throttle_sources()
        if any(self.throttle.blocked(source) for source in sources):
            logger.info("bridge refused: browser address or session over its failure limit")
            raise SlowDown(retry_after=self.throttle.window_seconds)
        resolved = self._resolve(request.session_cookie)
        if resolved is None:
            for source in sources:
                self.throttle.record_failure(source)
            logger.info("bridge refused: invalid_grant")
            raise InvalidGrant()
        user_id = resolved.user.user_id
        entry = IndexedSession(resolved.session_id, user_id, request.client_ip or resolved.parsed.ip_address,
                               resolved.parsed.user_agent)
        migrated_now = False
        if not resolved.user.migrated:
            migrated_now = self._migrate_for_bridge(entry)
        try:
            session_id = self.migrator.session_for_express_session(entry, BRIDGE_RUN_ID)
        except (engine_errors.NotMigrated, engine_errors.UnknownUser):  # rolled back or deleted meanwhile
            raise InvalidGrant() from None
        logger.info("bridge: user %s %s", user_id, "migrated now" if migrated_now else "already migrated")
        return BridgeResult(user_id=user_id, session_id=session_id,
                            lifetime_minutes=self.settings.laravel_session_lifetime,
                            session_cookie_name=self.settings.laravel_session_cookie, migrated_now=migrated_now)

    def _migrate_for_bridge(self, entry: IndexedSession) -> bool:
        try:
            self.migrator.migrate_user(entry.user_id, BRIDGE_RUN_ID, [entry], mint_for_holders=True)
            return True
        except engine_errors.AlreadyMigrated:
            return False  # a concurrent request (or run) migrated the user first
        except engine_errors.UserBusy:
            logger.info("bridge refused: user %s is locked", entry.user_id)
            raise UserBusy() from None
        except engine_errors.UnknownUser:  # deleted since the lookup
            raise InvalidGrant() from None
