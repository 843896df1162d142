"""The journalists' list of sources comes in pages, sorted and cut in SQL: a page's
size and time do not grow with the number of sources and submissions."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from intake.store.connection import write_transaction
from intake.store.newsroom import Newsroom as NewsroomStore
from tests.fixtures_newsroom import Newsroom, make_newsroom, sign_in

_ROW_RE = re.compile(r'<input type="checkbox" name="source" value="([0-9a-f]+)"')


def add_sources(newsroom: Newsroom, days: list[str]) -> list[tuple[str, str, str]]:
    """A source with one submission for each day given (its last active day); (day, designation, id) each."""
    added = []
    with newsroom.store() as store:
        recipients = store.active_recipients()
        for day in days:
            source = store.create_source(os.urandom(32), os.urandom(32))
            with store.start_submission(source.id, "message", recipients) as upload:
                upload.write(b"ciphertext stand-in")
                upload.commit()
            with write_transaction(store._conn) as conn:
                conn.execute("UPDATE sources SET last_active_day = ? WHERE id = ?", (day, source.id))
            added.append((day, source.designation, source.id))
    return added


def signed_in(newsroom: Newsroom):
    client = newsroom.journalist_app.test_client()
    assert sign_in(client, newsroom.alice).status_code == 303
    return client


def test_pages_follow_each_other_in_order_and_end(tmp_path: Path):
    newsroom = make_newsroom(tmp_path, JOURNALIST_SOURCES_PER_PAGE=3)
    added = add_sources(newsroom, ["2026-11-03", "2026-11-01", "2026-11-03", "2026-11-02", "2026-11-03", "2026-11-01", "2026-10-30"])
    expected = [source_id for _day, _designation, source_id in sorted(added, key=lambda a: (-int(a[0].replace("-", "")), a[1]))]
    client = signed_in(newsroom)

    seen, pages = [], []
    url = "/sources"
    while url:
        page = client.get(url)
        assert page.status_code == 200
        pages.append(page.text)
        seen += _ROW_RE.findall(page.text)
        following = re.search(r'<a href="([^"]+)" rel="next">', page.text)
        url = following.group(1).replace("&amp;", "&") if following else None
    assert seen == expected
    assert [len(_ROW_RE.findall(text)) for text in pages] == [3, 3, 1]
    assert 'rel="prev"' not in pages[0] and 'rel="prev"' in pages[1] and 'rel="prev"' in pages[2]
    assert "Page 2: sources 4 to 6, most recently active first." in pages[1]
    assert "New submissions: 7." in pages[0]
    assert client.get("/sources?page=4").status_code == 404
    assert client.get("/sources?page=0").status_code == 404
    assert client.get("/sources?page=-1").status_code == 404


def test_the_count_of_new_submissions_stops_at_its_limit(tmp_path: Path):
    newsroom = make_newsroom(tmp_path, JOURNALIST_COUNT_NEW_UP_TO=5)
    add_sources(newsroom, ["2026-11-03"] * 5)
    client = signed_in(newsroom)
    assert "New submissions: 5." in client.get("/sources").text
    add_sources(newsroom, ["2026-11-03"])
    assert "New submissions: more than 5." in client.get("/sources").text
    client.get("/language/ru")
    assert "Новых материалов: больше 5." in client.get("/sources").text


def test_one_page_has_no_page_links(tmp_path: Path):
    newsroom = make_newsroom(tmp_path, JOURNALIST_SOURCES_PER_PAGE=3)
    add_sources(newsroom, ["2026-11-03"] * 3)
    page = signed_in(newsroom).get("/sources").text
    assert len(_ROW_RE.findall(page)) == 3 and 'class="pages"' not in page


@pytest.mark.parametrize("language", ["en", "ru"])
def test_a_full_page_stays_under_50_kb(tmp_path: Path, language: str):
    newsroom = make_newsroom(tmp_path)
    add_sources(newsroom, ["2026-11-03"] * 120)
    client = signed_in(newsroom)
    client.get(f"/language/{language}")
    page = client.get("/sources")
    assert len(_ROW_RE.findall(page.text)) == 50
    assert len(page.data) < 50_000, len(page.data)
    assert 'rel="next"' in page.text


def test_a_page_is_read_along_an_index_not_sorted_whole(tmp_path: Path):
    newsroom = make_newsroom(tmp_path)
    with newsroom.store() as store:
        newsroom_store = NewsroomStore(store)
        plan = store._read("EXPLAIN QUERY PLAN " + newsroom_store._OVERVIEW + newsroom_store._LISTED + newsroom_store._ORDER + " LIMIT 50 OFFSET 0")
    steps = [row[-1] for row in plan]
    assert any("sources_by_activity" in step for step in steps), steps
    assert not any("TEMP B-TREE" in step for step in steps), steps
