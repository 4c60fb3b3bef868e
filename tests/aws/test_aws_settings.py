"""AwsSettings: defaults, validation and ``require`` name the environment variable."""

from __future__ import annotations

import pytest

from tokenmigration.aws.settings import AwsSettings
from tokenmigration.config import ConfigError


def test_nothing_is_required_at_load_time():
    s = AwsSettings.from_env({})
    assert s.table_name is None and s.flags_path is None and s.chunks_bucket is None
    assert (s.flags_max_age_seconds, s.run_retention_days) == (5, 90)


def test_values_are_read():
    s = AwsSettings.from_env({
        "TABLE_NAME": " runs ",
        "FLAGS_PATH": "/tokenmigration/dev/",
        "MIGRATION_STATE_MACHINE_ARN": "arn:aws:states:us-east-1:123456789012:stateMachine:migrate",
        "ROLLBACK_STATE_MACHINE_ARN": "arn:aws:states:us-east-1:123456789012:stateMachine:rollback",
        "CHUNKS_BUCKET": "chunks",
        "DATABASE_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:db",
        "EXPRESS_SECRETS_ARN": "express",
        "APP_KEY_SECRET_ARN": "app-key",
        "FLAGS_MAX_AGE_SECONDS": "0",
        "RUN_RETENTION_DAYS": "30",
    })
    assert (s.table_name, s.flags_path, s.chunks_bucket) == ("runs", "/tokenmigration/dev/", "chunks")
    assert s.migration_state_machine_arn.endswith(":migrate") and s.rollback_state_machine_arn.endswith(":rollback")
    assert (s.express_secrets_arn, s.app_key_secret_arn) == ("express", "app-key")
    assert (s.flags_max_age_seconds, s.run_retention_days) == (0, 30)
    s.require("table_name", "flags_path", "migration_state_machine_arn", "rollback_state_machine_arn",
              "chunks_bucket", "database_secret_arn")


@pytest.mark.parametrize(("env", "variable"), [
    ({"FLAGS_MAX_AGE_SECONDS": "soon"}, "FLAGS_MAX_AGE_SECONDS"),
    ({"FLAGS_MAX_AGE_SECONDS": "-1"}, "FLAGS_MAX_AGE_SECONDS"),
    ({"RUN_RETENTION_DAYS": "0"}, "RUN_RETENTION_DAYS"),
    ({"FLAGS_PATH": "/tokenmigration/dev"}, "FLAGS_PATH"),
    ({"FLAGS_PATH": "tokenmigration/dev/"}, "FLAGS_PATH"),
    ({"MIGRATION_STATE_MACHINE_ARN": "migrate"}, "MIGRATION_STATE_MACHINE_ARN"),
    ({"ROLLBACK_STATE_MACHINE_ARN": "rollback"}, "ROLLBACK_STATE_MACHINE_ARN"),
])
def test_bad_values_name_the_variable(env, variable):
    with pytest.raises(ConfigError, match=variable):
        AwsSettings.from_env(env)


def test_require_names_every_missing_variable():
    s = AwsSettings.from_env({"TABLE_NAME": "runs"})
    s.require("table_name")
    with pytest.raises(ConfigError) as caught:
        s.require("table_name", "migration_state_machine_arn", "chunks_bucket")
    message = str(caught.value)
    assert "MIGRATION_STATE_MACHINE_ARN" in message and "CHUNKS_BUCKET" in message
    assert "TABLE_NAME" not in message


def test_require_rejects_a_misspelt_setting():
    with pytest.raises(TypeError):
        AwsSettings().require("table")
