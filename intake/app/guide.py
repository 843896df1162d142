"""The guide on the source onion: /guide, in the page's language, with the keys a
source can compare against the newsroom's published, signed statement.

The words come from intake/guide (the same files as the published page); the
journalists' fingerprints from the store; the server key from the data dir.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template
from flask_babel import get_locale

from intake.app import app_state
from intake.app.stores import request_store
from intake.guide import build_guide, guide_text, load_bridge_advice
from intake.guide.publish import PUBLIC_KEY, public_key_line
from intake.retention import RetentionPolicy
from intake.server_identity import load_server_signing_key, server_signing_path
from intake.store.newsroom import Newsroom

blueprint = Blueprint("guide", __name__)


@blueprint.app_context_processor
def _short_guide() -> dict[str, Any]:
    # The landing page's short version reads its words from the same guide files.
    return {"guide_text": guide_text}


@blueprint.get("/guide")
def page():
    data_dir = app_state().settings.data_dir
    guide = build_guide(get_locale().language, RetentionPolicy.load(data_dir), load_bridge_advice())
    journalists = [(a.name, a.fingerprint) for a in Newsroom(request_store()).accounts()]
    server_key = None
    if server_signing_path(data_dir).exists():
        server_key = public_key_line(load_server_signing_key(data_dir).verify_key)
    return render_template("guide.html", guide=guide, journalists=journalists, server_key=server_key,
                           public_key_file=PUBLIC_KEY)
