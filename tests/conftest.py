"""Shared pytest set-up. Each area keeps its fixtures in its own module, registered here."""

import os

# Keep the suite's own temp files apart from the machine's, so the canary test
# can scan everything intake might have written.
os.environ.setdefault("INTAKE_TESTING", "1")

pytest_plugins = [
]
