"""Fuzz the journalist sign-in form (POST /login of the journalist app) through Flask's test
client, against a real store in memory (tmpfs) with one enrolled journalist.

The body is the form as a browser would send it (the valid CSRF token first) followed by
the fuzzer's bytes, so name, passphrase and TOTP code fields, their encodings, repeats and
oversized values all reach the app's own checks. Exceptions propagate in testing mode.

Contract: an answer below 500 (a page, a redirect, a refusal); never an exception.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import atheris

from common import run

# Coverage of the sign-in code and the form parsing under it; the rest of Flask, Jinja and Babel
# is left uninstrumented, which makes a run several times faster.
with atheris.instrument_imports(include=["intake.app.journalist", "intake.journalist_auth", "intake.app.security",
                                         "werkzeug.formparser", "werkzeug.urls", "werkzeug.sansio.request"]):
    from intake.app.journalist import create_journalist_app

from nacl import pwhash

from intake.config import load_settings
from intake.enrolment import reset_login
from intake.setup import init_data_dir
from intake.store import Store
from keys.identity import Identity

_work = tempfile.TemporaryDirectory(prefix="intake-fuzz-login-", dir="/dev/shm")


def _client():
    identity = Identity.generate("alice")
    public_file = Path(_work.name) / "alice.public"
    identity.public.save(public_file)
    data_dir = Path(_work.name) / "data"
    init_data_dir(data_dir, [public_file], key_in_data_dir=True)  # a throwaway store in memory
    settings = load_settings(data_dir)
    with Store.open(settings) as store:
        reset_login(store, data_dir, "alice", opslimit=pwhash.argon2id.OPSLIMIT_MIN, memlimit=pwhash.argon2id.MEMLIMIT_MIN)
    app = create_journalist_app(settings, TESTING=True)
    client = app.test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    return client, token


CLIENT, TOKEN = _client()


def test_one_input(data: bytes) -> None:
    body = f"csrf_token={TOKEN}&".encode() + data
    response = CLIENT.post("/login", data=body, content_type="application/x-www-form-urlencoded")
    assert response.status_code < 500, response.status_code


if __name__ == "__main__":
    run(test_one_input)
