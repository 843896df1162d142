"""keys.envelope, format v2 (and v1, read only): round trips, sizes, every way an envelope can be refused, memory."""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl import bindings as sodium
from nacl.public import PrivateKey

from keys import envelope, envelope_reader
from keys.envelope import (
    MAGIC,
    MESSAGE_CT_SIZE,
    MESSAGE_SIZE,
    SLOT_CAPACITY,
    EPHEMERAL_KEY_SIZE,
    STANZA_SIZE,
    STREAM_HEADER_SIZE,
    EnvelopeWriter,
    Metadata,
    encrypt_bytes,
    envelope_size,
    header_size,
    padme,
)
from keys.envelope_reader import EnvelopeReader, decrypt_bytes
from keys.errors import FormatError, KeysError, RecordError, TamperedError, TruncatedError, UnsupportedVersionError, WrongKeyError

KEY = PrivateKey(bytes(range(1, 33)))
OTHER = PrivateKey(bytes(range(33, 65)))
THIRD = PrivateKey(bytes(range(65, 97)))
VECTOR_FILES = {2: Path(__file__).parent / "vectors" / "envelope-v2.json", 1: Path(__file__).parent / "vectors" / "envelope-v1.json"}
STANZAS_START = len(MAGIC) + 2 + EPHEMERAL_KEY_SIZE  # after magic, version, count and the ephemeral key
HEADER_1 = STANZAS_START + STANZA_SIZE + STREAM_HEADER_SIZE  # header size with one recipient


def seal(body: bytes, meta: Metadata = Metadata("message"), recipients=(KEY,)) -> bytes:
    return encrypt_bytes(body, [k.public_key for k in recipients], meta)


def record_length(meta: Metadata) -> int:
    return len(meta.encode())


# ---------------------------------------------------------------- round trips

# Sizes where the message layout changes: around multiples of the slot capacity, less the record.
_RECORD = record_length(Metadata("file", name="f.bin"))
_BOUNDARIES = sorted({max(0, k * SLOT_CAPACITY - _RECORD + d) for k in (1, 2, 3) for d in (-2, -1, 0, 1, 2)})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    size=st.one_of(st.sampled_from(_BOUNDARIES), st.integers(0, 3 * SLOT_CAPACITY + 10)),
    pieces=st.lists(st.integers(1, 3 * SLOT_CAPACITY), min_size=1, max_size=8),
    data=st.data(),
)
def test_round_trip_any_size_written_in_any_pieces(size, pieces, data):
    body = data.draw(st.binary(min_size=size, max_size=size)) if size < 512 else os.urandom(size)
    meta = Metadata("file", name="f.bin")
    out = io.BytesIO()
    writer = EnvelopeWriter(out, [KEY.public_key], meta)
    pos, i = 0, 0
    while pos < size:
        step = pieces[i % len(pieces)]
        writer.write(body[pos : pos + step])
        pos += step
        i += 1
    writer.close()
    blob = out.getvalue()
    assert len(blob) == envelope_size(size + _RECORD, 1)

    reader = EnvelopeReader(io.BytesIO(blob), KEY)
    assert reader.metadata == meta
    read_size = data.draw(st.integers(1, 2 * SLOT_CAPACITY))
    parts = []
    while piece := reader.read(read_size):
        parts.append(piece)
    assert b"".join(parts) == body
    assert reader.complete


@pytest.mark.parametrize("size", [0, 1, SLOT_CAPACITY - 2 - 20, SLOT_CAPACITY, 5 * SLOT_CAPACITY + 7])
def test_chunks_yield_the_whole_body_then_report_complete(size):
    body = os.urandom(size)
    reader = EnvelopeReader(io.BytesIO(seal(body)), KEY)
    if size > SLOT_CAPACITY:  # a one-message envelope is already at its end after the record
        assert not reader.complete
    assert b"".join(reader.chunks()) == body
    assert reader.complete
    assert reader.body_length == size


def test_metadata_round_trips_with_unicode_name_and_declared_length():
    meta = Metadata("file", name="Bericht über Ölpreise 📄.pdf", content_type="application/pdf", length=5)
    got, body = decrypt_bytes(seal(b"12345", meta), KEY)
    assert got == meta and body == b"12345"


def test_stream_helpers_round_trip_and_return_the_true_length():
    body = os.urandom(3 * MESSAGE_SIZE + 11)
    sealed = io.BytesIO()
    assert envelope.encrypt_stream(io.BytesIO(body), sealed, [KEY.public_key], Metadata("file"), chunk_size=10_000) == len(body)
    sealed.seek(0)
    plain = io.BytesIO()
    meta = envelope_reader.decrypt_stream(sealed, plain, KEY)
    assert plain.getvalue() == body and meta.length == len(body)


def test_writer_refuses_a_body_longer_or_shorter_than_declared():
    writer = EnvelopeWriter(io.BytesIO(), [KEY.public_key], Metadata("file", length=3))
    writer.write(b"1234")
    with pytest.raises(ValueError):
        writer.close()


@pytest.mark.parametrize(
    "meta",
    [Metadata(""), Metadata("x" * 33), Metadata("file", name="a\x00b"), Metadata("file", name="n" * 1025), Metadata("file", name="\udcff")],
)
def test_invalid_metadata_is_refused_by_the_writer(meta):
    with pytest.raises(FormatError):
        EnvelopeWriter(io.BytesIO(), [KEY.public_key], meta)


# ---------------------------------------------------------------- recipients


def test_every_recipient_opens_and_a_stranger_gets_wrong_key():
    recipients = [PrivateKey.generate() for _ in range(5)]
    blob = seal(b"for five", recipients=recipients)
    for key in recipients:
        assert decrypt_bytes(blob, key)[1] == b"for five"
    with pytest.raises(WrongKeyError):
        decrypt_bytes(blob, PrivateKey.generate())


def test_reader_tries_each_of_several_own_keys():
    blob = seal(b"x", recipients=[OTHER])
    assert decrypt_bytes(blob, [KEY, OTHER])[1] == b"x"


def test_header_names_no_recipient():
    blob = seal(b"x")
    assert bytes(KEY.public_key) not in blob


def test_stanzas_are_written_in_a_random_order():
    """SECURITY.md §3: the stanzas' order must not reveal the recipient list's order. Each stanza
    is found by the recipient whose key opens it; over 40 envelopes to the same three keys, in the
    same order, each recipient's stanza must be seen in more than one place."""
    from nacl import bindings as sodium
    from nacl.exceptions import CryptoError

    keys = [PrivateKey.generate() for _ in range(3)]
    places: dict[int, set[int]] = {n: set() for n in range(3)}
    for _ in range(40):
        out = io.BytesIO()
        with EnvelopeWriter(out, [k.public_key for k in keys], Metadata("message")) as writer:
            writer.write(b"x")
        header = out.getvalue()
        start = len(envelope.MAGIC) + 2  # after the version and the count
        ephemeral = header[start : start + envelope.EPHEMERAL_KEY_SIZE]
        first = start + envelope.EPHEMERAL_KEY_SIZE
        stanzas = [header[first + i * envelope.STANZA_SIZE : first + (i + 1) * envelope.STANZA_SIZE] for i in range(3)]
        for n, key in enumerate(keys):
            nonce = envelope.stanza_nonce(ephemeral, bytes(key.public_key))
            shared = sodium.crypto_box_beforenm(ephemeral, bytes(key))
            for place, stanza in enumerate(stanzas):
                try:
                    sodium.crypto_box_open_afternm(stanza, nonce, shared)
                except CryptoError:
                    continue
                places[n].add(place)
    assert all(len(seen) > 1 for seen in places.values()), places


@pytest.mark.parametrize("count", [0, envelope.MAX_RECIPIENTS + 1])
def test_recipient_count_out_of_range_is_refused(count):
    with pytest.raises(ValueError):
        EnvelopeWriter(io.BytesIO(), [PrivateKey.generate().public_key for _ in range(count)], Metadata("message"))


# ---------------------------------------------------------------- sizes


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 1 << 24), st.integers(1, 64))
def test_envelope_size_is_exact_and_depends_only_on_the_padded_length(content_length, recipients):
    size = envelope_size(content_length, recipients)
    slots = padme(max(content_length, envelope.MIN_PADDED))
    messages = -(-slots // SLOT_CAPACITY)
    assert size == len(MAGIC) + 2 + 32 + recipients * 48 + 24 + slots + messages * (4 + sodium.crypto_secretstream_xchacha20poly1305_ABYTES)
    assert slots >= content_length
    assert slots - content_length <= max(content_length, envelope.MIN_PADDED) * 0.12 + envelope.MIN_PADDED


@pytest.mark.parametrize("size", [0, 10, 900, 5000, 70_000, 300_000])
def test_stored_size_equals_envelope_size(size):
    meta = Metadata("message")
    assert len(seal(os.urandom(size), meta)) == envelope_size(size + record_length(meta), 1)


def test_sizes_within_one_padding_bucket_look_identical():
    meta = Metadata("message")
    base = 300_000
    bucket = padme(base + record_length(meta))
    smaller = bucket - record_length(meta)
    while padme(smaller - 1 + record_length(meta)) == bucket:
        smaller -= 1
    lengths = {len(seal(os.urandom(n), meta)) for n in (smaller, (smaller + base) // 2, bucket - record_length(meta))}
    assert len(lengths) == 1
    assert {len(seal(b"a")), len(seal(b"a" * 900))} == {envelope_size(envelope.MIN_PADDED, 1)}


def test_padme_is_monotonic_and_bounded():
    previous = 0
    for n in list(range(0, 5000)) + [10**6, 10**9, (1 << 40) + 3]:
        p = padme(n)
        assert p >= n and p >= previous
        assert p - n <= n * 0.12 + 1
        previous = p


# ---------------------------------------------------------------- hostile input: framing


def test_wrong_magic_is_refused():
    blob = seal(b"x")
    with pytest.raises(FormatError, match="not an intake envelope"):
        decrypt_bytes(b"INTAKE-Z" + blob[8:], KEY)
    with pytest.raises(FormatError):
        decrypt_bytes(b"", KEY)


@pytest.mark.parametrize("version", [0, 3, 255])
def test_unknown_version_is_refused_before_anything_else(version):
    blob = bytearray(seal(b"x"))
    blob[len(MAGIC)] = version
    for cut in (len(blob), len(MAGIC) + 1):  # whole, or cut off right after the version
        with pytest.raises(UnsupportedVersionError, match=f"version {version} "):
            decrypt_bytes(bytes(blob[:cut]), KEY)


def test_wrong_key_is_refused():
    with pytest.raises(WrongKeyError):
        decrypt_bytes(seal(b"x"), OTHER)


def _truncation_points(blob: bytes) -> list[int]:
    points = set(range(0, HEADER_1 + 3)) | {HEADER_1 + MESSAGE_CT_SIZE * k + d for k in range(4) for d in (-1, 0, 1)}
    points |= {len(blob) - d for d in (1, 2, 17, 18)}
    return sorted(p for p in points if 0 <= p < len(blob))


def test_truncation_at_every_interesting_offset_is_detected():
    blob = seal(os.urandom(3 * SLOT_CAPACITY))
    for cut in _truncation_points(blob):
        with pytest.raises(FormatError) as caught:
            decrypt_bytes(blob[:cut], KEY)
        if cut >= len(MAGIC):
            assert isinstance(caught.value, TruncatedError), (cut, caught.value)


def test_truncation_is_detected_even_when_streaming():
    blob = seal(os.urandom(3 * SLOT_CAPACITY))
    cut = HEADER_1 + 2 * MESSAGE_CT_SIZE  # on a message boundary
    reader = EnvelopeReader(io.BytesIO(blob[:cut]), KEY)
    with pytest.raises(TruncatedError):
        for _ in reader.chunks():
            pass
    assert not reader.complete


def _messages(blob: bytes, header: int = HEADER_1) -> tuple[bytes, list[bytes]]:
    body = blob[header:]
    return blob[:header], [body[i : i + MESSAGE_CT_SIZE] for i in range(0, len(body), MESSAGE_CT_SIZE)]


def test_reordered_messages_are_detected():
    head, messages = _messages(seal(os.urandom(3 * SLOT_CAPACITY)))
    assert len(messages) == 4
    swapped = head + messages[0] + messages[2] + messages[1] + messages[3]
    with pytest.raises(TamperedError):
        decrypt_bytes(swapped, KEY)


def test_dropped_message_is_detected():
    head, messages = _messages(seal(os.urandom(3 * SLOT_CAPACITY)))
    with pytest.raises(TamperedError):
        decrypt_bytes(head + messages[0] + messages[2] + messages[3], KEY)


def test_message_from_another_envelope_is_detected():
    head, messages = _messages(seal(os.urandom(3 * SLOT_CAPACITY)))
    _, foreign = _messages(seal(os.urandom(3 * SLOT_CAPACITY)))
    with pytest.raises(TamperedError):
        decrypt_bytes(head + messages[0] + foreign[1] + messages[2] + messages[3], KEY)


def test_swapped_stanzas_are_detected():
    blob = seal(os.urandom(2 * SLOT_CAPACITY), recipients=[KEY, OTHER])
    start = STANZAS_START
    first, second = blob[start : start + STANZA_SIZE], blob[start + STANZA_SIZE : start + 2 * STANZA_SIZE]
    swapped = blob[:start] + second + first + blob[start + 2 * STANZA_SIZE :]
    with pytest.raises(TamperedError):
        decrypt_bytes(swapped, KEY)


def _flip(blob: bytes, position: int) -> bytes:
    damaged = bytearray(blob)
    damaged[position] ^= 0x01 << (position % 8)
    return bytes(damaged)


def test_a_flipped_bit_anywhere_is_refused():
    blob = seal(os.urandom(2 * SLOT_CAPACITY))
    final_start = HEADER_1 + 2 * MESSAGE_CT_SIZE
    assert len(blob) - final_start < MESSAGE_CT_SIZE  # the final message is short
    positions = list(range(HEADER_1 + 40)) + list(range(HEADER_1 + 40, len(blob), 61)) + [final_start - 1, final_start, len(blob) - 1]
    for position in positions:
        with pytest.raises(KeysError) as caught:
            decrypt_bytes(_flip(blob, position), KEY)
        error = caught.value
        if position < len(MAGIC):
            assert isinstance(error, FormatError)
        elif position == len(MAGIC):
            assert isinstance(error, UnsupportedVersionError)
        elif len(MAGIC) + 2 <= position < STANZAS_START + STANZA_SIZE:
            assert isinstance(error, WrongKeyError)  # a damaged ephemeral key or stanza opens for no one
        elif STANZAS_START + STANZA_SIZE <= position < final_start:
            assert isinstance(error, TamperedError), position  # stream header, full messages, their tags
        elif position >= final_start:
            # A short final message that fails is, to the reader, cut off or damaged: both are refused.
            assert isinstance(error, (TamperedError, TruncatedError)), position


def test_trailing_data_is_refused():
    short = seal(b"x")  # its final message is short, so the extra byte is read as part of it
    with pytest.raises((TruncatedError, TamperedError)):
        decrypt_bytes(short + b"\x00", KEY)
    full_final = forge([(slot(record(GOOD_RECORD), SLOT_CAPACITY), FINAL)])
    assert decrypt_bytes(full_final, KEY)[1] == b""
    with pytest.raises(FormatError, match="after its final message"):
        decrypt_bytes(full_final + b"junk", KEY)


# ---------------------------------------------------------------- hostile but authentic input
# Anyone with a journalist's public key can make an envelope, so the reader must
# also survive well-encrypted nonsense. These build envelopes by hand.


def spec_header(version: int, file_key: bytes, public_keys: list[bytes], stream_header: bytes,
                stanzas: list[bytes] | None = None, ephemeral: bytes | None = None) -> bytes:
    """A header built from SECURITY.md section 3 with PyNaCl and hashlib alone, not keys.envelope
    (or with the given stanzas and ephemeral key, to forge one)."""
    if version == 1:
        stanzas = stanzas or [sodium.crypto_box_seal(file_key, pk) for pk in public_keys]
        return MAGIC + bytes([1, len(stanzas)]) + b"".join(stanzas) + stream_header
    if stanzas is None:
        ephemeral, secret = sodium.crypto_box_keypair()
        stanzas = [sodium.crypto_box_easy(file_key, hashlib.blake2b(ephemeral + pk, digest_size=24).digest(), pk, secret)
                   for pk in public_keys]
    return MAGIC + bytes([2, len(stanzas)]) + ephemeral + b"".join(stanzas) + stream_header


def forge(messages: list[tuple[bytes, int]], keys: tuple[PrivateKey, ...] = (KEY,), version: int = 2,
          header: Callable[[bytes], tuple[bytes, list[bytes]]] | None = None) -> bytes:
    """An envelope with exactly these (plaintext, tag) messages, correctly encrypted to ``keys``;
    ``header(file_key)`` may forge the version-2 ephemeral key and stanzas instead."""
    file_key = sodium.crypto_secretstream_xchacha20poly1305_keygen()
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    stream_header = sodium.crypto_secretstream_xchacha20poly1305_init_push(state, file_key)
    ephemeral, stanzas = header(file_key) if header else (None, None)
    header = spec_header(version, file_key, [bytes(key.public_key) for key in keys], stream_header, stanzas, ephemeral)
    out = [header]
    for i, (plaintext, tag) in enumerate(messages):
        out.append(sodium.crypto_secretstream_xchacha20poly1305_push(state, plaintext, header if i == 0 else None, tag))
    return b"".join(out)


FINAL = envelope.TAG_FINAL
PUSH = envelope.TAG_MESSAGE


def slot(content: bytes, capacity: int | None = None, used: int | None = None) -> bytes:
    capacity = len(content) if capacity is None else capacity
    used = len(content) if used is None else used
    return struct.pack(">I", used) + content + bytes(capacity - len(content))


def record(payload: dict | bytes) -> bytes:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return struct.pack(">H", len(data)) + data


GOOD_RECORD = {"kind": "message", "length": None, "name": None, "type": None}


@pytest.mark.parametrize("version", [2, 1])
def test_forge_helper_makes_envelopes_the_reader_accepts(version):
    """An envelope written from the spec alone opens: version 2, and version 1, which is still read."""
    assert decrypt_bytes(forge([(slot(record(GOOD_RECORD) + b"hi", 100), FINAL)], version=version), KEY)[1] == b"hi"


# ---------------------------------------------------------------- version 2's stanzas


def test_a_new_envelope_seals_its_file_key_with_one_ephemeral_key_for_all_recipients():
    keys = [KEY, OTHER, THIRD]
    blob = seal(b"tip", recipients=keys)
    assert blob[len(MAGIC)] == 2 and blob[len(MAGIC) + 1] == 3
    assert header_size(3) == len(MAGIC) + 2 + 32 + 3 * 48 + 24 == HEADER_1 + 2 * STANZA_SIZE
    ephemeral = blob[len(MAGIC) + 2 : STANZAS_START]
    stanzas = [blob[STANZAS_START + i * STANZA_SIZE : STANZAS_START + (i + 1) * STANZA_SIZE] for i in range(3)]
    file_key = EnvelopeReader(io.BytesIO(blob), KEY, keep_file_key=True).file_key
    for key in keys:
        # "ephemeral key | stanza" is a sealed box (crypto_box_seal) made with that ephemeral key pair.
        opened = []
        for stanza in stanzas:
            try:
                opened.append(sodium.crypto_box_seal_open(ephemeral + stanza, bytes(key.public_key), bytes(key)))
            except Exception:
                pass
        assert opened == [file_key]
    assert EnvelopeReader(io.BytesIO(blob), THIRD).read() == b"tip"
    assert seal(b"tip", recipients=keys)[len(MAGIC) + 2 : STANZAS_START] != ephemeral  # a fresh pair per envelope


def test_a_recipient_listed_twice_is_refused():
    """Its two stanzas would be the same bytes, which shows the duplicate; no caller means it."""
    with pytest.raises(ValueError, match="twice"):
        seal(b"tip", recipients=[KEY, OTHER, KEY])


def test_an_ephemeral_key_of_low_order_opens_for_no_one():
    """libsodium refuses a shared secret of zeros. A forger who knows that boxes the file key under
    the key such a refusal would leave (zeros): the reader must refuse, not open with it."""
    zero = bytes(32)

    def low_order(file_key: bytes) -> tuple[bytes, list[bytes]]:
        nonce = hashlib.blake2b(zero + bytes(KEY.public_key), digest_size=24).digest()
        return zero, [sodium.crypto_box_easy_afternm(file_key, nonce, zero)]

    with pytest.raises(WrongKeyError):
        decrypt_bytes(forge([(slot(record(GOOD_RECORD), 100), FINAL)], header=low_order), KEY)


@pytest.mark.parametrize("version", [2, 1])
def test_a_reader_with_several_keys_finds_its_stanza_among_several(version):
    stranger = PrivateKey.generate()
    blob = forge([(slot(record(GOOD_RECORD) + b"hi", 100), FINAL)], keys=(OTHER, THIRD, KEY), version=version)
    for keys in ([stranger, KEY], [KEY, stranger], [stranger, THIRD], [OTHER]):
        assert decrypt_bytes(blob, keys)[1] == b"hi"
    with pytest.raises(WrongKeyError):
        decrypt_bytes(blob, [stranger, PrivateKey.generate()])


@pytest.mark.parametrize(
    "messages, error",
    [
        ([(slot(struct.pack(">H", envelope.MAX_RECORD + 1) + b"{}", 100), FINAL)], "oversized"),
        ([(slot(record(b"not json"), 100), FINAL)], "not valid JSON"),
        ([(slot(record({**GOOD_RECORD, "extra": 1}), 100), FINAL)], "unexpected fields"),
        ([(slot(record({**GOOD_RECORD, "length": -1}), 100), FINAL)], "invalid length"),
        ([(slot(record({**GOOD_RECORD, "kind": 7}), 100), FINAL)], "invalid kind"),
        ([(slot(record({**GOOD_RECORD, "length": 5}) + b"abc", 100), FINAL)], "declared length"),
        ([(slot(record(GOOD_RECORD) + b"hi", 100) [:-1] + b"\x01", FINAL)], "padding is not zero"),
        ([(struct.pack(">I", 500) + record(GOOD_RECORD), FINAL)], "malformed"),
        ([(b"\x00\x00", FINAL)], "malformed"),
        ([(slot(record(GOOD_RECORD), SLOT_CAPACITY), PUSH), (slot(b"late", 10), FINAL)], "malformed"),  # content after the end
        ([(slot(record(GOOD_RECORD), SLOT_CAPACITY), sodium.crypto_secretstream_xchacha20poly1305_TAG_PUSH)], "unexpected tag"),
        ([(slot(record(GOOD_RECORD), 100), sodium.crypto_secretstream_xchacha20poly1305_TAG_REKEY)], "unexpected tag"),
        ([(slot(record(GOOD_RECORD), 100), PUSH)], "malformed"),  # a MESSAGE shorter than 65,553 bytes: written short, not cut
        ([(slot(record(b"\x00")[:1]), FINAL)], "ends inside its record"),
    ],
)
def test_authentic_but_malformed_envelopes_are_refused(messages, error):
    """It authenticated, so only a holder of its file key made it: every broken rule is a forgery
    (RecordError, SECURITY.md section 3), never damage (which a bundle's reader may skip)."""
    with pytest.raises(RecordError, match=error) as caught:
        decrypt_bytes(forge(messages), KEY)
    assert type(caught.value) is RecordError


def test_authentic_envelope_without_final_message_is_truncated():
    full = slot(record(GOOD_RECORD) + bytes(SLOT_CAPACITY - 2 - len(json.dumps(GOOD_RECORD))))
    with pytest.raises(TruncatedError):
        decrypt_bytes(forge([(full, PUSH)]), KEY)


# ---------------------------------------------------------------- memory


class _Sink:
    def __init__(self) -> None:
        self.size = 0

    def write(self, data) -> int:
        self.size += len(data)
        return len(data)


def _streaming_peaks(path: Path, total: int, piece: bytes) -> tuple[int, int, int]:
    """Traced peak bytes while writing, reading in pieces, and iterating chunks()."""
    tracemalloc.start()
    try:
        with open(path, "wb") as f:
            writer = EnvelopeWriter(f, [KEY.public_key], Metadata("file", name="big.bin"))
            for _ in range(total // len(piece)):
                writer.write(piece)
            writer.close()
        write_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        sink = _Sink()
        with open(path, "rb") as f:
            reader = EnvelopeReader(f, KEY)
            while data := reader.read(len(piece)):
                sink.write(data)
        assert sink.size == total and reader.complete
        read_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        with open(path, "rb") as f:
            reader = EnvelopeReader(f, KEY)
            for data in reader.chunks():
                sink.write(data)
        chunks_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return write_peak, read_peak, chunks_peak


def test_memory_stays_flat_while_streaming_a_large_body(tmp_path):
    piece = os.urandom(1 << 20)
    small = _streaming_peaks(tmp_path / "small.env", 4 << 20, piece)
    large = _streaming_peaks(tmp_path / "large.env", 48 << 20, piece)
    for name, small_peak, large_peak in zip(("write", "read", "chunks"), small, large):
        # Twelve times the data, the same memory: a few copies of one read piece at most.
        assert large_peak <= small_peak + (256 << 10), (name, small_peak, large_peak)
        assert large_peak < 5 * len(piece), (name, large_peak)
    assert large[2] < 512 << 10  # chunks() holds one 64 KiB message at a time


# ---------------------------------------------------------------- published test vectors


@pytest.mark.parametrize("version", [2, 1])
def test_published_vectors_decrypt_to_the_published_plaintext(version):
    doc = json.loads(VECTOR_FILES[version].read_text())
    assert doc["format"] == f"intake envelope v{version}"
    keys = {name: PrivateKey(bytes.fromhex(hex_key)) for name, hex_key in doc["secret_keys"].items()}
    assert len(doc["vectors"]) >= 4
    for vector in doc["vectors"]:
        blob = bytes.fromhex(vector["envelope_hex"])
        assert len(blob) == vector["envelope_size"] and blob[len(MAGIC)] == version
        expected_body = bytes.fromhex(vector["body_hex"])
        assert hashlib.sha256(blob).hexdigest() == vector["envelope_sha256"]
        for name in vector["recipients"]:
            reader = EnvelopeReader(io.BytesIO(blob), keys[name])
            assert reader.metadata == Metadata(**vector["metadata"]), vector["description"]
            assert reader.read() == expected_body and reader.complete, vector["description"]
        strangers = set(keys) - set(vector["recipients"])
        for name in strangers:
            with pytest.raises(WrongKeyError):
                decrypt_bytes(blob, keys[name])


@pytest.mark.parametrize("version", [2, 1])
def test_security_md_prints_the_same_vectors(version):
    doc = json.loads(VECTOR_FILES[version].read_text())
    text = (VECTOR_FILES[version].parents[2] / "SECURITY.md").read_text()
    flat = text.replace("\n", "")
    for name, key in doc["secret_keys"].items():
        assert key in text
    for vector in doc["vectors"]:
        assert vector["envelope_sha256"] in text
        if vector["envelope_size"] <= 4096:
            assert vector["envelope_hex"] in flat, vector["description"]


def test_the_reader_decrypts_into_its_own_buffer_and_wipes_it_at_the_end_or_on_a_refusal():
    body = os.urandom(3 * MESSAGE_SIZE + 123)
    out = io.BytesIO()
    reader = EnvelopeReader(io.BytesIO(seal(body)), KEY)
    assert reader.write_to(out) == len(body) and out.getvalue() == body and reader.complete
    assert not any(reader._plaintext) and not any(reader._stream._state)
    # Asked only for its record, then closed: the rest of the first message is wiped too.
    reader = EnvelopeReader(io.BytesIO(seal(body)), KEY)
    assert any(reader._plaintext)
    reader.close()
    assert not any(reader._plaintext)
    # Cut off in its last message: refused, and what it had decrypted is wiped all the same.
    reader = EnvelopeReader(io.BytesIO(seal(body)[:-100]), KEY)
    with pytest.raises(TruncatedError):
        reader.write_to(io.BytesIO())
    assert not any(reader._plaintext)



def test_a_kept_file_key_opens_its_envelope_again_and_no_other():
    blob, other = seal(b"tip"), seal(b"tip")
    first = EnvelopeReader(io.BytesIO(blob), KEY, keep_file_key=True)
    assert first.file_key is not None and EnvelopeReader(io.BytesIO(blob), KEY).file_key is None
    assert EnvelopeReader(io.BytesIO(blob), [], file_key=first.file_key).read() == b"tip"
    with pytest.raises((TamperedError, TruncatedError)):  # a one-message envelope: "truncated or damaged at its end"
        EnvelopeReader(io.BytesIO(other), [], file_key=first.file_key)
