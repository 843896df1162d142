"""Onion service keys and addresses, and journalists' client-authorisation keys.

Everything here works without tor: ``intake init``, ``intake journalist add``, the backup and
the published guide need the addresses, and the server set-up script the key files. The files
are in tor's own formats (an ``hs_ed25519_secret_key`` and a ``ClientOnionAuthDir`` line), so
tor reads them as they are; the address is derived as rend-spec-v3 section 6 says.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
from pathlib import Path

import nacl.bindings
import nacl.public

from intake.told import told

log = logging.getLogger(__name__)

KEY_HEADER = b"== ed25519v1-secret: type0 ==\x00\x00\x00"
_KEY_FILE_LEN = len(KEY_HEADER) + 64


class OnionKeyError(Exception):
    """An onion key, address or client-authorisation key is unusable; the message is one clear line."""


class InvalidClientKeyError(OnionKeyError, ValueError):
    """A journalist's client-authorisation public key is not a valid x25519 key."""


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=")


def _b32decode(text: str) -> bytes:
    text = text.strip().upper()
    return base64.b32decode(text + "=" * (-len(text) % 8))


def _generate_onion_secret_key() -> bytes:
    """A new 64-byte expanded ed25519 secret key, as tor stores and loads it."""
    h = bytearray(hashlib.sha512(os.urandom(32)).digest())
    h[0] &= 248
    h[31] &= 127
    h[31] |= 64
    return bytes(h)


def onion_address_for_key(expanded_secret_key: bytes) -> str:
    """The v3 ``xxx.onion`` address of an expanded ed25519 secret key (rend-spec-v3 6)."""
    if len(expanded_secret_key) != 64:
        raise OnionKeyError(told("an onion secret key must be 64 bytes"))
    public = nacl.bindings.crypto_scalarmult_ed25519_base_noclamp(expanded_secret_key[:32])
    version = b"\x03"
    checksum = hashlib.sha3_256(b".onion checksum" + public + version).digest()[:2]
    return _b32(public + checksum + version).lower() + ".onion"


def write_private_file(path: Path, data: bytes) -> None:
    """Create path (0600) atomically; never replaces an existing file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)  # fails if path exists: a concurrent first run keeps one key
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def load_or_create_onion_key(path: Path) -> bytes:
    """The expanded secret key in ``path`` (tor's hs_ed25519_secret_key format),
    made on first use. Returns the 64 key bytes."""
    private_dir(path.parent)
    if not path.exists():
        try:
            write_private_file(path, KEY_HEADER + _generate_onion_secret_key())
            log.info("created onion key %s", path)
        except FileExistsError:
            pass
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise OnionKeyError(told("cannot read the onion key {path}: {reason}", path=path, reason=exc.strerror)) from None
    if len(data) != _KEY_FILE_LEN or not data.startswith(KEY_HEADER):
        raise OnionKeyError(told("{path} is not a tor v3 onion secret key file", path=path))
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    return data[len(KEY_HEADER):]


def ensure_onion_keys(data_dir: Path) -> tuple[str, str]:
    """Make the two onion keys if missing; return ``(source_onion, journalist_onion)``.
    Needs no tor: for ``intake init`` and the server set-up script."""
    onion_dir = Path(data_dir) / "onion"
    return (onion_address_for_key(load_or_create_onion_key(onion_dir / "source.key")),
            onion_address_for_key(load_or_create_onion_key(onion_dir / "journalist.key")))


def generate_client_auth_keypair() -> tuple[str, str]:
    """A new x25519 key pair for one journalist's client authorisation.

    Returns ``(public_b32, private_b32)``: base32 without padding, as tor
    expects. The public half goes to the server (``ClientAuthV3``); the
    private half goes to the journalist only (see :func:`client_auth_line`).
    """
    private = nacl.public.PrivateKey.generate()
    return _b32(bytes(private.public_key)), _b32(bytes(private))


def normalise_client_public_key(key: str) -> str:
    """A journalist's client-auth public key in tor's form, or InvalidClientKeyError."""
    text = key.strip()
    if text.lower().startswith("descriptor:x25519:"):
        text = text[len("descriptor:x25519:"):]
    try:
        raw = _b32decode(text)
    except (ValueError, binascii.Error):
        raw = b""
    if len(raw) != 32:
        raise InvalidClientKeyError(told("a client authorisation key must be 52 base32 characters (an x25519 key)"))
    return _b32(raw)


def client_auth_line(onion_address: str, private_b32: str) -> str:
    """The line a journalist puts in a ``ClientOnionAuthDir`` ``.auth_private`` file:
    ``<address without .onion>:descriptor:x25519:<base32 private key>``.
    (Tor Browser's authentication prompt takes just the private key part.)"""
    address = onion_address.strip().lower().removesuffix(".onion")
    if not re.fullmatch(r"[a-z2-7]{56}", address):
        raise OnionKeyError(told("not a v3 onion address"))
    try:
        raw = _b32decode(private_b32)
    except (ValueError, binascii.Error):
        raw = b""
    if len(raw) != 32:
        raise InvalidClientKeyError(told("a client authorisation private key must be 52 base32 characters"))
    return f"{address}:descriptor:x25519:{_b32(raw)}"
