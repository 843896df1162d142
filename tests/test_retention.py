"""Retention: what goes when, what stays, and the schedule that runs it unasked."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import intake.newsroom_cli  # noqa: F401  (attaches the journalist-side commands)
from tests.fixtures_store import PAST_ANY_HEADER
from intake.cli import cli
from intake.journalist_auth import sealed_time
from intake.retention import PurgeSchedule, RetentionConfigError, RetentionPolicy, purge
from intake.store import Store
from intake.store.newsroom import Newsroom as NewsroomStore
from intake.store.newsroom import day_before
from keys.reply_bundle import seal_reply
from tests.fixtures_newsroom import Newsroom, download_export, submit_as_new_source
from tests.fixtures_serve import INTAKE, ServeProcess


def backdate(store: Store, sql: str, days: int, *params) -> None:
    """Move stored days into the past (the store keeps days only, so this is how time passes)."""
    store._conn.execute(sql, (day_before(days), *params))


def test_exported_submissions_go_after_the_configured_days(newsroom: Newsroom, alice_client):
    submit_as_new_source(newsroom.source_app, "exported long ago")
    download_export(alice_client)
    submit_as_new_source(newsroom.source_app, "never exported")
    with newsroom.store() as store:
        assert purge(store, RetentionPolicy()).submissions == 0  # exported today: kept
        backdate(store, "UPDATE submissions SET exported_day = ? WHERE exported_day IS NOT NULL", 14)
        report = purge(store, RetentionPolicy(exported_days=14))
        assert report.submissions == 1
        (left,) = store.submissions()
        assert left.exported_day is None
        # The source that sent it stays: it may come back for replies.
        assert store.counts()["sources"] == 2


def test_read_replies_go_after_the_configured_days_unread_ones_stay(newsroom: Newsroom):
    submit_as_new_source(newsroom.source_app, "hello")
    with newsroom.store() as store:
        (group,) = NewsroomStore(store).export_groups(only_new=False)
        read = store.add_reply(group.source.id, None, seal_reply("read", group.source.reply_public_key))
        store.add_reply(group.source.id, None, seal_reply("unread", group.source.reply_public_key))
        store.mark_replies_read(group.source.id, [read.id])
        assert purge(store, RetentionPolicy(read_reply_days=7)).replies == 0
        backdate(store, "UPDATE replies SET read_day = ? WHERE id = ?", 7, read.id)
        assert purge(store, RetentionPolicy(read_reply_days=7)).replies == 1
        assert [r.id for r in store.replies_for(group.source.id)] != [read.id]
        assert len(store.replies_for(group.source.id)) == 1


def test_sources_that_never_submitted_go_others_stay(newsroom: Newsroom, alice_client):
    submit_as_new_source(newsroom.source_app, "a real tip")
    with newsroom.store() as store:
        idle = store.create_source(b"\x01" * 32, b"\x02" * 32)
        with_reply = store.create_source(b"\x03" * 32, b"\x04" * 32)
        store.add_reply(with_reply.id, None, seal_reply("hi", with_reply.reply_public_key))
        uploading = store.create_source(b"\x05" * 32, b"\x06" * 32)
        in_flight = store.start_submission(uploading.id, "file", store.active_recipients())
        in_flight.write(b"\x00" * (newsroom.settings.upload_chunk_bytes + PAST_ANY_HEADER))  # the first chunk is stored
        store._settle()  # beside the upload, on the store's connection: it has ended now
        backdate(store, "UPDATE sources SET last_active_day = ?, created_day = ?", 2, day_before(2))
        assert purge(store, RetentionPolicy(unused_source_days=1)).sources == 1
        remaining = {row[0] for row in store._conn.execute("SELECT id FROM sources")}
        assert idle.id not in remaining and {with_reply.id, uploading.id} <= remaining and len(remaining) == 3
        in_flight.abort()


def test_a_source_whose_submissions_were_purged_keeps_its_codename(newsroom: Newsroom, alice_client):
    submit_as_new_source(newsroom.source_app, "tip")
    download_export(alice_client)
    with newsroom.store() as store:
        backdate(store, "UPDATE submissions SET exported_day = ?", 30)
        backdate(store, "UPDATE sources SET last_active_day = ?", 30)
        report = purge(store, RetentionPolicy())
        assert (report.submissions, report.sources) == (1, 0)
        assert store.counts()["sources"] == 1


def test_expired_sessions_and_old_failed_logins_go(newsroom: Newsroom, alice_client):
    with newsroom.store() as store:
        newsroom_store = NewsroomStore(store)
        source = store.create_source(b"\x09" * 32, b"\x0a" * 32)
        store.save_session(b"s" * 32, source.id, b"sealed", int(time.time()) + 60)
        (account,) = [a for a in newsroom_store.accounts() if a.name == "bob"]
        newsroom_store.save_journalist_session(b"j" * 32, account.id, b"sealed", int(time.time()) + 60)
        # The store keeps the day a session has surely ended by: move it into the past.
        backdate(store, "UPDATE source_sessions SET expires_by_day = ? WHERE id = ?", 1, b"s" * 32)
        backdate(store, "UPDATE journalist_sessions SET expires_by_day = ? WHERE id = ?", 1, b"j" * 32)
        newsroom_store.record_failed_login(None, b"k" * 32, sealed_time(time.time() - 3600))
        newsroom_store.record_failed_login(None, b"k" * 32, sealed_time(time.time()))
        # One sealed by another run of the server: `intake purge` in a process of its own cannot
        # tell it from the running server's, so it leaves it to the server's sign-in check.
        newsroom_store.record_failed_login(None, b"k" * 32, b"\x00" * 48)
        report = purge(store, RetentionPolicy())
        assert (report.source_sessions, report.journalist_sessions, report.failed_logins) == (1, 1, 1)
        assert store._conn.execute("SELECT count(*) FROM failed_logins").fetchone()[0] == 2
    assert alice_client.get("/sources").status_code == 200  # a live session survives


def test_policy_comes_from_retention_toml(tmp_path: Path):
    assert RetentionPolicy.load(tmp_path) == RetentionPolicy(14, 7, 1, 60)
    (tmp_path / "retention.toml").write_text("exported_days = 3\ninterval_minutes = 5\n")
    assert RetentionPolicy.load(tmp_path) == RetentionPolicy(exported_days=3, interval_minutes=5)
    (tmp_path / "retention.toml").write_text("exported_dayz = 3\n")
    with pytest.raises(RetentionConfigError, match="unknown setting 'exported_dayz'"):
        RetentionPolicy.load(tmp_path)
    (tmp_path / "retention.toml").write_text("read_reply_days = -1\n")
    with pytest.raises(RetentionConfigError, match="read_reply_days"):
        RetentionPolicy.load(tmp_path)


def test_the_schedule_purges_without_anyone_asking(newsroom: Newsroom):
    with newsroom.store() as store:
        store.create_source(b"\x0b" * 32, b"\x0c" * 32)
        backdate(store, "UPDATE sources SET last_active_day = ?", 5)
    schedule = PurgeSchedule(newsroom.settings, RetentionPolicy(interval_minutes=1)).start()
    try:
        deadline = time.monotonic() + 10
        while schedule.runs == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        schedule.stop()
    assert schedule.runs >= 1
    with newsroom.store() as store:
        assert store.counts()["sources"] == 0


@pytest.mark.parametrize(("content", "message"), [
    (b"exported_days = 999999\n", "exported_days must be a whole number of days from 0 to 700000"),
    (b"interval_minutes = 0\n", "interval_minutes must be a whole number of minutes from 1 to 525600"),
    (b"interval_minutes = 100000000000\n", "interval_minutes must be a whole number of minutes from 1 to 525600"),
    (b"read_reply_days = -1\n", "read_reply_days must be a whole number of days from 0 to 700000"),
    (b"read_reply_days = 7.5\n", "read_reply_days must be a whole number of days from 0 to 700000"),
    ("# сроки хранения\nexported_days = 30\n".encode("cp1251"), "is not UTF-8 text: save it as UTF-8"),
    (b"exported_days = thirty\n", "not a valid setting at line 1, column 17 (write it as name = number)"),
])  # fmt: skip
def test_a_bad_retention_toml_is_one_clear_line_and_changes_nothing(newsroom: Newsroom, content: bytes, message: str):
    """Found by a newcomer test: 999999 days ("never delete") crashed every purge with an
    OverflowError, a file saved in Windows-1251 with a UnicodeDecodeError, in `purge`, `status`
    and `serve` alike."""
    (newsroom.settings.data_dir / "retention.toml").write_bytes(content)
    with pytest.raises(RetentionConfigError, match=re.escape(message)):
        RetentionPolicy.load(newsroom.settings.data_dir)
    for command in ("purge", "status"):
        result = CliRunner().invoke(cli, [command, "--data", str(newsroom.settings.data_dir)])
        assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output, result.output


def test_a_byte_order_mark_and_the_longest_policy_are_taken(newsroom: Newsroom):
    (newsroom.settings.data_dir / "retention.toml").write_bytes(b"\xef\xbb\xbfexported_days = 700000\ninterval_minutes = 525600\n")
    policy = RetentionPolicy.load(newsroom.settings.data_dir)
    assert (policy.exported_days, policy.interval_minutes) == (700_000, 525_600)
    with newsroom.store() as store:
        purge(store, policy)  # 1,900 years back is still a date


def test_a_failed_run_leaves_the_schedule_running(newsroom: Newsroom, caplog):
    """A run that fails in a way nobody foresaw (here a policy beyond any date, which load()
    now refuses) is logged by its type and the schedule keeps its thread for the next run."""
    schedule = PurgeSchedule(newsroom.settings, RetentionPolicy(exported_days=10**9)).start()
    try:
        deadline = time.monotonic() + 10
        while schedule.runs == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert schedule.runs == 1 and schedule._thread.is_alive()
    finally:
        schedule.stop()
    assert "retention run failed (OverflowError): retrying at the next interval" in caplog.text


def test_purge_command_runs_retention_now(newsroom: Newsroom):
    with newsroom.store() as store:
        store.create_source(b"\x0d" * 32, b"\x0e" * 32)
        backdate(store, "UPDATE sources SET last_active_day = ?", 5)
    result = CliRunner().invoke(cli, ["purge", "--data", str(newsroom.settings.data_dir)])
    assert result.exit_code == 0 and "sources deleted: 1" in result.output


def _unused_source_from_days_ago(newsroom: Newsroom, days: int) -> bytes:
    """A codename made `days` ago that never sent anything (the default policy keeps it 1 day)."""
    lookup = os.urandom(32)
    with newsroom.store() as store:
        store.create_source(lookup, os.urandom(32))
        backdate(store, "UPDATE sources SET last_active_day = ? WHERE lookup_id = ?", days, lookup)
    return lookup


def _sources(newsroom: Newsroom) -> int:
    with newsroom.store() as store:
        return store.counts()["sources"]


@pytest.mark.slow
def test_intake_serve_runs_retention_at_start_and_then_every_interval(newsroom: Newsroom):
    """docs/journalists.md: "`intake serve` runs retention at start and then every 60 minutes,
    without anyone asking" (here every minute, from retention.toml), as shipped."""
    (newsroom.settings.data_dir / "retention.toml").write_text("interval_minutes = 1\n")
    known = _sources(newsroom)
    _unused_source_from_days_ago(newsroom, 5)
    serve = ServeProcess(["serve", "--data", str(newsroom.settings.data_dir), "--no-tor"])
    try:
        serve.read_until("Ctrl-C stops intake.")
        deadline = time.monotonic() + 10
        while _sources(newsroom) != known and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _sources(newsroom) == known, "not purged at start"
        _unused_source_from_days_ago(newsroom, 5)
        started = time.monotonic()
        deadline = started + 75  # one interval of 60 s, and room for a loaded machine
        while _sources(newsroom) != known and time.monotonic() < deadline:
            time.sleep(1)
        took = time.monotonic() - started
        assert _sources(newsroom) == known, "not purged within 75 s of the next interval"
    finally:
        assert serve.stop() == 0, serve.output
    print(f"\nthe second unused codename went {took:.0f} s after it was made")


def test_a_bad_retention_toml_stops_intake_serve_at_start_with_one_line(newsroom: Newsroom):
    (newsroom.settings.data_dir / "retention.toml").write_text("interval_minutes = 0\n")
    result = subprocess.run(INTAKE + ["serve", "--data", str(newsroom.settings.data_dir), "--no-tor"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    # (The test's data dir keeps its database key inside, which serve warns of on a line of its own.)
    lines = [line for line in result.stderr.splitlines() if "the database key is inside the data dir" not in line]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "retention.toml: interval_minutes must be a whole number" in lines[0]
