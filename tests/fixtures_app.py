"""Fixtures for the source web app: a real data dir, a real store, the Flask test client."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from nacl import pwhash

from intake.app import create_app
from intake.config import Settings, load_settings
from intake.setup import init_data_dir
from intake.store import Store
from keys.identity import Identity

FAST_KDF = {"kdf_opslimit": pwhash.argon2id.OPSLIMIT_MIN, "kdf_memlimit": pwhash.argon2id.MEMLIMIT_MIN}
_CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
_CODENAME_RE = re.compile(r'<p class="codename" lang="(?:en|ru)">(.*?)</p>', re.S)


class AppInstance:
    """A test instance: its settings, its app and its journalists' identities."""

    def __init__(self, settings: Settings, app: Flask, journalists: tuple[Identity, ...]):
        self.settings = settings
        self.app = app
        self.journalists = journalists

    def __repr__(self) -> str:  # test reports (hypothesis prints arguments) must not show keys
        return f"AppInstance({self.settings.data_dir})"


def make_instance(tmp_path: Path, journalist_count: int = 2, **overrides) -> AppInstance:
    identities = tuple(Identity.generate(f"journalist{i}") for i in range(journalist_count))
    public_files = []
    for identity in identities:
        path = tmp_path / f"{identity.name}.public"
        identity.public.save(path)
        public_files.append(path)
    data_dir = tmp_path / "data"
    init_data_dir(data_dir, public_files, key_in_data_dir=True)
    settings = load_settings(data_dir, **{**FAST_KDF, **overrides})
    return AppInstance(settings, create_app(settings, TESTING=True), identities)


@pytest.fixture
def app_instance(tmp_path: Path) -> AppInstance:
    return make_instance(tmp_path)


@pytest.fixture
def source_client(app_instance: AppInstance) -> FlaskClient:
    # Not used as a context manager: a kept request context would share `g` between clients.
    return app_instance.app.test_client()


def counts(instance: AppInstance) -> dict[str, int]:
    with Store.open(instance.settings) as store:
        return store.counts()


def csrf_token(html: str) -> str:
    match = _CSRF_RE.search(html)
    assert match, "the page has no CSRF token"
    return match.group(1)


def start_as_new_source(client: FlaskClient) -> tuple[str, str]:
    """Walk the first visit; returns (codename, the codename page's HTML)."""
    landing = client.get("/")
    page = client.post("/new", data={"csrf_token": csrf_token(landing.text)}, follow_redirects=True)  # -> /codename
    assert page.status_code == 200
    words = re.findall(r"<span>([a-zа-яё-]+)</span>", _CODENAME_RE.search(page.text).group(1))
    return " ".join(words), page.text


def upload_body(token: str | None, *, message: str | None = None, files: list[tuple[str, bytes, str]] = (),
                extra_parts: tuple[tuple[str, bytes], ...] = (), boundary: str = "intakeboundary7MA4YWxkTrZu0gW") -> tuple[bytes, str]:
    """A multipart body in the order the real form sends it (token first)."""
    parts = []

    def part(disposition: str, body: bytes, content_type: str | None = None) -> None:
        head = f"--{boundary}\r\nContent-Disposition: form-data; {disposition}\r\n"
        if content_type:
            head += f"Content-Type: {content_type}\r\n"
        parts.append(head.encode() + b"\r\n" + body + b"\r\n")

    if token is not None:
        part('name="csrf_token"', token.encode())
    for name, value in extra_parts:  # parts the real form never sends
        part(f'name="{name}"', value)
    if message is not None:
        part('name="message"', message.encode())
    for name, content, content_type in files:
        part(f'name="files"; filename="{name}"', content, content_type)
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def post_upload(client: FlaskClient, body: bytes, content_type: str):
    return client.post("/submit", data=body, headers={"Content-Type": content_type})
