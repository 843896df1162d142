"""A session-wide guard for everything tests start: no tor that can join the public Tor network.

`intake serve` and `intake demo` default to `--tor launch`, which joins the public
Tor network. Tests may only use `offline` or the private network of tests/tornet.py,
so every subprocess a test starts inherits INTAKE_TOR=none unless it passes
`--tor` itself (an option beats the environment).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def intake_tor_defaults_to_none() -> Iterator[None]:
    previous = os.environ.get("INTAKE_TOR")
    os.environ["INTAKE_TOR"] = "none"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("INTAKE_TOR", None)
        else:
            os.environ["INTAKE_TOR"] = previous
