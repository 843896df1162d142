"""Reply bundles (laptop -> server), version 2: replies sealed to sources, signed by one journalist.

::

    reply   = MAGIC "INTAKE-R" | version u8 = 2 | signer length u8 | signer (UTF-8)
            | (type u8 = 1 | length u32be | routing (176) | envelope)*
            | type u8 = 2 | length u32be = 64 | Ed25519 signature
    routing = crypto_box_seal(source_id padded with NUL bytes to 128, server's box key)

The signature is over ``"intake-reply-bundle-v2" || BLAKE2b-512(every byte before
the signature entry)``, so both sides stream. The source ids are sealed to the
server: whoever sees a reply bundle on its way learns how many replies it holds
and who signed it, not which sources are answered.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from nacl.exceptions import BadSignatureError as NaclBadSignature
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.signing import VerifyKey

from keys import envelope
from keys.bundle import MAX_SOURCE_ID, SOURCE_ID
from keys.envelope import Metadata
from keys.envelope_reader import read_exact
from keys.errors import BadSignatureError, FormatError, TruncatedError, UnknownSignerError, UnsupportedVersionError
from keys.files import PendingFile
from keys.identity import Identity, check_name, x25519_public_key
from keys.told import told

REPLY_MAGIC = b"INTAKE-R"
VERSION = 2
ENTRY_REPLY = 1
ENTRY_SIGNATURE = 2
ROUTING_PLAINTEXT = MAX_SOURCE_ID  # a source id, padded with NUL bytes
ROUTING_SIZE = 48 + ROUTING_PLAINTEXT  # crypto_box_seal adds an ephemeral key (32) and a MAC (16)
MIN_REPLY_ENVELOPE = len(envelope.MAGIC) + 2  # magic, version, count: all the bundle's reader looks at
MAX_REPLY_ENVELOPE = 4 << 20
MAX_REPLIES = 10_000
MAX_REPLY_BUNDLE = 64 << 20  # the whole file, from its magic to its signature
SIGNATURE_CONTEXT = b"intake-reply-bundle-v2"

_ENTRY = struct.Struct(">BI")


@dataclasses.dataclass(frozen=True)
class SealedReply:
    """A reply as it travels: its routing sealed to the server, its text sealed to the source."""

    routing: bytes
    envelope: bytes


@dataclasses.dataclass(frozen=True)
class VerifiedReplies:
    journalist: str
    replies: list[tuple[str, bytes]]  # (source_id, envelope sealed to the source)


def seal_reply(text: str, source_reply_key: PublicKey | bytes) -> bytes:
    """Seal a reply's text to the source's reply public key (envelope kind "reply").

    The key came from the server: one of small order would be refused by the envelope, and one
    written at or above 2^255 - 19 would seal a reply its source could never open."""
    source_reply_key = x25519_public_key(bytes(source_reply_key), told("the source's reply key"))
    body = text.encode("utf-8")
    sealed = envelope.encrypt_bytes(body, [source_reply_key], Metadata("reply", content_type="text/plain; charset=utf-8", length=len(body)))
    if len(sealed) > MAX_REPLY_ENVELOPE:
        raise FormatError(told("the reply is too long"))
    return sealed


def seal_routing(source_id: str, server_box_key: PublicKey) -> bytes:
    """The source id sealed to the server, always the same size."""
    if not isinstance(source_id, str) or not SOURCE_ID.fullmatch(source_id):
        raise FormatError(told("a reply names an invalid source id"))
    return SealedBox(server_box_key).encrypt(source_id.encode("ascii").ljust(ROUTING_PLAINTEXT, b"\0"))


def open_routing(routing: bytes, box_keys: Sequence[PrivateKey]) -> str:
    """The source id in ``routing``, opened with the first of the server's box keys that fits."""
    for key in box_keys:
        try:
            padded = SealedBox(key).decrypt(routing)
        except CryptoError:
            continue
        source_id = padded.rstrip(b"\0")
        try:
            text = source_id.decode("ascii")
        except UnicodeDecodeError:
            raise FormatError(told("a reply in the bundle names an invalid source id")) from None
        if len(padded) != ROUTING_PLAINTEXT or not SOURCE_ID.fullmatch(text):
            raise FormatError(told("a reply in the bundle names an invalid source id"))
        return text
    raise FormatError(told("a reply in the bundle is not addressed to this server (its routing does not open with this server's key)"))


def write_reply_bundle(out: BinaryIO, identity: Identity, replies: Iterable[SealedReply]) -> None:
    """Write ``replies`` signed by ``identity``."""
    digest = hashlib.blake2b(digest_size=64)
    total = 0

    def put(data: bytes) -> None:
        nonlocal total
        total += len(data)
        if total + _ENTRY.size + 64 > MAX_REPLY_BUNDLE:  # the server refuses a larger file, signature included
            raise FormatError(told("the reply bundle is oversized"))
        digest.update(data)
        out.write(data)

    signer = identity.name.encode("utf-8")
    put(REPLY_MAGIC + bytes([VERSION, len(signer)]) + signer)
    count = 0
    for reply in replies:
        _check_reply(reply)
        count += 1
        if count > MAX_REPLIES:
            raise FormatError(told("a reply bundle holds at most {most} replies", most=MAX_REPLIES))
        put(_ENTRY.pack(ENTRY_REPLY, ROUTING_SIZE + len(reply.envelope)) + reply.routing)
        put(reply.envelope)
    signature = identity.signing_key.sign(SIGNATURE_CONTEXT + digest.digest()).signature
    out.write(_ENTRY.pack(ENTRY_SIGNATURE, len(signature)) + signature)


def _check_reply(reply: SealedReply) -> None:
    if len(reply.routing) != ROUTING_SIZE:
        raise FormatError(told("a reply in the bundle has malformed routing"))
    sealed = reply.envelope
    if not MIN_REPLY_ENVELOPE <= len(sealed) <= MAX_REPLY_ENVELOPE:
        raise FormatError(told("a reply in the bundle is oversized or empty"))
    if not sealed.startswith(envelope.MAGIC) or sealed[len(envelope.MAGIC)] not in envelope.READ_VERSIONS:
        raise FormatError(told("a reply in the bundle is not an envelope of version 1 or 2"))


@dataclasses.dataclass(frozen=True)
class _ParsedReplies:
    signer: str
    replies: list[SealedReply]
    signed_digest: bytes
    signature: bytes | None  # None: the bundle ends where its signature should be


def _parse_reply_bundle(src: BinaryIO, accept_signer: Callable[[str], None]) -> _ParsedReplies:
    """Parse a reply bundle's framing; ``accept_signer`` may refuse the signer before the body is read."""
    digest = hashlib.blake2b(digest_size=64)
    total = len(REPLY_MAGIC) + 2  # the head: MAX_REPLY_BUNDLE is the whole file's limit

    def take(size: int) -> bytes:
        nonlocal total
        total += size
        if total > MAX_REPLY_BUNDLE:
            raise FormatError(told("the reply bundle is oversized"))
        data = read_exact(src, size)
        if len(data) < size:
            raise TruncatedError(told("the reply bundle is truncated"))
        return data

    head = read_exact(src, len(REPLY_MAGIC) + 2)
    if not head.startswith(REPLY_MAGIC):
        raise FormatError(told("this is not an intake reply bundle"))
    if len(head) < len(REPLY_MAGIC) + 2:
        raise TruncatedError(told("the reply bundle is truncated"))
    version = head[len(REPLY_MAGIC)]
    if version != VERSION:
        raise UnsupportedVersionError(told("reply bundle version {version} is not supported (this toolkit reads version {supported})", version=version, supported=VERSION))
    signer_raw = take(head[-1])
    try:
        signer = check_name(signer_raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise FormatError(told("the reply bundle names an invalid signer")) from None
    accept_signer(signer)
    digest.update(head + signer_raw)
    replies: list[SealedReply] = []
    while True:
        raw = read_exact(src, _ENTRY.size)
        if not raw:
            return _ParsedReplies(signer, replies, digest.digest(), None)
        if len(raw) < _ENTRY.size:
            raise TruncatedError(told("the reply bundle is truncated"))
        total += len(raw)
        kind, length = _ENTRY.unpack(raw)
        if kind == ENTRY_SIGNATURE:
            if length != 64:
                raise FormatError(told("the reply bundle's signature is malformed"))
            signature = take(64)
            if read_exact(src, 1):
                raise FormatError(told("the reply bundle has data after its signature"))
            return _ParsedReplies(signer, replies, digest.digest(), signature)
        if kind != ENTRY_REPLY:
            raise FormatError(told("the reply bundle has an entry of unknown type {kind}", kind=kind))
        if not ROUTING_SIZE + MIN_REPLY_ENVELOPE <= length <= ROUTING_SIZE + MAX_REPLY_ENVELOPE:
            raise FormatError(told("a reply in the bundle is oversized or empty"))
        if len(replies) >= MAX_REPLIES:
            raise FormatError(told("the reply bundle holds too many replies"))
        payload = take(length)
        digest.update(raw + payload)
        reply = SealedReply(payload[:ROUTING_SIZE], payload[ROUTING_SIZE:])
        _check_reply(reply)
        replies.append(reply)


def _verified(src: BinaryIO, verify_keys: Mapping[str, VerifyKey | bytes]) -> _ParsedReplies:
    def accept(signer: str) -> None:
        if signer not in verify_keys:
            raise UnknownSignerError(told("the reply bundle is signed by {signer!r}, who is not a registered journalist", signer=signer))

    parsed = _parse_reply_bundle(src, accept)
    if parsed.signature is None:
        raise BadSignatureError(told("the reply bundle is not signed"))
    key = verify_keys[parsed.signer]
    key = key if isinstance(key, VerifyKey) else VerifyKey(bytes(key))
    try:
        key.verify(SIGNATURE_CONTEXT + parsed.signed_digest, parsed.signature)
    except NaclBadSignature:
        raise BadSignatureError(told("the reply bundle's signature by {signer!r} does not verify: it was forged or modified (or damaged on the way): make it again with intake-keys reply", signer=parsed.signer)) from None
    return parsed


def verify_reply_bundle(src: BinaryIO, verify_keys: Mapping[str, VerifyKey | bytes], box_keys: Sequence[PrivateKey]) -> VerifiedReplies:
    """The server's reading: replies only if a journalist in ``verify_keys`` signed it all and
    every reply's routing opens with one of the server's ``box_keys`` (current first)."""
    parsed = _verified(src, verify_keys)
    return VerifiedReplies(parsed.signer, [(open_routing(reply.routing, box_keys), reply.envelope) for reply in parsed.replies])


@dataclasses.dataclass(frozen=True)
class ReplyBundleInfo:
    """What a reply bundle says about itself, signature NOT checked (for ``inspect``)."""

    signer: str
    replies: int
    signed: bool


def describe_reply_bundle(src: BinaryIO) -> ReplyBundleInfo:
    parsed = _parse_reply_bundle(src, lambda signer: None)
    return ReplyBundleInfo(parsed.signer, len(parsed.replies), parsed.signature is not None)


def add_replies(path: Path, identity: Identity, new_replies: Sequence[SealedReply]) -> int:
    """Add replies to the bundle at ``path`` (created if missing), re-verified and
    re-signed; the file is replaced atomically. Returns the number of replies."""
    replies: list[SealedReply] = []
    if path.exists():
        with open(path, "rb") as f:
            try:
                existing = _verified(f, {identity.name: identity.signing_key.verify_key})
            except UnknownSignerError:
                raise UnknownSignerError(told("{path} is signed by another journalist: write your replies to a new file", path=path)) from None
        replies.extend(existing.replies)
    replies.extend(new_replies)
    with PendingFile(path.parent) as pending:
        write_reply_bundle(pending, identity, replies)  # type: ignore[arg-type]
        pending.commit_replacing(path.name)
    return len(replies)
