"""The server's public key on the laptop: its file, its fingerprint, the trusted set.

The server has one 32-byte seed (``intake/server_identity.py``). From it come an
Ed25519 key that signs every export bundle, and an X25519 key to which the laptop
seals each reply's routing (the source id), so only the server reads it::

    signing key = Ed25519 key pair from the seed
    box key     = X25519 secret key BLAKE2b-256(key = seed, personalisation "intake-srv-box")

The public half travels as a text file, ``server-signing.public``::

    intake-server-key v1
    verify-key: <base64 of the Ed25519 verify key>
    encryption-key: <base64 of the X25519 public key>
    fingerprint: <fingerprint>

The journalist trusts it with ``intake-keys trust-server FILE --key SECRET_FILE``
after comparing the fingerprint with the one the admin reads out; the copy goes
to ``trusted-servers/<fingerprint without spaces>.public`` in the folder of the
secret key file. Trusting several is how a key rotation is carried out.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
from pathlib import Path

from nacl.public import PrivateKey, PublicKey
from nacl.signing import SigningKey, VerifyKey

from keys.errors import FormatError, UnknownServerError, UnsupportedVersionError
from keys.files import write_new_file
from keys.identity import MAX_PUBLIC_FILE, check_secret_key_file, format_fingerprint, key_file_fields, key_file_lines, x25519_public_key
from keys.strict_json import b64_key
from keys.told import told

SERVER_HEADER = "intake-server-key v1"
TRUSTED_SERVERS = "trusted-servers"
_FIELDS = {"verify-key", "encryption-key", "fingerprint"}
_FINGERPRINT_PERSON = b"intake-sfp-v1"
_BOX_PERSON = b"intake-srv-box"


def server_keys_from_seed(seed: bytes) -> tuple[SigningKey, PrivateKey]:
    """The server's signing key and box key, both from its one seed."""
    if len(seed) != 32:
        raise ValueError("a server seed is 32 bytes")
    box = hashlib.blake2b(b"", key=seed, digest_size=32, person=_BOX_PERSON).digest()
    return SigningKey(seed), PrivateKey(box)


@dataclasses.dataclass(frozen=True)
class ServerPublicKey:
    verify_key: VerifyKey
    encryption_key: PublicKey

    @property
    def fingerprint(self) -> str:
        """160 bits of BLAKE2b over both keys (personalised apart from journalists'), 8 groups of 4."""
        return format_fingerprint(
            hashlib.blake2b(bytes(self.verify_key) + bytes(self.encryption_key), digest_size=20, person=_FINGERPRINT_PERSON).digest()
        )

    @property
    def file_name(self) -> str:
        return self.fingerprint.replace(" ", "") + ".public"

    @classmethod
    def from_seed(cls, seed: bytes) -> "ServerPublicKey":
        signing, box = server_keys_from_seed(seed)
        return cls(signing.verify_key, box.public_key)

    def to_text(self) -> str:
        return (
            f"{SERVER_HEADER}\n"
            f"# the intake server's public key: trust it with `intake-keys trust-server` after comparing the fingerprint\n"
            f"verify-key: {_b64(bytes(self.verify_key))}\n"
            f"encryption-key: {_b64(bytes(self.encryption_key))}\n"
            f"fingerprint: {self.fingerprint}\n"
        )

    @classmethod
    def from_text(cls, text: str) -> "ServerPublicKey":
        lines = key_file_lines(text)
        if not lines or lines[0] != SERVER_HEADER:
            if lines and lines[0].startswith("intake-server-key "):
                raise UnsupportedVersionError(told("server key format {version!r} is not supported (this toolkit reads v1)", version=lines[0].split(' ', 1)[1]))
            raise FormatError(told("this is not an intake server key file"))
        fields = key_file_fields(lines[1:], _FIELDS, told("server key file"))
        if fields.keys() != _FIELDS:
            raise FormatError(told("the server key file lacks its keys or fingerprint"))
        key = cls(VerifyKey(b64_key(fields["verify-key"], 32, told("the server's verify key"))),
                  x25519_public_key(b64_key(fields["encryption-key"], 32, told("the server's encryption key")), told("the server's encryption key")))
        if fields["fingerprint"].upper() != key.fingerprint:
            raise FormatError(told("the server key file's fingerprint does not match its keys"))
        return key

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ServerPublicKey":
        with open(path, "rb") as f:
            data = f.read(MAX_PUBLIC_FILE + 1)
        if len(data) > MAX_PUBLIC_FILE:
            raise FormatError(told("the server key file is oversized"))
        try:
            return cls.from_text(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise FormatError(told("this is not an intake server key file")) from None


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def trusted_servers_dir(secret_key_file: str | os.PathLike) -> Path:
    """Where the laptop keeps the server keys it trusts: beside the journalist's secret key
    (which must be one: a mistyped --key would put the trust somewhere no decrypt looks)."""
    return check_secret_key_file(secret_key_file).resolve().parent / TRUSTED_SERVERS


def trust_server(secret_key_file: str | os.PathLike, key: ServerPublicKey) -> tuple[Path, bool]:
    """Store ``key`` among the trusted ones; returns its path and whether it is new."""
    folder = trusted_servers_dir(secret_key_file)
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / key.file_name
    if path.exists():
        return path, False
    write_new_file(path, key.to_text().encode(), 0o644)
    return path, True


def trusted_servers(secret_key_file: str | os.PathLike) -> dict[bytes, ServerPublicKey]:
    """The trusted server keys, by verify key. A damaged file in the folder is an error, not skipped:
    the trust store must say exactly what it trusts."""
    folder = trusted_servers_dir(secret_key_file)
    keys: dict[bytes, ServerPublicKey] = {}
    if folder.is_dir():
        for path in sorted(folder.glob("*.public")):
            try:
                key = ServerPublicKey.load(path)
            except FormatError as error:
                raise FormatError(told("{path}: {error}", path=path, error=error)) from None
            keys[bytes(key.verify_key)] = key
    return keys


def require_trusted(secret_key_file: str | os.PathLike) -> dict[bytes, ServerPublicKey]:
    keys = trusted_servers(secret_key_file)
    if not keys:
        folder = trusted_servers_dir(secret_key_file)
        raise UnknownServerError(told(
            "no server key is trusted on this laptop yet ({folder} is empty): run `intake-keys trust-server "
            "SERVER_KEY_FILE --key SECRET_FILE` with the file your admin gave you", folder=folder))
    return keys
