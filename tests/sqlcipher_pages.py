"""The decrypted pages of a SQLCipher 4 database as a thief with the key reads them: every page of
the file, free pages and the unused space inside pages included (not only the live rows SQL
returns), and every page image in its WAL.

This sqlcipher3 build has no `sqlite_dbpage` (no SQLITE_ENABLE_DBPAGE_VTAB in its compile
options), and `sqlcipher_export` copies live rows only, so the pages are decrypted here, as
SQLCipher 4 does with intake's settings (a raw 32-byte key, `cipher_page_size` 4096, its defaults
otherwise): AES-256-CBC under the key, each page's IV and HMAC-SHA512 in the 80 bytes it reserves
at its end, the HMAC (over ciphertext, IV and the page number, little-endian) under a key from
PBKDF2-HMAC-SHA512(key, salt XOR 0x3a, 2 iterations); the salt is the file's first 16 bytes, in
place of page 1's "SQLite format 3" header. An older store's blobs database has 64 KiB pages and
HMAC-SHA256 (48 reserved bytes: `decrypted_pages(..., page_size=65536, hmac="sha256")`). Every page's HMAC is checked, so a page decrypted with
the wrong key or layout fails loudly instead of reading as noise; `as_plain_database` lets stdlib
sqlite3 check the result's integrity. AES runs in openssl (scripts/system-packages test),
one ECB pass over all pages; the CBC chaining is done here.
"""

from __future__ import annotations

import hashlib
import hmac
import shutil
import subprocess
from pathlib import Path

SQLITE_HEADER = b"SQLite format 3\x00"
SALT_BYTES = 16
IV_BYTES = 16
BLOCK = 16
HMAC_BYTES = {"sha512": 64, "sha256": 32}
RESERVE = IV_BYTES + HMAC_BYTES["sha512"]  # 80 with SQLCipher 4's default HMAC, a multiple of the AES block
HMAC_SALT_MASK = 0x3A
WAL_HEADER, FRAME_HEADER = 32, 24


class PageDecryptionError(AssertionError):
    """A page did not authenticate under the key: the layout or the key is not what this module assumes."""


def _hmac_key(key: bytes, salt: bytes) -> bytes:
    return hashlib.pbkdf2_hmac("sha512", key, bytes(b ^ HMAC_SALT_MASK for b in salt), 2, dklen=len(key))


def _aes_ecb_decrypt(key: bytes, data: bytes) -> bytes:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise AssertionError("openssl is missing (scripts/system-packages test installs it): it decrypts the pages")
    done = subprocess.run([openssl, "enc", "-d", "-aes-256-ecb", "-nopad", "-K", key.hex()], input=data,
                          capture_output=True, timeout=120, check=True)
    assert len(done.stdout) == len(data)
    return done.stdout


def reserve(hmac_name: str = "sha512") -> int:
    """Bytes each page reserves at its end: the IV and the HMAC, rounded up to the AES block."""
    return -(-(IV_BYTES + HMAC_BYTES[hmac_name]) // BLOCK) * BLOCK


def _decrypt(key: bytes, salt: bytes, pages: list[tuple[int, bytes]], page_size: int, hmac_name: str) -> list[bytes]:
    """(page number, encrypted page) -> plaintext pages, each HMAC checked first."""
    hmac_key = _hmac_key(key, salt)
    mac_bytes = HMAC_BYTES[hmac_name]
    pieces = []
    for number, page in pages:
        assert len(page) == page_size
        start = SALT_BYTES if number == 1 else 0
        end = page_size - reserve(hmac_name)
        mac = hmac.new(hmac_key, page[start : end + IV_BYTES] + number.to_bytes(4, "little"), hmac_name).digest()
        if not hmac.compare_digest(mac, page[end + IV_BYTES : end + IV_BYTES + mac_bytes]):
            raise PageDecryptionError(f"page {number} does not authenticate under this key")
        pieces.append((start, end, page[end : end + IV_BYTES], page[start:end]))
    clear = _aes_ecb_decrypt(key, b"".join(ciphertext for _s, _e, _iv, ciphertext in pieces))
    out, at = [], 0
    for (start, end, iv, ciphertext), (_number, page) in zip(pieces, pages):
        size = end - start
        # CBC: each block decrypted, XORed with the ciphertext block before it (the IV for the first).
        chained = iv + ciphertext[:-BLOCK]
        plain = (int.from_bytes(clear[at : at + size], "big") ^ int.from_bytes(chained, "big")).to_bytes(size, "big")
        at += size
        head = SQLITE_HEADER if start else b""
        out.append(head + plain + page[end:])
    return out


def decrypted_pages(path: Path, key: bytes, page_size: int = 4096, hmac: str = "sha512") -> list[bytes]:
    """Every page of the database file, decrypted, in page-number order (page 1 first)."""
    data = Path(path).read_bytes()
    assert len(data) % page_size == 0, f"{path}: {len(data)} bytes is not a whole number of {page_size}-byte pages"
    pages = [(i // page_size + 1, data[i : i + page_size]) for i in range(0, len(data), page_size)]
    plain = _decrypt(key, data[:SALT_BYTES], pages, page_size, hmac)
    header = plain[0]
    stored_size = int.from_bytes(header[16:18], "big")
    stored_size = 65536 if stored_size == 1 else stored_size  # SQLite writes 1 for 65536
    # The b-tree leaves at least the encryption's reserve unused (the blobs database's header says 80,
    # SQLCipher's default, though its HMAC-SHA256 uses 48: each page's IV and HMAC are where they say).
    assert stored_size == page_size and header[20] >= reserve(hmac), "page 1 is not a SQLite header"
    return plain


def decrypted_wal_frames(wal: Path, database: Path, key: bytes) -> list[bytes]:
    """Every page image in the WAL (valid or not for the current checkpoint), decrypted."""
    data = Path(wal).read_bytes()
    if len(data) < WAL_HEADER:
        return []
    page_size = int.from_bytes(data[8:12], "big")
    frame = FRAME_HEADER + page_size
    frames = [(int.from_bytes(data[at : at + 4], "big"), data[at + FRAME_HEADER : at + frame])
              for at in range(WAL_HEADER, len(data) - frame + 1, frame)]
    return _decrypt(key, Path(database).read_bytes()[:SALT_BYTES], frames, page_size, "sha512")


def as_plain_database(pages: list[bytes], path: Path) -> Path:
    """The decrypted pages written as an ordinary SQLite file (stdlib sqlite3 can check it)."""
    Path(path).write_bytes(b"".join(pages))
    return Path(path)


def freelist(pages: list[bytes]) -> dict[int, int | None]:
    """The free pages, from page 1's header: trunk pages with their count of leaves, leaf pages with None."""
    page_size = len(pages[0])
    trunk, found = int.from_bytes(pages[0][32:36], "big"), {}
    while trunk:
        page = pages[trunk - 1]
        leaves = int.from_bytes(page[4:8], "big")
        assert trunk not in found and leaves <= page_size // 4 - 2, f"page {trunk} is not a freelist trunk page"
        found[trunk] = leaves
        found.update({int.from_bytes(page[8 + 4 * i : 12 + 4 * i], "big"): None for i in range(leaves)})
        trunk = int.from_bytes(page[:4], "big")
    assert len(found) == int.from_bytes(pages[0][36:40], "big"), "the freelist does not hold as many pages as page 1 says"
    return found
