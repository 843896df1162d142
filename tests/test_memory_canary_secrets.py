"""Canary in memory, continued (tests/test_memory_canary.py): once a request has ended, no gunicorn
process holds the secrets a source's login derives (the reply secret key, the lookup id), a reply
decrypted for the source's page, or a journalist's TOTP secret (SECURITY.md §2, "Plaintext and
secrets in memory"; docs/journalists.md: a reply "is decrypted in memory ... for that page only").

Same method as tests/test_memory_canary.py: the real app under real gunicorn with
deploy/gunicorn.conf.py, every writable mapping of the master and both workers read through
/proc/PID/mem 3 s after the request, the scan proven to have read each process (its probe)."""

from __future__ import annotations

import base64
import io
import secrets
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from intake.codename import derive_source_keys
from intake.exchange import import_reply_bundle
from intake.server_identity import server_box_keys, server_public_key
from keys.reply_bundle import SealedReply, seal_reply, seal_routing, write_reply_bundle
from tests.fixtures_server import IntakeServer, SourceClient, run_intake_server
from tests.test_memory_canary import (
    PROBE_ENVIRONMENT,
    SETTLE_SECONDS,
    _report,
    _scan,
    _typed_differently,
    gunicorn_pids,
    journalist_server,  # noqa: F401  (a fixture)
)


@pytest.fixture(scope="module")
def source_server(tmp_path_factory) -> Iterator[IntakeServer]:
    with run_intake_server(tmp_path_factory.mktemp("canary-secrets"), env=PROBE_ENVIRONMENT) as running:
        yield running


def _source_keys(server: IntakeServer, codename: str):
    """The keys the server derives from this codename, derived here the way the app does."""
    settings = server.settings
    return derive_source_keys(codename, settings.codename_salt, opslimit=settings.kdf_opslimit, memlimit=settings.kdf_memlimit)


def _new_source(server: IntakeServer) -> tuple[str, str]:
    """A new source that sent a message; returns its codename and source id (found by its lookup id)."""
    client = SourceClient(server.url)
    codename, page = client.start_as_new_source()
    assert client.send(page, "a first message").status == 200
    lookup_id = _source_keys(server, codename).lookup_id
    with server.open_store() as store:
        (source_id,) = [row[0] for row in store._conn.execute("SELECT id FROM sources WHERE lookup_id = ?", (lookup_id,))]
    return codename, source_id


def _reply_secret_key(server: IntakeServer, codename: str) -> dict[str, bytes]:
    return {"reply secret key": _source_keys(server, codename).reply_secret_key}


def _no_marker_anywhere(found: dict[str, dict[int, int]]) -> bool:
    return all(count == 0 for per_pid in found.values() for count in per_pid.values())


@pytest.mark.slow
def test_a_login_leaves_no_reply_secret_key_in_the_servers_memory(source_server: IntakeServer):
    """The reply secret key a login derives (PyNaCl holds it in `bytes`, freed at the request's
    end; the session keeps it only sealed) is in no process 3 s after the login."""
    codename, _source_id = _new_source(source_server)
    time.sleep(SETTLE_SECONDS)
    page = SourceClient(source_server.url).log_in(_typed_differently(codename))
    assert page.status == 200
    found = _scan(gunicorn_pids(source_server), _reply_secret_key(source_server, codename))
    print(_report("source login, reply secret key", found))
    assert _no_marker_anywhere(found), found


@pytest.mark.slow
def test_a_reply_read_on_the_source_page_leaves_no_plaintext_in_the_servers_memory(source_server: IntakeServer):
    """A reply decrypted for the source's page, and the key that opened it, are in no process
    once that page has been sent."""
    codename, source_id = _new_source(source_server)
    marker = "CANARY-REPLY-" + secrets.token_hex(12)
    keys = _source_keys(source_server, codename)
    bundle = io.BytesIO()
    routing = seal_routing(source_id, server_public_key(source_server.data_dir).encryption_key)
    sealed = seal_reply(f"we read it: {marker} (delete this)", keys.reply_public_key)
    write_reply_bundle(bundle, source_server.journalists[0], [SealedReply(routing, sealed)])
    with source_server.open_store() as store:  # as the journalist app imports it (that process is not scanned)
        bundle.seek(0)
        assert import_reply_bundle(store, bundle, server_box_keys(source_server.data_dir))
    time.sleep(SETTLE_SECONDS)
    client = SourceClient(source_server.url)
    assert client.log_in(codename).status == 200
    replies = client.get("/replies")
    assert replies.status == 200 and marker in replies.text  # decrypted and shown: the scan below means something
    found = _scan(gunicorn_pids(source_server), {"reply": marker.encode(), **_reply_secret_key(source_server, codename)})
    print(_report("reply page", found))
    assert _no_marker_anywhere(found), found


def _totp_secret(journalist) -> str:
    (secret,) = parse_qs(urlsplit(journalist.enrolment.totp_uri).query)["secret"]
    return secret


def _sign_in(server, newsroom, journalist) -> None:
    client = SourceClient(server.url)
    login = client.get("/login")
    page = client.submit(login, login.form_with("name", "passphrase", "code"),
                         {"name": journalist.name, "passphrase": journalist.enrolment.passphrase, "code": journalist.code()})
    assert f"Signed in as {journalist.name}" in page.text


@pytest.mark.slow
def test_a_journalist_sign_in_leaves_no_decoded_totp_secret_in_the_servers_memory(journalist_server):  # noqa: F811
    """The TOTP secret as pyotp decodes it (the HMAC key, `bytes`) is in no process once the
    sign-in has ended."""
    server, newsroom = journalist_server
    _sign_in(server, newsroom, newsroom.bob)
    secret = _totp_secret(newsroom.bob)
    found = _scan([server.process.pid, *server.worker_pids()], {"TOTP secret (raw)": base64.b32decode(secret + "=" * (-len(secret) % 8))})
    print(_report("journalist sign-in, decoded TOTP secret", found))
    assert _no_marker_anywhere(found), found


# Stored values (the lookup id, the TOTP secret as stored) are not in these scans: SECURITY.md §2
# says why ("Not covered: what the database itself holds"). They were measured in the workers on
# 2026-12-04 (3 to 5 copies of a lookup id after a login, 2 to 3 of a stored TOTP secret after a
# sign-in), in SQLite's page cache and the login query's cached statement.
