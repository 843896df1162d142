"""Canary: after real submissions, the secret text appears nowhere on the server's disk,
and the request never opened any file for writing (no plaintext temp file, however brief)."""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from intake.store import Store
from intake.store.slots_file import slots_path
from keys.envelope_reader import decrypt_bytes
from tests.fixtures_app import csrf_token, make_instance, post_upload, start_as_new_source, upload_body

SCAN_ROOTS = (Path(tempfile.gettempdir()), Path("/var/tmp"), Path("/dev/shm"))
_BLOCK = 1 << 20

# Python-level file opens for writing, recorded only while a test asks for it.
# (Audit hooks cannot be removed, so the hook stays installed and idle otherwise.)
_write_opens: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if _write_opens is None or event != "open":
        return
    path, mode, flags = args
    writing = (isinstance(mode, str) and any(ch in mode for ch in "wax+")) or (
        isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
    )
    if writing:
        _write_opens.append(str(path))


sys.addaudithook(_audit)


class RecordWrites:
    def __enter__(self) -> list[str]:
        global _write_opens
        _write_opens = []
        return _write_opens

    def __exit__(self, *exc_info) -> None:
        global _write_opens
        _write_opens = None


def files_under(roots: Iterable[Path], since: float) -> Iterable[Path]:
    """Regular files changed since `since`: only they can hold a canary made after it."""
    for root in roots:
        for dirpath, _dirnames, filenames in os.walk(root, onerror=lambda error: None):
            for name in filenames:
                path = Path(dirpath) / name
                try:
                    info = path.lstat()
                except OSError:
                    continue
                if path.is_file() and not path.is_symlink() and max(info.st_mtime, info.st_ctime) >= since:
                    yield path


def files_containing(needles: list[bytes], roots: Iterable[Path], since: float) -> list[tuple[Path, bytes]]:
    overlap = max(len(needle) for needle in needles)
    hits = []
    for path in files_under(roots, since):
        try:
            with open(path, "rb") as f:
                tail = b""
                while block := f.read(_BLOCK):
                    window = tail + block
                    hits += [(path, needle) for needle in needles if needle in window]
                    tail = window[-overlap:]
        except OSError:
            continue
    return hits


def test_canary_never_reaches_the_disk_and_no_file_is_written(tmp_path):
    since = time.time() - 1
    instance = make_instance(tmp_path)
    client = instance.app.test_client()
    canary = f"CANARY-{secrets.token_hex(16)}"
    codename, page = start_as_new_source(client)
    # Larger than Werkzeug's 500 KiB in-memory limit, so a regression to request.files would spool it.
    content = (canary.encode() + os.urandom(300_000)) * 3 + canary.encode()
    body, content_type = upload_body(
        csrf_token(page),
        message=f"the secret is {canary}",
        files=[(f"{canary}.txt", content, "text/plain"), ("second.bin", canary.encode() * 1000, "application/octet-stream")],
    )
    with RecordWrites() as write_opens:
        response = post_upload(client, body, content_type)
    assert response.status_code == 303
    # The one file the request may open for writing is the store's own slots file, where the
    # large file's ciphertext goes (the canary is looked for in it below, as everywhere).
    assert [path for path in write_opens if Path(path) != slots_path(instance.settings.db_path)] == []

    # The journalist can read all of it, so the canary really went in.
    with Store.open(instance.settings) as store:
        items = [decrypt_bytes(b"".join(store.submission_ciphertext(s.id)), instance.journalists[0].private_key) for s in store.submissions()]
    assert [meta.kind for meta, _ in items] == ["message", "file", "file"]
    assert canary in items[0][1].decode() and items[1][0].name == f"{canary}.txt" and items[1][1] == content

    needles = [canary.encode(), canary.encode("utf-16-le"), codename.encode()]
    roots = [instance.settings.data_dir, *SCAN_ROOTS]
    hits = files_containing(needles, roots, since)
    print(f"\n[canary on disk, app] {len(list(files_under(roots, since)))} files changed during the test scanned, {len(hits)} hits")
    assert hits == []


def test_canary_scan_finds_a_planted_plaintext_file(tmp_path):
    """The scan itself works: a canary written to the temp dir is found."""
    since = time.time() - 1
    canary = f"CANARY-{secrets.token_hex(16)}".encode()
    with tempfile.NamedTemporaryFile(prefix="intake-canary-check-") as planted:
        planted.write(os.urandom(_BLOCK - 5) + canary)  # straddles a block boundary
        planted.flush()
        assert files_containing([canary], SCAN_ROOTS, since) == [(Path(planted.name), canary)]


def test_canary_write_recorder_sees_a_spooled_upload():
    """The recorder itself works: Werkzeug-style spooling of a large upload is caught."""
    with RecordWrites() as write_opens:
        with tempfile.SpooledTemporaryFile(max_size=10) as spooled:
            spooled.write(b"x" * 100)
    assert write_opens


@pytest.mark.slow
def test_canary_through_gunicorn_never_reaches_the_disk(tmp_path):
    """The same through the real server (gunicorn with deploy/gunicorn.conf.py), logs included."""
    from tests.fixtures_server import SourceClient, Upload, run_intake_server

    since = time.time() - 1
    canary = f"CANARY-{secrets.token_hex(16)}"
    with run_intake_server(tmp_path, journalist_count=2) as server:
        client = SourceClient(server.url)
        codename, page = client.start_as_new_source()
        content = (canary.encode() + os.urandom(400_000)) * 2
        done = client.send(page, f"gunicorn secret {canary}", [Upload(f"{canary}.bin", content)])
        assert done.status == 200 and "/thanks" in done.url
        with server.open_store() as store:
            stored = [decrypt_bytes(b"".join(store.submission_ciphertext(s.id)), server.journalists[1].private_key) for s in store.submissions()]
        assert stored[1][0].name == f"{canary}.bin" and stored[1][1] == content
        needles = [canary.encode(), canary.encode("utf-16-le"), codename.encode()]
        hits = files_containing(needles, [tmp_path, *SCAN_ROOTS], since)
        print(f"\n[canary on disk, gunicorn] {len(list(files_under([tmp_path, *SCAN_ROOTS], since)))} files changed "
              f"during the test scanned (data dir, logs, temp dirs), {len(hits)} hits")
        assert hits == []
