"""`intake init`, `status`, `backup` and `restore` in Russian, run as an admin types them
(the venv's console script), with `--lang ru` or LANG=ru_RU.UTF-8; and the same commands stay
English without a language."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures_keys import KeyFiles

BIN = Path(sys.executable).parent
ENGLISH_ENV = {"LANGUAGE": "", "LC_ALL": "", "LC_MESSAGES": "", "LANG": "C.UTF-8"}
RUSSIAN_ENV = {"LANG": "ru_RU.UTF-8"}
LATIN_WORDS = re.compile(r"\b[A-Za-z]{4,}\b")
NAMES = ("intake", "onion", "Onion", "TOTP", "systemd")  # names Russian text keeps as they are


def intake(*args: object, env: dict[str, str] | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "intake"), *map(str, args)], capture_output=True, text=True, timeout=300,
                          input=stdin, env={**os.environ, **ENGLISH_ENV, **(env or {})})


def words_left_in_english(text: str, allowed: tuple[str, ...] = ()) -> list[str]:
    """Latin words of four letters or more, outside names, paths, commands (indented lines and
    `quoted` ones), addresses and fingerprints."""
    text = "\n".join(line for line in text.splitlines() if not line.startswith("  "))
    text = re.sub(r"`[^`\n]*`", " ", text)
    text = re.sub(r"\S*[/`.]\S*|--[\w-]+|[a-z2-7]{56}|[0-9A-Za-z]{4}(?:[ :-][0-9A-Za-z]{4}){3,}", " ", text)
    return [word for word in LATIN_WORDS.findall(text) if word not in NAMES + allowed]


@pytest.fixture
def instance(tmp_path: Path, alice_files: KeyFiles) -> tuple[Path, Path]:
    """A data dir made by `intake init` (in English), with its key outside it."""
    data, key = tmp_path / "data", tmp_path / "db.key"
    made = intake("init", "--data", data, "--journalist-key", alice_files.public, "--yes", "--db-key-file", key)
    assert made.returncode == 0, made.stderr
    return data, key


def test_init_speaks_russian_with_lang(tmp_path: Path, alice_files: KeyFiles):
    data, key = tmp_path / "data", tmp_path / "db.key"
    done = intake("--lang", "ru", "init", "--data", data, "--journalist-key", alice_files.public, "--db-key-file", key,
                  stdin="y\n")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"Отпечаток ключа alice: {alice_files.identity.public.fingerprint}" in out
    assert "Каждый журналист видит на своём ноутбуке тот же отпечаток? [д/Н]" in out
    assert f"Папка данных готова: {data}" in out and "Отпечаток ключа сервера: " in out
    assert "Onion-адрес для источников: " in out and "Onion-адрес для журналистов: " in out
    assert "источников: 0\n" in out and "журналистов: 1\n" in out and "незавершённых загрузок: 0\n" in out
    assert "У этих журналистов ещё нет входа." in out and "Сейчас же сделайте резервную копию" in out
    assert words_left_in_english(out, ("alice",)) == [], out


def test_init_refusals_speak_russian_with_LANG(tmp_path: Path, alice_files: KeyFiles):
    no_key = intake("init", "--data", tmp_path / "a", "--db-key-file", tmp_path / "a.key", env=RUSSIAN_ENV)
    assert no_key.returncode == 1
    assert "для новой папки данных нужен хотя бы один открытый ключ журналиста (--journalist-key)" in no_key.stderr
    inside = intake("init", "--data", tmp_path / "b", "--journalist-key", alice_files.public, "--yes", env=RUSSIAN_ENV)
    assert inside.returncode == 1 and "ключ базы данных не будет храниться в папке данных" in inside.stderr
    missing = intake("init", "--data", tmp_path / "c", "--journalist-key", tmp_path / "nobody.public", "--yes",
                     "--db-key-file", tmp_path / "c.key", env=RUSSIAN_ENV)
    assert missing.returncode == 1 and "файл открытого ключа журналиста" in missing.stderr and "не существует" in missing.stderr
    for refused in (no_key, inside, missing):
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr


def test_status_speaks_russian_and_english(instance):
    data, key = instance
    russian = intake("status", "--data", data, "--db-key-file", key, env=RUSSIAN_ENV)
    assert russian.returncode == 0, russian.stderr
    assert "источников: 0\n" in russian.stdout and "материалы: 0 байт\n" in russian.stdout
    assert re.search(r"^база данных: \d+,\d КиБ$", russian.stdout, re.MULTILINE) and "хранилище крупных файлов: " in russian.stdout
    assert "хранение (дней): выгруженные материалы 14, прочитанные ответы 7, неиспользованные кодовые имена 1; проверка раз в 60 мин.\n" in russian.stdout
    assert words_left_in_english(russian.stdout) == [] and not re.search(r"[KMG]iB", russian.stdout), russian.stdout
    english = intake("status", "--data", data, "--db-key-file", key)
    assert "sources: 0\n" in english.stdout and "submissions: 0 bytes\n" in english.stdout
    assert re.search(r"^database: \d+\.\d KiB$", english.stdout, re.MULTILINE)
    assert "retention (days): exported submissions 14, read replies 7, unused codenames 1; checked every 60 min\n" in english.stdout


def test_backup_and_restore_speak_russian(instance, tmp_path: Path):
    data, key = instance
    backup = tmp_path / "intake.backup"
    made = intake("--lang", "ru", "backup", "--data", data, "--db-key-file", key, "--out", backup)
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith(f"Записано в {backup}: материалов — 0, источников — 0, ответов — 0, журналистов — 1, "
                                  "а также оба onion-ключа.\n")
    assert "Копия открывается только ключом базы данных" in made.stdout
    again = intake("--lang", "ru", "backup", "--data", data, "--db-key-file", key, "--out", backup)
    assert again.returncode == 1 and f"{backup} уже существует: выберите другое имя файла" in again.stderr

    restored = intake("restore", backup, "--data", tmp_path / "new", "--db-key-file", key, env=RUSSIAN_ENV)
    assert restored.returncode == 0, restored.stderr
    assert f"Резервная копия {backup} восстановлена в {tmp_path / 'new'}" in restored.stdout
    assert "журналистов: 1\n" in restored.stdout and "Onion-адрес для журналистов: " in restored.stdout
    assert "Если сервер работает с системным tor" in restored.stdout
    assert words_left_in_english(restored.stdout) == [], restored.stdout
    refused = intake("restore", backup, "--data", data, "--db-key-file", key, env=RUSSIAN_ENV)
    assert refused.returncode == 1 and f"папка {data} не пуста: восстанавливайте в новую или пустую папку данных" in refused.stderr
    not_a_backup = tmp_path / "notes.txt"
    not_a_backup.write_text("hello")
    refused = intake("--lang", "ru", "restore", not_a_backup, "--data", tmp_path / "other", "--db-key-file", key)
    assert refused.returncode == 1 and "не резервная копия intake (это не tar-архив)" in refused.stderr


def test_a_wrong_database_key_is_told_in_russian(instance, tmp_path: Path):
    data, _key = instance
    wrong = tmp_path / "wrong.key"
    wrong.write_text("ab" * 32 + "\n")
    wrong.chmod(0o600)
    refused = intake("--lang", "ru", "status", "--data", data, "--db-key-file", wrong)
    assert refused.returncode == 1
    assert "этот ключ не открывает базу данных (ключ неверный или это не база intake)" in refused.stderr


# --- click's own words: usage, its refusals ----------------------------------------------


def test_clicks_own_messages_follow_lang_and_LANG(tmp_path: Path):
    missing = intake("--lang", "ru", "backup", "--data", tmp_path / "data")
    assert missing.returncode == 2
    assert missing.stderr.splitlines() == ["Использование: intake backup [ПАРАМЕТРЫ]", "Справка: 'intake backup --help'.", "",
                                           "Ошибка: не указан параметр '--out'."]
    unknown = intake("bogus", env=RUSSIAN_ENV)
    assert unknown.returncode == 2 and "Ошибка: нет такой команды: 'bogus'." in unknown.stderr
    no_file = intake("restore", tmp_path / "nothing.backup", "--data", tmp_path / "data", env=RUSSIAN_ENV)
    assert no_file.returncode == 2 and "не существует." in no_file.stderr and "does not exist" not in no_file.stderr
    assert "недопустимое значение для 'РЕЗЕРВНАЯ_КОПИЯ'" in no_file.stderr  # the argument named, not taken for the value
    help_page = intake("--lang", "ru", "--help").stdout
    assert help_page.startswith("Использование: intake [ПАРАМЕТРЫ] КОМАНДА [АРГУМЕНТЫ]...")
    assert "\nПараметры:\n" in help_page and "\nКоманды:\n" in help_page and "Показать эту справку и выйти." in help_page
    missing_argument = intake("--lang", "ru", "restore")
    assert missing_argument.returncode == 2 and "Ошибка: не указан аргумент 'РЕЗЕРВНАЯ_КОПИЯ'." in missing_argument.stderr
    assert intake("--lang", "ru", "import-replies", "--help").stdout.startswith("Использование: intake import-replies [ПАРАМЕТРЫ] ПАКЕТ")
    assert "Error: Missing argument 'BACKUP'." in intake("restore").stderr
    english = intake("backup", "--data", tmp_path / "data")
    assert english.returncode == 2 and "Error: Missing option '--out'." in english.stderr and "Usage: intake backup [OPTIONS]" in english.stderr
    no_data = intake("--lang", "ru", "status", env={"INTAKE_DATA": ""})  # click wrote "(env var: ...)" in English
    assert no_data.stderr.splitlines()[-1] == "Ошибка: не указан параметр '--data' (переменная окружения: 'INTAKE_DATA')."


def test_the_catalogue_of_clicks_words_covers_the_installed_click_and_is_compiled(tmp_path: Path):
    """Every message of the installed click is translated (a click upgrade with new words fails here:
    extract them as intake/translations/README.md says)."""
    import click
    from babel.messages.frontend import CommandLineInterface
    from babel.messages.mofile import read_mo
    from babel.messages.pofile import read_po

    fresh = tmp_path / "click.pot"
    CommandLineInterface().run(["pybabel", "-q", "extract", "--no-location", "--sort-output", "-o", str(fresh),
                                str(Path(click.__file__).parent)])
    translations = Path(__file__).resolve().parents[1] / "intake" / "translations"

    def hashable(value):
        return value if isinstance(value, str) else tuple(value)

    def ids(path: Path, reader=read_po) -> dict:
        with open(path, "rb") as f:
            return {hashable(m.id): hashable(m.string) for m in reader(f) if m.id}

    russian = ids(translations / "ru" / "LC_MESSAGES" / "click.po")
    assert set(ids(fresh)) == set(russian) == set(ids(translations / "click.pot"))
    assert [key for key, value in russian.items() if not (value if isinstance(value, str) else all(value))] == []
    assert ids(translations / "ru" / "LC_MESSAGES" / "click.mo", read_mo) == russian


# --- argparse's own words in intake-keys -------------------------------------------------


def test_argparses_own_messages_in_intake_keys_follow_lang_and_LANG():
    def keys(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "intake-keys"), *args], capture_output=True, text=True, timeout=120,
                              env={**os.environ, **ENGLISH_ENV, **(env or {})})

    missing = keys("--lang", "ru", "fingerprint")
    assert missing.returncode == 2
    assert missing.stderr.splitlines() == ["использование: intake-keys fingerprint [-h] [--lang {en,ru}] ОТКРЫТЫЙ_КЛЮЧ",
                                           "intake-keys fingerprint: ошибка: не указаны обязательные параметры: ОТКРЫТЫЙ_КЛЮЧ"]
    unknown = keys("bogus", env=RUSSIAN_ENV)
    assert unknown.returncode == 2 and "ошибка: аргумент КОМАНДА: недопустимое значение: 'bogus'" in unknown.stderr
    help_page = keys("--lang", "ru", "--help").stdout
    assert help_page.startswith("использование: intake-keys") and "позиционные аргументы:" in help_page
    assert "показать эту справку и выйти" in help_page
    english = keys("fingerprint")
    assert "error: the following arguments are required: PUBLIC_FILE" in english.stderr and english.stderr.startswith("usage: ")


def test_the_catalogue_of_argparses_words_covers_this_python_and_is_compiled(tmp_path: Path):
    """Every message of this Python's argparse is translated (a Python with new words fails here:
    extract them as intake/translations/README.md says)."""
    import argparse
    from babel.messages.frontend import CommandLineInterface
    from babel.messages.mofile import read_mo
    from babel.messages.pofile import read_po

    fresh = tmp_path / "argparse.pot"
    CommandLineInterface().run(["pybabel", "-q", "extract", "--no-location", "--sort-output", "-o", str(fresh), argparse.__file__])
    locale = Path(__file__).resolve().parents[1] / "keys" / "locale"

    def hashable(value):
        return value if isinstance(value, str) else tuple(value)

    def ids(path: Path, reader=read_po) -> dict:
        with open(path, "rb") as f:
            return {hashable(m.id): hashable(m.string) for m in reader(f) if m.id}

    russian = ids(locale / "ru" / "LC_MESSAGES" / "argparse.po")
    assert set(ids(fresh)) == set(russian) == set(ids(locale / "argparse.pot"))
    assert [key for key, value in russian.items() if not (value if isinstance(value, str) else all(value))] == []
    assert ids(locale / "ru" / "LC_MESSAGES" / "argparse.mo", read_mo) == russian


# --- intake serve and intake purge ---------------------------------------------------------


def test_serve_and_purge_speak_russian(instance):
    from tests.fixtures_serve import ServeProcess, free_port

    data, key = instance
    serve = ServeProcess(["--lang", "ru", "serve", "--data", str(data), "--db-key-file", str(key), "--no-tor",
                          "--port", str(free_port()), "--journalist-port", str(free_port())], env=ENGLISH_ENV)
    try:
        out = serve.read_until("Ctrl-C останавливает intake.")
    finally:
        serve.stop()
    assert f"intake обслуживает {data}: интерфейс для источников на http://127.0.0.1:" in out
    assert "(только на loopback), а для tor — через unix-сокеты в " in out
    assert "Tor выключен (--no-tor): onion-сервисы не публикуются." in out
    purged = intake("purge", "--data", data, "--db-key-file", key, env=RUSSIAN_ENV)
    assert purged.returncode == 0, purged.stderr
    assert "удалено материалов: 0\n" in purged.stdout and "удалено записей о неудачных входах: 0\n" in purged.stdout


def test_refusals_from_the_store_and_the_settings_speak_russian(instance, tmp_path: Path):
    """The errors raised below the command (the store, the settings, retention.toml, the export)
    are shown in the chosen language too (intake.told; a newcomer test found them in English)."""
    data, key = instance
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "onion").mkdir()
    (tmp_path / "policy").mkdir()
    (tmp_path / "policy" / "retention.toml").write_text("exported_dayz = 3\n")
    refusals = [
        (("status", "--data", tmp_path / "none"), f"{tmp_path / 'none'} — не папка данных intake: проверьте путь"),
        (("status", "--data", damaged), "лежит экземпляр intake, у которого пропал файл intake.db"),
        (("status", "--data", data, "--db-key-file", tmp_path / "no.key"), f"{tmp_path / 'no.key'} (ключ базы данных) не существует"),
        (("export", "--data", data, "--db-key-file", key, "--out", tmp_path / "x.bundle"),
         "ничего не выгружено: новых материалов для выгрузки нет (с --all выгрузятся и уже выгруженные)"),
        (("journalist", "remove", "--data", data, "--db-key-file", key, "--name", "nobody"),
         "нет действующего журналиста с именем 'nobody'"),
        (("journalist", "remove", "--data", data, "--db-key-file", key, "--name", "alice"), "это последний действующий журналист"),
        (("backup", "--data", data, "--db-key-file", key, "--out", tmp_path / "nowhere" / "x.backup"),
         f"{tmp_path / 'nowhere'}: такого файла или папки нет"),
    ]
    for args, expected in refusals:
        refused = intake("--lang", "ru", *args)
        assert refused.returncode == 1 and expected in refused.stderr, (args, refused.stderr)
        assert words_left_in_english(refused.stderr, ("alice", "nobody", "replace")) == [], refused.stderr
    (data / "retention.toml").write_text("exported_dayz = 3\n")
    refused = intake("purge", "--data", data, "--db-key-file", key, env=RUSSIAN_ENV)
    assert refused.returncode == 1 and "неизвестная настройка 'exported_dayz' (известные: " in refused.stderr, refused.stderr
    assert words_left_in_english(refused.stderr, ("exported_dayz",)) == [], refused.stderr
    english = intake("status", "--data", tmp_path / "none")
    assert "is not an intake data dir" in english.stderr


def test_lang_is_taken_after_the_command_too(instance):
    """`intake status --lang ru` was refused with "No such option: --lang" (newcomer test): --lang
    belongs to the group, so it is moved before the command."""
    data, key = instance
    for args in (("status", "--lang", "ru", "--data", data), ("status", "--data", data, "--lang=ru")):
        done = intake(*args, "--db-key-file", key)
        assert done.returncode == 0 and "источников: 0\n" in done.stdout, done.stderr


def test_commands_printed_for_copying_keep_the_language_asked_for(tmp_path: Path):
    """Copied as printed, the demo's commands answered in English on a machine whose LANG is not
    Russian (newcomer test): they carry --lang when --lang chose the language."""
    from intake.cli_i18n import set_language
    from intake.cli import demo_instructions
    from intake.setup import ensure_demo_instance

    info = ensure_demo_instance(tmp_path / "demo")
    try:
        set_language("ru")
        russian = demo_instructions(info, "http://127.0.0.1:8080/", "http://127.0.0.1:8081/")
    finally:
        set_language(None)
    commands = [line.strip() for line in russian.splitlines() if line.startswith("    ")]
    assert [command.split()[1:3] for command in commands] == [["--lang", "ru"]] * 3
    english = demo_instructions(info, "http://127.0.0.1:8080/", "http://127.0.0.1:8081/")
    assert "--lang" not in english


def test_serve_that_gunicorn_refuses_says_so_in_russian(instance):
    """A bad operator setting stops gunicorn at start: its own line, then intake's, in the
    chosen language (server.py raised that line through a name it had not imported)."""
    from tests.fixtures_serve import free_port

    data, key = instance
    refused = intake("--lang", "ru", "serve", "--data", data, "--db-key-file", key, "--no-tor", "--port", free_port(),
                     "--journalist-port", free_port(), env={"INTAKE_WORKERS": "abc"})
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr.splitlines()[-1] == "Ошибка: gunicorn завершился с кодом 1 при запуске (его сообщения выше)"
    assert "intake: INTAKE_WORKERS must be a number, not 'abc'" in refused.stderr and "Traceback" not in refused.stderr


def test_import_replies_reports_in_russian(newsroom, tmp_path: Path):
    from tests.fixtures_newsroom import submit_as_new_source
    from tests.test_export_import import reply_bundle, reply_to

    submit_as_new_source(newsroom.source_app, "for a reply")
    source_id, sealed = reply_to(newsroom, "answer")
    replies = tmp_path / "replies.bundle"
    replies.write_bytes(reply_bundle(newsroom, newsroom.alice.identity, [(source_id, sealed)]))
    data = newsroom.settings.data_dir
    imported = intake("--lang", "ru", "import-replies", "--data", data, replies)
    assert imported.returncode == 0, imported.stderr
    assert ": добавлено 1\n" in imported.stdout and "Добавлено ответов: 1; уже были импортированы: 0; некому доставить: 0" in imported.stdout
    again = intake("import-replies", "--data", data, replies, env=RUSSIAN_ENV)
    assert ": добавлено 0, уже были импортированы: 1\n" in again.stdout


# --- intake-keys trust-server, recover-db-key and clean's limits --------------------------


def test_trust_server_recover_db_key_and_clean_limits_speak_russian(tmp_path: Path, alice_files: KeyFiles):
    from keys.server_key import ServerPublicKey

    def keys(*args: object, env: dict[str, str] | None = None, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "intake-keys"), *map(str, args)], capture_output=True, text=True, timeout=120,
                              input=stdin, env={**os.environ, **ENGLISH_ENV, **(env or {})})

    server = ServerPublicKey.from_seed(bytes(range(1, 33)))
    server_file = tmp_path / "server-signing.public"
    server_file.write_text(server.to_text())
    asked = keys("--lang", "ru", "trust-server", server_file, "--key", alice_files.secret, stdin="n\n")
    assert asked.returncode == 1
    assert asked.stdout.startswith(f"отпечаток ключа сервера: {server.fingerprint}\nЭто тот отпечаток, который прочитал вам "
                                   "администратор из вывода `intake journalist add`? [д/Н] ")
    assert "не подтверждено: ключ сервера НЕ добавлен в доверенные" in asked.stderr
    wrong = keys("trust-server", server_file, "--key", alice_files.secret, "--fingerprint", "AAAA", env=RUSSIAN_ENV)
    assert wrong.returncode == 1 and "указанный вами отпечаток не совпадает с этим файлом ключа сервера" in wrong.stderr
    for expected in ("добавлен в доверенные: ", "уже в доверенных: "):
        trusted = keys("trust-server", server_file, "--key", alice_files.secret, "--fingerprint", server.fingerprint,
                       env=RUSSIAN_ENV)
        assert trusted.returncode == 0 and expected in trusted.stdout, trusted.stderr
    english = keys("trust-server", server_file, "--key", alice_files.secret, "--fingerprint", server.fingerprint)
    assert english.stdout.splitlines()[-1].startswith("already trusted: ")

    existing = tmp_path / "db.key"
    existing.write_text("kept\n")
    refused = keys("recover-db-key", tmp_path / "db-key.recovery", "--key", alice_files.secret, "--out", existing,
                   "--lang", "ru")
    assert refused.returncode == 1 and f"{existing} уже существует; файл не будет перезаписан" in refused.stderr
    assert existing.read_text() == "kept\n"
    limit = keys("clean", tmp_path, "--time-limit", "0", env=RUSSIAN_ENV)
    assert limit.returncode == 2 and "нужно целое число больше 0, а не '0'" in limit.stderr
