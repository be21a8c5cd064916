"""Shared fixtures live in tests/fixtures/*; each is a pytest plugin so any test folder can use them."""

import importlib.util

pytest_plugins = [
    name
    for name in (
        "tests.fixtures.database",
        "tests.fixtures.emulator",
        "tests.fixtures.stack",
    )
    if importlib.util.find_spec(name) is not None
]
