"""Real PostgreSQL, MariaDB and Redis for every test run.

Each run gets its own throwaway PostgreSQL database, MariaDB database and Redis DB number:
TEST_DATABASE_URL / TEST_MYSQL_URL / TEST_REDIS_URL when .ci/run (or you) set them, otherwise
databases named after this process are created on 127.0.0.1 and dropped at the end.
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

from helpers import reset_database
from tokenmigration.config import Settings
from tokenmigration.db.connection import make_engine
from tokenmigration.engine.migrator import Migrator

PG_SERVER = os.environ.get("TEST_PG_SERVER_URL", "postgresql+pg8000://postgres@127.0.0.1:5432/postgres")
MYSQL_SERVER = os.environ.get("TEST_MYSQL_SERVER_URL", "mysql+pymysql://root@127.0.0.1:3306/mysql")
# The databases an engine test runs on: the same test, parametrised, never copied.
DATABASES = ("postgresql", "mysql", "sqlite")


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
def mysql_url() -> Iterator[str]:
    """A throwaway MariaDB (or MySQL) database, utf8mb4 as Laravel's config makes it."""
    given = os.environ.get("TEST_MYSQL_URL")
    if given:
        yield given
        return
    name = f"tm_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(MYSQL_SERVER, poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"))
    try:
        yield MYSQL_SERVER.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/13")




@pytest.fixture(scope="session")
def _pg_engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_engine(_pg_engine: Engine) -> Engine:
    reset_database(_pg_engine)
    return _pg_engine


@pytest.fixture(scope="session")
def _mysql_engine(mysql_url: str) -> Iterator[Engine]:
    engine = make_engine(mysql_url)
    yield engine
    engine.dispose()


@pytest.fixture
def mysql_engine(_mysql_engine: Engine) -> Engine:
    reset_database(_mysql_engine)
    return _mysql_engine


@pytest.fixture
def sqlite_engine(tmp_path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'laravel.sqlite'}")
    reset_database(engine)
    yield engine
    engine.dispose()


_ENGINE_FIXTURES = {"postgresql": "pg_engine", "mysql": "mysql_engine", "sqlite": "sqlite_engine"}


@pytest.fixture(params=DATABASES)
def db_engine(request) -> Engine:
    """The same test on every database the engine supports (PostgreSQL, MariaDB, SQLite)."""
    return request.getfixturevalue(_ENGINE_FIXTURES[request.param])


@pytest.fixture(params=("postgresql", "mysql"))
def server_engine(request) -> Engine:
    """The database servers (row locks held by other connections, concurrent workers)."""
    return request.getfixturevalue(_ENGINE_FIXTURES[request.param])


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
