"""The server's Ed25519 signing identity: it signs what the server hands out.

Export bundles and the page the newsroom publishes are signed with it, so that
a journalist's laptop (which pins the public half at enrolment) and anyone who
checks the published page can tell the server's work from a forgery made with
public keys alone. The 32-byte seed is kept like the other instance secrets: a
hex file, mode 0600, in the data dir (`server-signing.secret`), made by
`intake init`. Rotation replaces the file (see docs/operator.md).
"""

from __future__ import annotations

import secrets
from pathlib import Path

from nacl.signing import SigningKey

from keys.files import write_new_file

from intake.config import read_secret_file

SERVER_SIGNING_FILE = "server-signing.secret"
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


def load_server_signing_key(data_dir: Path) -> SigningKey:
    seed = read_secret_file(server_signing_path(data_dir), SEED_BYTES, "server signing key")
    return SigningKey(seed)
