"""Every response of the journalist interface carries the same strict headers as the source side
(docs/journalists.md: "Pages get the same strict headers as the source side"): every route, each
page a form leads to, the export download, the reply import's report and its refusal, and every
error page it can give (400, 401, 404, 405, 413, 429, 500, 503). The assertion is the source
side's own (tests/test_headers.py::assert_protected); the test fails if the app gains a route
this walk does not reach."""

from __future__ import annotations

import dataclasses
import io
import re

from werkzeug.exceptions import MethodNotAllowed, NotFound

from intake.app.journalist import create_journalist_app
from intake.journalist_auth import ThrottlePolicy
from intake.store.connection import connect
from keys.reply_bundle import seal_reply
from tests.fixtures_newsroom import csrf_token, make_newsroom, sign_in, submit_as_new_source
from tests.test_export_import import reply_bundle
from tests.test_headers import assert_protected


def _source_ids(page: str) -> list[str]:
    return re.findall(r"/sources/([0-9a-f]+)/delete", page)


def test_every_journalist_route_page_and_error_carries_the_strict_headers(tmp_path):
    newsroom = make_newsroom(tmp_path, JOURNALIST_THROTTLE=ThrottlePolicy(per_account=2, overall=100))
    app = newsroom.journalist_app
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.get("/boom")  # an unexpected failure inside a view: the plain 500 page
    def boom():
        raise RuntimeError("internal detail")

    _client, _codename = submit_as_new_source(newsroom.source_app, "one", [("a.txt", b"a", "text/plain")])
    _client, _codename = submit_as_new_source(newsroom.source_app, "two")
    anonymous = app.test_client()
    responses = [anonymous.get(path) for path in ("/", "/login", "/static/style.css", "/language/ru", "/language/xx",
                                                  "/no-such-page", "/sources")]  # /sources: to the sign-in page
    responses += [anonymous.head("/login"), anonymous.options("/login")]
    responses.append(anonymous.get("/logout"))  # 405
    responses.append(anonymous.post("/login", data={"name": "alice"}))  # 400: no form token
    responses.append(sign_in(anonymous, newsroom.bob, passphrase="wrong"))  # 401
    responses.append(sign_in(anonymous, newsroom.bob, passphrase="wrong"))  # 401
    responses.append(sign_in(anonymous, newsroom.bob, passphrase="wrong"))  # 429: the throttle

    alice = app.test_client()
    signed_in = sign_in(alice, newsroom.alice)
    responses.append(signed_in)  # 303 to /sources
    sources = alice.get("/sources")
    responses += [sources, alice.get("/"), alice.get("/sources?page=9"), alice.get("/sources?page=0")]
    token = csrf_token(sources.text)
    ids = _source_ids(sources.text)
    assert len(ids) == 2
    responses.append(alice.post("/export", data={"csrf_token": token, "scope": "nonsense"}))  # 400
    responses.append(alice.post("/export", data={"csrf_token": token, "scope": "selected"}))  # 303: choose sources
    download = alice.post("/export", data={"csrf_token": token, "scope": "new"})
    assert download.status_code == 200 and download.mimetype == "application/octet-stream"
    download.get_data()  # the whole download, as a browser reads it
    responses.append(download)
    responses.append(alice.post("/export", data={"csrf_token": token, "scope": "new"}))  # 303: nothing new

    with newsroom.store() as store:
        (key,) = [row[0] for row in store._conn.execute("SELECT reply_public_key FROM sources WHERE id = ?", (ids[0],))]
    bundle = reply_bundle(newsroom, newsroom.alice.identity, [(ids[0], seal_reply("an answer", key))])
    imported = alice.post("/replies", data={"csrf_token": token, "bundle": (io.BytesIO(bundle), "r.bundle")},
                          content_type="multipart/form-data")
    assert imported.status_code == 200 and ": 1 added" in imported.text
    refused = alice.post("/replies", data={"csrf_token": token, "bundle": (io.BytesIO(b"INTAKE-R not a bundle"), "r.bundle")},
                         content_type="multipart/form-data")
    assert refused.status_code == 400 and "Nothing was imported" in refused.text
    responses += [imported, refused,
                  alice.post("/replies", data={"csrf_token": token}, content_type="multipart/form-data")]  # 303: choose a file
    # A body declared larger than a reply bundle may be: refused from its length (413).
    responses.append(alice.post("/replies", data=b"x", content_type="multipart/form-data; boundary=x",
                                environ_overrides={"CONTENT_LENGTH": str(app.config["MAX_CONTENT_LENGTH"] + 1)}))
    responses += [alice.get(f"/sources/{ids[0]}/delete"), alice.get("/sources/0123456789abcdef/delete"),
                  alice.post(f"/sources/{ids[0]}/delete-submissions", data={"csrf_token": token}),
                  alice.post(f"/sources/{ids[1]}/delete", data={"csrf_token": token}),
                  alice.post(f"/sources/{ids[1]}/delete", data={"csrf_token": token}),  # 404: gone
                  alice.post(f"/sources/{ids[0]}/delete", data={}),  # 400: no form token
                  alice.get("/boom")]  # 500
    responses.append(alice.post("/logout", data={"csrf_token": token}))

    # 503: the store is busy (another process holds the write lock past the app's wait).
    busy_app = create_journalist_app(dataclasses.replace(newsroom.settings, busy_timeout_ms=100), TESTING=True)
    busy = busy_app.test_client()
    login_page = busy.get("/login")
    holder = connect(newsroom.settings.db_path, newsroom.settings.db_key, busy_timeout_ms=1000)
    try:
        holder.execute("BEGIN IMMEDIATE")
        responses.append(busy.post("/login", data={"csrf_token": csrf_token(login_page.text), "name": "alice",
                                                   "passphrase": "x", "code": "000000"}))
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    statuses = {response.status_code for response in responses}
    assert {200, 303, 400, 401, 404, 405, 413, 429, 500, 503} <= statuses, sorted(statuses)
    for response in responses:
        assert_protected(response)
        if response.mimetype == "text/html":
            assert "<script" not in response.get_data(as_text=True), response.request.path

    # Every route of the app was reached (a new one must be added here).
    adapter = app.url_map.bind("localhost")
    reached = set()
    for response in responses:
        try:
            reached.add(adapter.match(response.request.path, method=response.request.method)[0])
        except (NotFound, MethodNotAllowed):
            pass
    assert reached == {rule.endpoint for rule in app.url_map.iter_rules()}, sorted(
        {rule.endpoint for rule in app.url_map.iter_rules()} - reached)
