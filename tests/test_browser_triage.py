"""The triage view (index.html after decrypt --clean) in a real browser, as a journalist opens it from disk.

Headless Chromium (Debian's) with JavaScript off: the page renders, loads
nothing but itself, shows every flag and links the cleaned copies. axe-core
then checks accessibility; it is a script, so it runs in a second context with
JavaScript on (the page has no script of its own, so it renders the same),
where the page's own style is also seen to pass its Content-Security-Policy.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from keys import cli
from tests import cleaning_files as made
from tests.fixtures_keys import Source, Submission, build_export
from tests.fixtures_browser import launch_chromium

pytestmark = pytest.mark.slow


@pytest.fixture
def browser() -> Iterator:
    with launch_chromium() as browser:
        yield browser


@pytest.fixture
def triage_page(tmp_path, alice, alice_files, capsys) -> Path:
    sources = [
        Source(
            "src-1",
            "brave otter",
            [
                Submission("message", "Сначала откройте очищенную копию. <img src=x onerror=alert(1)>\n".encode()),
                Submission("file", made.image("JPEG"), name="photo.jpg"),
                Submission("file", made.pdf(), name="report.pdf"),
                Submission("file", made.traversal_zip(), name="escape.zip"),
                Submission("file", made.docx(macro=True), name="invoice.docm"),
                Submission("file", made.html_with_remote_image(), name="page.html"),
                Submission("file", made.elf(), name="tool"),
            ],
        ),
        Source("src-2", "quiet heron", [Submission("message", b"second source", day="2026-11-27")]),
    ]
    (tmp_path / "export.bundle").write_bytes(build_export(sources, [alice]))
    out = tmp_path / "out"
    common = ["--key", str(alice_files.secret), "--passphrase-file", str(alice_files.passphrase_file), "--out", str(out)]
    assert cli.main(["decrypt", str(tmp_path / "export.bundle"), *common, "--clean"]) == 0, capsys.readouterr().err
    return out / "index.html"


def test_the_triage_view_works_with_javascript_off_loads_nothing_and_passes_axe(browser, triage_page, tmp_path):
    context = browser.new_context(java_script_enabled=False, viewport={"width": 1200, "height": 900})
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(triage_page.as_uri())
    assert page.get_by_role("heading", level=1).inner_text() == "Decrypted submissions"
    assert page.get_by_role("heading", level=2).all_inner_texts() == ["brave otter", "quiet heron"]
    assert page.locator("script").count() == 0 and page.locator("img").count() == 0
    text = page.locator("main").inner_text()
    assert "<img src=x onerror=alert(1)>" in text  # the message, shown as text
    for warning in ["names that leave its folder", "with macros", f"loads something from the internet when opened ({made.REMOTE_HOST})", "Linux program (ELF): never run it"]:
        assert warning in text
    links = [link.get_attribute("href") for link in page.get_by_role("link").all()]
    assert links[:2] == ["brave%20otter/2026-11-28%20photo.cleaned.jpg", "brave%20otter/2026-11-28%20photo.jpg"]
    assert "brave%20otter/2026-11-28%20report.cleaned.pdf" in links
    assert not [link for link in links if any(bad in link for bad in ("escape.zip", "invoice.docm", "page.html", "tool"))]
    page.screenshot(path=str(tmp_path / "triage.png"), full_page=True)
    assert requests == [triage_page.as_uri()]  # nothing but the page itself
    context.close()

    from axe_playwright_python.sync_playwright import Axe

    context = browser.new_context(java_script_enabled=True, bypass_csp=True)
    page = context.new_page()
    page.goto(triage_page.as_uri())
    results = Axe().run(page)
    assert results.violations_count == 0, results.generate_report()
    context.close()

    context = browser.new_context(java_script_enabled=True)  # the CSP enforced: the pinned style still applies
    page = context.new_page()
    page.goto(triage_page.as_uri())
    assert page.evaluate("getComputedStyle(document.querySelector('.advice')).borderTopStyle") == "solid"
    context.close()
