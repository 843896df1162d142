"""Static files under content-hashed names, cacheable for good.

Every page is no-store (a source's pages must not linger in a cache), but the
stylesheet holds nothing about anyone: served as /assets/style.<hash>.css it can
be cached forever, so over a slow Tor circuit it is fetched once, not on every
page. A changed file gets a new name, so a cached copy is never stale.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from flask import Flask, abort, send_file

from intake.app.security import IMMUTABLE_ASSET


def _hashed_name(path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return f"{path.stem}.{digest}{path.suffix}"


def install_assets(app: Flask, static_dir: Path) -> None:
    """Serve every file of `static_dir` at /assets/<name>.<hash><suffix>; templates call asset_url(name)."""
    by_hashed = {}
    hashed_of = {}
    for path in sorted(static_dir.iterdir()):
        if path.is_file():
            hashed = _hashed_name(path)
            by_hashed[hashed] = path
            hashed_of[path.name] = hashed

    def asset(name: str):
        path = by_hashed.get(name)
        if path is None:
            abort(404)
        response = send_file(path, conditional=False, etag=False, last_modified=None, max_age=None)
        response.headers["Cache-Control"] = IMMUTABLE_ASSET
        return response

    app.add_url_rule("/assets/<name>", "asset", asset)
    app.jinja_env.globals["asset_url"] = lambda name: f"/assets/{hashed_of[name]}"
