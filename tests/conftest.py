"""Shared fixtures live in tests/fixtures/, one module per kind, each a pytest plugin so that every test
folder can use them. Tests run on pytest-xdist workers (`make test`), one file per group."""

import pytest

pytest_plugins = [
    "tests.fixtures.database",
    "tests.fixtures.emulator",
    "tests.fixtures.inbox",
    "tests.fixtures.sandbox",
    "tests.fixtures.stack",
]

# Files whose tests start stacks of their own that keep both cores busy for minutes: run on one worker,
# one after the other (at once, each took twice as long), while the other worker takes the rest.
OWN_BUSY_STACKS = ("tests/e2e/test_chaos.py", "tests/e2e/test_scale_out.py")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """One xdist group per file (a file's module fixtures stay on one worker), the busy files in one."""
    for item in items:
        path = item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group("own-busy-stacks" if path in OWN_BUSY_STACKS else path))
