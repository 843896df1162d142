"""The source interface as a Flask app; `create_app` is the one place that wires it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask, current_app
from flask_wtf.csrf import CSRFProtect

from intake.app.security import install_security, strict_cookie_config
from intake.app.stores import install_store_pool
from intake.circuits import CircuitLedger
from intake.codename import KdfGate
from intake.config import Settings, load_settings_from_environment
from intake.store.pool import StorePool
from intake.worker_threads import run_in_os_thread

PACKAGE_DIR = Path(__file__).resolve().parent.parent
SMALL_FORM_BYTES = 64 * 1024  # every form but the upload; keeps Werkzeug's parser from ever spooling


@dataclass(frozen=True)
class AppState:
    settings: Settings
    kdf_gate: KdfGate
    stores: StorePool
    uploads: CircuitLedger  # uploads in flight in this worker, in total and per Tor circuit


def app_state() -> AppState:
    return current_app.extensions["intake"]


def _kdf_gate(settings: Settings) -> KdfGate:
    # Under gevent workers Argon2id must leave the event loop, or every connection stalls.
    return KdfGate(settings.kdf_concurrency, settings.kdf_queue, settings.kdf_timeout_seconds,
                   per_circuit=settings.kdf_per_circuit, circuit_interval=settings.kdf_circuit_interval_seconds,
                   circuit_burst=settings.kdf_circuit_burst, runner=run_in_os_thread)


def create_app(settings: Settings | None = None, **config_overrides: Any) -> Flask:
    if settings is None:
        settings = load_settings_from_environment()
    app = Flask(
        __name__,
        template_folder=str(PACKAGE_DIR / "templates"),
        static_folder=str(PACKAGE_DIR / "static"),
    )
    app.config.update(
        SECRET_KEY=settings.flask_secret_key,
        # Flask's client-side session carries the CSRF token and nothing else.
        **strict_cookie_config("csrf"),
        # A source may spend a long time writing before sending; the token stays bound to the session cookie.
        WTF_CSRF_TIME_LIMIT=12 * 60 * 60,
        MAX_CONTENT_LENGTH=SMALL_FORM_BYTES,
        MAX_FORM_MEMORY_SIZE=SMALL_FORM_BYTES,
        BABEL_TRANSLATION_DIRECTORIES=str(PACKAGE_DIR / "translations"),
        BABEL_DEFAULT_LOCALE="en",
        INTAKE_DEFAULT_LANGUAGE=settings.source_language,  # intake.app.i18n: before the browser's
    )
    app.config.update(config_overrides)
    uploads = CircuitLedger(settings.uploads_per_circuit, settings.uploads_per_worker)
    app.extensions["intake"] = AppState(settings, _kdf_gate(settings), install_store_pool(app, settings), uploads)

    from intake.app.assets import install_assets
    from intake.app.errors import install_error_pages
    from intake.app.guide import blueprint as guide_blueprint
    from intake.app.i18n import install_i18n
    from intake.app.source import blueprint as source_blueprint
    from intake.app.source import submit as upload_view

    install_security(app)
    install_i18n(app)
    install_assets(app, PACKAGE_DIR / "static")
    # The upload route reads its CSRF token from the body stream itself (see ingest.py):
    # CSRFProtect would read request.form, and Werkzeug would spool the files to disk.
    CSRFProtect(app).exempt(upload_view)
    install_error_pages(app)
    app.register_blueprint(source_blueprint)
    app.register_blueprint(guide_blueprint)
    return app
