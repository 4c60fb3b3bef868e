"""Transient failures get the names the state machines retry; a failed run keeps one short, safe line."""

from __future__ import annotations

import json

import pytest
import redis
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, ProgrammingError

from tokenmigration.db.connection import make_engine
from tokenmigration.workflow.errors import (
    TransientDatabaseError,
    TransientRedisError,
    is_transient_database_error,
    short_error,
    transient_errors,
)


class _PgError(Exception):
    """pg8000's shape: the server's fields in a dict, the SQLSTATE under 'C'."""


def _driver_error(sqlstate: str) -> DBAPIError:
    return DBAPIError("UPDATE users SET ...", {}, _PgError({"S": "ERROR", "C": sqlstate, "M": "..."}))


def test_a_refused_connection_is_a_transient_database_error():
    engine = make_engine("postgresql+pg8000://postgres@127.0.0.1:1/nothing_listens_here")
    with pytest.raises(TransientDatabaseError) as caught, transient_errors(), engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    engine.dispose()
    assert type(caught.value).__name__ == "TransientDatabaseError"  # the name Step Functions matches
    assert "127.0.0.1" not in str(caught.value)


@pytest.mark.parametrize("sqlstate", ["40P01", "40001", "08006", "53300", "57P01"])
def test_deadlocks_serialization_failures_and_restarts_are_transient(sqlstate):
    with pytest.raises(TransientDatabaseError, match=sqlstate), transient_errors():
        raise _driver_error(sqlstate)


def test_a_real_serialization_failure_is_transient(pg_engine):
    # A real server error through pg8000: lock_timeout's 55P03 is not in the list, a statement error is
    # not either; a serialization failure raised by the server is.
    with pg_engine.connect() as conn, pytest.raises(TransientDatabaseError, match="40001"), transient_errors():
        conn.execute(text("DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = 'serialization_failure'; END $$"))


@pytest.mark.parametrize("error", [
    IntegrityError("INSERT", {}, _PgError({"C": "23505"})),
    ProgrammingError("SELECT", {}, _PgError({"C": "42P01"})),
    _driver_error("22P02"),
])
def test_bugs_and_bad_data_are_not_retried(error):
    assert not is_transient_database_error(error)
    with pytest.raises(type(error)), transient_errors():
        raise error


def test_operational_errors_are_transient():
    assert is_transient_database_error(OperationalError("SELECT 1", {}, ConnectionResetError()))


@pytest.mark.parametrize("error", [redis.exceptions.ConnectionError("Error 111 connecting"),
                                   redis.exceptions.TimeoutError("Timeout reading"),
                                   redis.exceptions.BusyLoadingError("LOADING")])
def test_redis_outages_are_transient(error):
    with pytest.raises(TransientRedisError), transient_errors():
        raise error


def test_a_redis_that_is_not_there_is_transient():
    client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
    with pytest.raises(TransientRedisError), transient_errors():
        client.get("x")


def test_a_redis_command_error_is_not_transient():
    with pytest.raises(redis.exceptions.ResponseError), transient_errors():
        raise redis.exceptions.ResponseError("WRONGTYPE")


# --- the run's error line -----------------------------------------------------------------------------------


def test_a_lambda_cause_keeps_the_message_and_drops_the_stack_trace():
    cause = json.dumps({"errorMessage": "only 4 of 5 chunks were counted\nmore detail", "errorType": "RunIncomplete",
                        "stackTrace": ['  File "/var/task/app.py", line 3, in lambda_handler', "SECRET-ish"]})
    assert short_error("RunIncomplete", cause) == "RunIncomplete: only 4 of 5 chunks were counted"


def test_a_states_error_keeps_its_plain_cause():
    assert short_error("States.ExceedToleratedFailureThreshold",
                       "The specified tolerated failure threshold was exceeded") == (
        "States.ExceedToleratedFailureThreshold: The specified tolerated failure threshold was exceeded")


def test_url_credentials_never_reach_the_run():
    line = short_error("OperationalError", json.dumps({"errorMessage": "cannot reach postgresql://app:s3cr3t@db:5432/x"}))
    assert "s3cr3t" not in line and "postgresql://***@db:5432/x" in line


def test_the_line_is_bounded():
    line = short_error("E", "x" * 5000)
    assert len(line) == 300 and line.endswith("…")


@pytest.mark.parametrize(("error", "cause", "line"), [
    (None, None, "Error"),
    ("", json.dumps({"errorType": "KeyError", "errorMessage": "'run_id'"}), "KeyError: 'run_id'"),
    ("ExecutionAborted", None, "ExecutionAborted"),
    ("States.Timeout", "", "States.Timeout"),
    ("X", {"errorMessage": "as a dict"}, "X: as a dict"),
    ("X", json.dumps(["not", "an", "object"]), 'X: ["not", "an", "object"]'),
])
def test_short_error_shapes(error, cause, line):
    assert short_error(error, cause) == line
