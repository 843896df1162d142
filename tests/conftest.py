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


def pytest_addoption(parser):
    parser.addoption("--part", choices=("parallel", "alone"),
                     help="scripts/test's two runs: the tests not marked alone (on both cores), or only those")


def pytest_collection_modifyitems(config, items):
    part = config.getoption("--part")
    if part is None:
        return
    keep = [item for item in items if (item.get_closest_marker("alone") is not None) == (part == "alone")]
    if len(keep) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in keep])
        items[:] = keep
