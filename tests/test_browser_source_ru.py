"""A Russian-speaking source walks the whole journey in a real browser with JavaScript off,
against real gunicorn, and the newsroom answers with the real tools.

The source switches the page to Russian, gets a Russian codename, reloads the codename
page (same codename), sends a message and two files, sees a receipt per file, and logs
out. The newsroom exports with `intake export`, decrypts and replies offline with
`intake-keys`, and imports the reply with `intake import-replies`. The source comes
back, types its codename with the keyboard on the Latin layout for one word, four-letter
prefixes and extra spaces, and sees the status of each thing it sent (received and
downloaded, by day) and the reply.
"""

from __future__ import annotations

import datetime
import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from babel.dates import format_date

from intake.wordlists.layout import as_typed_on_latin_layout
from intake.wordlists.vocabulary import RUSSIAN
from keys.identity import KDF_MIN
from keys.server_key import ServerPublicKey
from tests.fixtures_server import IntakeServer
from tests.test_browser_source import Journey, _stored_items, browser_context  # noqa: F401 - fixture

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


def run(*args, cwd: Path) -> str:
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{args[0]} {args[1]} failed: {result.stderr}"
    return result.stdout


def reply_as_the_newsroom(server: IntakeServer, work: Path, text: str) -> None:
    """Export, decrypt and reply offline, then import the signed reply: the newsroom's real round trip."""
    journalist = server.journalists[0]
    secret, passphrase = work / "journalist.secret", work / "passphrase"
    passphrase.write_text("a passphrase of the newsroom laptop\n")
    journalist.save(secret, "a passphrase of the newsroom laptop", kdf=KDF_MIN)
    bundle, decrypted, replies = work / "tips.bundle", work / "tips", work / "replies.bundle"
    run(BIN / "intake", "export", "--data", server.data_dir, "--out", bundle, cwd=work)
    # At enrolment the journalist trusted the server's key, checked by its fingerprint.
    server_key = ServerPublicKey.load(server.data_dir / "server-signing.public")
    run(BIN / "intake-keys", "trust-server", server.data_dir / "server-signing.public", "--key", secret,
        "--fingerprint", server_key.fingerprint, cwd=work)
    run(BIN / "intake-keys", "decrypt", bundle, "--key", secret, "--passphrase-file", passphrase, "--out", decrypted, cwd=work)
    (record,) = decrypted.glob("*/source.json")
    assert len(json.loads(record.read_text())["items"]) == 3
    run(BIN / "intake-keys", "reply", "--key", secret, "--source", record.parent, "--message", text,
        "--out", replies, "--passphrase-file", passphrase, cwd=work)
    run(BIN / "intake", "import-replies", "--data", server.data_dir, replies, cwd=work)


def typed_with_mistakes(codename: str) -> str:
    """How a hurried source types it: one word on the Latin layout, prefixes, capitals, extra spaces."""
    words = codename.split()
    typed = [as_typed_on_latin_layout(words[0]), words[1][:4].upper(), *words[2:6], as_typed_on_latin_layout(words[6][:4]), words[7]]
    return "  " + "   ".join(typed) + " "


def test_a_russian_source_walks_the_whole_journey_and_sees_status_and_a_reply(intake_server: IntakeServer, browser_context, tmp_path: Path) -> None:
    journey = Journey(browser_context, intake_server.url, tmp_path)
    page = journey.page
    message = f"Бухгалтерия хранит вторую ведомость в синей папке {secrets.token_hex(4)}"
    minutes = f"протокол совещания {secrets.token_hex(8)}\n".encode() * 40
    scan = secrets.token_bytes(30_000)

    page.goto(intake_server.url + "/")
    page.get_by_role("link", name="Русский").click()
    assert page.get_by_role("heading", level=1).inner_text() == "Безопасная связь с нашими журналистами"
    assert "информатор" not in page.content()
    journey.shot("ru-landing")

    page.get_by_role("button", name="Впервые здесь: получить кодовое имя и отправить").click()
    words = page.locator(".codename span").all_inner_texts()
    assert len(words) == 8 and all(word in RUSSIAN.words for word in words)
    codename = " ".join(words)
    page.reload()  # safe: the same codename while the session lives
    assert " ".join(page.locator(".codename span").all_inner_texts()) == codename
    journey.shot("ru-codename")

    page.get_by_label("Ваше сообщение").fill(message)
    page.locator("#files").set_input_files(files=[
        {"name": "протокол.txt", "mimeType": "text/plain", "buffer": minutes},
        {"name": "скан.bin", "mimeType": "application/octet-stream", "buffer": scan},
    ])
    page.get_by_role("button", name="Отправить", exact=True).click()
    assert page.get_by_role("heading", level=1).inner_text() == "Спасибо, получено"
    receipt = page.locator(".receipt li").all_inner_texts()
    assert receipt[0].startswith("Ваше сообщение") and "протокол.txt" in receipt[1] and "скан.bin" in receipt[2]
    journey.shot("ru-received")
    assert _stored_items(intake_server) == {"message": message.encode(), "протокол.txt": minutes, "скан.bin": scan}

    page.get_by_role("button", name="Выйти").click()
    assert page.get_by_role("heading", level=1).inner_text() == "Вы вышли"
    journey.shot("ru-logged-out")

    reply = f"Спасибо. Кто ещё был на совещании? {secrets.token_hex(4)}"
    reply_as_the_newsroom(intake_server, tmp_path, reply)

    page.goto(intake_server.url + "/")
    page.get_by_role("link", name="У меня есть кодовое имя: прочитать ответы или отправить ещё").click()
    page.get_by_label("Кодовое имя").press_sequentially(typed_with_mistakes(codename))
    journey.shot("ru-login")
    page.get_by_role("button", name="Продолжить").click()
    assert page.get_by_role("heading", level=1).inner_text() == "Статус и ответы"
    today = " ".join(format_date(datetime.datetime.now(datetime.timezone.utc).date(), "long", locale="ru").split())
    status = [" ".join(item.split()) for item in page.locator(".status li").all_inner_texts()]
    assert status == [
        f"Сообщение: получено {today}; редакция скачала {today}",
        f"Файл: получен {today}; редакция скачала {today}",
        f"Файл: получен {today}; редакция скачала {today}",
    ]
    assert page.locator(".reply .text").inner_text() == reply
    assert "journalist" not in page.content()  # nothing names a journalist
    journey.shot("ru-status-and-reply")

    assert journey.left_origin == []
    assert journey.script_activity == []
