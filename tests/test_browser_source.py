"""A real browser with JavaScript off walks the whole source journey against gunicorn.

Headless Chromium (Debian's, driven by Playwright through `executable_path`)
with JavaScript disabled, as in Tor Browser at the Safest level: landing, get a
codename, send a message and a file, confirmation, log out, come back with the
codename, read a journalist's reply, delete it. No request may leave the
origin and no script may run. A screenshot of each step is kept in the test's
temp dir (`--basetemp` to choose where) for a person to look at.
"""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from intake.codename import derive_source_keys
from keys.envelope import Metadata, encrypt_bytes
from keys.envelope_reader import EnvelopeReader
from tests.fixtures_browser import launch_chromium
from tests.fixtures_server import IntakeServer

pytestmark = pytest.mark.slow

@pytest.fixture
def browser_context(intake_server: IntakeServer) -> Iterator:
    with launch_chromium() as browser:
        context = browser.new_context(java_script_enabled=False, locale="en-US", viewport={"width": 1000, "height": 900})
        yield context
        context.close()


class Journey:
    """Records what the browser did: every request, anything that left the origin, any script activity."""

    def __init__(self, context, origin: str, shots: Path):
        self.origin = origin.rstrip("/") + "/"
        self.shots = shots
        self.requests: list[str] = []
        self.left_origin: list[str] = []
        self.script_activity: list[str] = []
        self.step = 0
        context.route("**/*", self._guard)
        self.page = context.new_page()
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("console", lambda message: self.script_activity.append(f"console: {message.type}"))
        self.page.on("pageerror", lambda error: self.script_activity.append("page error"))

    def _guard(self, route) -> None:
        if route.request.url.startswith(self.origin):
            route.continue_()
        else:
            self.left_origin.append(route.request.url)
            route.abort()

    def shot(self, name: str) -> None:
        """Screenshot the step; every page must be script-free."""
        self.step += 1
        assert self.page.locator("script").count() == 0, f"a <script> element on the {name} page"
        self.page.screenshot(path=str(self.shots / f"{self.step:02d}-{name}.png"), full_page=True)


def _stored_items(server: IntakeServer) -> dict[str, bytes]:
    """What the journalist can read from the store: {kind or file name: plaintext}."""
    items = {}
    key = server.journalists[0].private_key
    with server.open_store() as store:
        for submission in store.submissions():
            reader = EnvelopeReader(io.BytesIO(b"".join(store.submission_ciphertext(submission.id))), key)
            items[reader.metadata.name or reader.metadata.kind] = reader.read()
    return items


def _reply_as_journalist(server: IntakeServer, codename: str, text: str) -> str:
    """Seal a reply to the source's reply key and store it, as importing a reply bundle does; returns the source id."""
    settings = server.settings
    keys = derive_source_keys(codename, settings.codename_salt, opslimit=settings.kdf_opslimit, memlimit=settings.kdf_memlimit)
    with server.open_store() as store:
        source = store.source_by_lookup(keys.lookup_id)
        assert source is not None, "the codename shown does not open the source it made"
        envelope = encrypt_bytes(text.encode(), [source.reply_public_key], Metadata("reply", content_type="text/plain"))
        store.add_reply(source.id, store.active_recipients()[0].journalist_id, envelope)
        return source.id


def test_a_source_walks_the_whole_journey_with_javascript_off(intake_server: IntakeServer, browser_context, tmp_path: Path) -> None:
    journey = Journey(browser_context, intake_server.url, tmp_path)
    page = journey.page
    message = f"The ledger is in the blue binder {secrets.token_hex(8)}"
    document = f"minutes of the meeting {secrets.token_hex(8)}\n".encode() * 50

    page.goto(intake_server.url + "/")
    assert page.get_by_role("heading", level=1).inner_text() == "Share information with our journalists, safely"
    journey.shot("landing")

    page.get_by_role("button", name="First time: get a codename and send").click()
    words = page.locator(".codename span").all_inner_texts()
    assert len(words) >= 7
    codename = " ".join(words)
    journey.shot("codename")

    page.locator("#message").fill(message)
    page.locator("#files").set_input_files(files=[{"name": "minutes.txt", "mimeType": "text/plain", "buffer": document}])
    page.get_by_role("button", name="Send securely").click()
    assert page.get_by_role("heading", level=1).inner_text() == "Thank you, we received it"
    journey.shot("received")
    assert _stored_items(intake_server) == {"message": message.encode(), "minutes.txt": document}

    page.get_by_role("button", name="Log out").click()
    assert page.get_by_role("heading", level=1).inner_text() == "You are logged out"
    assert "New identity" in page.locator("main").inner_text()
    journey.shot("logged-out")

    reply = f"Thank you. Can you tell us who else attended? {secrets.token_hex(4)}"
    source_id = _reply_as_journalist(intake_server, codename, reply)

    page.goto(intake_server.url + "/")
    page.get_by_role("link", name="I have a codename: check replies or send more").click()
    page.get_by_label("Codename").fill(codename)
    journey.shot("login")
    page.get_by_role("button", name="Continue").click()
    assert page.get_by_role("heading", level=1).inner_text() == "Status and replies"
    assert page.get_by_role("heading", name="Replies from our journalists").count() == 1
    assert page.locator(".reply .text").inner_text() == reply
    journey.shot("reply")

    page.get_by_role("button", name="Delete this reply").click()
    assert page.get_by_role("status").inner_text() == "The reply was deleted."
    assert page.locator(".reply").count() == 0
    journey.shot("reply-deleted")
    with intake_server.open_store() as store:
        assert store.replies_for(source_id) == []

    assert journey.left_origin == []
    assert all(url.startswith(journey.origin) for url in journey.requests)
    assert journey.script_activity == []
