"""Journalist identities: key pairs, passphrase-protected secret files, fingerprints.

An identity is a name, an X25519 key pair (envelopes are sealed to it) and an
Ed25519 key pair (reply bundles are signed with it). The formats are specified
in SECURITY.md; in short::

    secret file = MAGIC "INTAKE-K" | version u8 = 1 | opslimit u32be | memlimit u32be
                | salt (16) | nonce (24) | secretbox(payload)
    payload     = x25519 secret (32) | ed25519 seed (32) | name (UTF-8, 1..64 bytes)

The secretbox key is Argon2id(passphrase, salt, opslimit, memlimit). The public
file is a few lines of text (see ``PublicIdentity.to_text``).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import re
import struct
import unicodedata
from pathlib import Path

import nacl.pwhash.argon2id as argon2id
import nacl.secret
import nacl.utils
from nacl import bindings as sodium
from nacl.exceptions import RuntimeError as SodiumError
from nacl.public import PrivateKey, PublicKey
from nacl.signing import SigningKey, VerifyKey

from keys.errors import BadPassphraseError, EmptyPassphraseError, FormatError, TruncatedError, UnsupportedVersionError
from keys.files import write_new_file
from keys.sodium_buffers import argon2id_kdf, secretbox_open
from keys.strict_json import b64_key
from keys.told import told
from keys.wiping import wiping

SECRET_MAGIC = b"INTAKE-K"
SECRET_VERSION = 1
PUBLIC_HEADER = "intake-public-key v1"
MAX_NAME_BYTES = 64
MAX_PUBLIC_FILE = 4096
_SECRET_HEAD = struct.Struct(">8sBII")
_SALT_SIZE = argon2id.SALTBYTES  # 16
_NONCE_SIZE = nacl.secret.SecretBox.NONCE_SIZE  # 24
_KEYS_SIZE = 64
_SECRET_MIN = _SECRET_HEAD.size + _SALT_SIZE + _NONCE_SIZE + nacl.secret.SecretBox.MACBYTES + _KEYS_SIZE + 1  # 138: a 1-byte name
_SECRET_MAX = _SECRET_MIN - 1 + MAX_NAME_BYTES  # 201: a 64-byte name
_FINGERPRINT_V1_PERSON = b"intake-fp-v1"
_FINGERPRINT_PERSON = b"intake-fp-v2"
_PUBLIC_FIELDS = {"name", "encryption-key", "verify-key", "fingerprint"}
# Names become file names and manifest entries: letters, digits, '.', '_', '-'.
_NAME_PATTERN = re.compile(r"[^\W_][\w.-]*")


@dataclasses.dataclass(frozen=True)
class KdfParams:
    """Argon2id cost. Loading refuses costs outside [MIN, MAX] so a hostile file
    cannot make us allocate gigabytes or spin for hours."""

    opslimit: int
    memlimit: int

    def check(self) -> None:
        if not (KDF_MIN.opslimit <= self.opslimit <= KDF_MAX.opslimit and KDF_MIN.memlimit <= self.memlimit <= KDF_MAX.memlimit):
            raise FormatError(told("the secret key file asks for an out-of-range passphrase cost"))


KDF_MIN = KdfParams(argon2id.OPSLIMIT_MIN, argon2id.MEMLIMIT_MIN)  # tests only
KDF_INTERACTIVE = KdfParams(argon2id.OPSLIMIT_INTERACTIVE, argon2id.MEMLIMIT_INTERACTIVE)  # 64 MiB
KDF_MODERATE = KdfParams(argon2id.OPSLIMIT_MODERATE, argon2id.MEMLIMIT_MODERATE)  # 256 MiB, the default
KDF_SENSITIVE = KdfParams(argon2id.OPSLIMIT_SENSITIVE, argon2id.MEMLIMIT_SENSITIVE)  # 1 GiB
KDF_MAX = KdfParams(16, argon2id.MEMLIMIT_SENSITIVE)


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid identity name, else raise FormatError."""
    if (
        not isinstance(name, str)
        or unicodedata.normalize("NFC", name) != name
        or not 0 < len(name.encode("utf-8", "surrogatepass")) <= MAX_NAME_BYTES
        or not _NAME_PATTERN.fullmatch(name)
    ):
        raise FormatError(told(
            "a name must be 1 to {most} bytes of letters, digits, '.', '_' or '-', starting with a letter or digit",
            most=MAX_NAME_BYTES))
    return name


def fingerprint(name: str, encryption_key: bytes, verify_key: bytes) -> str:
    """Version 2: 160 bits of BLAKE2b over the name and both public keys, as 8 groups
    of 4 base32 characters. The name is covered: the same keys under another name
    (which decides what a manifest calls sealed to whom) read differently."""
    raw_name = check_name(name).encode("utf-8")
    return format_fingerprint(hashlib.blake2b(bytes([len(raw_name)]) + raw_name + encryption_key + verify_key,
                                              digest_size=20, person=_FINGERPRINT_PERSON).digest())


def fingerprint_v1(encryption_key: bytes, verify_key: bytes) -> str:
    """Version 1 (keys only), still accepted on the fingerprint line of older public files."""
    return format_fingerprint(hashlib.blake2b(encryption_key + verify_key, digest_size=20, person=_FINGERPRINT_V1_PERSON).digest())


def format_fingerprint(digest: bytes) -> str:
    text = base64.b32encode(digest).decode("ascii")  # 32 characters, no padding for 20 bytes
    return " ".join(text[i : i + 4] for i in range(0, 32, 4))


def key_file_lines(text: str) -> list[str]:
    """A key file's lines: split on LF only (a CR before it is dropped). No other character
    (U+2028, VT, FF, NEL...) ends a line, so nothing can hide a line inside a comment."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def key_file_fields(lines: list[str], allowed: set[str], what: str) -> dict[str, str]:
    """``field: value`` lines; blank lines and comments (``#`` after any spaces and tabs)
    are skipped. Blank means empty or only spaces and tabs; values lose surrounding spaces and tabs."""
    fields: dict[str, str] = {}
    for line in lines:
        if not line.strip(" \t") or line.lstrip(" \t").startswith("#"):
            continue
        key, sep, value = line.partition(":")
        if not sep or key in fields or key not in allowed:
            raise FormatError(told("the {what} has an unexpected or repeated line", what=what))
        fields[key] = value.strip(" \t")
    return fields


@dataclasses.dataclass(frozen=True)
class PublicIdentity:
    name: str
    encryption_key: PublicKey
    verify_key: VerifyKey

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.name, bytes(self.encryption_key), bytes(self.verify_key))

    def to_text(self) -> str:
        return (
            f"{PUBLIC_HEADER}\n"
            f"name: {self.name}\n"
            f"encryption-key: {base64.b64encode(bytes(self.encryption_key)).decode()}\n"
            f"verify-key: {base64.b64encode(bytes(self.verify_key)).decode()}\n"
            f"fingerprint: {self.fingerprint}\n"
        )

    @classmethod
    def from_text(cls, text: str) -> "PublicIdentity":
        lines = key_file_lines(text)
        if not lines or lines[0] != PUBLIC_HEADER:
            if lines and lines[0].startswith("intake-public-key "):
                raise UnsupportedVersionError(told("public key format {version!r} is not supported (this toolkit reads v1)", version=lines[0].split(' ', 1)[1]))
            raise FormatError(told("this is not an intake public key file"))
        fields = key_file_fields(lines[1:], _PUBLIC_FIELDS, told("public key file"))
        if not {"name", "encryption-key", "verify-key"} <= fields.keys():
            raise FormatError(told("the public key file lacks its name or keys"))
        identity = cls(check_name(fields["name"]), x25519_public_key(_key32(fields["encryption-key"]), told("the public key file's encryption key")), VerifyKey(_key32(fields["verify-key"])))
        # Files written before fingerprint v2 carry a v1 line: still a check of the keys.
        written = fields.get("fingerprint", "").upper()
        if written and written not in (identity.fingerprint, fingerprint_v1(bytes(identity.encryption_key), bytes(identity.verify_key))):
            raise FormatError(told("the public key file's fingerprint does not match its keys"))
        return identity

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PublicIdentity":
        with open(path, "rb") as f:
            data = f.read(MAX_PUBLIC_FILE + 1)
        if len(data) > MAX_PUBLIC_FILE:
            raise FormatError(told("the public key file is oversized"))
        try:
            return cls.from_text(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise FormatError(told("this is not an intake public key file")) from None

    def save(self, path: str | os.PathLike) -> None:
        write_new_file(Path(path), self.to_text().encode(), 0o644)


def _key32(text: str) -> bytes:
    return b64_key(text, 32, told("a key in the public key file"))


_FIELD_PRIME = 2**255 - 19


def x25519_public_key(key: bytes, what: str) -> PublicKey:
    """An X25519 public key written below 2^255 - 19 and not of small order, as every key libsodium
    makes is. (Not checked: that it lies on the curve with prime order; the fingerprint guards that.)"""
    try:
        usable = int.from_bytes(key, "little") < _FIELD_PRIME and sodium.crypto_scalarmult(b"\x01" * 32, key) != bytes(32)
    except SodiumError:  # libsodium refuses a point of small order: the product would be zeros
        usable = False
    if not usable:
        raise FormatError(told("{what} is not an X25519 public key: of small order, or not written below 2^255 - 19", what=what))
    return PublicKey(key)


@dataclasses.dataclass(frozen=True, repr=False)
class Identity:
    """A journalist's secret keys. repr() never shows them."""

    name: str
    private_key: PrivateKey
    signing_key: SigningKey

    def __repr__(self) -> str:
        return f"Identity(name={self.name!r}, fingerprint={self.public.fingerprint!r})"

    @classmethod
    def generate(cls, name: str) -> "Identity":
        return cls(check_name(name), PrivateKey.generate(), SigningKey.generate())

    @property
    def public(self) -> PublicIdentity:
        return PublicIdentity(self.name, self.private_key.public_key, self.signing_key.verify_key)

    def to_secret_bytes(self, passphrase: str, kdf: KdfParams = KDF_MODERATE) -> bytes:
        kdf.check()
        salt = nacl.utils.random(_SALT_SIZE)
        key = bytearray(nacl.secret.SecretBox.KEY_SIZE)
        with wiping(key):
            _derive_into(key, passphrase, salt, kdf)
            box = nacl.secret.SecretBox(bytes(key))  # PyNaCl keeps its key as bytes
        payload = bytes(self.private_key) + bytes(self.signing_key) + self.name.encode("utf-8")
        head = _SECRET_HEAD.pack(SECRET_MAGIC, SECRET_VERSION, kdf.opslimit, kdf.memlimit)
        return head + salt + bytes(box.encrypt(payload))  # encrypt() prepends its random nonce

    @classmethod
    def from_secret_bytes(cls, data: bytes | bytearray, passphrase: str) -> "Identity":
        """The identity in a secret key file's content. The derived key and the decrypted keys
        stay in buffers wiped here; the keys then live in PyNaCl's key objects, as bytes (PyNaCl
        takes nothing else), for as long as the Identity does."""
        if len(data) < len(SECRET_MAGIC) or not data.startswith(SECRET_MAGIC):
            raise FormatError(told("this is not an intake secret key file"))
        if len(data) < _SECRET_HEAD.size:
            raise TruncatedError(told("the secret key file is truncated"))
        _, version, opslimit, memlimit = _SECRET_HEAD.unpack_from(data)
        if version != SECRET_VERSION:
            raise UnsupportedVersionError(told("secret key format version {version} is not supported (this toolkit reads version {supported})", version=version, supported=SECRET_VERSION))
        if len(data) < _SECRET_MIN:
            raise TruncatedError(told("the secret key file is truncated"))
        if len(data) > _SECRET_MAX:
            raise FormatError(told("the secret key file is oversized"))
        kdf = KdfParams(opslimit, memlimit)
        kdf.check()
        salt = bytes(data[_SECRET_HEAD.size : _SECRET_HEAD.size + _SALT_SIZE])
        sealed = bytes(data[_SECRET_HEAD.size + _SALT_SIZE :])  # nonce | MAC | ciphertext
        key = bytearray(nacl.secret.SecretBox.KEY_SIZE)
        payload = bytearray(len(sealed) - _NONCE_SIZE - nacl.secret.SecretBox.MACBYTES)
        with wiping(key, payload):
            _derive_into(key, passphrase, salt, kdf)
            if not secretbox_open(payload, sealed, key):
                # A wrong passphrase and a damaged file look the same to secretbox.
                raise BadPassphraseError(told("the passphrase does not unlock this secret key file (or the file is damaged)"))
            try:
                name = payload[_KEYS_SIZE:].decode("utf-8")
            except UnicodeDecodeError:
                raise FormatError(told("the secret key file holds an invalid name")) from None
            with memoryview(payload) as keys:
                return cls(check_name(name), PrivateKey(bytes(keys[:32])), SigningKey(bytes(keys[32:64])))

    @classmethod
    def load(cls, path: str | os.PathLike, passphrase: str) -> "Identity":
        data = bytearray(_SECRET_MAX + 1)
        with wiping(data):
            with open(path, "rb", buffering=0) as f, memoryview(data) as view:
                size = 0
                while size < len(data) and (read := f.readinto(view[size:])):
                    size += read
            del data[size:]  # the end was never written: nothing to wipe there
            return cls.from_secret_bytes(data, passphrase)

    def save(self, path: str | os.PathLike, passphrase: str, kdf: KdfParams = KDF_MODERATE) -> None:
        """Write the secret file with mode 0600; never replaces an existing file."""
        write_new_file(Path(path), self.to_secret_bytes(passphrase, kdf), 0o600)


def check_secret_key_file(path: str | os.PathLike) -> Path:
    """``path`` if it is an intake secret key file by its first bytes (no passphrase needed):
    commands that keep their state beside the key (the trusted server keys, the pinned sources)
    refuse a mistyped path instead of writing beside whatever it names."""
    path = Path(path)
    with open(path, "rb") as f:  # FileNotFoundError, IsADirectoryError: the caller's one line
        head = f.read(len(SECRET_MAGIC))
    if head != SECRET_MAGIC:
        raise FormatError(told("{path} is not an intake secret key file: --key takes the NAME.secret file that generate wrote (NAME.public is what the server gets)", path=path))
    return path


def _derive_into(key: bytearray, passphrase: str, salt: bytes, kdf: KdfParams) -> None:
    """Argon2id of the passphrase into ``key``; its bytes exist only in a buffer wiped here
    (the str given cannot be wiped)."""
    if not passphrase:
        raise EmptyPassphraseError(told("the passphrase is empty"))
    password = bytearray(passphrase, "utf-8")
    with wiping(password):
        argon2id_kdf(key, password, salt, opslimit=kdf.opslimit, memlimit=kdf.memlimit)
