"""Every Laravel session target: the `sessions` table or Laravel's Redis (LARAVEL_SESSION_DRIVER), plain or
encrypted (LARAVEL_SESSION_ENCRYPT), on PostgreSQL, MariaDB and SQLite.

Sessions are read back the way Laravel reads them (compat.md sections 3, 6 and 7, as ported to Python);
tests/compat/ reads them with Laravel's own PHP classes.
"""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from sqlalchemy import func, select

from helpers import add_users, express, ledgered_session_rows, put_session, snapshot
from tokenmigration.config import ConfigError, Settings
from tokenmigration.db.schema import sessions
from tokenmigration.engine.cleanup import cleanup
from tokenmigration.engine.migrator import Migrator
from tokenmigration.engine.session_index import IndexedSession
from tokenmigration.engine.verify import verify_migrated
from tokenmigration.formats import laravel_cookie, phpserialize
from tokenmigration.formats.laravel_session import LOGIN_WEB_KEY, decode_payload, decode_redis_value

APP_KEY = "base64:" + base64.b64encode(hashlib.sha256(b"session targets").digest()).decode()
PREFIX = "myapp_database_myapp_cache_"


@pytest.fixture(params=["database", "database-encrypted", "redis", "redis-encrypted"])
def target(request, settings) -> Settings:
    driver, _, encrypted = request.param.partition("-")
    return settings.replace(laravel_session_driver=driver, laravel_session_encrypt=bool(encrypted),
                            laravel_app_key=APP_KEY, laravel_session_redis_prefix=PREFIX,
                            laravel_session_lifetime=30)


@pytest.fixture
def tmigrator(target, db_engine, redis_client) -> Migrator:
    return Migrator(target, db_engine, redis_client)


def laravel_sessions(migrator: Migrator, redis_client) -> dict[str, dict]:
    """Every Laravel session the app would find: id -> attributes (decrypted when encrypted)."""
    s = migrator.settings
    key = APP_KEY if s.laravel_session_encrypt else None
    if s.laravel_session_driver == "database":
        with migrator.engine.connect() as conn:
            rows = conn.execute(select(sessions.c.id, sessions.c.user_id, sessions.c.payload)).all()
        found = {}
        for sid, user_id, payload in rows:
            attrs = decode_payload(payload, s.laravel_session_serialization, key)
            assert attrs[LOGIN_WEB_KEY] == user_id
            found[sid] = attrs
        return found
    assert redis_client.keys("sessions*") == []  # nothing else written to the tables' name space
    with migrator.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(sessions)).scalar_one() == 0  # the driver ignores it
    found = {}
    for raw_key in redis_client.scan_iter(match=PREFIX + "*"):
        ttl = redis_client.ttl(raw_key)
        assert 0 < ttl <= 30 * 60  # SETEX with session.lifetime minutes
        found[raw_key.decode()[len(PREFIX):]] = decode_redis_value(redis_client.get(raw_key),
                                                                   s.laravel_session_serialization, key)
    return found


def test_migrate_verify_and_roll_back_on_every_target(tmigrator, db_engine, redis_client):
    add_users(db_engine, [1, 2, 3])
    put_session(redis_client, "a1", express(1, ip="203.0.113.9", userAgent="UA 100% real"))
    put_session(redis_client, "a2", express(1))
    put_session(redis_client, "b1", express(3))
    before = snapshot(db_engine)
    plan = tmigrator.plan("run-1", 2)
    results = [tmigrator.migrate_chunk(c, "run-1") for c in plan.chunks]
    assert sum(r.migrated_users for r in results) == 3 and sum(r.sessions_migrated for r in results) == 3
    found = laravel_sessions(tmigrator, redis_client)
    assert sorted(a[LOGIN_WEB_KEY] for a in found.values()) == [1, 1, 3]
    assert all(len(a["_token"]) == 40 for a in found.values())
    with db_engine.connect() as conn:
        assert {sid for _, sid, _, _ in ledgered_session_rows(conn)} == set(found)
    assert all(c.ok for c in verify_migrated(db_engine, tmigrator.settings, tmigrator.session_store))
    # A retry of a committed chunk writes nothing more.
    tmigrator.migrate_chunk(plan.chunks[0], "run-1")
    assert len(laravel_sessions(tmigrator, redis_client)) == 3
    removed = [tmigrator.rollback_chunk(c) for c in tmigrator.plan_rollback(2)]
    assert sum(r.sessions_removed for r in removed) == 3 and sum(r.users for r in removed) == 3
    assert laravel_sessions(tmigrator, redis_client) == {}
    assert snapshot(db_engine) == before
    app_keys = sorted(k.decode() for k in redis_client.keys("*") if not k.startswith(b"tokenmigration:"))
    assert app_keys == ["sess:a1", "sess:a2", "sess:b1"]  # the Express sessions stay, as rollback found them


@pytest.mark.parametrize("target", ["database-encrypted", "redis-encrypted"], indirect=True)
def test_encrypted_payloads_are_laravels_envelope(tmigrator, db_engine, redis_client):
    add_users(db_engine, [7])
    put_session(redis_client, "s7", express(7))
    [tmigrator.migrate_chunk(c, "run-1") for c in tmigrator.plan("run-1", 10).chunks]
    if tmigrator.settings.laravel_session_driver == "database":
        with db_engine.connect() as conn:
            stored = base64.b64decode(conn.execute(select(sessions.c.payload)).scalar_one()).decode()
    else:
        [raw_key] = redis_client.keys(PREFIX + "*")
        stored = phpserialize.unserialize(redis_client.get(raw_key))
    envelope = json.loads(base64.b64decode(stored))
    assert sorted(envelope) == ["iv", "mac", "tag", "value"] and envelope["tag"] == ""
    # Encrypter::encrypt($data) with $serialize = true: the plaintext is serialize($sessionString).
    plaintext = laravel_cookie.decrypt(stored, laravel_cookie.parse_app_key(APP_KEY)).decode()
    assert plaintext.startswith("s:") and phpserialize.unserialize(phpserialize.unserialize(plaintext))[
        LOGIN_WEB_KEY] == 7
    with pytest.raises(ValueError):  # another key reads nothing: Laravel starts an empty session
        decode_payload(base64.b64encode(stored.encode()).decode(), "php",
                       "base64:" + base64.b64encode(b"k" * 32).decode())


def test_exchange_reuses_the_migrated_session_and_replaces_a_gone_one(tmigrator, db_engine, redis_client):
    add_users(db_engine, [4])
    put_session(redis_client, "x4", express(4))
    [tmigrator.migrate_chunk(c, "run-1") for c in tmigrator.plan("run-1", 10).chunks]
    [migrated] = laravel_sessions(tmigrator, redis_client)
    entry = IndexedSession("x4", 4, None, None)
    assert tmigrator.session_for_express_session(entry, "exchange") == migrated
    # Laravel logged the user out: the row or key is gone, so the exchange writes a new, ledgered one.
    if tmigrator.settings.laravel_session_driver == "database":
        with db_engine.begin() as conn:
            conn.execute(sessions.delete())
    else:
        redis_client.delete(PREFIX + migrated)
    fresh = tmigrator.session_for_express_session(entry, "exchange")
    assert fresh != migrated and list(laravel_sessions(tmigrator, redis_client)) == [fresh]
    assert tmigrator.session_for_express_session(entry, "exchange") == fresh
    with db_engine.connect() as conn:  # the gone session's ledger row went with it
        assert {sid for _, sid, _, _ in ledgered_session_rows(conn)} == {fresh}
    # Laravel's GC (database) or Redis's expiry took the new one too: cleanup drops its ledger row.
    if tmigrator.settings.laravel_session_driver == "database":
        with db_engine.begin() as conn:
            conn.execute(sessions.delete())
    else:
        redis_client.delete(PREFIX + fresh)
    done = cleanup(db_engine, tmigrator.settings, session_store=tmigrator.session_store)
    with db_engine.connect() as conn:
        assert {sid for _, sid, _, _ in ledgered_session_rows(conn)} == set()
    assert done["details"]["ledger_rows"] == 1 and done["details"]["stale_sessions"] == 0


def test_encryption_needs_the_app_key_at_start(settings, db_engine, redis_client):
    with pytest.raises(ConfigError, match="LARAVEL_APP_KEY"):
        Migrator(settings.replace(laravel_session_encrypt=True, laravel_app_key=None), db_engine, redis_client)
    with pytest.raises(ConfigError, match="LARAVEL_APP_KEY"):
        Migrator(settings.replace(laravel_session_encrypt=True, laravel_app_key="base64:c2hvcnQ="), db_engine,
                 redis_client)


def test_settings_from_the_environment():
    s = Settings.from_env({"LARAVEL_SESSION_DRIVER": "redis", "REDIS_URL": "redis://h:6379/0",
                           "LARAVEL_SESSION_ENCRYPT": "true"})
    assert (s.laravel_session_driver, s.session_redis_url, s.laravel_session_encrypt) == (
        "redis", "redis://h:6379/0", True)
    assert s.laravel_session_redis_prefix == "laravel_database_laravel_cache_"  # Laravel 11/12 defaults
    s = Settings.from_env({"LARAVEL_SESSION_REDIS_URL": "redis://other:6379/2", "REDIS_URL": "redis://h:6379/0",
                           "LARAVEL_SESSION_REDIS_PREFIX": "app:"})
    assert (s.laravel_session_driver, s.session_redis_url, s.laravel_session_redis_prefix) == (
        "database", "redis://other:6379/2", "app:")
    with pytest.raises(ConfigError, match="LARAVEL_SESSION_DRIVER"):
        Settings.from_env({"LARAVEL_SESSION_DRIVER": "file"})
    with pytest.raises(ConfigError, match="LARAVEL_SESSION_REDIS_URL"):
        Settings.from_env({"LARAVEL_SESSION_REDIS_URL": "http://x"})
    with pytest.raises(ConfigError, match="LARAVEL_SESSION_ENCRYPT"):
        Settings.from_env({"LARAVEL_SESSION_ENCRYPT": "maybe"})


def test_redis_driver_cleanup_reads_the_ledger_a_page_at_a_time(settings, db_engine, redis_client, monkeypatch):
    """At 100 million users the ledger's session ids outgrow a Lambda's memory: cleanup walks the ledger in
    pages (two rows here), and still drops exactly the rows of the keys that are gone, across page bounds."""
    import tokenmigration.engine.cleanup as cleanup_module

    migrator = Migrator(settings.replace(laravel_session_driver="redis", laravel_session_redis_prefix=PREFIX),
                        db_engine, redis_client)
    add_users(db_engine, [1, 2, 3, 4])
    for uid, sids in {1: ("a1", "b1", "c1"), 2: ("a2",), 3: ("a3", "b3"), 4: ("a4",)}.items():
        for sid in sids:
            put_session(redis_client, sid, express(uid))
    [migrator.migrate_chunk(c, "run-1") for c in migrator.plan("run-1", 10).chunks]
    with db_engine.connect() as conn:
        ledgered = [(uid, sid) for uid, sid, _, _ in ledgered_session_rows(conn)]
    assert len(ledgered) == 7
    gone = {sid for n, (_, sid) in enumerate(ledgered) if n in (1, 2, 3, 6)}  # straddles every page bound
    redis_client.delete(*(PREFIX + sid for sid in gone))
    monkeypatch.setattr(cleanup_module, "LEDGER_PAGE", 2)

    dry = cleanup(db_engine, migrator.settings, dry_run=True, session_store=migrator.session_store)
    with db_engine.connect() as conn:
        assert len(ledgered_session_rows(conn)) == 7
    done = cleanup(db_engine, migrator.settings, session_store=migrator.session_store)
    with db_engine.connect() as conn:
        left = {sid for _, sid, _, _ in ledgered_session_rows(conn)}
    assert left == {sid for _, sid in ledgered} - gone
    assert dry["details"]["ledger_rows"] == done["details"]["ledger_rows"] == 4
