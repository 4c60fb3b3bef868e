"""Everything a Lambda needs, built once per warm container and shared by its invocations.

Handlers call ``services()``; tests call ``reset_services()`` between cases (each test builds its own
moto resources, database and Redis). Clients are created lazily, so a function only connects to what it
uses (the stats route never opens Redis, the run routes never open the database).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import boto3

from tokenmigration.aws.cleanup_place import CleanupPlace
from tokenmigration.aws.flags import FeatureFlags
from tokenmigration.aws.runs import RunLedger
from tokenmigration.aws.secrets import database_tls, read_database_url, resolve_settings
from tokenmigration.aws.settings import AwsSettings
from tokenmigration.config import Settings

# SQLAlchemy, the engine, Redis and the exchange are imported where they are first used, not here: a
# function's cold start then pays only for what its own route touches (bench/cold_imports.py).
if TYPE_CHECKING:
    from sqlalchemy import Engine

    from tokenmigration.engine.migrator import Migrator
    from tokenmigration.engine.reporting import CachedStats
    from tokenmigration.exchange import ExchangeService
    from tokenmigration.redis_client import RedisLike


# While a run executes, /progress counts the users table at most this often per container.
PROGRESS_STATS_MAX_AGE_SECONDS = 60.0


@dataclass
class Services:
    settings: Settings
    aws: AwsSettings
    database_from_secret: bool = False  # DATABASE_URL came from DATABASE_SECRET_ARN, not the environment

    @cached_property
    def engine(self) -> Engine:
        from tokenmigration.db.connection import make_engine

        # One connection per container: Lambda runs one invocation at a time per container.
        fresh = (lambda: read_database_url(self.aws, force=True)) if self.database_from_secret else None
        return make_engine(self.settings.database_url, pool_size=1, max_overflow=1,
                           tls=database_tls(self.aws, from_secret=self.database_from_secret), fresh_url=fresh)

    @cached_property
    def running_stats(self) -> CachedStats:
        """The database's stats for /progress while a run executes (see engine.reporting.CachedStats)."""
        from tokenmigration.engine.reporting import CachedStats

        return CachedStats(self.engine, PROGRESS_STATS_MAX_AGE_SECONDS)

    @cached_property
    def redis(self) -> RedisLike:
        from tokenmigration.redis_client import connect

        return connect(self.settings.redis_url)

    @cached_property
    def migrator(self) -> Migrator:
        from tokenmigration.engine.migrator import Migrator

        return Migrator(self.settings, self.engine, self.redis if self.settings.redis_url else None)

    @cached_property
    def exchange(self) -> ExchangeService:
        from tokenmigration.exchange import ExchangeService, RedisFailureThrottle

        # The failure throttle lives in Redis, so every container counts the same failures.
        return ExchangeService(self.settings, self.migrator, self.redis,
                               RedisFailureThrottle.from_settings(self.settings, self.redis))

    @cached_property
    def ledger(self) -> RunLedger:
        self.aws.require("table_name")
        return RunLedger.from_settings(self.aws, client=self.dynamodb)

    @cached_property
    def cleanup_place(self) -> CleanupPlace:
        self.aws.require("table_name")
        return CleanupPlace(self.dynamodb, self.aws.table_name)  # type: ignore[arg-type]

    @cached_property
    def flags(self) -> FeatureFlags:
        self.aws.require("flags_path")
        return FeatureFlags.from_settings(self.aws, ssm_client=self.client("ssm"))

    @cached_property
    def dynamodb(self) -> Any:
        return self.client("dynamodb")

    @cached_property
    def stepfunctions(self) -> Any:
        return self.client("stepfunctions")

    @cached_property
    def s3(self) -> Any:
        return self.client("s3")

    def client(self, name: str) -> Any:
        return boto3.client(name)


_services: Services | None = None
_guard = threading.Lock()


def services() -> Services:
    """Settings from the environment (secrets resolved from Secrets Manager), built on first use."""
    global _services
    with _guard:
        if _services is None:
            aws = AwsSettings.from_env()
            settings = Settings.from_env()
            from_secret = bool(aws.database_secret_arn and not settings.database_url)
            _services = Services(resolve_settings(settings, aws), aws, from_secret)
        return _services


def reset_services() -> None:
    global _services
    with _guard:
        if _services is not None and "engine" in _services.__dict__:
            _services.engine.dispose()
        _services = None
