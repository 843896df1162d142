"""`intake publish`: the guide for the newsroom's website and the signed onion address.

The published statement is checked with the very command the page prints
(OpenSSL 3), as anyone would run it; one changed byte must make it fail. The
onion's /guide page shows the same fingerprints and server key.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from html import unescape
from pathlib import Path

import pytest

from intake.guide.publish import PUBLIC_KEY, SIGNATURE, STATEMENT, VERIFY_COMMAND
from intake.onion_keys import ensure_onion_keys
from tests.fixtures_newsroom import Newsroom

OPENSSL = shutil.which("openssl")
INTAKE = Path(sys.executable).parent / "intake"  # the venv's console script


def run_intake(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The `intake` command as a user types it."""
    return subprocess.run([str(INTAKE), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def publish(newsroom: Newsroom, out: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    result = run_intake("publish", "--data", str(newsroom.settings.data_dir), "--out", str(out), *extra, env=env)
    assert result.returncode == 0, result.stderr
    return result


def verify(folder: Path) -> subprocess.CompletedProcess:
    """The one-line command printed on the page, run in the folder of downloaded files."""
    if OPENSSL is None:
        pytest.fail("openssl is missing: the documented verification command needs OpenSSL 3")
    return subprocess.run(shlex.split(VERIFY_COMMAND), cwd=folder, capture_output=True, text=True, timeout=30)


def text_of(html: str) -> str:
    return unescape(re.sub(r"<[^>]+>", " ", html))


def test_published_address_verifies_with_the_printed_command(newsroom: Newsroom, tmp_path: Path):
    out = tmp_path / "site"
    result = publish(newsroom, out)
    assert VERIFY_COMMAND in result.stdout
    checked = verify(out)
    assert checked.returncode == 0 and "Signature Verified Successfully" in checked.stdout

    onion, _ = ensure_onion_keys(newsroom.settings.data_dir)
    statement = (out / STATEMENT).read_text()
    assert f"http://{onion}/" in statement
    for journalist in (newsroom.alice, newsroom.bob):
        assert f"{journalist.name}: {journalist.identity.public.fingerprint}" in statement
    pem_line = (out / PUBLIC_KEY).read_text().splitlines()[1]
    assert pem_line in statement
    for language in ("en", "ru"):
        for suffix in ("html", "txt"):
            page = (out / f"tip-line.{language}.{suffix}").read_text()
            assert onion in page and VERIFY_COMMAND in page and newsroom.alice.identity.public.fingerprint in page


@pytest.mark.parametrize("name", [STATEMENT, SIGNATURE])
def test_one_changed_byte_makes_verification_fail(newsroom: Newsroom, tmp_path: Path, name: str):
    out = tmp_path / "site"
    publish(newsroom, out)
    path = out / name
    data = bytearray(path.read_bytes())
    # The statement: a letter of the onion address (a forger's aim); the signature: a byte in the middle.
    position = data.index(b"http://") + 10 if name == STATEMENT else len(data) // 2
    data[position] ^= 0x01
    path.write_bytes(bytes(data))
    checked = verify(out)
    assert checked.returncode == 1
    assert "Signature Verification Failure" in checked.stdout and "Verified Successfully" not in checked.stdout


def test_another_servers_key_does_not_verify_the_statement(newsroom: Newsroom, tmp_path: Path):
    out, other = tmp_path / "site", tmp_path / "other"
    publish(newsroom, out)
    publish(newsroom_of_another_server(tmp_path), other)
    shutil.copy(other / PUBLIC_KEY, out / PUBLIC_KEY)
    assert verify(out).returncode == 1


def newsroom_of_another_server(tmp_path: Path) -> Newsroom:
    from tests.fixtures_newsroom import make_newsroom

    base = tmp_path / "another"
    base.mkdir()
    return make_newsroom(base)


def test_pages_carry_every_part_of_the_guide_in_both_languages(newsroom: Newsroom, tmp_path: Path):
    out = tmp_path / "site"
    publish(newsroom, out)
    ru = text_of((out / "tip-line.ru.html").read_text())
    en = text_of((out / "tip-line.en.html").read_text())
    assert '<html lang="ru">' in (out / "tip-line.ru.html").read_text()
    for page, words in (
        (en, ["@gettor_bot", "gettor@torproject.org", "tor.eff.org", "Connection Assist", "WebTunnel", "Snowflake",
              "obfs4", "@GetBridgesBot", "Safest", "Tails", "public Wi-Fi", "work computer", "never ask", "14 days",
              "7 days", "1 day"]),
        (ru, ["@gettor_bot", "gettor@torproject.org", "Помощник подключения", "WebTunnel", "Snowflake", "obfs4",
              "@GetBridgesBot", "«Наиболее безопасный»", "Tails", "общественный Wi-Fi", "рабочий компьютер",
              "никогда у вас не попросим", "через 14 дней", "через 7 дней", "через 1 день"]),
    ):
        for word in words:
            assert word in page, word
    # Bridges in the order that works now.
    positions = [ru.index(name) for name in ("Помощник подключения", "Встроенный мост WebTunnel", "Snowflake, затем obfs4", "Личный мост")]
    assert positions == sorted(positions)
    for page in (out / "tip-line.en.html", out / "tip-line.ru.html"):
        assert "<script" not in page.read_text() and "src=" not in page.read_text()


def test_retention_on_the_page_follows_the_instance_settings(newsroom: Newsroom, tmp_path: Path):
    (newsroom.settings.data_dir / "retention.toml").write_text("exported_days = 3\nread_reply_days = 21\nunused_source_days = 2\n")
    out = tmp_path / "site"
    publish(newsroom, out)
    ru = (out / "tip-line.ru.txt").read_text()
    en = (out / "tip-line.en.txt").read_text()
    assert "через 3 дня" in ru and "через 21 день" in ru and "через 2 дня" in ru
    assert "3 days" in en and "21 days" in en and "2 days" in en


def test_an_editor_updates_the_bridges_in_one_file_without_code(newsroom: Newsroom, tmp_path: Path):
    bridges = tmp_path / "bridges.toml"
    bridges.write_text(
        'checked = 2026-03-05\n'
        '[[step]]\nname.en = "Ask a friend"\nname.ru = "Спросите друга"\n'
        'text.en = "A friend abroad runs a WebTunnel bridge for you."\n'
        'text.ru = "Друг за границей держит для вас мост WebTunnel."\n',
        encoding="utf-8",
    )
    out = tmp_path / "site"
    result = publish(newsroom, out, "--bridges", str(bridges))
    ru = (out / "tip-line.ru.html").read_text()
    assert "Спросите друга" in ru and "5 марта 2026" in ru
    assert "March 5, 2026" in (out / "tip-line.en.html").read_text()
    assert "Warning: the bridge advice was last checked" in result.stderr  # more than 90 days before today


def test_a_broken_bridges_file_is_refused_in_one_line(newsroom: Newsroom, tmp_path: Path):
    bridges = tmp_path / "bridges.toml"
    bridges.write_text('checked = "recently"\n')
    result = run_intake("publish", "--data", str(newsroom.settings.data_dir), "--out", str(tmp_path / "site"),
                        "--bridges", str(bridges))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "`checked` must be the date" in result.stderr
    assert not (tmp_path / "site").exists()


def test_publish_speaks_russian(newsroom: Newsroom, tmp_path: Path):
    result = run_intake("--lang", "ru", "publish", "--data", str(newsroom.settings.data_dir), "--out", str(tmp_path / "site"))
    assert result.returncode == 0, result.stderr
    assert "Руководство для источников записано" in result.stdout


def test_the_onion_shows_the_same_fingerprints_and_key_as_the_statement(newsroom: Newsroom, tmp_path: Path):
    out = tmp_path / "site"
    publish(newsroom, out)
    statement = (out / STATEMENT).read_text()
    client = newsroom.source_app.test_client()
    for language, heading in (("en", "How to reach us and check that this is us"), ("ru", "Как связаться с нами и убедиться, что это мы")):
        client.get(f"/language/{language}")
        page = client.get("/guide")
        assert page.status_code == 200
        shown = text_of(page.text)
        assert heading in shown
        fingerprints = re.findall(r"^(\w+): ([A-Z2-7]{4}(?: [A-Z2-7]{4})+)$", statement, re.M)
        assert len(fingerprints) == 2
        for name, fingerprint in fingerprints:
            assert f"{name}: {fingerprint}" in " ".join(shown.split())
        assert statement.splitlines()[-1] in shown
        assert "WebTunnel" in shown


def test_the_landing_page_keeps_a_short_version_and_links_the_full_guide(newsroom: Newsroom):
    client = newsroom.source_app.test_client()
    landing = client.get("/", headers={"Accept-Language": "ru"}).text
    assert 'href="/guide"' in landing and "сначала WebTunnel" in landing
    assert "Полное руководство" in landing


def test_a_removed_journalist_leaves_the_statement(newsroom: Newsroom, tmp_path: Path):
    result = run_intake("journalist", "remove", "--data", str(newsroom.settings.data_dir), "--name", "bob")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "site"
    publish(newsroom, out)
    statement = (out / STATEMENT).read_text()
    assert newsroom.alice.identity.public.fingerprint in statement
    assert newsroom.bob.identity.public.fingerprint not in statement
