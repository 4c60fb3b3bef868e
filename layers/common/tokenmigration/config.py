"""One settings object, read from the environment and validated at start-up.

Errors name the variable. A setting only one feature needs (the Express cookie
secrets, the Laravel app key) is checked by that feature through ``require``,
so a bulk migration runs without any secret configured.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from tokenmigration.formats.laravel_cookie import check_cookie_name, parse_app_key
from tokenmigration.formats.laravel_session import Serialization
from tokenmigration.settings_error import ConfigError

__all__ = ["DEFAULT_SESSION_REDIS_PREFIX", "ConfigError", "SessionDriver", "Settings", "env_bool", "env_int"]

SessionDriver = Literal["database", "redis"]
# Laravel 11 and 12 defaults with APP_NAME=Laravel: the Redis connection's options.prefix
# (Str::slug(APP_NAME, '_').'_database_') then cache.prefix (Str::slug(APP_NAME, '_').'_cache_').
DEFAULT_SESSION_REDIS_PREFIX = "laravel_database_laravel_cache_"


def env_int(env: Mapping[str, str], name: str, default: int | None, minimum: int = 0) -> int | None:
    """An integer setting; the error names the variable."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    """A yes/no setting (1/true/yes/on, 0/false/no/off); the error names the variable."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _cookie_domain(env: Mapping[str, str]) -> str | None:
    raw = env.get("LARAVEL_SESSION_DOMAIN", "").strip()
    if not raw:
        return None
    # It goes into a Set-Cookie header as it is: nothing that could end the attribute or the header.
    if any(ch in raw for ch in ';,"\\') or any(ch.isspace() or ord(ch) < 0x21 or ord(ch) > 0x7e for ch in raw):
        raise ConfigError(f"LARAVEL_SESSION_DOMAIN must be a domain such as .example.com, got {raw!r}")
    return raw


def _abilities(env: Mapping[str, str]) -> list[str]:
    raw = env.get("MIGRATION_TOKEN_ABILITIES", "").strip()
    if not raw:
        return ["*"]
    try:
        value = json.loads(raw)
    except ValueError:
        raise ConfigError(f'MIGRATION_TOKEN_ABILITIES must be a JSON list such as ["*"], got {raw!r}') from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError('MIGRATION_TOKEN_ABILITIES must be a JSON list of strings, such as ["*"]')
    return value


def _app_key(env: Mapping[str, str]) -> str | None:
    # Checked here, at start-up, for every command: a bad key would otherwise surface as a 500 on every
    # exchange, its cause only in a log. The key itself never reaches the message.
    raw = env.get("LARAVEL_APP_KEY", "").strip() or None
    if raw is not None:
        parse_app_key(raw, "LARAVEL_APP_KEY")
    return raw


def _session_cookie(env: Mapping[str, str]) -> str | None:
    raw = env.get("LARAVEL_SESSION_COOKIE", "").strip() or None
    return None if raw is None else check_cookie_name(raw, "LARAVEL_SESSION_COOKIE")


_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _header_name(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if not _TOKEN_CHARS.issuperset(raw):  # RFC 9110 token
        raise ConfigError(f"{name} must be an HTTP header name such as X-Forwarded-For, got {raw!r}")
    return raw


def _secret_list(raw: str) -> tuple[str, ...]:
    return tuple(part for part in (p.strip() for p in raw.split(",")) if part)


@dataclass(frozen=True)
class Settings:
    # URLs may carry passwords: keep them out of repr() and so out of every log line.
    database_url: str | None = field(default=None, repr=False)
    redis_url: str | None = field(default=None, repr=False)
    express_session_prefix: str = "sess:"
    express_user_id_path: str = "passport.user"
    express_session_cookie: str = "connect.sid"
    express_session_secrets: tuple[str, ...] = field(default=(), repr=False)
    laravel_session_serialization: Serialization = "php"
    # Where the app keeps sessions (SESSION_DRIVER): the `sessions` table, or Laravel's redis cache store.
    laravel_session_driver: SessionDriver = "database"
    # The Redis of the app's sessions (unset: REDIS_URL) and the whole key prefix in front of the session id.
    laravel_session_redis_url: str | None = field(default=None, repr=False)
    laravel_session_redis_prefix: str = DEFAULT_SESSION_REDIS_PREFIX
    # session.encrypt: payloads go through EncryptedStore with LARAVEL_APP_KEY.
    laravel_session_encrypt: bool = False
    laravel_session_lifetime: int = 120
    laravel_session_cookie: str | None = None
    laravel_app_key: str | None = field(default=None, repr=False)
    # The Laravel session cookie the exchange sets: session.secure and session.domain.
    laravel_session_secure: bool = True
    laravel_session_domain: str | None = None
    sanctum_token_prefix: str = ""
    sanctum_tokenable_type: str = "App\\Models\\User"
    sanctum_expiration: int | None = None
    migration_token_name: str = "migration-token"
    migration_token_abilities: tuple[str, ...] = ("*",)
    migration_token_expires_days: int | None = None
    # Cleanup: hours past expiry before a token is pruned (sanctum:prune-expired --hours).
    cleanup_prune_hours: int = 24
    # Cleanup: revoke never-used migration tokens older than this many days; unset = never.
    migration_token_unused_retention_days: int | None = None
    # How long a chunk waits for a user row another transaction holds before reporting it.
    lock_timeout_ms: int = 5000
    # A plan first checks that Redis has room under its maxmemory for the session index (engine.index_room).
    index_memory_check: bool = True
    # The exchange's per-source limit on failed attempts: this many per fixed window, then 429.
    exchange_failure_limit: int = 20
    exchange_failure_window_seconds: int = 300
    # Behind proxies (CloudFront, a load balancer) the exchange's source IP is the proxy's, shared by every
    # user: the throttle then takes the client from this header instead (see exchange.request.client_address).
    exchange_trusted_proxy_header: str | None = None
    exchange_trusted_proxy_hops: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        serialization = env.get("LARAVEL_SESSION_SERIALIZATION", "php").strip().lower() or "php"
        if serialization not in ("php", "json"):
            raise ConfigError(f"LARAVEL_SESSION_SERIALIZATION must be 'php' or 'json', got {serialization!r}")
        user_path = env.get("EXPRESS_USER_ID_PATH", "passport.user").strip()
        if not user_path or any(not part for part in user_path.split(".")):
            raise ConfigError(f"EXPRESS_USER_ID_PATH must be a dotted path such as passport.user, got {user_path!r}")
        prefix = env.get("EXPRESS_SESSION_PREFIX", "sess:")
        if not prefix:
            raise ConfigError("EXPRESS_SESSION_PREFIX must not be empty: the SCAN would match every key")
        database_url = env.get("DATABASE_URL", "").strip() or None
        if database_url and "://" not in database_url:
            raise ConfigError("DATABASE_URL must be an SQLAlchemy URL such as postgresql+pg8000://..., "
                              "got something without a scheme")
        redis_url = env.get("REDIS_URL", "").strip() or None
        if redis_url and not redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("REDIS_URL must start with redis://, rediss:// or unix://")
        driver = env.get("LARAVEL_SESSION_DRIVER", "").strip().lower() or "database"
        if driver not in ("database", "redis"):
            raise ConfigError(f"LARAVEL_SESSION_DRIVER must be 'database' or 'redis', got {driver!r}")
        session_redis_url = env.get("LARAVEL_SESSION_REDIS_URL", "").strip() or None
        if session_redis_url and not session_redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("LARAVEL_SESSION_REDIS_URL must start with redis://, rediss:// or unix://")
        token_name = env.get("MIGRATION_TOKEN_NAME", "migration-token").strip()
        if not token_name:
            raise ConfigError("MIGRATION_TOKEN_NAME must not be empty")
        return cls(
            database_url=database_url,
            redis_url=redis_url,
            express_session_prefix=prefix,
            express_user_id_path=user_path,
            express_session_cookie=env.get("EXPRESS_SESSION_COOKIE", "").strip() or "connect.sid",
            express_session_secrets=_secret_list(env.get("EXPRESS_SESSION_SECRETS", "")),
            laravel_session_serialization=serialization,  # type: ignore[arg-type]
            laravel_session_driver=driver,  # type: ignore[arg-type]
            laravel_session_redis_url=session_redis_url,
            # Taken as it is: an empty prefix is valid (a connection and a store without one).
            laravel_session_redis_prefix=env.get("LARAVEL_SESSION_REDIS_PREFIX", DEFAULT_SESSION_REDIS_PREFIX),
            laravel_session_encrypt=env_bool(env, "LARAVEL_SESSION_ENCRYPT", False),
            laravel_session_lifetime=env_int(env, "LARAVEL_SESSION_LIFETIME", 120, minimum=1),  # type: ignore[arg-type]
            laravel_session_cookie=_session_cookie(env),
            laravel_app_key=_app_key(env),
            laravel_session_secure=env_bool(env, "LARAVEL_SESSION_SECURE", True),
            laravel_session_domain=_cookie_domain(env),
            sanctum_token_prefix=env.get("SANCTUM_TOKEN_PREFIX", ""),
            sanctum_tokenable_type=env.get("SANCTUM_TOKENABLE_TYPE", "").strip() or "App\\Models\\User",
            sanctum_expiration=env_int(env, "SANCTUM_EXPIRATION", None, minimum=1),
            migration_token_name=token_name,
            migration_token_abilities=tuple(_abilities(env)),
            migration_token_expires_days=env_int(env, "MIGRATION_TOKEN_EXPIRES_DAYS", None, minimum=1),
            cleanup_prune_hours=env_int(env, "CLEANUP_PRUNE_HOURS", 24),  # type: ignore[arg-type]
            migration_token_unused_retention_days=env_int(
                env, "MIGRATION_TOKEN_UNUSED_RETENTION_DAYS", None, minimum=1
            ),
            lock_timeout_ms=env_int(env, "MIGRATION_LOCK_TIMEOUT_MS", 5000, minimum=1),  # type: ignore[arg-type]
            index_memory_check=env_bool(env, "INDEX_MEMORY_CHECK", True),
            exchange_failure_limit=env_int(env, "EXCHANGE_FAILURE_LIMIT", 20, minimum=1),  # type: ignore[arg-type]
            exchange_failure_window_seconds=env_int(  # type: ignore[arg-type]
                env, "EXCHANGE_FAILURE_WINDOW_SECONDS", 300, minimum=1
            ),
            exchange_trusted_proxy_header=_header_name(env, "EXCHANGE_TRUSTED_PROXY_HEADER"),
            exchange_trusted_proxy_hops=env_int(env, "EXCHANGE_TRUSTED_PROXY_HOPS", 1, minimum=1),  # type: ignore[arg-type]
        )

    @property
    def session_redis_url(self) -> str | None:
        """The Redis of Laravel's sessions (redis driver): LARAVEL_SESSION_REDIS_URL, else REDIS_URL."""
        return self.laravel_session_redis_url or self.redis_url

    def session_app_key(self) -> str | None:
        """The key sessions are encrypted with, or None when they are not; checked where the engine starts."""
        if not self.laravel_session_encrypt:
            return None
        if not self.laravel_app_key:
            raise ConfigError("LARAVEL_APP_KEY must be set when LARAVEL_SESSION_ENCRYPT is true")
        return self.laravel_app_key

    def require(self, *names: str) -> None:
        """Fail with the variable names of settings a feature needs but nobody set."""
        missing = [name.upper() for name in names if not getattr(self, name)]
        if missing:
            raise ConfigError(f"{', '.join(missing)} must be set for this operation")

    def replace(self, **changes: Any) -> Settings:
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise TypeError(f"unknown settings: {sorted(unknown)}")
        return type(self)(**{**{name: getattr(self, name) for name in known}, **changes})

    @property
    def abilities_json(self) -> str:
        return json.dumps(list(self.migration_token_abilities), separators=(",", ":"))
