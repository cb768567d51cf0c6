"""Shared test helpers: the fake clock of orchestray.testing, whose sleep moves time instead of waiting."""

from __future__ import annotations

import pytest

from orchestray.testing import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
