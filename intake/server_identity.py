"""The server's signing identity: it signs what the server hands out, and opens reply routing.

One 32-byte seed, kept like the other instance secrets (a hex file, mode 0600,
in the data dir: `server-signing.secret`, made by `intake init`), gives the
Ed25519 key that signs every export bundle and the X25519 key to which the
laptop seals each reply's source id (keys.server_key.server_keys_from_seed).
A journalist's laptop pins the public half at enrolment: `server-signing.public`,
rewritten from the seed whenever an admin hands it out.

Rotation (`intake rotate-signing-key`) moves the seed to
`server-signing.previous.secret` and makes a new one. The previous key still
opens reply routing sealed to it (laptops that have not trusted the new key
yet), and signs nothing.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from keys.files import PendingFile, write_new_file
from keys.server_key import ServerPublicKey, server_keys_from_seed
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from intake.config import SecretFileError, read_secret_file
from intake.told import told

SERVER_SIGNING_FILE = "server-signing.secret"
PREVIOUS_SIGNING_FILE = "server-signing.previous.secret"
SERVER_PUBLIC_FILE = "server-signing.public"
SEED_BYTES = 32


def server_signing_path(data_dir: Path) -> Path:
    return Path(data_dir) / SERVER_SIGNING_FILE


def create_server_signing_key(data_dir: Path) -> Path:
    """Write a new signing seed; refuses to replace an existing one (write_new_file)."""
    path = server_signing_path(data_dir)
    write_new_file(path, secrets.token_bytes(SEED_BYTES).hex().encode() + b"\n", 0o600)
    return path


def ensure_server_signing_key(data_dir: Path) -> None:
    """Data dirs made before the server signed anything get their key on first need."""
    if not server_signing_path(data_dir).exists():
        create_server_signing_key(data_dir)


def _seed(path: Path) -> bytes:
    return read_secret_file(path, SEED_BYTES, told("the server signing key"))


def load_server_signing_key(data_dir: Path) -> SigningKey:
    ensure_server_signing_key(data_dir)
    return server_keys_from_seed(_seed(server_signing_path(data_dir)))[0]


def server_public_key(data_dir: Path) -> ServerPublicKey:
    return ServerPublicKey.from_seed(_seed(server_signing_path(data_dir)))


def server_box_keys(data_dir: Path) -> list[PrivateKey]:
    """The keys that open reply routing: the current one, then the previous one if a rotation kept it."""
    keys = [server_keys_from_seed(_seed(server_signing_path(data_dir)))[1]]
    previous = Path(data_dir) / PREVIOUS_SIGNING_FILE
    if previous.exists():
        keys.append(server_keys_from_seed(_seed(previous))[1])
    return keys


def write_server_public_file(data_dir: Path) -> tuple[Path, ServerPublicKey]:
    """(Re)write DATA/server-signing.public from the seed, for the admin to hand to journalists."""
    ensure_server_signing_key(data_dir)
    key = server_public_key(data_dir)
    with PendingFile(Path(data_dir), 0o644) as pending:
        pending.write(key.to_text().encode())
        path = pending.commit_replacing(SERVER_PUBLIC_FILE)
    return path, key


def rotate_server_signing_key(data_dir: Path) -> tuple[ServerPublicKey, ServerPublicKey]:
    """Make a new seed; the current one becomes the previous one (an older previous one is gone).
    Returns (old, new) public keys. The public file is rewritten for the new key."""
    data_dir = Path(data_dir)
    current = server_signing_path(data_dir)
    if not current.exists():
        raise SecretFileError(told("the server signing key file {path} does not exist: run `intake init` first", path=current))
    old = server_public_key(data_dir)
    os.replace(current, data_dir / PREVIOUS_SIGNING_FILE)
    create_server_signing_key(data_dir)
    _, new = write_server_public_file(data_dir)
    return old, new
