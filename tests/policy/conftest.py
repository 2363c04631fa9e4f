"""Fixtures of the policy tests: the log events a test produced."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import structlog


@pytest.fixture
def events() -> list[dict[str, Any]]:
    """Every structlog event of the test, info and debug included."""
    capture = structlog.testing.LogCapture()
    structlog.configure(
        processors=[capture],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        cache_logger_on_first_use=False,
    )

    return capture.entries
