"""Shared fixtures. Each area keeps its fixtures in tests/fixtures/<area>.py."""

pytest_plugins = [
    "tests.fixtures.env",
    "tests.fixtures.models",
    "tests.fixtures.server",
]
