"""One module per route, each with ``register(app)``: a Lambda function registers only its own route, the
OpenAPI builder registers them all (``ALL``).

Nothing is imported here: ``from tokenmigration.api.routes import stats`` loads the stats route alone (a
cold start pays for its own route's imports only), and ``ALL`` loads every route when asked for (PEP 562).
"""

from __future__ import annotations

import importlib
from types import ModuleType

NAMES = ("start", "progress", "complete", "rollback", "stats", "cleanup", "errors", "migrate_user", "rollback_user",
         "exchange", "bridge")


def __getattr__(name: str) -> tuple[ModuleType, ...] | ModuleType:
    if name == "ALL":
        return tuple(importlib.import_module(f"{__name__}.{route}") for route in NAMES)
    if name in NAMES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
