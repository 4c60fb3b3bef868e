"""``tokenmigration db upgrade``: the project's additions, idempotent, touching nothing else."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from tokenmigration.db.connection import is_mysql, is_postgres
from tokenmigration.db.schema import USER_COLUMNS, USERS_MIGRATED_INDEX, laravel_metadata, own_metadata


class SchemaError(RuntimeError):
    pass


def upgrade(engine: Engine) -> list[str]:
    """Add the user columns and the ledger tables; drop the index earlier versions put on
    ``migrated_to_sanctum_at``; return what was done."""
    done: list[str] = []
    inspector = inspect(engine)
    if not inspector.has_table("users"):
        raise SchemaError("the users table does not exist: point DATABASE_URL at the Laravel database")
    present = {c["name"] for c in inspector.get_columns("users")}
    # Inspect before writing: on SQLite a second connection cannot read while this one writes.
    missing = [t for t in own_metadata.sorted_tables if not inspector.has_table(t.name)]
    indexed = USERS_MIGRATED_INDEX in {ix["name"] for ix in inspector.get_indexes("users")}
    absent = {name: type_ for name, type_ in USER_COLUMNS.items() if name not in present}
    if absent and is_mysql(engine):
        _add_mysql_columns(engine, absent)
        done += [f"added users.{name}" for name in absent]
        absent = {}
    with engine.begin() as conn:
        for name, type_ in absent.items():
            # Nullable with no default: a catalogue-only change on PostgreSQL, no table rewrite.
            ddl = type_.compile(dialect=engine.dialect)
            conn.execute(text(f"ALTER TABLE users ADD COLUMN {name} {ddl} NULL"))
            done.append(f"added users.{name}")
        own_metadata.create_all(conn, tables=missing)
        done += [f"created table {t.name}" for t in missing]
    if indexed:
        _drop_users_index(engine)
        done.append(f"dropped index {USERS_MIGRATED_INDEX} (it made every migrated user's UPDATE a non-HOT one "
                    "that also writes every other index of users)")
    return done


def _add_mysql_columns(engine: Engine, columns: dict) -> None:
    """One ALTER for both columns, online: INSTANT (MySQL 8.0.12+, MariaDB 10.3+) changes only the data
    dictionary; older servers get an in-place rebuild that keeps reads and writes going (LOCK=NONE)."""
    added = ", ".join(f"ADD COLUMN {name} {type_.compile(dialect=engine.dialect)} NULL"
                      for name, type_ in columns.items())
    with engine.connect() as conn:
        try:
            conn.execute(text(f"ALTER TABLE users {added}, ALGORITHM=INSTANT"))
        except DBAPIError as exc:
            # 1845/1846: the server cannot do this ALTER with that algorithm. DDL commits itself on MySQL,
            # so a failed INSTANT changed nothing.
            if _mysql_errno(exc) not in (1845, 1846, 1148):
                raise
            conn.execute(text(f"ALTER TABLE users {added}, ALGORITHM=INPLACE, LOCK=NONE"))


def _mysql_errno(exc: DBAPIError) -> int | None:
    args = getattr(exc.orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _drop_users_index(engine: Engine) -> None:
    """Earlier versions indexed ``migrated_to_sanctum_at``. Setting an indexed column rules out a heap-only
    (HOT) update on PostgreSQL, so every migrated user's row also got new entries in every index of users
    (primary key, the email unique index, ...), and a secondary-index change on InnoDB; nothing needs the
    index (stats counts the whole table anyway, the rollback plan reads the ledger and the users once)."""
    if is_mysql(engine):
        with engine.connect() as conn:  # online: reads and writes go on meanwhile
            conn.execute(text(f"ALTER TABLE users DROP INDEX {USERS_MIGRATED_INDEX}, ALGORITHM=INPLACE, LOCK=NONE"))
        return
    if is_postgres(engine):
        # CONCURRENTLY does not block the app's writes; it cannot run in a transaction block, and a pooled
        # connection may hold one open (pre-ping), so use a fresh autocommit connection.
        ddl_engine = create_engine(engine.url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        with ddl_engine.connect() as conn:
            conn.execute(text(f"DROP INDEX CONCURRENTLY IF EXISTS {USERS_MIGRATED_INDEX}"))
        ddl_engine.dispose()
        return
    with engine.begin() as conn:
        conn.execute(text(f"DROP INDEX IF EXISTS {USERS_MIGRATED_INDEX}"))


def create_laravel_tables(engine: Engine) -> list[str]:
    """Create users, sessions and personal_access_tokens as Laravel would (demos and tests only)."""
    inspector = inspect(engine)
    missing = [t for t in laravel_metadata.sorted_tables if not inspector.has_table(t.name)]
    laravel_metadata.create_all(engine, tables=missing)
    return [f"created table {t.name}" for t in missing]


def token_columns(engine: Engine) -> set[str]:
    """The live token table's columns: Sanctum 2.x has no expires_at."""
    inspector = inspect(engine)
    if not inspector.has_table("personal_access_tokens"):
        raise SchemaError("the personal_access_tokens table does not exist: install Laravel Sanctum first")
    return {c["name"] for c in inspector.get_columns("personal_access_tokens")}


def check_upgraded(engine: Engine) -> None:
    inspector = inspect(engine)
    present = {c["name"] for c in inspector.get_columns("users")} if inspector.has_table("users") else set()
    if not set(USER_COLUMNS) <= present or not all(inspector.has_table(t) for t in own_metadata.tables):
        raise SchemaError("the database has not been upgraded: run `tokenmigration db upgrade` first")
