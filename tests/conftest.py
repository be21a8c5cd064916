"""Shared fixtures live in tests/fixtures/, one module per kind, each a pytest plugin so that every test
folder can use them."""

pytest_plugins = [
    "tests.fixtures.database",
    "tests.fixtures.emulator",
    "tests.fixtures.inbox",
    "tests.fixtures.sandbox",
    "tests.fixtures.stack",
]
