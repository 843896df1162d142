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


PARTS = ("parallel", "alone", "by-itself")


def pytest_addoption(parser):
    parser.addoption("--part", choices=PARTS,
                     help="scripts/test's three runs: the tests not marked alone (on both cores); those marked alone "
                          "and not by_itself (the Tor network's group beside the abuse group); those marked by_itself")


def _part_of(item) -> str:
    if item.get_closest_marker("alone") is None:
        return "parallel"
    return "by-itself" if item.get_closest_marker("by_itself") is not None else "alone"


def pytest_collection_modifyitems(config, items):
    part = config.getoption("--part")
    if part is None:
        return
    keep = [item for item in items if _part_of(item) == part]
    if len(keep) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in keep])
        items[:] = keep
