"""Where the AWS resources are, from the environment.

Like ``tokenmigration.config.Settings``: every value is optional at load time and a code path asks for
what it uses with ``require``, so the exchange function does not need the state machine ARNs (and a
misnamed variable fails the first request that needs it, with the variable's name in the message).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from tokenmigration.config import ConfigError, env_int

# Field name -> environment variable; ``require`` reports the variable, not the attribute.
ENV_NAMES = {
    "table_name": "TABLE_NAME",
    "flags_path": "FLAGS_PATH",
    "migration_state_machine_arn": "MIGRATION_STATE_MACHINE_ARN",
    "rollback_state_machine_arn": "ROLLBACK_STATE_MACHINE_ARN",
    "chunks_bucket": "CHUNKS_BUCKET",
    "database_secret_arn": "DATABASE_SECRET_ARN",
    "express_secrets_arn": "EXPRESS_SECRETS_ARN",
    "app_key_secret_arn": "APP_KEY_SECRET_ARN",
    "flags_max_age_seconds": "FLAGS_MAX_AGE_SECONDS",
    "run_retention_days": "RUN_RETENTION_DAYS",
    "redis_secret_arn": "REDIS_SECRET_ARN",
    "database_host": "DATABASE_HOST",
    "database_port": "DATABASE_PORT",
    "database_name": "DATABASE_NAME",
    "database_engine": "DATABASE_ENGINE",
    "database_proxy_endpoint": "DATABASE_PROXY_ENDPOINT",
    "database_tls": "DATABASE_TLS",
    "max_concurrency_limit": "MAX_CONCURRENCY_LIMIT",
    "plan_slice_seconds": "PLAN_SLICE_SECONDS",
    "plan_scan_count": "PLAN_SCAN_COUNT",
}


def _text(env: Mapping[str, str], name: str) -> str | None:
    return env.get(name, "").strip() or None


def _arn(env: Mapping[str, str], name: str) -> str | None:
    value = _text(env, name)
    if value and not value.startswith("arn:"):
        raise ConfigError(f"{name} must be an ARN (arn:...), got {value!r}")
    return value


def _flags_path(env: Mapping[str, str]) -> str | None:
    value = _text(env, "FLAGS_PATH")
    # Parameter names are FLAGS_PATH + flag name: without the slashes they would not form a hierarchy
    # that GetParametersByPath can read back.
    if value and not (value.startswith("/") and value.endswith("/") and len(value) > 1):
        raise ConfigError(f"FLAGS_PATH must start and end with '/', such as /tokenmigration/dev/, got {value!r}")
    return value


TLS_MODES = ("verify", "off")


def _tls_mode(env: Mapping[str, str]) -> str | None:
    value = _text(env, "DATABASE_TLS")
    if value is not None and value.lower() not in TLS_MODES:
        raise ConfigError(f"DATABASE_TLS must be verify or off, got {value!r}")
    return value.lower() if value else None


@dataclass(frozen=True)
class AwsSettings:
    table_name: str | None = None
    flags_path: str | None = None
    migration_state_machine_arn: str | None = None
    rollback_state_machine_arn: str | None = None
    chunks_bucket: str | None = None
    # Secrets Manager ids (ARN or name): the secret values themselves never pass through here.
    database_secret_arn: str | None = None
    express_secrets_arn: str | None = None
    app_key_secret_arn: str | None = None
    redis_secret_arn: str | None = None
    # Where the database is when its secret does not say (an RDS-managed master secret holds only username
    # and password); set, they win over the secret's own fields (DATABASE_HOST may be an RDS Proxy endpoint).
    database_host: str | None = None
    database_port: int | None = None
    database_name: str | None = None
    database_engine: str | None = None
    # An RDS Proxy endpoint: wins over both (the proxy logs in with the same secret's user).
    database_proxy_endpoint: str | None = None
    # verify (TLS checked against the RDS CA bundle) or off (local use only; refused inside Lambda). Unset:
    # verify for a database reached through its secret or from Lambda, off for a DATABASE_URL run locally.
    database_tls: str | None = None
    # How stale a flag may be in a warm function: a flip reaches every function within this many seconds.
    flags_max_age_seconds: int = 5
    # Run items expire (DynamoDB TTL) this many days after they were written.
    run_retention_days: int = 90
    # The chunk functions' reserved concurrency: /start and /rollback refuse a larger max_concurrency.
    max_concurrency_limit: int | None = None
    # One invocation of the plan's scan stops starting SCAN calls after this long and hands back its cursor
    # (Lambda stops a function at 900 s; 0 = one SCAN call per slice, which tests use to force tiny slices).
    plan_slice_seconds: int = 600
    # SCAN's COUNT hint: keys per SCAN call, about.
    plan_scan_count: int = 5000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AwsSettings:
        env = os.environ if env is None else env
        return cls(
            table_name=_text(env, "TABLE_NAME"),
            flags_path=_flags_path(env),
            migration_state_machine_arn=_arn(env, "MIGRATION_STATE_MACHINE_ARN"),
            rollback_state_machine_arn=_arn(env, "ROLLBACK_STATE_MACHINE_ARN"),
            chunks_bucket=_text(env, "CHUNKS_BUCKET"),
            database_secret_arn=_text(env, "DATABASE_SECRET_ARN"),
            express_secrets_arn=_text(env, "EXPRESS_SECRETS_ARN"),
            app_key_secret_arn=_text(env, "APP_KEY_SECRET_ARN"),
            redis_secret_arn=_text(env, "REDIS_SECRET_ARN"),
            database_host=_text(env, "DATABASE_HOST"),
            database_port=env_int(env, "DATABASE_PORT", None, minimum=1),
            database_name=_text(env, "DATABASE_NAME"),
            database_engine=_text(env, "DATABASE_ENGINE"),
            database_proxy_endpoint=_text(env, "DATABASE_PROXY_ENDPOINT"),
            database_tls=_tls_mode(env),
            flags_max_age_seconds=env_int(env, "FLAGS_MAX_AGE_SECONDS", 5, minimum=0),
            run_retention_days=env_int(env, "RUN_RETENTION_DAYS", 90, minimum=1),
            max_concurrency_limit=env_int(env, "MAX_CONCURRENCY_LIMIT", None, minimum=1),
            plan_slice_seconds=env_int(env, "PLAN_SLICE_SECONDS", 600, minimum=0),
            plan_scan_count=env_int(env, "PLAN_SCAN_COUNT", 5000, minimum=1),
        )

    def require(self, *names: str) -> None:
        """Fail with the variable names of settings a code path needs but nobody set."""
        unknown = [name for name in names if name not in ENV_NAMES]
        if unknown:
            raise TypeError(f"unknown AWS settings: {unknown}")
        missing = [ENV_NAMES[name] for name in names if getattr(self, name) in (None, "")]
        if missing:
            raise ConfigError(f"{', '.join(missing)} must be set for this operation")
