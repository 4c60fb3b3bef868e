"""Powertools' Tracer, without importing the X-Ray SDK until a traced invocation needs it.

Importing ``aws_xray_sdk.core`` (which Powertools' Tracer does when it is built) costs more than the whole
floor of a cold start (``import boto3, aws_lambda_powertools.event_handler``; bench/cold_imports.py). The
template turns the SDK's subsegments off by default (``POWERTOOLS_TRACE_DISABLED``, parameter
``DisableXRaySdk``): Lambda's and API Gateway's active tracing still record every request and invocation.
When it is on, the real Tracer is built at the first invocation.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

_OFF = ("1", "true", "yes", "on")


def sdk_tracing_disabled() -> bool:
    return os.environ.get("POWERTOOLS_TRACE_DISABLED", "").strip().lower() in _OFF


class LazyTracer:
    """The part of Powertools' Tracer our handlers use: ``capture_lambda_handler``."""

    def __init__(self, service: str | None = None) -> None:
        self._service = service
        self._real: Any = None

    @property
    def real(self) -> Any:
        if self._real is None:
            from aws_lambda_powertools import Tracer

            self._real = Tracer(service=self._service) if self._service else Tracer()
        return self._real

    def capture_lambda_handler(self, lambda_handler: Callable | None = None, **options: Any) -> Any:
        if lambda_handler is None:
            return functools.partial(self.capture_lambda_handler, **options)
        if sdk_tracing_disabled():
            return lambda_handler
        traced: Callable | None = None

        @functools.wraps(lambda_handler)
        def handler(event: Any, context: Any) -> Any:
            nonlocal traced
            if traced is None:
                traced = self.real.capture_lambda_handler(lambda_handler, **options)
            return traced(event, context)

        return handler
