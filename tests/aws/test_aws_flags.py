"""Feature flags in SSM: defaults, the api.md transition table, caching with max_age, the API object."""

from __future__ import annotations

import boto3
import pytest

from tokenmigration.aws.flags import DEFAULT_FLAGS, FeatureFlags, Flags, as_api_dict
from tokenmigration.aws.settings import AwsSettings
from tokenmigration.config import ConfigError

PATH = "/tokenmigration/test/"


@pytest.fixture
def ssm():
    return boto3.client("ssm")


@pytest.fixture
def flags(ssm) -> FeatureFlags:
    return FeatureFlags(PATH, max_age=5, ssm_client=ssm)


def stored(ssm) -> dict[str, str]:
    params = ssm.get_parameters_by_path(Path=PATH.rstrip("/"))["Parameters"]
    return {p["Name"].removeprefix(PATH): p["Value"] for p in params}


def test_nothing_stored_reads_as_deployed(flags: FeatureFlags):
    assert flags.read() == DEFAULT_FLAGS == Flags("dual", False, False, True)


def test_the_transition_table(flags: FeatureFlags, ssm):
    # deployed -> a migration finishes -> /complete -> /rollback accepted -> its run finishes
    flags.on_migration_finished(dry_run=True)
    assert flags.read() == Flags("dual", False, False, True)  # a dry run changed nothing
    flags.on_migration_finished()
    assert flags.read() == Flags("dual", False, True, True)
    flags.on_complete()
    assert flags.read() == Flags("sanctum", True, False, True)
    assert stored(ssm) == {"auth_mode": "sanctum", "sanctum_only": "true", "rollback_available": "false"}
    flags.set(rollback_available=True)  # a later migration run finished
    flags.on_rollback_accepted()
    assert flags.read() == Flags("dual", False, True, True)
    flags.on_rollback_finished(succeeded=False)  # a failed rollback can be run again
    assert flags.read() == Flags("dual", False, True, True)
    flags.on_rollback_finished()
    assert flags.read() == Flags("dual", False, False, True)


def test_parameters_are_plain_strings(flags: FeatureFlags, ssm):
    flags.set(exchange_enabled=False)
    parameter = ssm.get_parameter(Name=PATH + "exchange_enabled")["Parameter"]
    assert (parameter["Type"], parameter["Value"]) == ("String", "false")
    assert flags.read().exchange_enabled is False


def test_a_flip_reaches_other_functions_after_max_age(ssm):
    writer = FeatureFlags(PATH, max_age=5, ssm_client=ssm)
    reader = FeatureFlags(PATH, max_age=5, ssm_client=ssm)  # another warm function
    assert reader.read().sanctum_only is False
    writer.on_complete()
    assert reader.read().sanctum_only is False  # cached for up to max_age
    assert reader.read(force_fetch=True).sanctum_only is True
    # The writer's own cache was cleared by set(): it never serves what it just replaced.
    assert writer.read().sanctum_only is True


def test_a_zero_max_age_reads_every_time(ssm):
    writer = FeatureFlags(PATH, max_age=5, ssm_client=ssm)
    reader = FeatureFlags(PATH, max_age=0, ssm_client=ssm)
    reader.read()
    writer.set(auth_mode="sanctum")
    assert reader.read().auth_mode == "sanctum"


def test_unrecognised_values_read_as_defaults(flags: FeatureFlags, ssm):
    for name, value in {"auth_mode": "laravel", "sanctum_only": "maybe", "exchange_enabled": "OFF"}.items():
        ssm.put_parameter(Name=PATH + name, Value=value, Type="String", Overwrite=True)
    assert flags.read() == Flags("dual", False, False, False)


def test_bad_writes_write_nothing(flags: FeatureFlags, ssm):
    with pytest.raises(ValueError):
        flags.set(sanctum_only=True, auth_mode="laravel")
    with pytest.raises(ValueError):
        flags.set(sanctum_only="true")
    with pytest.raises(TypeError):
        flags.set(migration_in_progress=True)  # derived from the lock, never stored
    assert stored(ssm) == {}


def test_as_api_dict(flags: FeatureFlags):
    flags.on_complete()
    assert as_api_dict(flags.read(), in_progress=False) == {
        "auth_mode": "sanctum", "sanctum_only": True, "migration_in_progress": False, "rollback_available": False,
    }
    assert as_api_dict(DEFAULT_FLAGS, in_progress=True) == {
        "auth_mode": "dual", "sanctum_only": False, "migration_in_progress": True, "rollback_available": False,
    }


def test_from_settings(ssm):
    aws = AwsSettings.from_env({"FLAGS_PATH": PATH, "FLAGS_MAX_AGE_SECONDS": "2"})
    flags = FeatureFlags.from_settings(aws, ssm_client=ssm)
    assert (flags.path, flags.max_age) == (PATH, 2)
    with pytest.raises(ConfigError, match="FLAGS_PATH"):
        FeatureFlags.from_settings(AwsSettings())
