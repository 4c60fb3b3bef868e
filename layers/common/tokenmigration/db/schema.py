"""Table definitions.

``laravel_metadata`` mirrors what a Laravel skeleton's migrations create (users,
sessions, Sanctum's personal_access_tokens); it is used to create them for demos
and tests only. ``own_metadata`` holds the ledger this tool keeps so it can undo
exactly what it did. The two user columns we add live in ``USER_COLUMNS``.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    column,
    table,
)
from sqlalchemy.dialects import mysql

# SQLAlchemy calls MariaDB "mariadb" when the URL says so, "mysql" otherwise: every variant names both.
_MYSQL = ("mysql", "mariadb")

laravel_metadata = MetaData()
own_metadata = MetaData()

# SQLite only auto-increments INTEGER PRIMARY KEY, so BigInteger ids become INTEGER there; Laravel's
# id() and foreignId() are `bigint unsigned` on MySQL.
Unsigned = BigInteger().with_variant(mysql.BIGINT(unsigned=True), *_MYSQL)
BigId = BigInteger().with_variant(Integer(), "sqlite").with_variant(mysql.BIGINT(unsigned=True), *_MYSQL)
Timestamp = DateTime(timezone=False)
# Laravel's timestamp() columns: `timestamp null` on MySQL (SQLAlchemy writes the NULL that stops old servers
# from adding DEFAULT CURRENT_TIMESTAMP ON UPDATE), `timestamp(0) without time zone` on PostgreSQL.
LaravelTimestamp = DateTime(timezone=False).with_variant(mysql.TIMESTAMP(), *_MYSQL)
# Laravel's longText(): the sessions payload.
LongText = Text().with_variant(mysql.LONGTEXT(), *_MYSQL)
# What Laravel's schema builder gives every table on MySQL (config/database.php's defaults).
MYSQL_TABLE = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_unicode_ci",
               "mariadb_engine": "InnoDB", "mariadb_charset": "utf8mb4", "mariadb_collate": "utf8mb4_unicode_ci"}

laravel_users = Table(
    "users",
    laravel_metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False),
    Column("email", String(255), nullable=False),
    Column("email_verified_at", LaravelTimestamp, nullable=True),
    Column("password", String(255), nullable=False),
    Column("remember_token", String(100), nullable=True),
    Column("created_at", LaravelTimestamp, nullable=True),
    Column("updated_at", LaravelTimestamp, nullable=True),
    UniqueConstraint("email", name="users_email_unique"),
    **MYSQL_TABLE,
)

laravel_tokens = Table(
    "personal_access_tokens",
    laravel_metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("tokenable_type", String(255), nullable=False),
    Column("tokenable_id", Unsigned, nullable=False),
    Column("name", Text, nullable=False),
    Column("token", String(64), nullable=False),
    Column("abilities", Text, nullable=True),
    Column("last_used_at", LaravelTimestamp, nullable=True),
    Column("expires_at", LaravelTimestamp, nullable=True),  # compat.md's DDL: no index of its own
    Column("created_at", LaravelTimestamp, nullable=True),
    Column("updated_at", LaravelTimestamp, nullable=True),
    UniqueConstraint("token", name="personal_access_tokens_token_unique"),
    Index("personal_access_tokens_tokenable_type_tokenable_id_index", "tokenable_type", "tokenable_id"),
    **MYSQL_TABLE,
)

laravel_sessions = Table(
    "sessions",
    laravel_metadata,
    Column("id", String(255), primary_key=True),
    Column("user_id", Unsigned, nullable=True),
    Column("ip_address", String(45), nullable=True),
    Column("user_agent", Text, nullable=True),
    Column("payload", LongText, nullable=False),
    Column("last_activity", Integer, nullable=False),
    Index("sessions_user_id_index", "user_id"),
    Index("sessions_last_activity_index", "last_activity"),
    **MYSQL_TABLE,
)

# The columns `db upgrade` adds to the app's users table (the PHP sketch's names).
USER_COLUMNS = {"migrated_to_sanctum_at": Timestamp, "migration_token_id": Unsigned}
# Created by earlier versions; `db upgrade` drops it (see upgrade._drop_users_index).
USERS_MIGRATED_INDEX = "users_migrated_to_sanctum_at_index"

# Lightweight handles for queries: only the columns this tool reads or writes, typed so that
# SQLite gets timestamps through SQLAlchemy's own conversion.
users = table(
    "users",
    column("id", BigInteger),
    column("migrated_to_sanctum_at", Timestamp),
    column("migration_token_id", BigInteger),
)
tokens = table(
    "personal_access_tokens",
    column("id", BigInteger),
    column("tokenable_type", String),
    column("tokenable_id", BigInteger),
    column("name", Text),
    column("token", String),
    column("abilities", Text),
    column("last_used_at", Timestamp),
    column("expires_at", Timestamp),
    column("created_at", Timestamp),
    column("updated_at", Timestamp),
)
sessions = table(
    "sessions",
    column("id", String),
    column("user_id", BigInteger),
    column("ip_address", String),
    column("user_agent", Text),
    column("payload", Text),
    column("last_activity", Integer),
)

# Every token this tool created (bulk runs, single-user route, exchange), so rollback removes
# those and only those. The key leads with user_id: rollback and cleanup work on user ranges,
# and one index per ledger keeps bulk inserts cheap.
ledger_tokens = Table(
    "token_migration_tokens",
    own_metadata,
    Column("user_id", BigInteger, primary_key=True, autoincrement=False),
    Column("token_id", BigInteger, primary_key=True, autoincrement=False),
    Column("run_id", String(64), nullable=False),
    Column("created_at", Timestamp, nullable=False),
    **MYSQL_TABLE,
)

# Every Laravel session row this tool created. source_hash is sha256 of the Express session id
# it came from (never the id itself: with the cookie secret it is a credential); lookups by it
# go through user_id first, so it needs no index of its own.
ledger_sessions = Table(
    "token_migration_sessions",
    own_metadata,
    Column("user_id", BigInteger, primary_key=True, autoincrement=False),
    Column("session_id", String(255), primary_key=True),
    Column("run_id", String(64), nullable=False),
    Column("source_hash", String(64), nullable=True),
    Column("created_at", Timestamp, nullable=False),
    **MYSQL_TABLE,
)

# What a bulk chunk created for one user, packed into one row: the migration token (NULL for a user
# skipped for the token whose sessions were carried) and every Laravel session row made from the user's
# Express sessions, as comma-joined ids and their source hashes in the same order. One row and one key
# entry per user instead of one per token and one per session: a third of the ledger's write-ahead log.
# Written by PostgreSQL bulk chunks only (engine/ledger.py reads it); the paths that work on one session
# (exchange, bridge, rotation, cleanup of part of a user's sessions) first unpack the user's rows into
# the two ledgers above.
ledger_packed = Table(
    "token_migration_users",
    own_metadata,
    Column("user_id", BigInteger, primary_key=True, autoincrement=False),
    Column("run_id", String(64), primary_key=True),
    Column("token_id", BigInteger, nullable=True),
    Column("session_ids", Text, nullable=True),
    Column("source_hashes", Text, nullable=True),
    Column("created_at", Timestamp, nullable=False),
    **MYSQL_TABLE,
)

# What each chunk of a rollback run removed, written in the chunk's own transaction: a chunk retried
# after its commit finds nothing left to delete, and reports these counts instead of zeros.
ledger_rollbacks = Table(
    "token_migration_rollbacks",
    own_metadata,
    Column("run_id", String(64), primary_key=True),
    Column("chunk", Integer, primary_key=True, autoincrement=False),
    Column("users", Integer, nullable=False),
    Column("tokens_revoked", Integer, nullable=False),
    Column("sessions_removed", Integer, nullable=False),
    Column("created_at", Timestamp, nullable=False),
    **MYSQL_TABLE,
)

# The latest failure of each user that is not migrated yet; the source of stats.failed_migrations.
ledger_failures = Table(
    "token_migration_failures",
    own_metadata,
    Column("user_id", BigInteger, primary_key=True, autoincrement=False),
    Column("run_id", String(64), nullable=False),
    Column("code", String(64), nullable=False),
    Column("message", Text, nullable=False),
    Column("failed_at", Timestamp, nullable=False),
    **MYSQL_TABLE,
)

# The ledgers keyed by user id: what a range of users owns in this tool's bookkeeping.
USER_LEDGERS = (ledger_tokens, ledger_sessions, ledger_packed, ledger_failures)
