"""File times in the data dir: the day's start once a request has ended, and a change
time that follows the server's clock rather than the last request (SECURITY.md §2)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from intake.store.file_times import DAY_SECONDS, FileTimesTicker, day_start, settle_file_times
from tests.fixtures_app import AppInstance, csrf_token, post_upload, start_as_new_source, upload_body


def test_after_a_request_every_file_intake_writes_has_the_days_start_as_its_times(app_instance: AppInstance):
    client = app_instance.app.test_client()
    _codename, page = start_as_new_source(client)
    body, content_type = upload_body(csrf_token(page), message="a tip")
    assert post_upload(client, body, content_type).status_code == 303
    times = _times(app_instance.settings.data_dir)
    assert set(times) >= {"data", "intake.db", "intake.db-wal", "db.key", "instance.secret"}
    assert set(times.values()) == {(day_start(), day_start())}, times


def _times(path: Path) -> dict[str, tuple[float, float]]:
    """(mtime, atime) by name, each read before its folder is listed (listing sets a folder's atime)."""
    info = path.lstat()
    found = {path.name: (info.st_mtime, info.st_atime)}
    if path.is_dir():
        for child in path.iterdir():
            found.update(_times(child))
    return found


def test_tors_own_folder_is_left_alone(tmp_path: Path):
    (tmp_path / "tor").mkdir()
    (tmp_path / "tor" / "state").write_text("tor's")
    (tmp_path / "intake.db").write_text("ours")
    before = (tmp_path / "tor" / "state").stat().st_mtime
    settle_file_times(tmp_path)
    assert (tmp_path / "intake.db").stat().st_mtime % DAY_SECONDS == 0
    assert (tmp_path / "tor" / "state").stat().st_mtime == before


def test_the_ticker_moves_the_change_time_on_without_any_request(tmp_path: Path):
    """The kernel sets a file's ctime whenever its times are set: ticking every so often makes
    the ctime say when the server last ran, not when the last request came."""
    database = tmp_path / "intake.db"
    database.write_bytes(b"x")
    settle_file_times(tmp_path)
    last_request = database.stat().st_ctime_ns
    ticker = FileTimesTicker(tmp_path, interval=0.05).start()
    try:
        deadline = time.monotonic() + 5
        while database.stat().st_ctime_ns == last_request and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        ticker.stop()
    info = database.stat()
    assert info.st_ctime_ns > last_request and info.st_mtime == day_start()
    assert os.stat(tmp_path).st_mtime == day_start()
