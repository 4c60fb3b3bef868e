"""How a function reaches the database on AWS: the secret's shapes (RDS-managed master secret), a fresh login
after a rotation (real PostgreSQL and MariaDB), verified TLS against the shipped RDS CA bundle, REDIS_URL from
Secrets Manager."""

from __future__ import annotations

import json
import ssl
import uuid

import boto3
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.pool import NullPool

from tokenmigration.aws import context
from tokenmigration.aws.secrets import database_tls, read_database_url, resolve_settings
from tokenmigration.aws.settings import AwsSettings
from tokenmigration.config import ConfigError, Settings
from tokenmigration.db.connection import make_engine
from tokenmigration.db.tls import CA_BUNDLE, verified_context


@pytest.fixture
def secretsmanager():
    return boto3.client("secretsmanager")


def secret(client, value) -> str:
    return client.create_secret(Name=f"s-{uuid.uuid4().hex[:8]}",
                                SecretString=value if isinstance(value, str) else json.dumps(value))["ARN"]


# --- the secret's shapes --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("engine", "driver", "port"), [
    ("postgres", "postgresql+pg8000", 5432), ("mysql", "mysql+pymysql", 3306), ("mariadb", "mysql+pymysql", 3306),
])
def test_an_rds_managed_master_secret_takes_host_port_and_name_from_parameters(secretsmanager, engine, driver, port):
    # What RDS writes for ManageMasterUserPassword: username and password, nothing else.
    arn = secret(secretsmanager, {"username": "admin", "password": "pw"})
    aws = AwsSettings(database_secret_arn=arn, database_host="db.example.internal", database_name="laravel",
                      database_engine=engine)
    url = make_url(read_database_url(aws))
    assert (url.drivername, url.username, url.password, url.host, url.port, url.database) == (
        driver, "admin", "pw", "db.example.internal", port, "laravel")


def test_parameters_win_over_the_secret_so_an_rds_proxy_endpoint_can_be_used(secretsmanager):
    arn = secret(secretsmanager, {"engine": "postgres", "host": "db.cluster.example.com", "port": 5432,
                                  "username": "app", "password": "pw", "dbname": "laravel"})
    aws = AwsSettings(database_secret_arn=arn, database_host="replica.example.com", database_port=5433)
    url = make_url(read_database_url(aws))
    assert (url.host, url.port, url.database) == ("replica.example.com", 5433, "laravel")
    proxied = AwsSettings(database_secret_arn=arn, database_host="replica.example.com",
                          database_proxy_endpoint="tm.proxy-abc.us-east-1.rds.amazonaws.com")
    assert make_url(read_database_url(proxied)).host == "tm.proxy-abc.us-east-1.rds.amazonaws.com"


def test_a_master_secret_without_a_host_parameter_says_what_to_set(secretsmanager):
    arn = secret(secretsmanager, {"username": "admin", "password": "pw"})
    with pytest.raises(ConfigError, match=r"lacks host, dbname .*DATABASE_HOST"):
        read_database_url(AwsSettings(database_secret_arn=arn))


# --- REDIS_URL from Secrets Manager ----------------------------------------------------------------------------


@pytest.mark.parametrize("stored", ["rediss://:tok%2Fen@cache.example:6379/0?cluster=true",
                                    json.dumps({"url": "rediss://:tok%2Fen@cache.example:6379/0?cluster=true"})])
def test_redis_url_comes_from_its_secret(secretsmanager, stored, caplog):
    aws = AwsSettings(redis_secret_arn=secret(secretsmanager, stored))
    settings = resolve_settings(Settings(), aws)
    assert settings.redis_url == "rediss://:tok%2Fen@cache.example:6379/0?cluster=true"
    assert "tok%2Fen" not in caplog.text


@pytest.mark.parametrize("stored", ["cache.example:6379", json.dumps({"host": "cache.example"}), "{not json"])
def test_a_bad_redis_secret_names_the_variable_not_the_value(secretsmanager, stored):
    with pytest.raises(ConfigError, match="REDIS_SECRET_ARN") as caught:
        resolve_settings(Settings(), AwsSettings(redis_secret_arn=secret(secretsmanager, stored)))
    assert "cache.example" not in str(caught.value)


def test_redis_url_in_the_environment_wins(secretsmanager):
    settings = Settings(redis_url="redis://127.0.0.1:6379/0")
    aws = AwsSettings(redis_secret_arn="arn:aws:secretsmanager:us-east-1:123456789012:secret:never-read")
    assert resolve_settings(settings, aws) is settings


# --- a rotated secret: log in again ---------------------------------------------------------------------------


def _whoami(engine) -> str:
    with engine.connect() as conn:
        return conn.execute(text("SELECT current_user")).scalar_one().split("@")[0]


def test_postgres_warm_container_logs_in_again_after_rotation(secretsmanager, pg_url, monkeypatch):
    """Alternating-users rotation: the secret moves to a new user and the old one is dropped. The test server
    trusts 127.0.0.1, so a dropped role is the refusal it can give (SQLSTATE 28000, as 28P01 for a password)."""
    admin = create_engine(pg_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    url = make_url(pg_url)
    old, new = f"tm_rot_{uuid.uuid4().hex[:6]}", f"tm_rot_{uuid.uuid4().hex[:6]}"
    with admin.connect() as conn:
        for role in (old, new):
            conn.execute(text(f'CREATE ROLE "{role}" LOGIN PASSWORD \'pw\''))
    try:
        arn = secret(secretsmanager, {"engine": "postgres", "host": url.host, "port": url.port, "username": old,
                                      "password": "pw", "dbname": url.database})
        monkeypatch.delenv("DATABASE_URL", raising=False)
        monkeypatch.setenv("DATABASE_SECRET_ARN", arn)
        monkeypatch.setenv("DATABASE_TLS", "off")  # the test server has no TLS; see the TLS tests below
        context.reset_services()
        svc = context.services()
        assert svc.database_from_secret and _whoami(svc.engine) == old

        secretsmanager.put_secret_value(SecretId=arn, SecretString=json.dumps(
            {"engine": "postgres", "host": url.host, "port": url.port, "username": new, "password": "pw",
             "dbname": url.database}))
        svc.engine.dispose()  # the pooled connection ends (idle timeout, recycled): the next one logs in
        with admin.connect() as conn:
            conn.execute(text(f'DROP ROLE "{old}"'))

        assert _whoami(svc.engine) == new  # refused as the old user, the secret re-read, in as the new one
        svc.engine.dispose()
        assert _whoami(svc.engine) == new  # and later connections go straight to the new credentials
    finally:
        context.reset_services()
        with admin.connect() as conn:
            for role in (old, new):
                conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
        admin.dispose()


def test_mysql_warm_container_logs_in_again_after_a_password_rotation(secretsmanager, mysql_url):
    admin = create_engine(mysql_url, poolclass=NullPool)
    url = make_url(mysql_url)
    user = f"tm_rot_{uuid.uuid4().hex[:6]}"
    with admin.begin() as conn:
        conn.execute(text(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'before-rotation'"))
        conn.execute(text(f"CREATE USER '{user}'@'localhost' IDENTIFIED BY 'before-rotation'"))
        for host in ("%", "localhost"):
            conn.execute(text(f"GRANT SELECT ON `{url.database}`.* TO '{user}'@'{host}'"))
    try:
        def stored(password: str) -> str:
            return json.dumps({"engine": "mariadb", "host": url.host, "port": url.port or 3306, "username": user,
                               "password": password, "dbname": url.database})

        arn = secret(secretsmanager, stored("before-rotation"))
        aws = AwsSettings(database_secret_arn=arn)
        engine = make_engine(read_database_url(aws), fresh_url=lambda: read_database_url(aws, force=True))
        assert _whoami(engine) == user

        # What the rotation function does: a new password on the server, then in the secret.
        with admin.begin() as conn:
            for host in ("%", "localhost"):
                conn.execute(text(f"ALTER USER '{user}'@'{host}' IDENTIFIED BY 'after-rotation'"))
        secretsmanager.put_secret_value(SecretId=arn, SecretString=stored("after-rotation"))
        engine.dispose()

        assert _whoami(engine) == user  # 1045 with the cached password, then in with the new one
    finally:
        with admin.begin() as conn:
            for host in ("%", "localhost"):
                conn.execute(text(f"DROP USER IF EXISTS '{user}'@'{host}'"))
        admin.dispose()


def test_a_refusal_that_persists_after_re_reading_is_reported(secretsmanager, mysql_url):
    url = make_url(mysql_url)
    arn = secret(secretsmanager, {"engine": "mysql", "host": url.host, "port": url.port or 3306,
                                  "username": "nobody_here", "password": "wrong", "dbname": url.database})
    aws = AwsSettings(database_secret_arn=arn)
    reads = []

    def fresh() -> str:
        reads.append(1)
        return read_database_url(aws, force=True)

    engine = make_engine(read_database_url(aws), fresh_url=fresh)
    with pytest.raises(OperationalError, match="1045"):
        engine.connect()
    assert len(reads) == 1  # one re-read per refused login, not a loop


# --- TLS ----------------------------------------------------------------------------------------------------------


def test_the_layer_ships_the_rds_ca_bundle():
    text_ = CA_BUNDLE.read_text()
    assert text_.count("BEGIN CERTIFICATE") >= 100
    context_ = verified_context()
    subjects = [dict(item[0] for item in ca["subject"]) for ca in context_.get_ca_certs()]
    names = {s.get("commonName", "") for s in subjects}
    assert {"Amazon RDS us-east-1 Root CA RSA2048 G1", "Amazon RDS eu-west-1 Root CA ECC384 G1"} <= names
    assert "Amazon Root CA 1" in names  # RDS Proxy's certificates chain to the Amazon roots
    assert context_.verify_mode == ssl.CERT_REQUIRED and context_.check_hostname


def test_a_database_through_its_secret_gets_verified_tls_by_default(monkeypatch):
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    assert database_tls(AwsSettings(), from_secret=True).verify_mode == ssl.CERT_REQUIRED
    assert database_tls(AwsSettings(), from_secret=False) is None  # DATABASE_URL on a developer's machine
    assert database_tls(AwsSettings(database_tls="off"), from_secret=True) is None


def test_tls_off_is_refused_inside_lambda(monkeypatch):
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "tokenmigration-dev-PlanFunction")
    with pytest.raises(ConfigError, match="local use only"):
        database_tls(AwsSettings(database_tls="off"), from_secret=True)
    assert database_tls(AwsSettings(), from_secret=False).verify_mode == ssl.CERT_REQUIRED


def test_verified_tls_never_falls_back_to_plaintext_on_postgres(pg_url):
    # The test server speaks no TLS: with verification on, pg8000 refuses rather than log in in the clear.
    engine = make_engine(pg_url, tls=verified_context())
    with pytest.raises(InterfaceError, match="refuses SSL"):
        engine.connect()


def test_verified_tls_never_falls_back_to_plaintext_on_mysql(mysql_url):
    engine = make_engine(mysql_url, tls=verified_context())
    with pytest.raises(OperationalError, match="2026"):  # CR_SSL_CONNECTION_ERROR: TLS required, not offered
        engine.connect()
