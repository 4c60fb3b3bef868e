"""Feature flags in SSM Parameter Store, one String parameter per flag under ``FLAGS_PATH``.

Reads go through Powertools Parameters with ``max_age=FLAGS_MAX_AGE_SECONDS``: every warm function
re-reads the path at most that often, so a flip reaches all of them within seconds, without an SSM
call per request. A missing parameter means the "deployed" row of the flag transition table in api.md.
``migration_in_progress`` is not a flag: it is derived from the run ledger's lock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import Any, Literal

import boto3
from aws_lambda_powertools.utilities.parameters import SSMProvider

from tokenmigration.aws.settings import AwsSettings

logger = logging.getLogger(__name__)

AuthMode = Literal["dual", "sanctum"]
AUTH_MODES: tuple[str, ...] = ("dual", "sanctum")

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


@dataclass(frozen=True, slots=True)
class Flags:
    auth_mode: AuthMode = "dual"
    sanctum_only: bool = False
    rollback_available: bool = False
    exchange_enabled: bool = True


# The "deployed" row of the transition table; also what a missing parameter reads as.
DEFAULT_FLAGS = Flags()
FLAG_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Flags))


def _parse_bool(name: str, raw: str | None, default: bool) -> bool:
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    # A typo in the console must not take every function down: fall back, and say so in the logs.
    logger.warning("feature flag %s has an unrecognised value %r; using %s", name, raw, default)
    return default


def parse_flags(values: dict[str, Any]) -> Flags:
    """Flags from parameter values keyed by flag name (the path prefix already stripped)."""
    auth_mode = str(values.get("auth_mode", DEFAULT_FLAGS.auth_mode)).strip().lower()
    if auth_mode not in AUTH_MODES:
        logger.warning("feature flag auth_mode has an unrecognised value %r; using dual", auth_mode)
        auth_mode = DEFAULT_FLAGS.auth_mode
    return Flags(
        auth_mode=auth_mode,  # type: ignore[arg-type]
        sanctum_only=_parse_bool("sanctum_only", values.get("sanctum_only"), DEFAULT_FLAGS.sanctum_only),
        rollback_available=_parse_bool(
            "rollback_available", values.get("rollback_available"), DEFAULT_FLAGS.rollback_available
        ),
        exchange_enabled=_parse_bool(
            "exchange_enabled", values.get("exchange_enabled"), DEFAULT_FLAGS.exchange_enabled
        ),
    )


def _serialise(name: str, value: Any) -> str:
    if name == "auth_mode":
        if value not in AUTH_MODES:
            raise ValueError(f"auth_mode must be one of {AUTH_MODES}, got {value!r}")
        return value
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {value!r}")
    return "true" if value else "false"


def as_api_dict(flags: Flags, in_progress: bool) -> dict[str, Any]:
    """The api.md ``feature_flags`` object."""
    return {
        "auth_mode": flags.auth_mode,
        "sanctum_only": flags.sanctum_only,
        "migration_in_progress": in_progress,
        "rollback_available": flags.rollback_available,
    }


class FeatureFlags:
    def __init__(self, path: str, max_age: int = 5, ssm_client: Any = None) -> None:
        if not (path.startswith("/") and path.endswith("/")):
            raise ValueError(f"flags path must start and end with '/', got {path!r}")
        self.path = path
        self.max_age = max_age
        self._client = ssm_client
        self._provider: SSMProvider | None = None

    @classmethod
    def from_settings(cls, aws: AwsSettings, ssm_client: Any = None) -> FeatureFlags:
        aws.require("flags_path")
        return cls(aws.flags_path, aws.flags_max_age_seconds, ssm_client)  # type: ignore[arg-type]

    @property
    def client(self) -> Any:
        # Created on first use, so constructing FeatureFlags at import time needs no region or credentials.
        if self._client is None:
            self._client = boto3.client("ssm")
        return self._client

    @property
    def provider(self) -> SSMProvider:
        # Our own provider (not Powertools' module default) so the cache we clear is the one we read.
        if self._provider is None:
            self._provider = SSMProvider(boto3_client=self.client)
        return self._provider

    def read(self, force_fetch: bool = False) -> Flags:
        values = self.provider.get_multiple(
            # GetParametersByPath wants the hierarchy without the trailing slash; Powertools strips it
            # back off the names, so the keys are the bare flag names.
            self.path.rstrip("/"),
            max_age=self.max_age,
            force_fetch=force_fetch,
        )
        return parse_flags(dict(values))

    def set(self, **changes: Any) -> None:
        """Write the given flags (``auth_mode="sanctum"``, ``rollback_available=True`` ...)."""
        unknown = set(changes) - set(FLAG_NAMES)
        if unknown:
            raise TypeError(f"unknown feature flags: {sorted(unknown)}")
        # Validate everything before writing anything: SSM has no multi-parameter write, so at least
        # a bad value must not leave half of a transition applied.
        values = {name: _serialise(name, changes[name]) for name in FLAG_NAMES if name in changes}
        try:
            for name, value in values.items():
                self.client.put_parameter(Name=self.path + name, Value=value, Type="String", Overwrite=True)
        finally:
            # Even after a partial failure: this function must not keep serving what it just replaced.
            self.provider.clear_cache()
        logger.info("feature flags set: %s", values)

    # --- the transition table of api.md -----------------------------------------------------------

    def on_migration_finished(self, *, dry_run: bool = False) -> None:
        """A migration run finished (succeeded or not: users it migrated can be rolled back)."""
        if dry_run:
            return  # a dry run changed nothing, so there is nothing to roll back
        self.set(rollback_available=True)

    def on_complete(self) -> None:
        self.set(auth_mode="sanctum", sanctum_only=True, rollback_available=False)

    def on_rollback_accepted(self) -> None:
        """``/rollback`` accepted: Express sessions work again at once, while the run revokes tokens."""
        self.set(auth_mode="dual", sanctum_only=False)

    def on_rollback_finished(self, *, succeeded: bool = True) -> None:
        """The rollback run ended. A failed one leaves rollback available so it can be run again."""
        if succeeded:
            self.set(auth_mode="dual", sanctum_only=False, rollback_available=False)
        else:
            self.set(auth_mode="dual", sanctum_only=False)

