"""Fill the settings that live in Secrets Manager: database URL, Express cookie secrets, Laravel APP_KEY.

A value set directly in the environment wins (local runs, tests); the secret is read only when its
``*_SECRET_ARN`` is set and the setting is not. Secret values are never logged and never put into an
error message: messages name the variable and, at most, the JSON keys that are missing.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import quote

from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.parameters import SecretsProvider
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError, TransformParameterError

from tokenmigration.aws.settings import AwsSettings
from tokenmigration.config import ConfigError, Settings

logger = logging.getLogger(__name__)

# Secrets change rarely (rotation); a warm function re-reads them after this long.
SECRET_MAX_AGE_SECONDS = 300

# Engines an RDS / Aurora secret names, and the URL scheme and default port of each family.
_POSTGRES_ENGINES = {"postgres", "postgresql", "aurora-postgresql"}
_MYSQL_ENGINES = {"mysql", "mariadb", "aurora-mysql", "aurora"}
_DEFAULT_PORT = 5432
_DEFAULT_MYSQL_PORT = 3306


def _fetch(variable: str, secret_id: str, transform: str | None, provider: SecretsProvider | None) -> Any:
    try:
        if provider is not None:
            return provider.get(secret_id, max_age=SECRET_MAX_AGE_SECONDS, transform=transform)
        return parameters.get_secret(secret_id, transform=transform, max_age=SECRET_MAX_AGE_SECONDS)
    except TransformParameterError:
        # The transform error quotes a parse position, but stay clear of anything derived from the value.
        raise ConfigError(f"the secret of {variable} is not JSON") from None
    except GetParameterError as exc:
        raise ConfigError(f"cannot read the secret of {variable}: {exc}") from None


def database_url_from_secret(secret: Any, variable: str = "DATABASE_SECRET_ARN") -> str:
    """``postgresql+pg8000://`` (or, for MySQL / MariaDB / Aurora MySQL, ``mysql+pymysql://``) URL from an
    RDS secret {engine, host, port, username, password, dbname}."""
    if not isinstance(secret, dict):
        raise ConfigError(f"the secret of {variable} must be a JSON object with host, username, password, dbname")
    missing = [key for key in ("host", "username", "password", "dbname") if not secret.get(key)]
    if missing:
        raise ConfigError(f"the secret of {variable} lacks {', '.join(missing)}")
    engine = str(secret.get("engine") or "postgres").lower()
    mysql = engine in _MYSQL_ENGINES
    if engine not in _POSTGRES_ENGINES and not mysql:
        raise ConfigError(f"the secret of {variable} is for engine {engine!r}; only PostgreSQL and MySQL/MariaDB "
                          "are supported")
    try:
        port = int(secret.get("port") or (_DEFAULT_MYSQL_PORT if mysql else _DEFAULT_PORT))
    except (TypeError, ValueError):
        raise ConfigError(f"the secret of {variable} has a port that is not a number") from None
    # safe="" so '@', '/' and ':' in a generated password cannot end the userinfo part early.
    user = quote(str(secret["username"]), safe="")
    password = quote(str(secret["password"]), safe="")
    dbname = quote(str(secret["dbname"]), safe="")
    if mysql:
        return f"mysql+pymysql://{user}:{password}@{secret['host']}:{port}/{dbname}?charset=utf8mb4"
    return f"postgresql+pg8000://{user}:{password}@{secret['host']}:{port}/{dbname}"


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
        secret = _fetch("DATABASE_SECRET_ARN", aws.database_secret_arn, "json", provider)
        changes["database_url"] = database_url_from_secret(secret)
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
