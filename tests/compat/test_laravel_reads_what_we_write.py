"""Laravel's own PHP classes read what the engine wrote (tests/compat/read_sessions.php, Debian's Laravel 8).

On PostgreSQL, MariaDB and SQLite, for the `database` and `redis` session drivers, plain and encrypted:
bulk-migrated sessions and sessions the exchange wrote are started with ``Store::start()`` (or
``EncryptedStore``), and ``SessionGuard`` logs their user in from the ``login_web_...`` key against the
users table. The suite fails, never skips, when PHP or the packages are missing (.ci/run installs them).
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from helpers import add_users, express, ledgered_session_rows, put_session
from tokenmigration.engine.migrator import Migrator
from tokenmigration.engine.session_index import IndexedSession
from tokenmigration.formats.laravel_session import LOGIN_WEB_KEY, new_session_ids

READER = Path(__file__).with_name("read_sessions.php")
APP_KEY = "base64:" + base64.b64encode(hashlib.sha256(b"compat suite").digest()).decode()
COOKIE = "myapp_session"
# Laravel 8 (Debian's): RedisStore::setPrefix appends ":" to cache.prefix; 11+ does not. Either way the
# engine takes the whole prefix.
REDIS_OPTION_PREFIX = "myapp_database_"
CACHE_PREFIX = "myapp_cache"
WHOLE_PREFIX = f"{REDIS_OPTION_PREFIX}{CACHE_PREFIX}:"


def laravel_connection(engine) -> dict:
    url = make_url(engine.url.render_as_string(hide_password=False))
    backend = url.get_backend_name()
    if backend == "sqlite":
        return {"driver": "sqlite", "database": url.database, "prefix": ""}
    base = {"host": url.host, "database": url.database, "username": url.username, "password": url.password or "",
            "prefix": ""}
    if backend == "postgresql":
        return {**base, "driver": "pgsql", "port": url.port or 5432, "charset": "utf8", "schema": "public"}
    return {**base, "driver": "mysql", "port": url.port or 3306, "charset": "utf8mb4",
            "collation": "utf8mb4_unicode_ci"}


def laravel_redis(redis_url: str) -> dict:
    url = make_url(redis_url.replace("redis://", "redis+x://", 1))  # SQLAlchemy's URL parser, any scheme
    return {"client": "phpredis", "options": {"prefix": REDIS_OPTION_PREFIX},
            "default": {"host": url.host, "port": url.port or 6379, "database": int(url.database or 0),
                        "password": None}}


def read_with_laravel(engine, redis_url: str, settings, ids: list[str]) -> dict[str, dict]:
    php = shutil.which("php")
    if php is None:
        pytest.fail("php is not installed: .ci/run installs php-cli and php-laravel-framework")
    request = {
        "driver": settings.laravel_session_driver, "connection": laravel_connection(engine),
        "redis": laravel_redis(redis_url), "cache_prefix": CACHE_PREFIX, "encrypt": settings.laravel_session_encrypt,
        "app_key": APP_KEY, "lifetime": settings.laravel_session_lifetime, "cookie": COOKIE, "ids": ids,
    }
    done = subprocess.run([php, str(READER)], input=json.dumps(request), capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr + done.stdout
    return {row["id"]: row for row in json.loads(done.stdout)}


@pytest.fixture(params=["database", "database-encrypted", "redis", "redis-encrypted"])
def target(request, settings):
    driver, _, encrypted = request.param.partition("-")
    return settings.replace(laravel_session_driver=driver, laravel_session_encrypt=bool(encrypted),
                            laravel_app_key=APP_KEY, laravel_session_redis_prefix=WHOLE_PREFIX)


def test_laravel_starts_every_session_we_wrote_and_logs_its_user_in(target, db_engine, redis_client, redis_url):
    migrator = Migrator(target, db_engine, redis_client)
    add_users(db_engine, [1, 2, 3, 40])
    put_session(redis_client, "one-a", express(1, ip="203.0.113.7", userAgent="Mozilla/5.0 (ünïcode ☃) 100%"))
    put_session(redis_client, "one-b", express(1))
    put_session(redis_client, "three", express(3))
    for chunk in migrator.plan("run-1", 2).chunks:
        migrator.migrate_chunk(chunk, "run-1")
    # The exchange's path: a session of a migrated user the bulk run never saw.
    exchanged = migrator.session_for_express_session(IndexedSession("later", 2, None, None), "exchange-run")
    with db_engine.connect() as conn:
        ours = {session_id: user_id for user_id, session_id, _, _ in ledgered_session_rows(conn)}
    assert sorted(ours.values()) == [1, 1, 2, 3] and exchanged in ours
    unknown = new_session_ids(1)[0]  # a well-formed id nobody wrote: Laravel must log nobody in

    seen = read_with_laravel(db_engine, redis_url, target, [*ours, unknown])

    for session_id, user_id in ours.items():
        row = seen[session_id]
        assert row["kept_id"], row
        assert row["login_key"] == LOGIN_WEB_KEY  # 'login_web_' . sha1(SessionGuard::class), from PHP
        assert row["user_id"] == user_id, row  # SessionGuard::check() found the user row
        assert row["attributes"]["_token"] == row["token"] and len(row["token"]) == 40  # our CSRF token kept
        assert not any(k.startswith("password_hash") for k in row["attributes"])
    assert seen[unknown]["user_id"] is None and seen[unknown]["kept_id"]
