"""keys.identity: secret and public files, fingerprints, hostile key files."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import struct

import pytest
from nacl.public import PrivateKey

from keys.errors import BadPassphraseError, FormatError, TruncatedError, UnsupportedVersionError
from keys.identity import (
    KDF_MIN,
    KdfParams,
    Identity,
    PublicIdentity,
    check_name,
    fingerprint,
    fingerprint_v1,
)

PASSPHRASE = "correct horse battery staple"


def test_secret_file_round_trips_every_key_and_the_name(alice, tmp_path):
    path = tmp_path / "alice.secret"
    alice.save(path, PASSPHRASE, KDF_MIN)
    loaded = Identity.load(path, PASSPHRASE)
    assert loaded.name == "alice"
    assert bytes(loaded.private_key) == bytes(alice.private_key)
    assert bytes(loaded.signing_key) == bytes(alice.signing_key)


def test_secret_file_is_private_and_never_overwritten(alice, bob, tmp_path):
    path = tmp_path / "alice.secret"
    alice.save(path, PASSPHRASE, KDF_MIN)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        bob.save(path, PASSPHRASE, KDF_MIN)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["alice.secret"]  # no temporary file left behind


def test_secret_file_holds_no_key_in_the_clear(alice):
    data = alice.to_secret_bytes(PASSPHRASE, KDF_MIN)
    assert bytes(alice.private_key) not in data and bytes(alice.signing_key) not in data
    assert b"alice" not in data


def test_wrong_passphrase_is_refused(alice):
    data = alice.to_secret_bytes(PASSPHRASE, KDF_MIN)
    with pytest.raises(BadPassphraseError):
        Identity.from_secret_bytes(data, "correct horse battery stapler")


def test_kdf_cost_is_stored_and_used(alice):
    data = alice.to_secret_bytes(PASSPHRASE, KdfParams(2, 16 << 20))
    assert struct.unpack_from(">II", data, 9) == (2, 16 << 20)
    # Lowering the stored cost derives another key: the file no longer opens.
    cheaper = data[:9] + struct.pack(">II", 1, 16 << 20) + data[17:]
    with pytest.raises(BadPassphraseError):
        Identity.from_secret_bytes(cheaper, PASSPHRASE)


@pytest.mark.parametrize("ops, mem", [(0, 8192), (17, 8192), (1, 4096), (1, 2 << 30)])
def test_out_of_range_kdf_cost_is_refused_before_deriving(alice, ops, mem):
    data = alice.to_secret_bytes(PASSPHRASE, KDF_MIN)
    hostile = data[:9] + struct.pack(">II", ops, mem) + data[17:]
    with pytest.raises(FormatError, match="out-of-range"):
        Identity.from_secret_bytes(hostile, PASSPHRASE)


def test_damaged_secret_files_are_refused_clearly(alice):
    data = alice.to_secret_bytes(PASSPHRASE, KDF_MIN)
    with pytest.raises(FormatError, match="not an intake secret key"):
        Identity.from_secret_bytes(b"-----BEGIN PGP PRIVATE KEY BLOCK-----", PASSPHRASE)
    with pytest.raises(UnsupportedVersionError):
        Identity.from_secret_bytes(data[:8] + b"\x02" + data[9:], PASSPHRASE)
    for cut in (9, 17, 40, 80):  # below the smallest possible file; a shorter tail reads as damage
        with pytest.raises(TruncatedError):
            Identity.from_secret_bytes(data[:cut], PASSPHRASE)
    with pytest.raises(FormatError, match="oversized"):
        Identity.from_secret_bytes(data + bytes(100), PASSPHRASE)
    # SECURITY.md section 4: a name of 1..64 bytes makes a file of 138..201 bytes; anything else is
    # refused before the passphrase is derived (a wrong one would otherwise say "passphrase").
    shortest, longest = (Identity(name, alice.private_key, alice.signing_key).to_secret_bytes(PASSPHRASE, KDF_MIN) for name in ("a", "a" * 64))
    assert (len(shortest), len(longest)) == (138, 201)
    assert Identity.from_secret_bytes(longest, PASSPHRASE).name == "a" * 64
    with pytest.raises(FormatError, match="oversized"):
        Identity.from_secret_bytes(longest + b"\0", "not the passphrase")
    flipped = bytearray(data)
    flipped[-5] ^= 1
    with pytest.raises(BadPassphraseError):
        Identity.from_secret_bytes(bytes(flipped), PASSPHRASE)


def test_empty_passphrase_is_refused(alice):
    with pytest.raises(BadPassphraseError):
        alice.to_secret_bytes("", KDF_MIN)


def test_repr_shows_no_secret(alice):
    text = repr(alice)
    assert bytes(alice.private_key).hex() not in text and "alice" in text and alice.public.fingerprint in text


def test_public_file_round_trips_and_is_readable_text(alice, tmp_path):
    path = tmp_path / "alice.public"
    alice.public.save(path)
    text = path.read_text()
    assert text.startswith("intake-public-key v1\nname: alice\n")
    assert f"fingerprint: {alice.public.fingerprint}" in text
    assert PublicIdentity.load(path) == alice.public


def test_fingerprint_is_eight_groups_of_four_base32_characters(alice):
    groups = alice.public.fingerprint.split(" ")
    assert len(groups) == 8 and all(len(g) == 4 and set(g) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for g in groups)


def test_fingerprint_covers_both_public_keys(alice, bob):
    enc, ver = bytes(alice.public.encryption_key), bytes(alice.public.verify_key)
    assert fingerprint("alice", enc, ver) != fingerprint("alice", bytes(bob.public.encryption_key), ver)
    assert fingerprint("alice", enc, ver) != fingerprint("alice", enc, bytes(bob.public.verify_key))


def test_fingerprint_covers_the_name(alice):
    """alice's keys registered as mallory read differently: the name decides what a manifest calls sealed to whom."""
    enc, ver = bytes(alice.public.encryption_key), bytes(alice.public.verify_key)
    assert fingerprint("alice", enc, ver) != fingerprint("mallory", enc, ver)
    renamed = alice.public.to_text().replace("name: alice", "name: mallory")
    with pytest.raises(FormatError, match="fingerprint does not match"):
        PublicIdentity.from_text(renamed)


def test_fingerprint_v2_is_specified_exactly():
    """SECURITY.md section 4: BLAKE2b-160, personalisation intake-fp-v2, over u8 name length | name | keys."""
    enc, ver = bytes(range(32)), bytes(range(32, 64))
    digest = hashlib.blake2b(b"\x05alice" + enc + ver, digest_size=20, person=b"intake-fp-v2").digest()
    text = base64.b32encode(digest).decode()
    assert fingerprint("alice", enc, ver) == " ".join(text[i : i + 4] for i in range(0, 32, 4))


def test_public_files_with_a_v1_fingerprint_line_are_still_read(alice):
    enc, ver = bytes(alice.public.encryption_key), bytes(alice.public.verify_key)
    old = alice.public.to_text().replace(alice.public.fingerprint, fingerprint_v1(enc, ver))
    assert PublicIdentity.from_text(old) == alice.public


def test_only_a_line_feed_ends_a_line_in_a_key_file(alice):
    """U+2028 (and VT, FF, NEL...) inside a comment hides no line; CRLF files are read."""
    for separator in ("\u2028", "\x0b", "\x0c", "\x85", "\r"):
        text = alice.public.to_text().replace("name: alice\n", f"# note{separator}name: mallory\nname: alice\n")
        assert PublicIdentity.from_text(text).name == "alice"
    assert PublicIdentity.from_text(alice.public.to_text().replace("\n", "\r\n")) == alice.public
    hidden_only = alice.public.to_text().replace("name: alice\n", "# note\u2028name: alice\n")
    with pytest.raises(FormatError, match="lacks"):
        PublicIdentity.from_text(hidden_only)


def test_non_canonical_base64_keys_are_refused(alice):
    key = base64.b64encode(bytes(alice.public.encryption_key)).decode()
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    twin = key[:-2] + last[last.index(key[-2]) ^ 1] + "="  # same 32 bytes, a low unused bit set
    assert base64.b64decode(twin) == base64.b64decode(key)
    with pytest.raises(FormatError, match="canonical"):
        PublicIdentity.from_text(alice.public.to_text().replace(key, twin))


def test_public_file_whose_fingerprint_does_not_match_is_refused(alice, bob):
    text = alice.public.to_text().replace(alice.public.fingerprint, bob.public.fingerprint)
    with pytest.raises(FormatError, match="fingerprint does not match"):
        PublicIdentity.from_text(text)


def test_swapped_key_in_public_file_is_caught_by_the_fingerprint(alice, bob):
    import base64

    text = alice.public.to_text().replace(
        base64.b64encode(bytes(alice.public.encryption_key)).decode(), base64.b64encode(bytes(bob.public.encryption_key)).decode()
    )
    with pytest.raises(FormatError, match="fingerprint"):
        PublicIdentity.from_text(text)


@pytest.mark.parametrize(
    "text, error",
    [
        ("", "not an intake public key"),
        ("ssh-ed25519 AAAA", "not an intake public key"),
        ("intake-public-key v2\nname: a\n", "not supported"),
        ("intake-public-key v1\nname: a\n", "lacks"),
        ("intake-public-key v1\nname: a\nname: b\n", "repeated"),
        ("intake-public-key v1\ncolour: blue\n", "unexpected"),
        ("intake-public-key v1\nname: ../x\nencryption-key: AAAA\nverify-key: AAAA\n", "name must be"),
        ("intake-public-key v1\nname: a\nencryption-key: !!!!\nverify-key: AAAA\n", "base64"),
        ("intake-public-key v1\nname: a\nencryption-key: AAAA\nverify-key: AAAA\n", "wrong length"),
    ],
)
def test_malformed_public_files_are_refused(text, error):
    with pytest.raises(FormatError, match=error):
        PublicIdentity.from_text(text)


def _public_text_with_encryption_key(key: bytes) -> str:
    text = "intake-public-key v1\nname: alice\n"
    text += f"encryption-key: {base64.b64encode(key).decode()}\nverify-key: {base64.b64encode(bytes(32)).decode()}\n"
    return text


@pytest.mark.parametrize("key", [
    bytes(32),  # the point of order 1 (zeros): every key agreement with it gives zeros, which libsodium refuses
    (1).to_bytes(32, "little"),  # order 4
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),  # order 8
    (2**255 - 19).to_bytes(32, "little"),  # p itself: zero again, not written in its canonical form
    (2**255 - 19 + 9).to_bytes(32, "little"),  # the base point, non-canonical
    (9 + 2**255).to_bytes(32, "little"),  # the base point with bit 255 set, which X25519 ignores
], ids=["zero", "order-4", "order-8", "p", "p-plus-9", "bit-255"])
def test_an_encryption_key_no_secret_key_could_have_made_is_refused(key):
    """libsodium makes public keys below 2^255 - 19 and never of small order. Any other key is not
    one a journalist holds the secret of: every upload would be refused (the envelope writer
    refuses small orders) or sealed in stanzas its holder cannot find (its nonce names its key as
    written), so registering it must fail."""
    with pytest.raises(FormatError, match="not an X25519 public key"):
        PublicIdentity.from_text(_public_text_with_encryption_key(key))
    assert PublicIdentity.from_text(_public_text_with_encryption_key(bytes(PrivateKey.generate().public_key)))


def test_oversized_public_file_is_refused(tmp_path):
    path = tmp_path / "big.public"
    path.write_bytes(b"intake-public-key v1\n" + b"#" * 10_000)
    with pytest.raises(FormatError, match="oversized"):
        PublicIdentity.load(path)


@pytest.mark.parametrize("name", ["alice", "Jörg.Müller", "desk-2", "a_b"])
def test_ordinary_names_are_accepted(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", ".hidden", "-opt", "a b", "a/b", "..", "a\nb", "x" * 65, "_x", "e\u0301"])
def test_names_unsafe_as_file_names_are_refused(name):
    with pytest.raises(FormatError):
        check_name(name)


def test_passphrases_are_not_normalised(alice):
    """SECURITY.md section 4: the UTF-8 of the text as typed; decomposed accents derive another key."""
    import unicodedata

    composed = "café crème brûlée"
    data = alice.to_secret_bytes(composed, KDF_MIN)
    assert Identity.from_secret_bytes(data, composed).name == "alice"
    with pytest.raises(BadPassphraseError):
        Identity.from_secret_bytes(data, unicodedata.normalize("NFD", composed))
    with pytest.raises(BadPassphraseError):
        Identity.from_secret_bytes(data, composed + " ")
