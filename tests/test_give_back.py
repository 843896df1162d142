"""intake.app.give_back: the message of an upload that cannot be accepted, read back as far as it came."""

from __future__ import annotations

import io

import pytest

from intake.app.give_back import read_unsent_form
from tests.fixtures_app import upload_body

MESSAGE = "Всё, что я видел, — в этом сообщении."


def _body_and_type() -> tuple[bytes, str]:
    return upload_body("token", message=MESSAGE, files=[("scan.bin", b"x" * 5000, "application/octet-stream")])


def test_a_message_whose_part_ended_is_whole_wherever_the_body_stops_after_it():
    body, content_type = _body_and_type()
    end_of_message = body.index(MESSAGE.encode()) + len(MESSAGE.encode())
    next_part = body.index(b"\r\n--", end_of_message) + 2
    for stop in (next_part + len(b"--intakeboundary7MA4YWxkTrZu0gW") + 2, body.index(b"filename=") - 10, len(body)):
        unsent = read_unsent_form(io.BytesIO(body[:stop]), content_type)
        assert (unsent.message, unsent.truncated) == (MESSAGE, False), stop


@pytest.mark.parametrize("kept", [1, 20, len(MESSAGE.encode()) - 1])
def test_a_message_whose_part_did_not_end_is_handed_back_as_only_its_beginning(kept: int):
    body, content_type = _body_and_type()
    start = body.index(MESSAGE.encode())
    unsent = read_unsent_form(io.BytesIO(body[: start + kept]), content_type)
    assert unsent.truncated and MESSAGE.startswith(unsent.message)
    assert "\ufffd" not in unsent.message  # a character cut in half is dropped, not shown as a mark


def test_a_body_that_stops_before_the_message_hands_back_nothing_and_claims_no_cut():
    body, content_type = _body_and_type()
    unsent = read_unsent_form(io.BytesIO(body[: body.index(b'name="message"')]), content_type)
    assert (unsent.message, unsent.truncated, unsent.had_files) == ("", False, False)


@pytest.mark.parametrize("extra", [0, 1])
def test_a_message_of_exactly_the_bound_is_whole_and_one_byte_more_is_cut(extra: int):
    from intake.app.give_back import MAX_GIVE_BACK_BYTES

    text = "a" * (MAX_GIVE_BACK_BYTES + extra)
    body, content_type = upload_body("token", message=text)
    unsent = read_unsent_form(io.BytesIO(body), content_type)
    assert (unsent.message, unsent.truncated) == (text[:MAX_GIVE_BACK_BYTES], bool(extra))
