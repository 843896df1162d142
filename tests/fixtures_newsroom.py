"""Fixtures for the journalist side: an instance with two enrolled journalists
(alice, bob) who can sign in, the journalist app, and helpers to act as them."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import pyotp
import pytest
from flask import Flask
from flask.testing import FlaskClient
from keys.identity import Identity
from nacl import pwhash

from intake.app import create_app
from intake.app.journalist import create_journalist_app
from intake.config import Settings, load_settings
from intake.enrolment import Enrolment, enrol_journalist, reset_login
from intake.setup import init_data_dir
from intake.store import Store

FAST_KDF = {"kdf_opslimit": pwhash.argon2id.OPSLIMIT_MIN, "kdf_memlimit": pwhash.argon2id.MEMLIMIT_MIN}
FAST_LOGIN_HASH = {"opslimit": pwhash.argon2id.OPSLIMIT_MIN, "memlimit": pwhash.argon2id.MEMLIMIT_MIN}
_CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass(frozen=True, repr=False)
class Journalist:
    identity: Identity
    enrolment: Enrolment

    @property
    def name(self) -> str:
        return self.identity.name

    def code(self, steps_ahead: int = 0) -> str:
        """The TOTP code of the current time step (or a neighbour, which the server also accepts)."""
        totp = pyotp.parse_uri(self.enrolment.totp_uri)
        return totp.at(time.time() + 30 * steps_ahead)


@dataclass(frozen=True, repr=False)
class Newsroom:
    settings: Settings
    source_app: Flask
    journalist_app: Flask
    alice: Journalist
    bob: Journalist

    def store(self) -> Store:
        return Store.open(self.settings)


def make_newsroom(tmp_path: Path, **journalist_config) -> Newsroom:
    identities = [Identity.generate(name) for name in ("alice", "bob")]
    public_files = []
    for identity in identities:
        path = tmp_path / f"{identity.name}.public"
        identity.public.save(path)
        public_files.append(path)
    data_dir = tmp_path / "data"
    # alice comes with `intake init` (and gets a login by reset); bob by `journalist add`.
    init_data_dir(data_dir, public_files[:1], key_in_data_dir=True)
    settings = load_settings(data_dir, **FAST_KDF)
    with Store.open(settings) as store:
        alice = Journalist(identities[0], reset_login(store, data_dir, "alice", **FAST_LOGIN_HASH))
        bob = Journalist(identities[1], enrol_journalist(store, data_dir, identities[1].public, **FAST_LOGIN_HASH))
    return Newsroom(
        settings,
        create_app(settings, TESTING=True),
        create_journalist_app(settings, TESTING=True, **journalist_config),
        alice,
        bob,
    )


@pytest.fixture
def newsroom(tmp_path: Path) -> Newsroom:
    return make_newsroom(tmp_path)


def csrf_token(html: str) -> str:
    match = _CSRF_RE.search(html)
    assert match, "the page has no CSRF token"
    return match.group(1)


def sign_in(client: FlaskClient, journalist: Journalist, *, passphrase: str | None = None, code: str | None = None):
    page = client.get("/login")
    return client.post("/login", data={
        "csrf_token": csrf_token(page.text),
        "name": journalist.name,
        "passphrase": journalist.enrolment.passphrase if passphrase is None else passphrase,
        "code": journalist.code() if code is None else code,
    })


@pytest.fixture
def alice_client(newsroom: Newsroom) -> FlaskClient:
    client = newsroom.journalist_app.test_client()
    assert sign_in(client, newsroom.alice).status_code == 303
    return client


def submit_as_new_source(source_app: Flask, message: str | None, files: list[tuple[str, bytes, str]] = ()) -> tuple[FlaskClient, str]:
    """A new source submits through the source app; returns its client and codename."""
    from tests.fixtures_app import post_upload, start_as_new_source, upload_body

    client = source_app.test_client()
    codename, page = start_as_new_source(client)
    body, content_type = upload_body(csrf_token(page), message=message, files=list(files))
    response = post_upload(client, body, content_type)
    assert response.status_code == 303, response.text
    return client, codename


def download_export(client: FlaskClient, scope: str = "new", sources: list[str] = ()) -> bytes:
    page = client.get("/sources")
    response = client.post("/export", data={"csrf_token": csrf_token(page.text), "scope": scope, "source": list(sources)})
    assert response.status_code == 200, response.text[:500]
    return response.get_data()
