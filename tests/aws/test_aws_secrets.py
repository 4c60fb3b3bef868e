"""Settings from Secrets Manager: the RDS secret shape, Express secrets, APP_KEY; values never leak."""

from __future__ import annotations

import json
import logging

import boto3
import pytest
from sqlalchemy.engine import make_url

from tokenmigration.aws.secrets import resolve_settings
from tokenmigration.aws.settings import AwsSettings
from tokenmigration.config import ConfigError, Settings

PASSWORD = "p@ss/w:rd%?#&x"  # everything that means something in a URL


@pytest.fixture
def secretsmanager():
    return boto3.client("secretsmanager")


def put_secret(client, name: str, value: str) -> str:
    return client.create_secret(Name=name, SecretString=value)["ARN"]


def rds_secret(**overrides) -> str:
    return json.dumps({"engine": "postgres", "host": "db.cluster.example.com", "port": 5432,
                       "username": "app@admin", "password": PASSWORD, "dbname": "laravel", **overrides})


def test_rds_secret_becomes_a_quoted_pg8000_url(secretsmanager, caplog):
    arn = put_secret(secretsmanager, "db", rds_secret())
    with caplog.at_level(logging.DEBUG, logger="tokenmigration"):
        settings = resolve_settings(Settings(), AwsSettings(database_secret_arn=arn))
    # Our own log lines only: botocore at DEBUG prints response bodies, secrets included, by itself.
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("tokenmigration"))
    assert settings.database_url == (
        "postgresql+pg8000://app%40admin:p%40ss%2Fw%3Ard%25%3F%23%26x@db.cluster.example.com:5432/laravel"
    )
    url = make_url(settings.database_url)
    assert (url.drivername, url.username, url.password, url.host, url.port, url.database) == (
        "postgresql+pg8000", "app@admin", PASSWORD, "db.cluster.example.com", 5432, "laravel")
    assert "database_url" in ours and PASSWORD not in ours and "p%40ss" not in ours


def test_port_as_string_and_aurora_engine(secretsmanager):
    arn = put_secret(secretsmanager, "db", rds_secret(port="6432", engine="aurora-postgresql"))
    url = make_url(resolve_settings(Settings(), AwsSettings(database_secret_arn=arn)).database_url)
    assert url.port == 6432


def test_a_database_url_in_the_environment_wins():
    # The secret does not even exist: it must not be read.
    settings = Settings(database_url="sqlite:///local.sqlite")
    aws = AwsSettings(database_secret_arn="arn:aws:secretsmanager:us-east-1:123456789012:secret:missing")
    assert resolve_settings(settings, aws) is settings


@pytest.mark.parametrize("engine", ["mysql", "mariadb", "aurora-mysql"])
def test_mysql_family_secrets_give_a_pymysql_url(secretsmanager, engine):
    arn = put_secret(secretsmanager, "db", json.dumps({"engine": engine, "host": "db.example.com", "username": "u",
                                                      "password": PASSWORD, "dbname": "app"}))
    url = make_url(resolve_settings(Settings(), AwsSettings(database_secret_arn=arn)).database_url)
    assert (url.drivername, url.port, url.database, url.password) == ("mysql+pymysql", 3306, "app", PASSWORD)
    assert url.query["charset"] == "utf8mb4"


@pytest.mark.parametrize(("secret", "complaint"), [
    (rds_secret(password=""), "password"),
    (json.dumps({"engine": "postgres", "username": "u", "password": PASSWORD}), "host, dbname"),
    (rds_secret(engine="sqlserver-ee"), "sqlserver-ee"),
    (rds_secret(port="fivefourthreetwo"), "port"),
    ("[]", "JSON object"),
    ("user=u password=" + PASSWORD, "not JSON"),
])
def test_bad_database_secrets_name_the_variable_not_the_value(secretsmanager, secret, complaint):
    arn = put_secret(secretsmanager, "db", secret)
    with pytest.raises(ConfigError) as caught:
        resolve_settings(Settings(), AwsSettings(database_secret_arn=arn))
    assert "DATABASE_SECRET_ARN" in str(caught.value) and complaint in str(caught.value)
    assert PASSWORD not in str(caught.value)


def test_a_missing_secret_names_the_variable():
    aws = AwsSettings(express_secrets_arn="arn:aws:secretsmanager:us-east-1:123456789012:secret:gone")
    with pytest.raises(ConfigError, match="EXPRESS_SECRETS_ARN"):
        resolve_settings(Settings(), aws)


@pytest.mark.parametrize("value", ['["new-secret", "old,secret"]', " new-secret, old,secret "])
def test_express_secrets_as_json_list_or_comma_separated(secretsmanager, value):
    arn = put_secret(secretsmanager, "express", value)
    settings = resolve_settings(Settings(), AwsSettings(express_secrets_arn=arn))
    expected = ("new-secret", "old,secret") if value.startswith("[") else ("new-secret", "old", "secret")
    assert settings.express_session_secrets == expected


@pytest.mark.parametrize("value", ['["a", 1]', "[not json", " , ", "[]"])
def test_bad_express_secrets(secretsmanager, value):
    arn = put_secret(secretsmanager, "express", value)
    with pytest.raises(ConfigError, match="EXPRESS_SECRETS_ARN"):
        resolve_settings(Settings(), AwsSettings(express_secrets_arn=arn))


def test_everything_at_once_and_settings_otherwise_kept(secretsmanager):
    aws = AwsSettings(
        database_secret_arn=put_secret(secretsmanager, "db", rds_secret()),
        express_secrets_arn=put_secret(secretsmanager, "express", "first-cookie-secret,second-cookie-secret"),
        app_key_secret_arn=put_secret(secretsmanager, "app-key", "base64:c2VjcmV0LWtleS0zMi1ieXRlcy1sb25nLi4uLi4=\n"),
    )
    base = Settings(redis_url="redis://cache:6379/0", lock_timeout_ms=123)
    settings = resolve_settings(base, aws)
    assert settings.express_session_secrets == ("first-cookie-secret", "second-cookie-secret")
    assert settings.laravel_app_key == "base64:c2VjcmV0LWtleS0zMi1ieXRlcy1sb25nLi4uLi4="
    assert settings.database_url.startswith("postgresql+pg8000://")
    assert (settings.redis_url, settings.lock_timeout_ms) == ("redis://cache:6379/0", 123)
    # The cookie secrets and the app key stay out of repr (Settings marks them repr=False).
    assert "cookie-secret" not in repr(settings) and "base64:" not in repr(settings)


def test_nothing_configured_changes_nothing():
    settings = Settings()
    assert resolve_settings(settings, AwsSettings()) is settings
