"""Fixtures of the chart tests: the chart rendered once per session with default and all options."""

from __future__ import annotations

import pytest
from chart_render import VALUES_ALL, Manifest, render


@pytest.fixture(scope="session")
def default_manifests() -> list[Manifest]:
    """The chart rendered with its default values."""
    return render()


@pytest.fixture(scope="session")
def all_manifests() -> list[Manifest]:
    """The chart rendered with every option on (tests/chart/values-all.yaml)."""
    return render([VALUES_ALL])


@pytest.fixture(scope="session", params=["defaults", "all-options"])
def manifests(
    request: pytest.FixtureRequest, default_manifests: list[Manifest], all_manifests: list[Manifest]
) -> list[Manifest]:
    """Each rendering in turn."""
    return default_manifests if request.param == "defaults" else all_manifests
