"""Real PostgreSQL and Redis for every test run.

Each run gets its own throwaway PostgreSQL database and Redis DB number:
TEST_DATABASE_URL / TEST_REDIS_URL when .ci/run (or you) set them, otherwise a
database named after this process is created on 127.0.0.1 and dropped at the end.
Tables are recreated for every test, so tests never see each other's rows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from tokenmigration.config import Settings
from tokenmigration.db.connection import make_engine
from tokenmigration.db.schema import laravel_metadata, own_metadata
from tokenmigration.db.upgrade import create_laravel_tables, upgrade
from tokenmigration.engine.migrator import Migrator

PG_SERVER = os.environ.get("TEST_PG_SERVER_URL", "postgresql+pg8000://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    given = os.environ.get("TEST_DATABASE_URL")
    if given:
        yield given
        return
    name = f"tm_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(PG_SERVER, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_SERVER.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


def _reset(engine: Engine) -> None:
    with engine.begin() as conn:
        for table in reversed(own_metadata.sorted_tables + laravel_metadata.sorted_tables):
            conn.execute(text(f"DROP TABLE IF EXISTS {table.name}"))
    create_laravel_tables(engine)
    upgrade(engine)


@pytest.fixture(scope="session")
def _pg_engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_engine(_pg_engine: Engine) -> Engine:
    _reset(_pg_engine)
    return _pg_engine


@pytest.fixture
def sqlite_engine(tmp_path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'laravel.sqlite'}")
    _reset(engine)
    yield engine
    engine.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def db_engine(request) -> Engine:
    """The same test on both databases the engine supports."""
    return request.getfixturevalue("pg_engine" if request.param == "postgresql" else "sqlite_engine")


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def settings(db_engine: Engine, redis_url: str) -> Settings:
    return Settings(database_url=db_engine.url.render_as_string(hide_password=False), redis_url=redis_url,
                    lock_timeout_ms=200)


@pytest.fixture
def migrator(settings: Settings, db_engine: Engine, redis_client: redis.Redis) -> Migrator:
    return Migrator(settings, db_engine, redis_client)
