"""The journalist side speaks Russian: the journalist interface (chosen by a link,
remembered; Accept-Language only a first guess), `intake` and `intake-keys`
(--lang or LANG), and the index.html that `intake-keys decrypt` writes.

The CLIs run as a user types them (the venv's console scripts)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from babel.messages.frontend import CommandLineInterface
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from tests.fixtures_keys import KeyFiles, build_export
from tests.fixtures_newsroom import Newsroom, csrf_token, sign_in

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ENGLISH_ENV = {"LANGUAGE": "", "LC_ALL": "", "LC_MESSAGES": "", "LANG": "C.UTF-8"}


def run(command: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / command), *map(str, args)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **ENGLISH_ENV, **(env or {})})


# --- the journalist interface ------------------------------------------------------------


def test_the_journalist_login_follows_the_browser_at_first(newsroom: Newsroom):
    client = newsroom.journalist_app.test_client()
    page = client.get("/login", headers={"Accept-Language": "ru-RU,ru;q=0.9"})
    assert '<html lang="ru">' in page.text and "<h1>Вход</h1>" in page.text and "Парольная фраза" in page.text
    assert "<h1>Sign in</h1>" in client.get("/login", headers={"Accept-Language": "en-US"}).text


def test_the_language_link_is_remembered_over_the_browsers_guess(newsroom: Newsroom):
    client = newsroom.journalist_app.test_client()
    english = client.get("/login", headers={"Accept-Language": "en-US,en;q=0.5"})  # what Tor Browser sends
    assert 'href="/language/ru?next=/login"' in english.text
    switched = client.get("/language/ru?next=/login")
    assert switched.status_code == 303 and switched.headers["Location"] == "/login"
    again = client.get("/login", headers={"Accept-Language": "en-US,en;q=0.5"})
    assert "<h1>Вход</h1>" in again.text and 'href="/language/en?next=/login"' in again.text


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil.example", "/sources\r\nX-Injected: 1",
                                    "/sources\x00"])
def test_the_journalist_language_link_never_leaves_the_site(newsroom: Newsroom, target: str):
    """A control character made a 500 with a traceback in the log (found by a newcomer test)."""
    response = newsroom.journalist_app.test_client().get("/language/ru", query_string={"next": target})
    assert response.status_code == 303 and response.headers["Location"] == "/"


def test_a_signed_in_journalist_works_in_russian(newsroom: Newsroom):
    client = newsroom.journalist_app.test_client()
    client.get("/language/ru")
    assert sign_in(client, newsroom.alice).status_code == 303
    page = client.get("/sources")
    for words in ("Вы вошли как alice", "Источники", "Скачать новые материалы", "Загрузить ответы", "Выйти"):
        assert words in page.text
    nothing = client.post("/export", data={"csrf_token": csrf_token(page.text), "scope": "new"}, follow_redirects=True)
    assert "Скачивать нечего: новых материалов нет." in nothing.text
    assert "Не найдено" in client.get("/sources/no-such-source/delete").text


def test_a_wrong_sign_in_is_refused_in_russian(newsroom: Newsroom):
    client = newsroom.journalist_app.test_client()
    client.get("/language/ru")
    refused = sign_in(client, newsroom.alice, code="000000")
    assert refused.status_code == 401 and "Имя, парольная фраза или код введены неверно" in refused.text


def test_a_refused_reply_bundle_is_told_in_russian_once(newsroom: Newsroom):
    """The reason came from keys/ in English, after a heading said the same thing twice (found by
    a Russian-speaking newcomer test)."""
    import io

    client = newsroom.journalist_app.test_client()
    client.get("/language/ru")
    assert sign_in(client, newsroom.alice).status_code == 303
    page = client.get("/sources")
    refused = client.post("/replies", data={"csrf_token": csrf_token(page.text),
                                            "bundle": (io.BytesIO(b"not a reply bundle at all"), "replies.bundle")})
    assert refused.status_code == 400
    assert "Ничего не импортировано: это не пакет ответов intake." in refused.text, refused.text
    assert "reply bundle" not in refused.text and refused.text.count("отклонён") == 2  # <title> and <h1>


def test_a_store_refusal_is_told_in_the_pages_language(newsroom: Newsroom):
    """The store's own words (intake.told) on the journalist's error page, in Russian: here the
    database kept busy by another writer past the wait allowed."""
    import dataclasses

    from intake.app.journalist import create_journalist_app
    from intake.store.connection import connect

    app = create_journalist_app(dataclasses.replace(newsroom.settings, busy_timeout_ms=300), TESTING=True)

    def sign_in_while_busy(language: str, journalist) -> object:
        client = app.test_client()
        client.get(f"/language/{language}")
        holder = connect(newsroom.settings.db_path, newsroom.settings.db_key, busy_timeout_ms=300)
        try:
            holder.execute("BEGIN IMMEDIATE")
            return sign_in(client, journalist)
        finally:
            holder.rollback()
            holder.close()

    refused = sign_in_while_busy("ru", newsroom.alice)
    assert refused.status_code == 503
    assert "база данных слишком долго была занята: попробуйте ещё раз" in refused.text
    refused = sign_in_while_busy("en", newsroom.bob)
    assert refused.status_code == 503 and "the database stayed busy too long: try again" in refused.text


# --- the intake command ------------------------------------------------------------------


def test_intake_speaks_russian_with_lang_and_with_LANG(newsroom: Newsroom, tmp_path: Path):
    data = newsroom.settings.data_dir
    by_option = run("intake", "--lang", "ru", "journalist", "list", "--data", data)
    assert by_option.returncode == 0 and "активен" in by_option.stdout and "может войти" in by_option.stdout
    by_environment = run("intake", "check", "--data", data, env={"LANG": "ru_RU.UTF-8"})
    assert by_environment.stdout.strip() == "Хранилище в порядке."
    english = run("intake", "check", "--data", data)
    assert english.stdout.strip() == "The store is intact."
    taken = tmp_path / "export.bundle"
    taken.write_bytes(b"")
    refused = run("intake", "--lang", "ru", "export", "--data", data, "--out", taken)
    assert refused.returncode == 1 and "уже существует: выберите другое имя файла" in refused.stderr


# --- intake-keys and its index.html ------------------------------------------------------


def test_intake_keys_decrypts_in_russian_and_writes_a_russian_index(tmp_path: Path, alice_files: KeyFiles, two_sources):
    bundle = tmp_path / "export.bundle"
    bundle.write_bytes(build_export(two_sources, [alice_files.identity]))
    out = tmp_path / "tips"
    done = run("intake-keys", "decrypt", bundle, "--key", alice_files.secret, "--passphrase-file",
               alice_files.passphrase_file, "--out", out, "--lang", "ru")
    assert done.returncode == 0, done.stderr
    assert "расшифровано материалов: 3, источников: 2" in done.stdout
    index = (out / "index.html").read_text()
    assert '<html lang="ru">' in index and "<h1>Расшифрованные материалы</h1>" in index and "ID источника: <code>src-1</code>" in index
    # The suggested command is shell-quoted, then escaped; the size is grouped the Russian way.
    assert "как ответить: <code>intake-keys reply --source &#x27;" in index and "<td>200\u00a0000 байт</td>" in index
    assert "Получено 2026-11-28" in index and '<th scope="col">Предупреждения</th>' in index and "Файлы ещё не очищены" in index
    assert "<td>ещё не очищен</td>" in index and "содержимое не соответствует имени файла (.pdf)" in index
    again = run("intake-keys", "decrypt", bundle, "--key", alice_files.secret, "--passphrase-file",
                alice_files.passphrase_file, "--out", out, env={"LANG": "ru_RU.UTF-8"})
    assert "пропущено уже расшифрованных там материалов: 3" in again.stdout


def test_intake_keys_errors_and_help_in_russian(tmp_path: Path, alice_files: KeyFiles):
    refused = run("intake-keys", "--lang", "ru", "generate", "--out", alice_files.secret.parent, "--name", "alice",
                  "--passphrase-file", alice_files.passphrase_file)
    assert refused.returncode == 1
    assert refused.stderr.strip().endswith("уже существует; ключ не будет перезаписан")
    assert refused.stderr.startswith("intake-keys: ошибка: ")
    russian_help = run("intake-keys", "--lang", "ru", "--help").stdout
    assert "Офлайн-инструменты журналиста intake" in russian_help and "показать версию и выйти" in russian_help
    assert "Offline toolkit for intake journalists" in run("intake-keys", "--help").stdout
    english = run("intake-keys", "fingerprint", alice_files.public)
    assert english.returncode == 0 and english.stdout.startswith("alice: ")


def test_intake_keys_most_common_refusals_are_in_russian(tmp_path: Path, alice_files: KeyFiles, two_sources):
    """A wrong passphrase and a bundle from a server key not trusted yet are what a journalist meets
    most; both came out in English under --lang ru (found by a newcomer test)."""
    from nacl.signing import SigningKey

    from keys.server_key import ServerPublicKey

    bundle = tmp_path / "export.bundle"
    bundle.write_bytes(build_export(two_sources, [alice_files.identity]))
    wrong = tmp_path / "wrong-passphrase"
    wrong.write_text("not the passphrase\n")
    refused = run("intake-keys", "--lang", "ru", "decrypt", bundle, "--key", alice_files.secret, "--passphrase-file", wrong,
                  "--out", tmp_path / "out")
    assert refused.returncode == 1
    assert refused.stderr == "intake-keys: ошибка: парольная фраза не открывает этот файл секретного ключа (или файл повреждён)\n"
    rotated = SigningKey.generate()
    bundle.write_bytes(build_export(two_sources, [alice_files.identity], rotated))
    untrusted = run("intake-keys", "--lang", "ru", "decrypt", bundle, "--key", alice_files.secret, "--passphrase-file",
                    alice_files.passphrase_file, "--out", tmp_path / "out")
    fingerprint = ServerPublicKey.from_seed(bytes(rotated)).fingerprint
    assert untrusted.returncode == 1 and untrusted.stderr == (
        f"intake-keys: ошибка: выгрузка подписана ключом сервера, которому этот ноутбук не доверяет ({fingerprint}); "
        "ничего не записано (если администратор заменил ключ сервера, добавьте новый в доверенные: "
        "`intake-keys trust-server`)\n")
    for trusted in (alice_files.secret.parent / "trusted-servers").iterdir():
        trusted.unlink()  # a new laptop: nothing trusted yet
    new_laptop = run("intake-keys", "--lang", "ru", "decrypt", bundle, "--key", alice_files.secret, "--passphrase-file",
                     alice_files.passphrase_file, "--out", tmp_path / "out")
    assert new_laptop.returncode == 1 and new_laptop.stderr.startswith(
        "intake-keys: ошибка: на этом ноутбуке ещё нет ни одного доверенного ключа сервера (")
    assert not (tmp_path / "out").exists()


def test_intake_keys_refuses_a_damaged_or_forged_bundle_and_a_wrong_key_file_in_russian(tmp_path: Path, alice_files: KeyFiles,
                                                                                         two_sources):
    """keys/' own refusals (keys.told), the forged-source one most of all, came out in English
    under --lang ru (found by a Russian-speaking newcomer test)."""
    import dataclasses

    from nacl.public import PrivateKey

    def decrypt(bundle_path: Path, *, key: Path = alice_files.secret) -> subprocess.CompletedProcess:
        return run("intake-keys", "--lang", "ru", "decrypt", bundle_path, "--key", key, "--passphrase-file",
                   alice_files.passphrase_file, "--out", tmp_path / "out")

    bundle = tmp_path / "export.bundle"
    whole = build_export(two_sources, [alice_files.identity])
    bundle.write_bytes(whole[: len(whole) // 2])
    assert decrypt(bundle).stderr == "intake-keys: ошибка: файл выгрузки обрезан (скачан или скопирован не до конца): скачайте его заново\n"
    bundle.write_bytes(b"not a bundle at all")
    assert decrypt(bundle).stderr == "intake-keys: ошибка: это не пакет выгрузки intake\n"
    bundle.write_bytes(whole)
    assert decrypt(bundle).returncode == 0
    forged = [dataclasses.replace(two_sources[0], key=PrivateKey.generate()), two_sources[1]]
    bundle.write_bytes(build_export(forged, [alice_files.identity]))
    refused = decrypt(bundle)
    assert refused.returncode == 1 and refused.stderr.startswith(
        "intake-keys: ошибка: REFUSED: этот пакет выгрузки меняет ключ для ответов источника src-1, чьи материалы уже "
        "расшифрованы в "), refused.stderr
    assert refused.stderr.endswith("возможно, пакет подделан: ничего не записано, сообщите тому, кто у вас отвечает за "
                                   "безопасность\n"), refused.stderr
    server_key = tmp_path / "server.public"
    server_key.write_text(next((alice_files.secret.parent / "trusted-servers").iterdir()).read_text())
    mistyped = run("intake-keys", "--lang", "ru", "trust-server", server_key, "--key", alice_files.public,
                   "--fingerprint", "00")
    assert mistyped.returncode == 1 and mistyped.stderr == (
        f"intake-keys: ошибка: {alice_files.public} — не файл секретного ключа intake: в --key указывают файл "
        "ИМЯ.secret, созданный командой generate (ИМЯ.public — это то, что получает сервер)\n"), mistyped.stderr
    missing = run("intake-keys", "--lang", "ru", "trust-server", server_key, "--key", tmp_path / "mash.secret")
    assert missing.stderr == f"intake-keys: ошибка: {tmp_path / 'mash.secret'}: такого файла или папки нет\n", missing.stderr
    damaged_key = tmp_path / "damaged.public"
    damaged_key.write_text(alice_files.public.read_text().replace("verify-key: ", "verify-key: AAAA", 1))
    told_deep = run("intake-keys", "--lang", "ru", "fingerprint", damaged_key)  # the reason names the key it refers to
    assert told_deep.returncode == 1 and "ключ в файле открытого ключа" in told_deep.stderr, told_deep.stderr
    assert not re.search(r"\b(key|file|the)\b", told_deep.stderr), told_deep.stderr


def test_intake_keys_inspect_groups_digits_and_names_kinds_in_russian(tmp_path: Path, alice_files: KeyFiles, two_sources):
    """"2,482 байт" read as a decimal in Russian, and the kinds stayed English (newcomer test)."""
    bundle = tmp_path / "export.bundle"
    bundle.write_bytes(build_export(two_sources, [alice_files.identity]))
    shown = run("intake-keys", "--lang", "ru", "inspect", bundle, "--key", alice_files.secret, "--passphrase-file",
                alice_files.passphrase_file)
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"^пакет выгрузки, версия 2, \d{3}\u00a0\d{3} байт(а|ов)?$", shown.stdout, re.MULTILINE), shown.stdout
    assert "  сообщение  " in shown.stdout and "  файл  " in shown.stdout and not re.search(r"\d,\d", shown.stdout)
    assert "message" not in shown.stdout and " bytes" not in shown.stdout


def test_intake_keys_clean_reports_in_russian(tmp_path: Path, alice_files: KeyFiles, two_sources):
    # minutes.pdf holds random bytes: refused before mat2 runs, with the reason on the terminal and the page.
    bundle = tmp_path / "export.bundle"
    bundle.write_bytes(build_export(two_sources, [alice_files.identity]))
    out = tmp_path / "tips"
    run("intake-keys", "decrypt", bundle, "--key", alice_files.secret, "--passphrase-file", alice_files.passphrase_file, "--out", out)
    cleaned = run("intake-keys", "clean", out, env={"LANG": "ru_RU.UTF-8"})
    assert cleaned.returncode == 0, cleaned.stderr
    assert "minutes.pdf: не очищен: содержимое не соответствует имени файла (.pdf)" in cleaned.stdout
    assert "очищено файлов: 0, не очищено: 1, очищено раньше: 0; файлов с предупреждениями: 1" in cleaned.stdout
    assert "очищенные копии лежат рядом с оригиналами; откройте " in cleaned.stdout
    index = (out / "index.html").read_text()
    assert '<html lang="ru">' in index and "<td>не очищен: содержимое не соответствует имени файла (.pdf)</td>" in index
    assert "Файлы ещё не очищены" not in index
    empty = tmp_path / "empty"
    empty.mkdir()
    refused = run("intake-keys", "--lang", "ru", "clean", empty)
    assert refused.returncode == 1
    assert refused.stderr.strip() == f"intake-keys: ошибка: в {empty} нет ни одной папки источника, созданной intake-keys decrypt (нет файла source.json)"


def test_intake_keys_index_stays_english_without_a_language(tmp_path: Path, alice_files: KeyFiles, two_sources):
    bundle = tmp_path / "export.bundle"
    bundle.write_bytes(build_export(two_sources, [alice_files.identity]))
    out = tmp_path / "tips"
    run("intake-keys", "decrypt", bundle, "--key", alice_files.secret, "--passphrase-file", alice_files.passphrase_file, "--out", out)
    index = (out / "index.html").read_text()
    assert '<html lang="en">' in index and "<h1>Decrypted submissions</h1>" in index


# --- the catalogues ----------------------------------------------------------------------

CATALOGUES = {
    # name: (extraction config, template, Russian .po, compiled .mo, extra keywords)
    "journalist": ("babel-journalist.cfg", "intake/translations/journalist.pot", "intake/translations/ru/LC_MESSAGES/journalist.po",
                   "intake/translations/ru/LC_MESSAGES/journalist.mo", ["-k", "_l"]),
    "cli": ("babel-cli.cfg", "intake/translations/cli.pot", "intake/translations/ru/LC_MESSAGES/cli.po",
            "intake/translations/ru/LC_MESSAGES/cli.mo", []),
    "intake-keys": ("babel-keys.cfg", "keys/locale/intake-keys.pot", "keys/locale/ru/LC_MESSAGES/intake-keys.po",
                    "keys/locale/ru/LC_MESSAGES/intake-keys.mo", []),
}


def _ids(path: Path, reader=read_po) -> dict:
    with open(path, "rb") as f:
        # Plural messages: ids and strings as tuples (read_mo gives lists).
        return {_hashable(message.id): _hashable(message.string) for message in reader(f) if message.id}


def _hashable(value):
    return value if isinstance(value, str) else tuple(value)


@pytest.mark.parametrize("name", CATALOGUES)
def test_every_message_of_the_catalogue_is_translated_and_compiled(name: str):
    _config, template, po, mo, _keywords = CATALOGUES[name]
    translated = _ids(ROOT / po)
    assert set(translated) == set(_ids(ROOT / template))
    untranslated = [key for key, value in translated.items() if not (value if isinstance(value, str) else all(value))]
    assert untranslated == []
    assert _ids(ROOT / mo, read_mo) == translated


_BRACE_FIELD = re.compile(r"\{([A-Za-z_]\w*)(?:![rs])?(?::[^{}]*)?\}")
_PERCENT_FIELD = re.compile(r"%\((\w+)\)s")


@pytest.mark.parametrize("name", [*CATALOGUES, "messages"])
def test_every_translation_keeps_the_fields_of_its_message(name: str):
    """A Russian text naming a field its English lacks raises KeyError where it is shown, one that
    drops a field hides a fact (a path, a count). Plural forms may leave the number out."""
    po = CATALOGUES[name][2] if name in CATALOGUES else "intake/translations/ru/LC_MESSAGES/messages.po"
    with open(ROOT / po, "rb") as f:
        catalogue = read_po(f)
    wrong = []
    for message in catalogue:
        if not message.id:
            continue
        english = message.id[0] if isinstance(message.id, tuple) else message.id
        fields = set(_BRACE_FIELD.findall(english)) | set(_PERCENT_FIELD.findall(english))
        for text in message.string if isinstance(message.string, tuple) else (message.string,):
            said = set(_BRACE_FIELD.findall(text)) | set(_PERCENT_FIELD.findall(text))
            if said - fields or (fields - said and not isinstance(message.id, tuple)):
                wrong.append((english, text))
    assert wrong == []


@pytest.mark.parametrize("name", CATALOGUES)
def test_the_catalogue_is_up_to_date_with_the_code(name: str, tmp_path: Path):
    config, template, _po, _mo, keywords = CATALOGUES[name]
    fresh = tmp_path / "fresh.pot"
    CommandLineInterface().run(["pybabel", "-q", "extract", "-F", str(ROOT / config), *keywords, "--no-location",
                                "--sort-output", "-o", str(fresh), str(ROOT)])
    assert set(_ids(fresh)) == set(_ids(ROOT / template))
