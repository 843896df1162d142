"""Shared pytest set-up. Each area keeps its fixtures in its own module, registered here."""

pytest_plugins = [
    "tests.fixtures_newsroom",
    "tests.fixtures_keys",
    "tests.fixtures_server",
    "tests.fixtures_store",
    "tests.fixtures_app",
    "tests.tornet",
    "tests.fixtures_serve",
]
