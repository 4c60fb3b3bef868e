"""The one error every layer raises for a bad setting: a leaf module, so that ``formats/`` (which validates the
app key and cookie names it is handed) need not import ``config`` above it."""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the environment variable."""
