"""End-to-end helpers for the reconciler tests, and the ordering rule for the PHI hygiene scan: it looks
at everything the session's end-to-end tests left in Prefect, so it runs after all of them."""

from __future__ import annotations

import pytest

LAST = "test_zz_phi_hygiene.py"


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Move the PHI hygiene test to the very end of the session (pytest collects tests/e2e before
    tests/flows, where most end-to-end tests live)."""
    items.sort(key=lambda item: item.path.name == LAST)
