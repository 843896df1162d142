"""libsodium calls whose secret inputs and outputs stay in buffers the caller owns.

PyNaCl's public functions take ``bytes`` and return ``bytes``, which cannot be wiped
(keys.wiping): encrypting a 64 KiB message through them copies its plaintext into a
new ``bytes`` each time, and a key made or derived through them exists as ``bytes``
until freed. These few wrappers call the same libsodium functions through PyNaCl's
own cffi binding (``nacl._sodium``) on ``bytearray``/``memoryview`` buffers instead,
so the caller can wipe every copy. Only what is public leaves as ``bytes``
(ciphertext, headers). The envelope reader decrypts each message straight into one
``bytearray`` it reuses and wipes (PullStream), from a ciphertext buffer it fills with
``readinto``: no copy of the plaintext is made on the way.
"""

from __future__ import annotations

import nacl.utils
from nacl import bindings as sodium
from nacl._sodium import ffi, lib
from nacl.exceptions import CryptoError

from keys.told import told
from keys.wiping import wipe

Buffer = bytearray | memoryview | bytes

SECRETSTREAM_KEYBYTES = sodium.crypto_secretstream_xchacha20poly1305_KEYBYTES
_HEADERBYTES = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES
_ABYTES = sodium.crypto_secretstream_xchacha20poly1305_ABYTES
_STATEBYTES = sodium.crypto_secretstream_xchacha20poly1305_STATEBYTES
_SEALBYTES = sodium.crypto_box_SEALBYTES
_PUBLICKEYBYTES = sodium.crypto_box_PUBLICKEYBYTES
_SECRETKEYBYTES = sodium.crypto_box_SECRETKEYBYTES
ARGON2ID = sodium.crypto_pwhash_ALG_ARGON2ID13
SECRETBOX_MACBYTES = sodium.crypto_secretbox_MACBYTES
BOX_MACBYTES = lib.crypto_box_macbytes()  # 16; PyNaCl does not export it


def _writable(buffer: bytearray | memoryview, size: int):
    if len(buffer) != size:
        raise ValueError(f"the buffer must hold exactly {size} bytes")
    return ffi.from_buffer(buffer, require_writable=True)


def secretstream_keygen(key: bytearray | memoryview) -> None:
    """A new random secretstream key, written into ``key``."""
    lib.crypto_secretstream_xchacha20poly1305_keygen(_writable(key, SECRETSTREAM_KEYBYTES))


def box_keypair() -> tuple[bytes, bytearray]:
    """A new X25519 key pair: the public key, and the secret key in a buffer the caller wipes."""
    public = ffi.new("unsigned char[]", _PUBLICKEYBYTES)
    secret = bytearray(_SECRETKEYBYTES)
    lib.crypto_box_keypair(public, ffi.from_buffer(secret, require_writable=True))
    return ffi.buffer(public)[:], secret


def box_easy(message: Buffer, nonce: bytes, public_key: bytes, secret_key: Buffer) -> bytes:
    """crypto_box_easy (MAC | ciphertext) of ``message`` from ``secret_key`` to ``public_key``. libsodium
    derives the shared key and wipes it; CryptoError for a public key of low order."""
    if len(public_key) != _PUBLICKEYBYTES or len(secret_key) != _SECRETKEYBYTES or len(nonce) != sodium.crypto_box_NONCEBYTES:
        raise ValueError("crypto_box takes keys of 32 bytes and a nonce of 24")
    out = ffi.new("unsigned char[]", len(message) + BOX_MACBYTES)
    if lib.crypto_box_easy(out, ffi.from_buffer(message), len(message), nonce, public_key, ffi.from_buffer(secret_key)) != 0:
        raise CryptoError(told("crypto_box_easy refused the public key"))
    return ffi.buffer(out)[:]


def box_beforenm(shared: bytearray, public_key: bytes, secret_key: bytes) -> bool:
    """The crypto_box shared key of the two keys, written into ``shared`` (the caller wipes it);
    False when ``public_key`` is of low order (the shared secret would be zeros)."""
    if len(public_key) != _PUBLICKEYBYTES or len(secret_key) != _SECRETKEYBYTES:
        raise ValueError("a key pair is two keys of 32 bytes")
    return lib.crypto_box_beforenm(_writable(shared, sodium.crypto_box_BEFORENMBYTES), public_key, secret_key) == 0


def box_open_afternm(box: bytes, nonce: bytes, shared: Buffer) -> bytearray | None:
    """The plaintext of ``box`` (MAC | ciphertext) under a crypto_box shared key, in a new buffer; None if
    it does not authenticate."""
    if len(nonce) != sodium.crypto_box_NONCEBYTES or len(shared) != sodium.crypto_box_BEFORENMBYTES:
        raise ValueError("crypto_box takes a shared key of 32 bytes and a nonce of 24")  # libsodium reads that many
    if len(box) < BOX_MACBYTES:
        return None
    plaintext = bytearray(len(box) - BOX_MACBYTES)
    if lib.crypto_box_open_easy_afternm(ffi.from_buffer(plaintext, require_writable=True), box, len(box), nonce,
                                        ffi.from_buffer(shared)) != 0:
        return None  # libsodium checks the MAC before it decrypts: a refused box leaves the buffer zeros
    return plaintext


def secretstream_init_push(state: sodium.crypto_secretstream_xchacha20poly1305_state, key: Buffer) -> bytes:
    """Start encrypting into ``state`` (PyNaCl's state object) with ``key``; returns the stream header."""
    if len(key) != SECRETSTREAM_KEYBYTES:
        raise ValueError("a secretstream key is 32 bytes")
    header = ffi.new("unsigned char[]", _HEADERBYTES)
    if lib.crypto_secretstream_xchacha20poly1305_init_push(state.statebuf, header, ffi.from_buffer(key)) != 0:
        raise RuntimeError("crypto_secretstream_xchacha20poly1305_init_push failed")
    return ffi.buffer(header)[:]


def secretstream_push(state: sodium.crypto_secretstream_xchacha20poly1305_state, message: Buffer,
                      ad: bytes | None, tag: int) -> memoryview:
    """Encrypt one message read straight from ``message``; returns its ciphertext, a view of the
    state's own buffer, valid until the next push (a 64 KiB copy and allocation saved per message:
    a file's write() copies what it is given)."""
    size = len(message) + _ABYTES
    if state.rawbuf is None or len(state.rawbuf) < size:
        state.rawbuf = ffi.new("unsigned char[]", size)
    rc = lib.crypto_secretstream_xchacha20poly1305_push(
        state.statebuf, state.rawbuf, ffi.NULL, ffi.from_buffer(message), len(message),
        ffi.NULL if ad is None else ad, 0 if ad is None else len(ad), tag)
    if rc != 0:
        raise RuntimeError("crypto_secretstream_xchacha20poly1305_push failed")
    return memoryview(ffi.buffer(state.rawbuf, size))


def wipe_secretstream_state(state: sodium.crypto_secretstream_xchacha20poly1305_state) -> None:
    """Zero the state (it holds the stream's key and nonce); it cannot be used afterwards."""
    lib.sodium_memzero(state.statebuf, _STATEBYTES)


def argon2id_kdf(out: bytearray | memoryview, password: Buffer, salt: bytes, *, opslimit: int, memlimit: int) -> None:
    """Argon2id of ``password`` (any buffer) into ``out``, as nacl.pwhash.argon2id.kdf computes it."""
    if len(salt) != sodium.crypto_pwhash_SALTBYTES:
        raise ValueError(f"the salt must be {sodium.crypto_pwhash_SALTBYTES} bytes")
    rc = lib.crypto_pwhash(ffi.from_buffer(out, require_writable=True), len(out), ffi.from_buffer(password), len(password),
                           salt, opslimit, memlimit, ARGON2ID)
    if rc != 0:
        raise RuntimeError("Argon2id failed (out of memory?)")


def argon2id_verify(password_hash: bytes, password: Buffer) -> bool:
    """Whether ``password`` matches an Argon2id hash string, as nacl.pwhash.argon2id.verify checks it."""
    if len(password_hash) >= sodium.crypto_pwhash_STRBYTES:
        return False
    return lib.crypto_pwhash_str_verify(password_hash, ffi.from_buffer(password), len(password)) == 0


def secretbox_seal(plaintext: Buffer, key: Buffer) -> bytes:
    """``nonce | MAC | ciphertext`` of ``plaintext`` under ``key``, as SecretBox.encrypt makes it."""
    if len(key) != sodium.crypto_secretbox_KEYBYTES:
        raise ValueError("a secretbox key is 32 bytes")
    nonce = nacl.utils.random(sodium.crypto_secretbox_NONCEBYTES)
    out = ffi.new("unsigned char[]", len(plaintext) + SECRETBOX_MACBYTES)
    if lib.crypto_secretbox_easy(out, ffi.from_buffer(plaintext), len(plaintext), nonce, ffi.from_buffer(key)) != 0:
        raise RuntimeError("crypto_secretbox_easy failed")
    return nonce + ffi.buffer(out)[:]


def secretbox_open(out: bytearray | memoryview, box: bytes, key: Buffer) -> bool:
    """Open ``nonce | MAC | ciphertext`` (what SecretBox.encrypt makes) with ``key`` into ``out``,
    which must be the plaintext's size; False if it does not authenticate."""
    nonce_size = sodium.crypto_secretbox_NONCEBYTES
    if len(box) < nonce_size + SECRETBOX_MACBYTES or len(out) != len(box) - nonce_size - SECRETBOX_MACBYTES:
        raise ValueError("the plaintext buffer does not fit the box")
    if len(key) != sodium.crypto_secretbox_KEYBYTES:
        raise ValueError("a secretbox key is 32 bytes")
    ciphertext = box[nonce_size:]
    rc = lib.crypto_secretbox_open_easy(ffi.from_buffer(out, require_writable=True), ciphertext, len(ciphertext),
                                        box[:nonce_size], ffi.from_buffer(key))
    return rc == 0


def seal_open(stanza: bytes, public_key: bytes, secret_key: bytes) -> bytearray | None:
    """The file key sealed in a version-1 ``stanza`` (crypto_box_seal) for this key pair, in a new buffer; None if it is not for them."""
    if len(public_key) != _PUBLICKEYBYTES or len(secret_key) != _SECRETKEYBYTES:
        raise ValueError("a key pair is two keys of 32 bytes")
    if len(stanza) != SECRETSTREAM_KEYBYTES + _SEALBYTES:
        return None
    key = bytearray(SECRETSTREAM_KEYBYTES)
    if lib.crypto_box_seal_open(ffi.from_buffer(key), stanza, len(stanza), public_key, secret_key) != 0:
        return None
    return key


class PullStream:
    """One secretstream being decrypted; its state is a buffer of ours, wiped by ``wipe()``."""

    def __init__(self, header: bytes, key: Buffer):
        self._state = bytearray(_STATEBYTES)
        self._tag = bytearray(1)
        if len(header) != _HEADERBYTES or len(key) != SECRETSTREAM_KEYBYTES:
            raise CryptoError(told("invalid secretstream header or key"))
        if lib.crypto_secretstream_xchacha20poly1305_init_pull(ffi.from_buffer(self._state), header, ffi.from_buffer(key)) != 0:
            raise CryptoError(told("invalid secretstream header"))

    def pull_into(self, ciphertext: memoryview, out: bytearray, ad: bytes | None = None) -> tuple[int, int]:
        """Decrypt ``ciphertext`` into the start of ``out``; returns (plaintext length, tag).
        CryptoError if it fails authentication (``out`` may then hold garbage: wipe it)."""
        length = len(ciphertext) - _ABYTES
        if length < 0 or length > len(out):
            raise CryptoError(told("invalid ciphertext length"))
        rc = lib.crypto_secretstream_xchacha20poly1305_pull(
            ffi.from_buffer(self._state), ffi.from_buffer(out, require_writable=True), ffi.NULL, ffi.from_buffer(self._tag),
            ffi.from_buffer(ciphertext), len(ciphertext), ad if ad is not None else ffi.NULL, len(ad) if ad is not None else 0,
        )
        if rc != 0:
            raise CryptoError(told("secretstream message failed authentication"))
        return length, self._tag[0]

    def wipe(self) -> None:
        wipe(self._state)
