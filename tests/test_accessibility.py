"""Accessibility as a gate: axe-core over every page, in every shipped language.

A real browser (Debian's Chromium through Playwright) walks both interfaces,
served by real gunicorn, in English and Russian, and axe-core (shipped by
axe-playwright-python) checks each page for WCAG 2.0, 2.1 and 2.2, levels A
and AA. Any violation fails, listed with its rule, page and element. The pages
have no scripts of their own: axe is injected into a context with JavaScript on,
for the scan only; the journeys with JavaScript off stay in
test_browser_source.py, and a keyboard-only walk of the source journey runs
here with JavaScript off.

The gate also fails when a page template exists that no step reaches, so a new
page cannot slip past it: add a step for it to ``_walk_source`` or
``_walk_journalist``.

Also scanned: the pages `intake publish` writes for the newsroom's website and
the index.html that `intake-keys decrypt` writes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from nacl.public import PrivateKey

from intake.codename import generate_codename
from intake.store.newsroom import Newsroom as NewsroomStore
from keys.envelope import Metadata, encrypt_bytes
from keys.reply_bundle import seal_reply
from tests.fixtures_keys import KDF_MIN, PASSPHRASE, SERVER_PUBLIC, Source, Submission, build_export
from tests.fixtures_newsroom import Journalist, Newsroom, make_newsroom
from tests.fixtures_server import run_gunicorn
from tests.fixtures_browser import launch_chromium
from tests.test_export_import import reply_bundle

pytestmark = pytest.mark.slow

TEMPLATES = Path(__file__).resolve().parent.parent / "intake" / "templates"
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22a", "wcag22aa"]
LANGUAGES = ("en", "ru")
BIN = Path(sys.executable).parent


def page_templates(folder: Path, prefix: str = "") -> set[str]:
    """Templates that are whole pages (not base.html, not _partials)."""
    return {prefix + p.stem for p in folder.glob("*.html") if p.stem != "base" and not p.stem.startswith("_")}


@dataclass
class Scan:
    """Runs axe on the page in view and keeps every violation, labelled by page and language."""

    axe: object
    language: str
    violations: list[str] = field(default_factory=list)
    covered: set[str] = field(default_factory=set)
    scans: int = 0

    def __call__(self, page, template: str, state: str = "") -> None:
        self.covered.add(template)
        self.scans += 1
        lang = page.locator("html").get_attribute("lang")
        label = f"{template}{' (' + state + ')' if state else ''} [{self.language}] {page.url}"
        assert lang == self.language, f"{label}: <html lang={lang!r}>"
        results = self.axe.run(page, options={"runOnly": {"type": "tag", "values": WCAG_TAGS}, "resultTypes": ["violations"]})
        for violation in results.response["violations"]:
            targets = "; ".join(", ".join(node["target"]) for node in violation["nodes"])
            self.violations.append(f"{label}: {violation['id']} ({violation['impact']}): {violation['help']} -> {targets}")


@dataclass
class Servers:
    newsroom: Newsroom
    source_url: str
    journalist_url: str
    tmp: Path


@pytest.fixture(scope="module")
def servers(tmp_path_factory) -> Iterator[Servers]:
    base = tmp_path_factory.mktemp("a11y")
    newsroom = make_newsroom(base)
    _add_a_source_with_a_message(newsroom)
    env = {"INTAKE_DATA": str(newsroom.settings.data_dir)}
    # One source a page: with the source above, the list of sources has page links to scan.
    with run_gunicorn("wsgi:app", base, env) as source, \
            run_gunicorn("intake.app.journalist:create_journalist_app(JOURNALIST_SOURCES_PER_PAGE=1)", base, env) as journalist:
        yield Servers(newsroom, source.url, journalist.url, base)


def _add_a_source_with_a_message(newsroom: Newsroom) -> None:
    with newsroom.store() as store:
        recipients = store.active_recipients()
        source = store.create_source(os.urandom(32), bytes(PrivateKey.generate().public_key))  # replies are sealed to it
        with store.start_submission(source.id, "message", recipients) as upload:
            upload.write(encrypt_bytes(b"a message sent before the walks", [r.public_key for r in recipients], Metadata("message")))
            upload.commit()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with launch_chromium() as browser:
        yield browser


def _axe():
    from axe_playwright_python.sync_playwright import Axe

    return Axe()


def follow(page, control) -> None:
    """Click a link or a form's button and wait for the page it leads to (a codename check takes a while)."""
    with page.expect_navigation(timeout=60_000):
        control.click()


def _heading(page) -> str:
    return page.get_by_role("heading", level=1).inner_text()


# --- the walks ---------------------------------------------------------------------------


def _walk_source_until_sent(page, servers: Servers, scan: Scan) -> None:
    base = servers.source_url
    page.goto(f"{base}/language/{scan.language}?next=/")
    scan(page, "index")
    page.goto(f"{base}/guide")
    scan(page, "guide")
    page.goto(f"{base}/login")
    scan(page, "login")
    page.goto(f"{base}/login?ended=1")
    scan(page, "login", "session ended")
    page.locator("#codename").fill("not a codename")
    follow(page, page.locator("form.login button"))
    scan(page, "login", "invalid codename")
    page.locator("#codename").fill(generate_codename())
    follow(page, page.locator("form.login button"))
    scan(page, "login", "unknown codename")
    page.goto(f"{base}/no-such-page")
    scan(page, "error", "404")

    page.goto(base + "/")
    follow(page, page.locator("form[action='/new'] button"))
    scan(page, "codename")
    # Logging out of a codename that never sent anything asks first; stay logged in.
    follow(page, page.locator("nav.account form button"))
    scan(page, "confirm_logout")
    page.goto(f"{base}/codename")
    follow(page, page.locator("form[enctype='multipart/form-data'] button[type=submit]"))
    scan(page, "submit", "empty submission refused")
    page.locator("#message").fill(f"accessibility check in {scan.language}")
    follow(page, page.locator("form[enctype='multipart/form-data'] button[type=submit]"))
    scan(page, "thanks")
    page.goto(f"{base}/submit")
    scan(page, "submit")


def _walk_source_after_reply(page, servers: Servers, scan: Scan) -> None:
    page.goto(f"{servers.source_url}/replies")
    assert page.locator(".reply").count() == 1, "the source should have the one reply sent in this walk"
    scan(page, "replies")
    follow(page, page.locator(".reply form button"))
    scan(page, "replies", "reply deleted")
    follow(page, page.locator("nav.account form button"))
    scan(page, "logged_out")


def _walk_journalist(page, servers: Servers, scan: Scan, journalist: Journalist) -> None:
    base = servers.journalist_url
    page.goto(f"{base}/language/{scan.language}?next=/login")
    scan(page, "journalist/login")
    page.locator("#name").fill(journalist.name)
    page.locator("#passphrase").fill("not the passphrase")
    page.locator("#code").fill("000000")
    follow(page, page.locator("form.login button"))
    scan(page, "journalist/login", "refused")
    page.locator("#name").fill(journalist.name)
    page.locator("#passphrase").fill(journalist.enrolment.passphrase)
    page.locator("#code").fill(journalist.code())
    follow(page, page.locator("form.login button"))
    scan(page, "journalist/sources")
    follow(page, page.locator("a[rel=next]"))
    scan(page, "journalist/sources", "page 2")
    follow(page, page.locator("a[rel=prev]"))
    follow(page, page.locator("button[value=selected]"))
    scan(page, "journalist/sources", "notice: nothing selected")
    follow(page, page.locator("td a").first)
    scan(page, "journalist/confirm_delete")
    page.goto(f"{base}/sources/no-such-source/delete")
    scan(page, "journalist/error", "404")

    page.goto(f"{base}/sources")
    page.locator("#bundle").set_input_files(files=[{"name": "forged.bundle", "mimeType": "application/octet-stream", "buffer": b"not a bundle"}])
    follow(page, page.locator("form[action='/replies'] button"))
    scan(page, "journalist/error", "reply bundle refused")

    # A reply to every source so far: the one this walk made reads it next.
    with servers.newsroom.store() as store:
        sources = [group.source for group in NewsroomStore(store).export_groups(only_new=False)]
    replies = reply_bundle(servers.newsroom, journalist.identity, [(s.id, seal_reply(f"reply in {scan.language}", s.reply_public_key)) for s in sources])
    page.goto(f"{base}/sources")
    page.locator("#bundle").set_input_files(files=[{"name": "replies.bundle", "mimeType": "application/octet-stream", "buffer": replies}])
    follow(page, page.locator("form[action='/replies'] button"))
    scan(page, "journalist/import_report")


def _scan_published_pages(page, servers: Servers, scan: Scan) -> None:
    site = servers.tmp / "site"
    if not site.exists():
        done = subprocess.run([str(BIN / "intake"), "publish", "--data", str(servers.newsroom.settings.data_dir), "--out", str(site)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    page.goto((site / f"tip-line.{scan.language}.html").as_uri())
    scan(page, "published guide")


def _scan_decrypted_index(page, servers: Servers, scan: Scan) -> None:
    from keys.identity import Identity
    from keys.server_key import trust_server

    identity = Identity.generate("reader")
    laptop = servers.tmp / f"laptop-{scan.language}"  # one laptop per language: each keeps its own pins
    laptop.mkdir()
    secret, passphrase = laptop / "reader.secret", laptop / "passphrase"
    identity.save(secret, PASSPHRASE, KDF_MIN)
    trust_server(secret, SERVER_PUBLIC)  # the test bundles' server key, as at enrolment
    passphrase.write_text(PASSPHRASE + "\n")
    bundle = servers.tmp / f"export-{scan.language}.bundle"
    bundle.write_bytes(build_export([
        Source("src-1", "brave otter", [Submission("message", "Текст сообщения <b>и разметка</b>\n".encode()),
                                        Submission("file", b"%PDF-1.4", name="minutes.pdf")]),
    ], [identity]))
    out = servers.tmp / f"decrypted-{scan.language}"
    done = subprocess.run([str(BIN / "intake-keys"), "--lang", scan.language, "decrypt", str(bundle), "--key", str(secret),
                           "--passphrase-file", str(passphrase), "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    page.goto((out / "index.html").as_uri())
    scan(page, "decrypted index.html")


# --- the gate ----------------------------------------------------------------------------


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_page_passes_axe_core_wcag_2_2_aa(servers: Servers, browser, language: str):
    scan = Scan(_axe(), language)
    journalist = servers.newsroom.alice if language == "en" else servers.newsroom.bob  # a TOTP code works once
    source = browser.new_context(java_script_enabled=True, locale="en-US", viewport={"width": 1000, "height": 900})
    newsroom = browser.new_context(java_script_enabled=True, locale="en-US", viewport={"width": 1000, "height": 900})
    try:
        source_page, newsroom_page = source.new_page(), newsroom.new_page()
        _walk_source_until_sent(source_page, servers, scan)
        _walk_journalist(newsroom_page, servers, scan, journalist)
        _walk_source_after_reply(source_page, servers, scan)
        _scan_published_pages(newsroom_page, servers, scan)
        _scan_decrypted_index(newsroom_page, servers, scan)
    finally:
        source.close()
        newsroom.close()
    every_page = page_templates(TEMPLATES) | page_templates(TEMPLATES / "journalist", "journalist/")
    print(f"\n[axe-core, {language}] {scan.scans} page states scanned, {len(scan.covered)} pages "
          f"({len(every_page)} page templates), {len(scan.violations)} violations")
    assert every_page - scan.covered == set(), "pages no step of this gate reaches"
    assert scan.violations == [], "\n".join(scan.violations)


def test_a_source_walks_the_journey_with_the_keyboard_only(servers: Servers, browser):
    """JavaScript off, no mouse: Tab to each control, type, Enter."""
    context = browser.new_context(java_script_enabled=False, locale="en-US", viewport={"width": 1000, "height": 900})
    try:
        page = context.new_page()
        page.goto(servers.source_url + "/language/en?next=/")

        tab_to(page, "button", "First time: get a codename and send")
        press_enter_and_wait(page)
        assert _heading(page) == "Your codename"
        codename = " ".join(page.locator(".codename span").all_inner_texts())

        tab_to(page, "textarea", "")
        message = "sent with the keyboard alone"
        page.keyboard.type(message)
        tab_to(page, "button", "Send securely")
        press_enter_and_wait(page)
        assert _heading(page) == "Thank you, we received it"

        tab_to(page, "button", "Log out")
        press_enter_and_wait(page)
        assert _heading(page) == "You are logged out"

        page.goto(servers.source_url + "/")
        tab_to(page, "a", "I have a codename: check replies or send more")
        press_enter_and_wait(page)
        tab_to(page, "input", "")
        page.keyboard.type(codename)
        press_enter_and_wait(page)
        assert _heading(page) == "Status and replies"
    finally:
        context.close()


def press_enter_and_wait(page) -> None:
    """Enter on a link or in a form, then wait for the page it leads to (a codename check takes a while)."""
    with page.expect_navigation(timeout=60_000):
        page.keyboard.press("Enter")


def tab_to(page, tag: str, text: str, limit: int = 40) -> None:
    """Press Tab until the focused element is a ``tag`` showing ``text`` (any, if empty); each stop must be visible."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        focused = page.locator(":focus")
        if focused.count() != 1:
            continue
        assert focused.is_visible(), "keyboard focus went to an element that cannot be seen"
        target = page.locator(f"{tag}:focus")
        if target.count() == 1 and (not text or target.inner_text().strip() == text):
            return
    raise AssertionError(f"Tab never reached the {tag} {text!r}")


def test_the_gate_fails_on_a_violation(browser):
    """The scan itself can fail: a page with an unlabelled field and an image without text."""
    context = browser.new_context(java_script_enabled=True)
    try:
        page = context.new_page()
        page.set_content('<!doctype html><html lang="en"><title>t</title><main><img src="data:,">'
                         '<input type="text"></main></html>')
        scan = Scan(_axe(), "en")
        scan(page, "a broken page")
        rules = {line.split(": ")[1].split(" ")[0] for line in scan.violations}
        assert {"image-alt", "label"} <= rules
    finally:
        context.close()
