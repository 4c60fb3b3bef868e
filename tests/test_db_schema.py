"""`db create-laravel-tables` and `db upgrade` on every database: Laravel's shapes, idempotent upgrades."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text

from helpers import add_users
from tokenmigration.db.connection import ConfigError, make_engine, normalize_url
from tokenmigration.db.schema import USER_COLUMNS, USERS_MIGRATED_INDEX, own_metadata
from tokenmigration.db.upgrade import SchemaError, check_upgraded, upgrade


def test_urls_pick_the_drivers_we_ship():
    assert normalize_url("mysql://u:p@h/db") == "mysql+pymysql://u:p@h/db?charset=utf8mb4"
    assert normalize_url("mariadb://u@h/db") == "mariadb+pymysql://u@h/db?charset=utf8mb4"
    assert normalize_url("mysql+pymysql://u@h/db?charset=utf8") == "mysql+pymysql://u@h/db?charset=utf8"
    assert normalize_url("postgres://u@h/db") == "postgresql+pg8000://u@h/db"
    with pytest.raises(ConfigError, match="PyMySQL"):
        make_engine("mysql+mysqldb://u@h/db")
    with pytest.raises(ConfigError, match="only PostgreSQL, MySQL/MariaDB and SQLite"):
        make_engine("oracle://u@h/db")


def test_upgrade_twice_changes_nothing_the_second_time(db_engine):
    # The fixture upgraded once already: a second run finds everything in place.
    assert upgrade(db_engine) == []
    check_upgraded(db_engine)


def test_upgrade_of_a_bare_laravel_database_adds_only_our_parts(db_engine):
    with db_engine.begin() as conn:
        for table in own_metadata.sorted_tables:
            conn.execute(text(f"DROP TABLE {table.name}"))
        for name in USER_COLUMNS:
            conn.execute(text(f"ALTER TABLE users DROP COLUMN {name}"))
    add_users(db_engine, [1, 2])
    with pytest.raises(SchemaError, match="db upgrade"):
        check_upgraded(db_engine)
    done = upgrade(db_engine)
    assert done[:2] == ["added users.migrated_to_sanctum_at", "added users.migration_token_id"]
    assert len(done) == 2 + len(own_metadata.tables) and not any("index" in step for step in done)
    assert USERS_MIGRATED_INDEX not in {ix["name"] for ix in inspect(db_engine).get_indexes("users")}
    check_upgraded(db_engine)
    with db_engine.connect() as conn:  # the app's rows are untouched, the new columns empty
        assert conn.execute(text("SELECT id, migrated_to_sanctum_at, migration_token_id FROM users ORDER BY id")
                            ).all() == [(1, None, None), (2, None, None)]
    assert upgrade(db_engine) == []


def test_upgrade_drops_the_index_earlier_versions_made_on_migrated_to_sanctum_at(db_engine):
    """An indexed migrated_to_sanctum_at made every migrated user's UPDATE write every index of users."""
    with db_engine.begin() as conn:
        conn.execute(text(f"CREATE INDEX {USERS_MIGRATED_INDEX} ON users (migrated_to_sanctum_at)"))
    add_users(db_engine, [1])
    done = upgrade(db_engine)
    assert len(done) == 1 and done[0].startswith(f"dropped index {USERS_MIGRATED_INDEX}")
    assert USERS_MIGRATED_INDEX not in {ix["name"] for ix in inspect(db_engine).get_indexes("users")}
    check_upgraded(db_engine)
    assert upgrade(db_engine) == []


def _mysql(engine) -> bool:
    return engine.dialect.name in ("mysql", "mariadb")


def test_laravel_tables_on_mysql_are_what_laravels_migrations_make(mysql_engine):
    """compat.md section 5, read back from MariaDB's information_schema."""
    with mysql_engine.connect() as conn:
        columns = {
            (table, name): (column_type, nullable)
            for table, name, column_type, nullable in conn.execute(text(
                "SELECT table_name, column_name, column_type, is_nullable FROM information_schema.columns "
                "WHERE table_schema = DATABASE()"
            ))
        }
        tables = dict(conn.execute(text(
            "SELECT table_name, concat(engine, ' ', table_collation) FROM information_schema.tables "
            "WHERE table_schema = DATABASE()"
        )).all())
    assert columns["users", "id"] == ("bigint(20) unsigned", "NO")
    assert columns["personal_access_tokens", "id"] == ("bigint(20) unsigned", "NO")
    assert columns["personal_access_tokens", "tokenable_id"] == ("bigint(20) unsigned", "NO")
    assert columns["personal_access_tokens", "token"] == ("varchar(64)", "NO")
    assert columns["personal_access_tokens", "created_at"] == ("timestamp", "YES")
    assert columns["personal_access_tokens", "expires_at"] == ("timestamp", "YES")
    assert columns["sessions", "id"] == ("varchar(255)", "NO")
    assert columns["sessions", "user_id"] == ("bigint(20) unsigned", "YES")
    assert columns["sessions", "ip_address"] == ("varchar(45)", "YES")
    assert columns["sessions", "payload"] == ("longtext", "NO")
    assert columns["sessions", "last_activity"] == ("int(11)", "NO")
    assert columns["users", "migration_token_id"] == ("bigint(20) unsigned", "YES")
    assert all(v == "InnoDB utf8mb4_unicode_ci" for v in tables.values()), tables
    inspector = inspect(mysql_engine)
    assert {ix["name"] for ix in inspector.get_indexes("sessions")} == {
        "sessions_user_id_index", "sessions_last_activity_index"}
    assert {ix["name"]: ix["column_names"] for ix in inspector.get_indexes("personal_access_tokens")} == {
        "personal_access_tokens_token_unique": ["token"],
        "personal_access_tokens_tokenable_type_tokenable_id_index": ["tokenable_type", "tokenable_id"],
    }
    assert USERS_MIGRATED_INDEX not in {ix["name"] for ix in inspector.get_indexes("users")}
