"""docs/operator.md's table of server settings says the defaults the code has."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from intake.body_pace import (
    DEFAULT_MAX_UPLOAD_MIB,
    SHORTEST_BODY_DEADLINE,
    SLOW_BRIDGE_BYTES_PER_SECOND,
    WorkerLimits,
    body_deadline_for,
    worker_limits_from_environment,
)
from intake.config import Settings
from intake.gunicorn_worker import request_burst

REPO = Path(__file__).resolve().parents[1]
OPERATOR = (REPO / "docs" / "operator.md").read_text()
MIB = 1024 * 1024


def _table() -> dict[str, str]:
    """variable -> its default, as the table's second column writes it."""
    return dict(re.findall(r"^\| `(INTAKE_[A-Z_]+)` \| ([^|]+?) \|", OPERATOR, re.MULTILINE))


def _settings_default(name: str):
    return next(f.default for f in dataclasses.fields(Settings) if f.name == name)


def _gunicorn_defaults() -> dict[str, str]:
    conf = (REPO / "deploy" / "gunicorn.conf.py").read_text()
    return dict(re.findall(r'count_from_environment\("(INTAKE_[A-Z_]+)", (.+)\)$', conf, re.MULTILINE))


def test_every_default_in_the_table_is_the_codes():
    limits, table, gunicorn = WorkerLimits(), _table(), _gunicorn_defaults()
    code = {
        "INTAKE_MAX_UPLOAD_MIB": str(_settings_default("max_request_bytes") // MIB),
        "INTAKE_WORKERS": "one per CPU core" if gunicorn["INTAKE_WORKERS"] == "os.cpu_count() or 1" else gunicorn["INTAKE_WORKERS"],
        "INTAKE_WORKER_CONNECTIONS": gunicorn["INTAKE_WORKER_CONNECTIONS"],
        "INTAKE_UPLOADS_PER_WORKER": str(_settings_default("uploads_per_worker")),
        "INTAKE_BODY_MIN_BYTES_PER_SECOND": str(limits.body_min_rate),
        "INTAKE_BODY_WINDOW_SECONDS": f"{limits.body_window:g}",
        "INTAKE_BODY_DEADLINE_SECONDS": f"the upload limit at {SLOW_BRIDGE_BYTES_PER_SECOND // 1024} KiB/s, at least "
                                        f"{SHORTEST_BODY_DEADLINE / 3600:g} h: {limits.body_deadline:g} "
                                        f"({limits.body_deadline / 3600:.1f} h) for {DEFAULT_MAX_UPLOAD_MIB} MiB",
        "INTAKE_SOURCE_LANGUAGE": "the browser's" if _settings_default("source_language") is None else _settings_default("source_language"),
        "INTAKE_TOR_CIRCUIT_IDS": limits.circuit_ids,
        "INTAKE_CONNECTIONS_PER_CIRCUIT": str(limits.connections_per_circuit),
        "INTAKE_REQUESTS_PER_CIRCUIT_PER_SECOND": f"{limits.requests_per_circuit:g}",
        "INTAKE_UPLOADS_PER_CIRCUIT": str(_settings_default("uploads_per_circuit")),
    }
    assert table == code


def test_the_deadline_follows_the_upload_limit_and_the_two_defaults_agree():
    """A source on a slow bridge must be able to send the whole limit (docs/operator.md)."""
    assert DEFAULT_MAX_UPLOAD_MIB * MIB == _settings_default("max_request_bytes")
    assert WorkerLimits().body_deadline == body_deadline_for(DEFAULT_MAX_UPLOAD_MIB * MIB) == 42667
    assert worker_limits_from_environment({"INTAKE_MAX_UPLOAD_MIB": "2000"}).body_deadline == body_deadline_for(2000 * MIB)
    assert worker_limits_from_environment({"INTAKE_MAX_UPLOAD_MIB": "10"}).body_deadline == SHORTEST_BODY_DEADLINE
    assert worker_limits_from_environment({"INTAKE_MAX_UPLOAD_MIB": "2000", "INTAKE_BODY_DEADLINE_SECONDS": "7200"}).body_deadline == 7200


def test_the_bursts_and_codename_limits_the_text_names_are_the_codes():
    rate = WorkerLimits().requests_per_circuit
    assert "(bursts of 4x;" in OPERATOR and request_burst(rate) == 4 * rate
    sentence = (f"{_settings_default('kdf_concurrency')} at once and {_settings_default('kdf_queue')} waiting per worker, "
                f"and from one circuit {_settings_default('kdf_per_circuit')} at a time, {_settings_default('kdf_circuit_burst')} "
                f"in a row and then one every {_settings_default('kdf_circuit_interval_seconds'):g} s")
    assert sentence in " ".join(OPERATOR.split())
