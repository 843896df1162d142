"""A copy of the data dir, opened with the database key, holds none of what intake promises never
to store (SECURITY.md §2, README "keeps only ciphertext"): no message, file name, content type or
file content in the clear, no codename as made or as typed (nor a failed login's), no upload
receipt, no decrypted reply, no journalist passphrase or client-auth private key, no session
token, no reply secret key; the TOTP secret only where the server must keep it to check codes.

The session runs against the real source and journalist apps (their test clients: the whole app,
store and ingest, in process), then the copy is searched three ways: every column of every table
SQL returns; every decrypted page of intake.db and every page image in its WAL (free pages and the
unused space inside pages included, tests/sqlcipher_pages.py), and the raw bytes of every file of
the data dir (intake.db-slots and intake.db-wal included: ciphertext only)."""

from __future__ import annotations

import base64
import dataclasses
import io
import re
import secrets
import shutil
import sqlite3
from pathlib import Path
from urllib.parse import parse_qs, quote_plus, urlsplit

import pytest
from flask.testing import FlaskClient

from intake.app import create_app
from intake.app.journalist import SESSION_COOKIE as JOURNALIST_COOKIE
from intake.app.sealed_cookies import CODENAME_COOKIE, RECEIPT_COOKIE
from intake.app.sessions import COOKIE_NAME
from intake.codename import derive_source_keys, generate_codename
from intake.store.connection import connect
from intake.wordlists.layout import as_typed_on_latin_layout, as_typed_on_russian_layout
from keys.reply_bundle import seal_reply
from tests.fixtures_app import post_upload, start_as_new_source, upload_body
from tests.fixtures_newsroom import Newsroom, csrf_token, download_export, make_newsroom, sign_in
from tests.sqlcipher_pages import (
    PageDecryptionError,
    as_plain_database,
    decrypted_pages,
    decrypted_wal_frames,
)
from tests.test_export_import import reply_bundle

LARGE_FILE = 600 * 1024  # over a slot (256 KiB): its envelope goes to intake.db-slots but its header


def _marker(kind: str) -> str:
    return f"SEIZED-{kind}-{secrets.token_hex(10)}"


def _marked_content(marker: str, size: int) -> bytes:
    """The marker at the start of every 4 KiB block: any stored piece of the file shows it."""
    block = marker.encode() + b"." * (4096 - len(marker))
    return (block * (size // 4096 + 1))[:size]


@dataclasses.dataclass
class Seen:
    """What the session made or typed, to look for in the seized copy."""

    secrets: dict[str, bytes] = dataclasses.field(default_factory=dict)  # what: needle, found nowhere
    allowed: dict[str, tuple[bytes, str]] = dataclasses.field(default_factory=dict)  # what: (needle, its one table.column)
    designations: list[str] = dataclasses.field(default_factory=list)  # stored in the clear: the check of the check

    def text(self, what: str, value: str) -> None:
        """A value, in each form it might take: as is, upper and lower case, form-encoded."""
        variants = {}
        for form, variant in (("", value), (" upper", value.upper()), (" lower", value.lower()),
                              (" form-encoded", quote_plus(value))):
            variants.setdefault(variant.encode("utf-8"), f"{what}{form}")
        self.secrets.update({label: needle for needle, label in variants.items()})

    def codename(self, what: str, codename: str) -> None:
        self.text(what, codename)
        self.text(f"{what} without spaces", codename.replace(" ", ""))

    def cookie(self, client: FlaskClient, name: str, what: str) -> None:
        cookie = client.get_cookie(name)
        assert cookie is not None and cookie.value, f"no {name} cookie"
        self.secrets[what] = cookie.value.encode()
        self.secrets[f"{what}, decoded"] = base64.urlsafe_b64decode(cookie.value + "=" * (-len(cookie.value) % 4))


def _source_client(app) -> FlaskClient:
    return app.test_client()


def _log_in(client: FlaskClient, typed: str):
    return client.post("/login", data={"csrf_token": csrf_token(client.get("/login").text), "codename": typed})


def _refused_upload(token: str, kept_message: str, kept_file: tuple[str, bytes, str],
                    refused_part: bytes, after: tuple[str, bytes, str]) -> tuple[bytes, str]:
    """The form's token, a message and a file (both whole, so kept), then a part the form never
    sends (the refusal) and a file after it (never read as a part)."""
    body, content_type = upload_body(token, message=kept_message, files=[kept_file])
    boundary = content_type.split("boundary=")[1]
    name, content, kind = after
    tail = (f'--{boundary}\r\nContent-Disposition: form-data; name="website"\r\n\r\n'.encode() + refused_part + b"\r\n"
            + f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
              f"Content-Type: {kind}\r\n\r\n".encode() + content + b"\r\n" + f"--{boundary}--\r\n".encode())
    return body.removesuffix(f"--{boundary}--\r\n".encode()) + tail, content_type


def _session(tmp_path: Path) -> tuple[Newsroom, Seen]:
    newsroom = make_newsroom(tmp_path)
    settings = dataclasses.replace(newsroom.settings, upload_chunk_bytes=64 * 1024)
    source_app = create_app(settings, TESTING=True)
    seen = Seen()

    def keys_of(codename: str):
        return derive_source_keys(codename, settings.codename_salt, opslimit=settings.kdf_opslimit, memlimit=settings.kdf_memlimit)

    # Source A (English page): a message, a small file and a large one, each name, type and content marked.
    first = _source_client(source_app)
    codename_a, page = start_as_new_source(first)
    seen.codename("codename A as made", codename_a)
    seen.cookie(first, CODENAME_COOKIE, "codename A's sealed cookie")
    message, small_name, large_name, kind = (_marker(k) for k in ("MESSAGE", "SMALLNAME", "LARGENAME", "TYPE"))
    small_content, large_content = _marker("SMALLCONTENT"), _marker("LARGECONTENT")
    seen.text("message", message)
    seen.text("small file's name", small_name)
    seen.text("large file's name", large_name)
    seen.text("content type", kind)
    seen.text("small file's content", small_content)
    seen.text("large file's content", large_content)
    kind = f"application/x-{kind.lower()}"
    body, content_type = upload_body(csrf_token(page), message=f"the tip: {message}", files=[
        (f"{small_name}.txt", _marked_content(small_content, 3000), kind),
        (f"{large_name}.pdf", _marked_content(large_content, LARGE_FILE), kind)])
    assert post_upload(first, body, content_type).status_code == 303
    seen.cookie(first, RECEIPT_COOKIE, "upload receipt's sealed cookie")
    receipt = first.get("/thanks").text
    assert small_name in receipt and large_name in receipt  # the receipt names them, from the browser's cookie

    # A refused upload: a message and a file kept whole, then a part the form never sends, then a file.
    kept_message, kept_name, kept_content = _marker("KEPTMESSAGE"), _marker("KEPTNAME"), _marker("KEPTCONTENT")
    refused_part, after_name, after_content = _marker("REFUSEDPART"), _marker("AFTERNAME"), _marker("AFTERCONTENT")
    for what, value in (("kept message of a refused upload", kept_message), ("kept file's name", kept_name),
                        ("kept file's content", kept_content), ("refused part", refused_part),
                        ("name of the file after the refusal", after_name), ("content of the file after the refusal", after_content)):
        seen.text(what, value)
    body, content_type = _refused_upload(csrf_token(first.get("/submit").text), kept_message,
                                         (f"{kept_name}.txt", _marked_content(kept_content, 2000), "text/plain"),
                                         refused_part.encode(), (f"{after_name}.txt", _marked_content(after_content, 2000), "text/plain"))
    refused = post_upload(first, body, content_type)
    assert refused.status_code == 400 and kept_name in refused.text and after_name not in refused.text, refused.text[-2000:]
    first.post("/logout", data={"csrf_token": csrf_token(first.get("/submit").text)})

    # Source B (Russian page): a message; stays logged in.
    second = _source_client(source_app)
    second.get("/language/ru")
    codename_b, page_b = start_as_new_source(second)
    assert re.search("[а-яё]", codename_b)
    seen.codename("codename B as made", codename_b)
    body, content_type = upload_body(csrf_token(page_b), message=f"второе: {_marker('MESSAGEB')}")
    assert post_upload(second, body, content_type).status_code == 303
    seen.cookie(second, COOKIE_NAME, "source B's session token")

    # A login with a codename nobody has, typed in capitals.
    stranger = _source_client(source_app)
    wrong = generate_codename()
    seen.codename("failed login's codename", wrong)
    assert _log_in(stranger, "  ".join(wrong.upper().split())).status_code == 401

    # Journalists: a wrong passphrase, a name nobody has, then alice signs in, exports and uploads a reply.
    wrong_passphrase, unknown_name = _marker("WRONGPASS"), _marker("NOBODY").lower()
    seen.text("wrong passphrase", wrong_passphrase)
    seen.text("unknown journalist name", unknown_name)
    journalists = newsroom.journalist_app
    assert sign_in(journalists.test_client(), newsroom.bob, passphrase=wrong_passphrase).status_code == 401
    unknown = journalists.test_client()
    assert unknown.post("/login", data={"csrf_token": csrf_token(unknown.get("/login").text), "name": unknown_name,
                                        "passphrase": wrong_passphrase, "code": "123456"}).status_code == 401
    alice = journalists.test_client()
    assert sign_in(alice, newsroom.alice).status_code == 303
    seen.cookie(alice, JOURNALIST_COOKIE, "alice's session token")
    for journalist in (newsroom.alice, newsroom.bob):
        enrolment = journalist.enrolment
        seen.text(f"{journalist.name}'s passphrase", enrolment.passphrase)
        private_b32 = enrolment.client_auth_line.rsplit(":", 1)[1]
        seen.text(f"{journalist.name}'s client-auth private key", private_b32)
        seen.secrets[f"{journalist.name}'s client-auth private key, raw"] = base64.b32decode(private_b32.upper() + "=" * (-len(private_b32) % 8))
        (totp_secret,) = parse_qs(urlsplit(enrolment.totp_uri).query)["secret"]
        # The server checks codes with it: kept (in the encrypted database) in its one column.
        seen.allowed[f"{journalist.name}'s TOTP secret"] = (totp_secret.encode(), "journalists.totp_secret")
        seen.secrets[f"{journalist.name}'s TOTP secret, raw"] = base64.b32decode(totp_secret + "=" * (-len(totp_secret) % 8))
    download_export(alice)
    keys_a = keys_of(codename_a)
    reply_marker = _marker("REPLY")
    seen.text("reply's text", reply_marker)
    with newsroom.store() as store:
        (source_a,) = [row for row in store._conn.execute("SELECT id, designation FROM sources WHERE lookup_id = ?", (keys_a.lookup_id,))]
        seen.designations = [designation for (designation,) in store._conn.execute("SELECT designation FROM sources")]
    bundle = reply_bundle(newsroom, newsroom.alice.identity, [(source_a[0], seal_reply(f"We read it. {reply_marker}", keys_a.reply_public_key))])
    uploaded = alice.post("/replies", data={"csrf_token": csrf_token(alice.get("/sources").text),
                                            "bundle": (io.BytesIO(bundle), "replies.bundle")}, content_type="multipart/form-data")
    assert ": 1 added" in uploaded.text

    # Source A comes back with its codename typed on the Russian layout, in capitals, and reads the reply;
    # source B with its own typed on the Latin layout.
    typed_a = "  ".join(as_typed_on_russian_layout(codename_a).upper().split())
    typed_b = as_typed_on_latin_layout(codename_b)
    seen.codename("codename A as typed", typed_a)
    seen.codename("codename B as typed", typed_b)
    assert _log_in(first, typed_a).status_code == 303
    assert reply_marker in first.get("/replies").text
    seen.cookie(first, COOKIE_NAME, "source A's session token")
    assert _log_in(_source_client(source_app), typed_b).status_code == 303
    for what, codename in (("A", codename_a), ("B", codename_b)):
        keys = keys_of(codename)
        seen.secrets[f"source {what}'s reply secret key"] = keys.reply_secret_key
        seen.allowed[f"source {what}'s lookup id"] = (keys.lookup_id, "sources.lookup_id")
    return newsroom, seen


def _cells(conn) -> list[tuple[str, object]]:
    """(table.column, value) of every column of every row of every table, SQLite's own included."""
    cells = []
    for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
        columns = [row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')]
        for row in conn.execute(f'SELECT * FROM "{table}"'):
            cells += [(f"{table}.{column}", value) for column, value in zip(columns, row)]
    cells += [(f"sqlite_master.{column}", value) for row in conn.execute("SELECT * FROM sqlite_master")
              for column, value in zip(("type", "name", "tbl_name", "rootpage", "sql"), row)]
    return cells


def _as_bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


def _problems(copy: Path, key: bytes, seen: Seen, scratch: Path) -> list[str]:
    problems = []
    every = {**seen.secrets, **{what: needle for what, (needle, _column) in seen.allowed.items()}}
    # 1. Raw bytes of every file: ciphertext only, whatever the key.
    files = [path for path in sorted(copy.rglob("*")) if path.is_file()]
    assert {"intake.db", "intake.db-slots", "intake.db-wal"} <= {path.name for path in files}
    for path in files:
        data = path.read_bytes()
        problems += [f"{path.relative_to(copy)} holds the {what} as written" for what, needle in every.items() if needle in data]
    # 2. Every decrypted page and WAL page image, free space and free pages included.
    pages = decrypted_pages(copy / "intake.db", key)
    frames = decrypted_wal_frames(copy / "intake.db-wal", copy / "intake.db", key)
    with sqlite3.connect(as_plain_database(pages, scratch / "decrypted.db")) as plain:  # the decryption is right
        assert plain.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    decrypted = b"\0".join(pages + frames)
    for designation in seen.designations:  # stored in the clear inside the database: the pages are read
        assert designation.encode() in decrypted, f"designation {designation!r} not in the decrypted pages"
    problems += [f"a decrypted page of intake.db holds the {what}" for what, needle in seen.secrets.items() if needle in decrypted]
    # 3. Every column of every table.
    conn = connect(copy / "intake.db", key, busy_timeout_ms=1000)
    try:
        cells = _cells(conn)
    finally:
        conn.close()
    allowed_found = {what: 0 for what in seen.allowed}
    for place, value in cells:
        data = _as_bytes(value)
        problems += [f"{place} holds the {what}" for what, needle in seen.secrets.items() if needle in data]
        for what, (needle, column) in seen.allowed.items():
            if needle in data:
                if place != column:
                    problems.append(f"{place} holds the {what} (kept in {column} only)")
                else:
                    allowed_found[what] += 1
                    if data != needle:
                        problems.append(f"{place} holds the {what} with something else")
    # Kept where it must be, and only there: once in a row, no stale copy in a page.
    for what, (needle, column) in seen.allowed.items():
        assert allowed_found[what] == 1, f"the {what} is not in {column} once ({allowed_found[what]})"
        if column == "journalists.totp_secret":
            copies = decrypted.count(needle)
            if copies != 1:
                problems.append(f"the decrypted pages hold {copies} copies of the {what} (one row keeps it)")
    return problems


def test_a_seized_data_dir_holds_no_content_name_codename_or_secret_in_any_table_page_or_file(tmp_path: Path):
    newsroom, seen = _session(tmp_path)
    assert len(seen.secrets) > 80
    copy = tmp_path / "seized"
    shutil.copytree(newsroom.settings.data_dir, copy)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with newsroom.store() as store:
        assert store._conn.execute("SELECT count(*) FROM slots WHERE submission_id IS NOT NULL").fetchone()[0] > 0  # the large file went there
    problems = _problems(copy, newsroom.settings.db_key, seen, scratch)
    assert not problems, "the seized copy holds:\n" + "\n".join(problems)


def test_the_page_reader_sees_what_sql_no_longer_shows_and_every_wal_frame(tmp_path: Path):
    """The check of the check: decrypted pages show a deleted row that SQL no longer returns (with
    secure_delete off), a row still only in the WAL, and refuse the wrong key."""
    key = secrets.token_bytes(32)
    conn = connect(tmp_path / "intake.db", key, busy_timeout_ms=1000, create=True)
    conn.execute("PRAGMA secure_delete = OFF")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("CREATE TABLE t (x TEXT)")
    conn.execute("INSERT INTO t VALUES ('KEEP-ME'), ('DELETED-ROW-MARKER')")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("DELETE FROM t WHERE x = 'DELETED-ROW-MARKER'")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("INSERT INTO t VALUES ('ONLY-IN-THE-WAL')")
    shutil.copytree(tmp_path, tmp_path.parent / "copy")
    conn.close()
    copy = tmp_path.parent / "copy"
    pages = b"".join(decrypted_pages(copy / "intake.db", key))
    assert b"DELETED-ROW-MARKER" in pages and b"KEEP-ME" in pages and b"ONLY-IN-THE-WAL" not in pages
    assert b"ONLY-IN-THE-WAL" in b"".join(decrypted_wal_frames(copy / "intake.db-wal", copy / "intake.db", key))
    with pytest.raises(PageDecryptionError):
        decrypted_pages(copy / "intake.db", secrets.token_bytes(32))
