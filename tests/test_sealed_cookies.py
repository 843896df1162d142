"""Sealed cookies: what a browser keeps sealed opens only in its session, whichever way it was compressed."""

from __future__ import annotations

import base64
import zlib

from intake.app.ingest import ReceivedItem
from intake.app.sealed_cookies import MAX_COOKIE_CHARS, RECEIPT_COOKIE, _box, open_receipt, seal_receipt, unseal

SESSION = "s" * 43
KEY = bytes(range(32))


def test_a_receipt_opens_in_its_session_only():
    items = [ReceivedItem("message", None, 26), ReceivedItem("file", "evidence.bin", 102_400)]
    value = seal_receipt(SESSION, KEY, items)
    assert open_receipt(SESSION, KEY, value) == items
    assert open_receipt("t" * 43, KEY, value) == []
    assert open_receipt(SESSION, bytes(32), value) == []


def test_a_receipt_sealed_with_zlibs_default_window_still_opens():
    """Cookies sealed before the smaller compression window (a browser keeps them across an upgrade)."""
    data = b'[["file","report.pdf",5]]'
    old = _box(RECEIPT_COOKIE, SESSION, KEY).encrypt(zlib.compress(data, 9))
    value = base64.urlsafe_b64encode(bytes(old)).rstrip(b"=").decode("ascii")
    assert unseal(RECEIPT_COOKIE, SESSION, KEY, value) == data


def test_a_receipt_of_255_long_names_fits_a_cookie_and_keeps_its_sizes():
    items = [ReceivedItem("file", f"{i:03d} quarterly report of the regional office, scanned.pdf", i) for i in range(255)]
    value = seal_receipt(SESSION, KEY, items)
    assert 0 < len(value) <= MAX_COOKIE_CHARS
    opened = open_receipt(SESSION, KEY, value)
    assert [item.size for item in opened] == list(range(255))
    assert opened[0].name == items[0].name
