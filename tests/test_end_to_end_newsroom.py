"""The whole newsroom loop with no mocks: real keys made with `intake-keys`, a data dir
made with `intake init`, logins handed out by `intake journalist reset-login`, the real
source and journalist apps, and the offline toolkit decrypting and replying."""

from __future__ import annotations

import html
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pyotp
import pytest
from keys.identity import KDF_MIN, Identity

from intake.app import create_app
from intake.app.journalist import create_journalist_app
from intake.config import load_settings
from intake.store import Store
from tests.fixtures_newsroom import FAST_KDF, csrf_token
from tests.fixtures_app import post_upload, start_as_new_source, upload_body

BIN = Path(sys.executable).parent
MESSAGE = "The minister's office shreds files every Friday at 6pm. Ask about room 4.12."
FILES = [
    ("minutes 2024-03.pdf", b"%PDF-1.7\n" + bytes(range(256)) * 300, "application/pdf"),
    ("voice memo.ogg", b"OggS" + b"\x00\x01\x02" * 50_000, "audio/ogg"),
]
REPLY = "Thank you. Can you tell us who else was in the room?"


def run(*args: str, cwd: Path) -> str:
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{args[0]} {args[1]} failed: {result.stderr}"
    return result.stdout


def login_secrets(output: str) -> tuple[str, str]:
    passphrase = re.search(r"Login passphrase:\s+(.+)", output).group(1).strip()
    totp_uri = re.search(r"(otpauth://\S+)", output).group(1)
    return passphrase, totp_uri


def decrypted_items(folder: Path) -> tuple[Path, dict[str, bytes]]:
    """The one source folder written by `intake-keys decrypt`, and its items' plaintexts
    by original file name ("message" for the message)."""
    (record,) = folder.glob("*/source.json")
    items = json.loads(record.read_text())["items"]
    return record.parent, {item["original_name"] or item["kind"]: (record.parent / item["file"]).read_bytes() for item in items}


def upload_replies(client, data: bytes):
    page = client.get("/sources")
    return client.post("/replies", data={"csrf_token": csrf_token(page.text), "bundle": (io.BytesIO(data), "replies.bundle")},
                       content_type="multipart/form-data")


@pytest.mark.slow
def test_tip_reaches_both_journalists_and_the_reply_reaches_the_source(tmp_path: Path):
    keys, passphrase_file = tmp_path / "laptop", tmp_path / "laptop-passphrase"
    passphrase_file.write_text("correct horse battery staple of the newsroom\n")
    for name in ("alice", "bob"):
        run(BIN / "intake-keys", "generate", "--out", keys, "--name", name, "--kdf-strength", "interactive",
            "--passphrase-file", passphrase_file, cwd=tmp_path)
    data = tmp_path / "data"
    run(BIN / "intake", "init", "--yes", "--data", data, "--journalist-key", keys / "alice.public",
        "--journalist-key", keys / "bob.public", "--db-key-in-data-dir", cwd=tmp_path)
    enrolment = run(BIN / "intake", "journalist", "reset-login", "--data", data, "--name", "alice", cwd=tmp_path)
    login_passphrase, totp_uri = login_secrets(enrolment)
    # On the laptop: the server key file the admin hands over, trusted with the fingerprint read out.
    server_fingerprint = re.search(r"Server key fingerprint.*:\n\s+(.+)", enrolment).group(1).strip()
    run(BIN / "intake-keys", "trust-server", data / "server-signing.public", "--key", keys / "alice.secret",
        "--fingerprint", server_fingerprint, cwd=tmp_path)
    settings = load_settings(data, **FAST_KDF)
    source_app, journalist_app = create_app(settings, TESTING=True), create_journalist_app(settings, TESTING=True)

    # A source submits a message and two files.
    source = source_app.test_client()
    codename, page = start_as_new_source(source)
    body, content_type = upload_body(csrf_token(page), message=MESSAGE, files=FILES)
    assert post_upload(source, body, content_type).status_code == 303

    # Alice signs in with passphrase + TOTP and downloads the new submissions.
    journalist = journalist_app.test_client()
    login_page = journalist.get("/login")
    signed_in = journalist.post("/login", data={"csrf_token": csrf_token(login_page.text), "name": "alice",
                                                "passphrase": login_passphrase, "code": pyotp.parse_uri(totp_uri).now()})
    assert signed_in.status_code == 303
    export = journalist.post("/export", data={"csrf_token": csrf_token(journalist.get("/sources").text), "scope": "new"})
    assert export.status_code == 200
    bundle = tmp_path / "export.bundle"
    bundle.write_bytes(export.get_data())

    # Offline, each journalist decrypts it with their own key and sees exactly what was sent.
    for name in ("alice", "bob"):
        out = tmp_path / f"decrypted-{name}"
        run(BIN / "intake-keys", "decrypt", bundle, "--key", keys / f"{name}.secret",
            "--passphrase-file", passphrase_file, "--out", out, cwd=tmp_path)
        source_dir, items = decrypted_items(out)
        assert items["message"].decode("utf-8") == MESSAGE
        for file_name, content, _ in FILES:
            assert items[file_name] == content
        assert len(items) == 3
        assert json.loads((source_dir / "source.json").read_text())["designation"] in html.unescape(journalist.get("/sources").text)

    # Bob answers offline; the bundle is signed with his key.
    source_dir, _ = decrypted_items(tmp_path / "decrypted-bob")
    replies = tmp_path / "replies.bundle"
    run(BIN / "intake-keys", "reply", "--key", keys / "bob.secret", "--source", source_dir, "--message", REPLY,
        "--out", replies, "--passphrase-file", passphrase_file, cwd=tmp_path)

    # Forged (an impostor's key under bob's name) and unsigned bundles are refused; nothing changes.
    impostor = Identity.generate("bob")
    impostor.save(tmp_path / "impostor.secret", "impostor passphrase", kdf=KDF_MIN)
    (tmp_path / "impostor-passphrase").write_text("impostor passphrase\n")
    run(BIN / "intake-keys", "trust-server", data / "server-signing.public", "--key", tmp_path / "impostor.secret",
        "--fingerprint", server_fingerprint, cwd=tmp_path)
    forged = tmp_path / "forged.bundle"
    run(BIN / "intake-keys", "reply", "--key", tmp_path / "impostor.secret", "--source", source_dir,
        "--message", "Send everything to this address instead.", "--out", forged,
        "--passphrase-file", tmp_path / "impostor-passphrase", cwd=tmp_path)
    for refused in (forged.read_bytes(), replies.read_bytes()[: -(5 + 64)]):
        response = upload_replies(journalist, refused)
        assert response.status_code == 400 and "Nothing was imported" in response.text
        with Store.open(settings) as store:
            assert store.counts()["replies"] == 0

    report = upload_replies(journalist, replies.read_bytes())
    assert report.status_code == 200 and "signed by <strong>bob</strong>" in report.text and ": 1 added" in report.text

    # The source comes back with the codename and reads the reply, then deletes it.
    returning = source_app.test_client()
    login = returning.get("/login")
    assert returning.post("/login", data={"csrf_token": csrf_token(login.text), "codename": codename}).status_code == 303
    page = returning.get("/replies")
    assert REPLY in html.unescape(page.text)
    assert "Send everything" not in page.text
    reply_id = re.search(r'action="/replies/([0-9a-f]+)/delete"', page.text).group(1)
    returning.post(f"/replies/{reply_id}/delete", data={"csrf_token": csrf_token(page.text)})
    assert REPLY not in html.unescape(returning.get("/replies").text)
    with Store.open(settings) as store:
        assert store.counts()["replies"] == 0
