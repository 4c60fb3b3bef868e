"""Settings from the environment: defaults, validation that names the variable, secrets kept out of repr."""

from __future__ import annotations

import base64

import pytest

from tokenmigration.config import ConfigError, Settings


def test_defaults_need_no_environment():
    s = Settings.from_env({})
    assert (s.express_session_prefix, s.express_user_id_path, s.express_session_cookie) == (
        "sess:", "passport.user", "connect.sid")
    assert (s.laravel_session_serialization, s.laravel_session_lifetime) == ("php", 120)
    assert (s.sanctum_token_prefix, s.sanctum_tokenable_type) == ("", "App\\Models\\User")
    assert (s.migration_token_name, s.migration_token_abilities, s.migration_token_expires_days) == (
        "migration-token", ("*",), None)
    assert s.abilities_json == '["*"]'


def test_values_are_read():
    s = Settings.from_env({
        "EXPRESS_SESSION_SECRETS": "new-secret, old-secret,,",
        "MIGRATION_TOKEN_ABILITIES": '["read", "write"]',
        "MIGRATION_TOKEN_EXPIRES_DAYS": "90",
        "LARAVEL_SESSION_SERIALIZATION": "JSON",
        "SANCTUM_TOKENABLE_TYPE": "user",
        "EXPRESS_USER_ID_PATH": "user.id",
    })
    assert s.express_session_secrets == ("new-secret", "old-secret")
    assert s.migration_token_abilities == ("read", "write") and s.migration_token_expires_days == 90
    assert s.laravel_session_serialization == "json" and s.sanctum_tokenable_type == "user"
    assert s.express_user_id_path == "user.id"


def test_the_exchanges_trusted_proxy_header():
    assert (Settings.from_env({}).exchange_trusted_proxy_header, Settings.from_env({}).exchange_trusted_proxy_hops) \
        == (None, 1)
    s = Settings.from_env({"EXCHANGE_TRUSTED_PROXY_HEADER": " X-Forwarded-For ", "EXCHANGE_TRUSTED_PROXY_HOPS": "2"})
    assert (s.exchange_trusted_proxy_header, s.exchange_trusted_proxy_hops) == ("X-Forwarded-For", 2)


@pytest.mark.parametrize(("env", "variable"), [
    ({"LARAVEL_SESSION_LIFETIME": "0"}, "LARAVEL_SESSION_LIFETIME"),
    ({"MIGRATION_TOKEN_EXPIRES_DAYS": "-1"}, "MIGRATION_TOKEN_EXPIRES_DAYS"),
    ({"MIGRATION_TOKEN_ABILITIES": '"*"'}, "MIGRATION_TOKEN_ABILITIES"),
    ({"MIGRATION_TOKEN_ABILITIES": "[1]"}, "MIGRATION_TOKEN_ABILITIES"),
    ({"EXPRESS_USER_ID_PATH": "passport..user"}, "EXPRESS_USER_ID_PATH"),
    ({"EXPRESS_SESSION_PREFIX": ""}, "EXPRESS_SESSION_PREFIX"),
    ({"DATABASE_URL": "localhost/db"}, "DATABASE_URL"),
    ({"REDIS_URL": "localhost:6379"}, "REDIS_URL"),
    ({"MIGRATION_TOKEN_NAME": " "}, "MIGRATION_TOKEN_NAME"),
    ({"EXCHANGE_TRUSTED_PROXY_HEADER": "X-Forwarded-For: 1.2.3.4"}, "EXCHANGE_TRUSTED_PROXY_HEADER"),
    ({"EXCHANGE_TRUSTED_PROXY_HOPS": "0"}, "EXCHANGE_TRUSTED_PROXY_HOPS"),
])
def test_errors_name_the_variable(env, variable):
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env(env)


def test_feature_settings_are_required_only_by_their_feature():
    s = Settings.from_env({})
    s.require("express_session_prefix")
    with pytest.raises(ConfigError, match="EXPRESS_SESSION_SECRETS, LARAVEL_APP_KEY"):
        s.require("express_session_secrets", "laravel_app_key")


def test_secrets_stay_out_of_repr():
    key = "base64:" + base64.b64encode(b"secret" * 5 + b"!!").decode()  # 32 bytes, "c2VjcmV0..."
    s = Settings.from_env({"EXPRESS_SESSION_SECRETS": "hunter2", "LARAVEL_APP_KEY": key})
    assert "hunter2" not in repr(s) and "c2VjcmV0" not in repr(s)


def test_urls_with_passwords_stay_out_of_repr():
    s = Settings.from_env({"DATABASE_URL": "postgresql://u:dbpass@h/d", "REDIS_URL": "redis://:redispass@h:6379/0"})
    assert "dbpass" not in repr(s) and "redispass" not in repr(s)


@pytest.mark.parametrize(
    "query", ["?cluster=0", "?cluster=False", "?cluster=no", "", "?socket_timeout=0.5&cluster=off"]
)
def test_redis_urls_that_are_not_clusters(query):
    from tokenmigration.redis_client import connect

    client = connect(f"redis://127.0.0.1:6379/3{query}")
    assert client.connection_pool.connection_kwargs["db"] == 3
    assert "cluster" not in client.connection_pool.connection_kwargs
    if "socket_timeout" in query:
        assert client.connection_pool.connection_kwargs["socket_timeout"] == 0.5


def test_a_bad_cluster_flag_names_the_setting_not_the_url():
    from tokenmigration.redis_client import connect

    with pytest.raises(ConfigError, match="REDIS_URL") as raised:
        connect("redis://:hunter2@127.0.0.1:6379/0?cluster=maybe")
    assert "hunter2" not in str(raised.value)
