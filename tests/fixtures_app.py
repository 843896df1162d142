"""Fixtures for the source web app: a real data dir, a real store, the Flask test client."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
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
_CODENAME_RE = re.compile(r'<p class="codename" lang="en">(.*?)</p>', re.S)


@dataclass(frozen=True)
class AppInstance:
    settings: Settings
    app: Flask
    journalists: tuple[Identity, ...]


def make_instance(tmp_path: Path, journalist_count: int = 2, **overrides) -> AppInstance:
    identities = tuple(Identity.generate(f"journalist{i}") for i in range(journalist_count))
    public_files = []
    for identity in identities:
        path = tmp_path / f"{identity.name}.public"
        identity.public.save(path)
        public_files.append(path)
    data_dir = tmp_path / "data"
    init_data_dir(data_dir, public_files)
    settings = load_settings(data_dir, **{**FAST_KDF, **overrides})
    return AppInstance(settings, create_app(settings, TESTING=True), identities)


@pytest.fixture
def instance(tmp_path: Path) -> AppInstance:
    return make_instance(tmp_path)


@pytest.fixture
def client(instance: AppInstance) -> Iterator[FlaskClient]:
    with instance.app.test_client() as test_client:
        yield test_client


@pytest.fixture
def store(instance: AppInstance) -> Iterator[Store]:
    with Store.open(instance.settings) as opened:
        yield opened


def csrf_token(html: str) -> str:
    match = _CSRF_RE.search(html)
    assert match, "the page has no CSRF token"
    return match.group(1)


def start_as_new_source(client: FlaskClient) -> tuple[str, str]:
    """Walk the first visit; returns (codename, the codename page's HTML)."""
    landing = client.get("/")
    page = client.post("/new", data={"csrf_token": csrf_token(landing.text)})
    assert page.status_code == 200
    words = re.findall(r"<span>([a-z-]+)</span>", _CODENAME_RE.search(page.text).group(1))
    return " ".join(words), page.text


def upload_body(token: str | None, *, message: str | None = None, files: list[tuple[str, bytes, str]] = (),
                honeypot: str = "", boundary: str = "intakeboundary7MA4YWxkTrZu0gW") -> tuple[bytes, str]:
    """A multipart body in the order the real form sends it (token first)."""
    parts = []

    def part(disposition: str, body: bytes, content_type: str | None = None) -> None:
        head = f"--{boundary}\r\nContent-Disposition: form-data; {disposition}\r\n"
        if content_type:
            head += f"Content-Type: {content_type}\r\n"
        parts.append(head.encode() + b"\r\n" + body + b"\r\n")

    if token is not None:
        part('name="csrf_token"', token.encode())
    part('name="website"', honeypot.encode())
    if message is not None:
        part('name="message"', message.encode())
    for name, content, content_type in files:
        part(f'name="files"; filename="{name}"', content, content_type)
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def post_upload(client: FlaskClient, body: bytes, content_type: str):
    return client.post("/submit", data=body, headers={"Content-Type": content_type})
