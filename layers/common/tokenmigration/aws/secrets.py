"""Fill the settings that live in Secrets Manager: database URL, Redis URL, Express cookie secrets, APP_KEY.

A value set directly in the environment wins (local runs, tests); the secret is read only when its
``*_SECRET_ARN`` is set and the setting is not. Secret values are never logged and never put into an
error message: messages name the variable and, at most, the JSON keys that are missing.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
from typing import Any
from urllib.parse import quote

from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.parameters import SecretsProvider
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError, TransformParameterError

from tokenmigration.aws.settings import AwsSettings
from tokenmigration.config import ConfigError, Settings
from tokenmigration.db.tls import verified_context

logger = logging.getLogger(__name__)

# Secrets change rarely (rotation); a warm function re-reads them after this long.
SECRET_MAX_AGE_SECONDS = 300

# Engines an RDS / Aurora secret names, and the SQLAlchemy driver we ship for each.
_DRIVERS = {
    "postgres": "postgresql+pg8000", "postgresql": "postgresql+pg8000", "aurora-postgresql": "postgresql+pg8000",
    "mysql": "mysql+pymysql", "aurora-mysql": "mysql+pymysql", "aurora": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
}
_DEFAULT_PORTS = {"postgresql+pg8000": 5432, "mysql+pymysql": 3306}


def _fetch(variable: str, secret_id: str, transform: str | None, provider: SecretsProvider | None,
           force: bool = False) -> Any:
    try:
        if provider is not None:
            return provider.get(secret_id, max_age=SECRET_MAX_AGE_SECONDS, transform=transform, force_fetch=force)
        return parameters.get_secret(secret_id, transform=transform, max_age=SECRET_MAX_AGE_SECONDS,
                                     force_fetch=force)
    except TransformParameterError:
        # The transform error quotes a parse position, but stay clear of anything derived from the value.
        raise ConfigError(f"the secret of {variable} is not JSON") from None
    except GetParameterError as exc:
        raise ConfigError(f"cannot read the secret of {variable}: {exc}") from None


def database_url_from_secret(secret: Any, variable: str = "DATABASE_SECRET_ARN",
                             aws: AwsSettings | None = None) -> str:
    """A SQLAlchemy URL from an RDS secret {engine, host, port, username, password, dbname}.

    An RDS-managed master secret holds only username and password: host, port, database name and engine then
    come from ``aws`` (DATABASE_HOST, DATABASE_PORT, DATABASE_NAME, DATABASE_ENGINE), which also win over the
    secret's own fields when set; DATABASE_PROXY_ENDPOINT (an RDS Proxy) wins over both hosts.
    """
    if not isinstance(secret, dict):
        raise ConfigError(f"the secret of {variable} must be a JSON object with username and password")
    aws = aws or AwsSettings()
    fields = {
        "username": secret.get("username"),
        "password": secret.get("password"),
        "host": aws.database_proxy_endpoint or aws.database_host or secret.get("host"),
        "dbname": aws.database_name or secret.get("dbname"),
    }
    missing = [name for name, value in fields.items() if not value]
    if missing:
        hint = " (or set DATABASE_HOST / DATABASE_NAME)" if {"host", "dbname"} & set(missing) else ""
        raise ConfigError(f"the secret of {variable} lacks {', '.join(missing)}{hint}")
    engine = str(aws.database_engine or secret.get("engine") or "postgres").lower()
    driver = _DRIVERS.get(engine)
    if driver is None:
        supported = ", ".join(sorted(_DRIVERS))
        raise ConfigError(f"the secret of {variable} is for engine {engine!r}; supported: {supported}")
    try:
        port = int(aws.database_port or secret.get("port") or _DEFAULT_PORTS[driver])
    except (TypeError, ValueError):
        raise ConfigError(f"the secret of {variable} has a port that is not a number") from None
    # safe="" so '@', '/' and ':' in a generated password cannot end the userinfo part early.
    user = quote(str(fields["username"]), safe="")
    password = quote(str(fields["password"]), safe="")
    dbname = quote(str(fields["dbname"]), safe="")
    # Laravel's MySQL tables are utf8mb4: anything less mangles user agents with emoji.
    query = "?charset=utf8mb4" if driver == "mysql+pymysql" else ""
    return f"{driver}://{user}:{password}@{fields['host']}:{port}/{dbname}{query}"


def read_database_url(aws: AwsSettings, *, provider: SecretsProvider | None = None, force: bool = False) -> str:
    """The database URL from DATABASE_SECRET_ARN; ``force`` bypasses every cache (after a refused login)."""
    aws.require("database_secret_arn")
    secret = _fetch("DATABASE_SECRET_ARN", aws.database_secret_arn, "json", provider, force=force)
    return database_url_from_secret(secret, aws=aws)


def redis_url_from_secret(raw: Any, variable: str = "REDIS_SECRET_ARN") -> str:
    """``redis://`` or ``rediss://`` URL (it may carry an auth token), as the secret string or its ``url``."""
    value = raw
    if isinstance(raw, str) and raw.strip().startswith("{"):
        try:
            value = json.loads(raw).get("url")
        except (ValueError, AttributeError):
            raise ConfigError(f"the secret of {variable} starts like JSON but is not a JSON object") from None
    if not isinstance(value, str) or not value.strip().startswith(("redis://", "rediss://")):
        raise ConfigError(f"the secret of {variable} must be a redis:// or rediss:// URL, or JSON {{\"url\": ...}}")
    return value.strip()


def running_in_lambda() -> bool:
    return bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))


def database_tls(aws: AwsSettings, *, from_secret: bool) -> ssl.SSLContext | None:
    """The TLS the database connection must use (see AwsSettings.database_tls), or None for none."""
    mode = aws.database_tls or ("verify" if from_secret or running_in_lambda() else "off")
    if mode == "off":
        if running_in_lambda():
            raise ConfigError("DATABASE_TLS=off is for local use only: Lambda always verifies the database's TLS")
        return None
    return verified_context()


def express_secrets_from_string(raw: Any, variable: str = "EXPRESS_SECRETS_ARN") -> tuple[str, ...]:
    """A JSON list of strings, or comma-separated (express-session's ``secret`` array; the first signs)."""
    if not isinstance(raw, str):
        raise ConfigError(f"the secret of {variable} must be a string secret")
    text = raw.strip()
    if text.startswith("["):
        try:
            values = json.loads(text)
        except ValueError:
            raise ConfigError(f"the secret of {variable} starts like a JSON list but is not valid JSON") from None
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ConfigError(f"the secret of {variable} must be a JSON list of strings")
    else:
        values = text.split(",")
    secrets = tuple(v.strip() for v in values if v.strip())
    if not secrets:
        raise ConfigError(f"the secret of {variable} holds no secrets")
    return secrets


def resolve_settings(settings: Settings, aws: AwsSettings, *, provider: SecretsProvider | None = None) -> Settings:
    """``settings`` with what the configured secrets hold; ``provider`` replaces Powertools' default one."""
    changes: dict[str, Any] = {}
    if aws.database_secret_arn and not settings.database_url:
        changes["database_url"] = read_database_url(aws, provider=provider)
    if aws.redis_secret_arn and not settings.redis_url:
        changes["redis_url"] = redis_url_from_secret(_fetch("REDIS_SECRET_ARN", aws.redis_secret_arn, None, provider))
    if aws.express_secrets_arn and not settings.express_session_secrets:
        raw = _fetch("EXPRESS_SECRETS_ARN", aws.express_secrets_arn, None, provider)
        changes["express_session_secrets"] = express_secrets_from_string(raw)
    if aws.app_key_secret_arn and not settings.laravel_app_key:
        raw = _fetch("APP_KEY_SECRET_ARN", aws.app_key_secret_arn, None, provider)
        if not isinstance(raw, str) or not raw.strip():
            raise ConfigError("the secret of APP_KEY_SECRET_ARN must be a non-empty string (Laravel's APP_KEY)")
        changes["laravel_app_key"] = raw.strip()
    if not changes:
        return settings
    # Which settings came from secrets, never what they hold.
    logger.info("settings resolved from Secrets Manager: %s", ", ".join(sorted(changes)))
    return settings.replace(**changes)
