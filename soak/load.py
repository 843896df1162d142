"""The mixed load: sources (new, returning, slow) and a journalist (exports, decrypts, replies).

What was sent is kept as content hashes only (sha256 of each part's bytes), never the plaintext; a
request counts as acknowledged only when the server answered 303 to /thanks. Every actor stops at
the deadline, and every wait in it is bounded (HTTP timeouts, command timeouts).
"""

from __future__ import annotations

import hashlib
import html
import http.client
import json
import os
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyotp

from soak.newsroom import CommandFailed, Newsroom
from soak.service import Service
from tests.fixtures_server import Page, SourceClient, Upload, encode_multipart

KiB, MiB = 1024, 1024 * 1024
HTTP_TIMEOUT = 60.0
REPLY_TOKEN = re.compile(r"soak-reply-[0-9a-f]{24}")
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Sent:
    """One POST of the submit form: (kind, sha256) of each part, and whether it was acknowledged."""

    source: int
    parts: list[tuple[str, str]]
    acknowledged: bool = False


@dataclass
class Ledger:
    """Everything the load did, shared by the actors (under `lock`)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: list[Sent] = field(default_factory=list)
    codenames: list[str] = field(default_factory=list)  # index: source number
    source_of_hash: dict[str, int] = field(default_factory=dict)
    requests: Counter = field(default_factory=Counter)  # kind -> count
    outcomes: Counter = field(default_factory=Counter)  # what came back, beyond acknowledgements
    latencies: dict[str, list[float]] = field(default_factory=dict)  # normal requests answered, by kind
    failures: list[str] = field(default_factory=list)  # what must not happen (one line each, no plaintext)
    replies_imported: dict[str, int] = field(default_factory=dict)  # reply token -> source number
    replies_read: set[str] = field(default_factory=set)
    decrypted_during_run: int = 0
    damaged_during_run: int = 0
    unknown_during_run: int = 0

    def count(self, kind: str) -> None:
        with self.lock:
            self.requests[kind] += 1

    def outcome(self, what: str) -> None:
        with self.lock:
            self.outcomes[what] += 1

    def latency(self, kind: str, seconds: float) -> None:
        with self.lock:
            self.latencies.setdefault(kind, []).append(seconds)

    def fail(self, what: str) -> None:
        with self.lock:
            self.failures.append(what)


class TimedClient(SourceClient):
    """A source's browser whose every page request (redirects followed one by one) is timed."""

    def __init__(self, url: str, ledger: Ledger):
        super().__init__(url, timeout=HTTP_TIMEOUT)
        self.ledger = ledger

    def request(self, method, path, body=(), headers=None, *, follow_redirects=True) -> Page:
        started = time.monotonic()
        page = super().request(method, path, body, headers, follow_redirects=False)
        elapsed = time.monotonic() - started
        self.ledger.count(f"{method} page")
        if page.status < 500:
            # POST /new and /login each derive a key with Argon2id: timed apart from plain pages.
            self.ledger.latency("page" if method == "GET" else "codename or sign-in", elapsed)
        else:
            self.ledger.outcome(f"HTTP {page.status}")
        if follow_redirects and page.status in (301, 302, 303, 307, 308):
            return self.get(page.headers["Location"], base=page.url)
        return page


def post_form(client: SourceClient, page: Page, message: bytes | None, files: list[tuple[str, bytes]], *,
              piece: int, pause: float) -> tuple[int, str]:
    """The submit form on `page`, sent as a browser does, the body in `piece`-byte pieces `pause` s apart.
    Returns (status, Location)."""
    form = page.form_with("message", "files")
    content_type, pieces = encode_multipart(form, {"message": (message or b"").decode()},
                                            {"files": [Upload(name, content) for name, content in files]})
    body = memoryview(b"".join(pieces))
    conn = http.client.HTTPConnection("127.0.0.1", int(client.base_url.rsplit(":", 1)[1]), timeout=HTTP_TIMEOUT)
    try:
        conn.putrequest("POST", form.action or "/submit")
        conn.putheader("Cookie", "; ".join(f"{k}={v}" for k, v in client.cookies.items()))
        conn.putheader("Content-Type", content_type)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        for start in range(0, len(body), piece):
            conn.send(body[start : start + piece])
            if pause:
                time.sleep(pause)
        response = conn.getresponse()
        response.read()
        return response.status, response.headers.get("Location", "")
    finally:
        conn.close()


def _sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


class _Refused(Exception):
    """The server answered, but not with what a source hoped for (busy, session gone, ...)."""


class Sources:
    """One source thread: new sources and returning ones, each sending a few submissions."""

    def __init__(self, service: Service, ledger: Ledger, deadline: float, *, slow: bool):
        self.service, self.ledger, self.deadline, self.slow = service, ledger, deadline, slow
        self.rng = random.Random(os.urandom(8))

    def run(self) -> None:
        while time.monotonic() < self.deadline:
            if not self.service.up.wait(1):
                continue
            try:
                self._visit()
            except (OSError, http.client.HTTPException):
                self.ledger.outcome("connection broken (server killed or restarting)")
                time.sleep(self.rng.uniform(0.5, 2))
            except _Refused as refused:
                self.ledger.outcome(str(refused))
                time.sleep(self.rng.uniform(0.5, 2))
            except Exception as error:  # noqa: BLE001 - a page without its form, say: reported, and the load goes on
                self.ledger.fail(f"source: {type(error).__name__}: {str(error)[:200]}")
                time.sleep(1)

    def _visit(self) -> None:
        client = TimedClient(self.service.source_url, self.ledger)
        with self.ledger.lock:
            known = len(self.ledger.codenames)
        if known and self.rng.random() < 0.5:
            number = self.rng.randrange(known)
            self.ledger.count("returning source")
            page = client.log_in(self.ledger.codenames[number])
            if not page.url.rstrip("/").endswith("/replies"):
                raise _Refused(f"returning login answered {page.status}")
            self._read_replies(page)
            page = client.get("/submit")
        else:
            self.ledger.count("new source")
            codename, page = self._new_source(client)
            with self.ledger.lock:
                number = len(self.ledger.codenames)
                self.ledger.codenames.append(codename)
        for _ in range(self.rng.randint(1, 3)):
            if time.monotonic() > self.deadline:
                return
            self._submit(client, page, number)
            time.sleep(self.rng.uniform(0.2, 1.5))

    def _new_source(self, client: TimedClient) -> tuple[str, Page]:
        landing = client.get("/")
        page = client.submit(landing, landing.form_posting_to("/new"))
        if page.status != 200:
            raise _Refused(f"new codename answered {page.status}")
        return page.codename(), page

    def _read_replies(self, page: Page) -> None:
        seen = set(REPLY_TOKEN.findall(html.unescape(page.text)))
        with self.ledger.lock:
            self.ledger.replies_read |= seen

    def _submit(self, client: TimedClient, page: Page, number: int) -> None:
        rng = self.rng
        if self.slow:  # a Tor-like trickle: 256 KiB - 1 MiB over 5-20 s
            message, files = None, [(f"slow-{rng.randrange(10**6)}.bin", os.urandom(rng.randrange(256 * KiB, MiB)))]
            piece = 16 * KiB
            pause = rng.uniform(5, 20) / (len(files[0][1]) / piece)
            kind = "slow upload"
        else:
            message = f"soak tip {os.urandom(8).hex()} ".encode() + b"x" * rng.randrange(0, 4000) if rng.random() < 0.8 else None
            sizes = [rng.choice((rng.randrange(1, 64 * KiB), rng.randrange(64 * KiB, MiB), rng.randrange(MiB, 4 * MiB)))
                     for _ in range(rng.choice((0, 0, 1, 1, 2)))]
            if message is None and not sizes:
                sizes = [rng.randrange(1, 64 * KiB)]
            files = [(f"file-{rng.randrange(10**6)}.bin", os.urandom(size)) for size in sizes]
            piece, pause = 256 * KiB, 0.0
            kind = "submission with files" if files else "message"
        parts = ([("message", _sha(message))] if message else []) + [("file", _sha(content)) for _, content in files]
        request = Sent(number, parts)
        with self.ledger.lock:
            self.ledger.sent.append(request)
            self.ledger.requests[kind] += 1
            for _, digest in parts:
                self.ledger.source_of_hash[digest] = number
        started = time.monotonic()
        status, location = post_form(client, page, message, files, piece=piece, pause=pause)
        del message, files
        request.acknowledged = status == 303 and location.rstrip("/").endswith("/thanks")
        if kind == "message" and status < 500:
            self.ledger.latency("message", time.monotonic() - started)
        if not request.acknowledged:
            raise _Refused(f"submission answered {status}")


class Journalist:
    """Downloads new submissions (the journalist interface, or `intake export`), decrypts them with
    `intake-keys decrypt`, answers a few sources with `intake-keys reply`, imports with `intake import-replies`."""

    def __init__(self, room: Newsroom, service: Service, ledger: Ledger, deadline: float, every: float):
        self.room, self.service, self.ledger, self.deadline, self.every = room, service, ledger, deadline, every
        self.rng = random.Random(os.urandom(8))
        self.client: SourceClient | None = None  # the signed-in journalist's browser
        self.round = 0

    def run(self) -> None:
        try:
            self._rounds()
        except Exception as error:  # noqa: BLE001 - the products' errors are one line without plaintext
            self.ledger.fail(f"journalist: {type(error).__name__}: {str(error)[:300]}")

    def _rounds(self) -> None:
        while time.monotonic() + self.every < self.deadline:
            time.sleep(self.every * self.rng.uniform(0.7, 1.3))
            self.round += 1
            bundle = self.room.work / "exports" / f"round-{self.round}.bundle"
            bundle.parent.mkdir(exist_ok=True)
            if self.round % 2 and self._download(bundle):
                self.ledger.count("export (journalist interface)")
            elif self._export_command(bundle):
                self.ledger.count("export (intake export)")
            else:
                continue
            out = self.room.laptop / f"decrypted-{self.round}"
            self.ledger.count("decrypt")
            self.check_decrypted(out, self.decrypt(bundle, out), during_run=True)
            self._reply(out)

    def _download(self, bundle: Path) -> bool:
        try:
            if self.client is None and not self._sign_in():
                return False
            assert self.client is not None
            sources = self.client.get("/sources")
            if not sources.url.endswith("/sources"):
                self.client = None  # the session is gone: sign in again next round
                return False
            token = _CSRF.search(sources.text)
            body = f"csrf_token={token.group(1) if token else ''}&scope=new".encode()
            conn = http.client.HTTPConnection("127.0.0.1", self.service.journalist_port, timeout=HTTP_TIMEOUT)
            try:
                conn.request("POST", "/export", body, {"Content-Type": "application/x-www-form-urlencoded",
                                                       "Cookie": "; ".join(f"{k}={v}" for k, v in self.client.cookies.items())})
                response = conn.getresponse()
                if response.status != 200:
                    response.read()
                    self.ledger.outcome(f"journalist export answered {response.status}")
                    return False
                with open(bundle, "wb") as out:
                    while chunk := response.read(MiB):
                        out.write(chunk)
            finally:
                conn.close()
            return True
        except (OSError, http.client.HTTPException):
            self.ledger.outcome("journalist download broken (server killed or restarting)")
            bundle.unlink(missing_ok=True)
            return False

    def _sign_in(self) -> bool:
        client = SourceClient(self.service.journalist_url, timeout=HTTP_TIMEOUT)
        login = client.get("/login")
        page = client.submit(login, login.form_posting_to("/login"), {
            "name": "alice", "passphrase": self.room.login_passphrase, "code": pyotp.parse_uri(self.room.totp_uri).now()})
        self.ledger.count("journalist sign-in")
        if not page.url.rstrip("/").endswith("/sources"):
            self.ledger.outcome(f"journalist sign-in answered {page.status} (a code used already, or busy)")
            return False
        self.client = client
        return True

    def _export_command(self, bundle: Path) -> bool:
        bundle.unlink(missing_ok=True)
        done = self.room.intake("export", "--out", bundle, ok=(0, 1))
        if done.code:
            self.ledger.outcome("intake export: " + done.err.strip().splitlines()[-1][:80])
        return done.code == 0

    def decrypt(self, bundle: Path, out: Path, name: str = "alice") -> int:
        return self.room.keys("decrypt", bundle, "--key", self.room.secret_key(name),
                              "--passphrase-file", self.room.passphrase_file, "--out", out, ok=(0, 3)).code

    def check_decrypted(self, out: Path, code: int, *, during_run: bool) -> None:
        found = decrypted_items(out)
        with self.ledger.lock:
            known = sum(digest in self.ledger.source_of_hash for _, digest, _ in found)
            if during_run:
                self.ledger.decrypted_during_run += known
                self.ledger.unknown_during_run += len(found) - known
                self.ledger.damaged_during_run += code == 3

    def _reply(self, out: Path) -> None:
        folders = {}
        for _, digest, folder in decrypted_items(out):
            with self.ledger.lock:
                number = self.ledger.source_of_hash.get(digest)
            if number is not None:
                folders[folder] = number
        if not folders:
            return
        replies = self.room.work / "exports" / f"replies-{self.round}.bundle"
        chosen = self.rng.sample(sorted(folders), min(2, len(folders)))
        tokens = {}
        for folder in chosen:
            token = f"soak-reply-{os.urandom(12).hex()}"
            self.room.keys("reply", "--key", self.room.secret_key(), "--source", folder, "--message",
                           f"Thank you. {token}", "--out", replies, "--passphrase-file", self.room.passphrase_file)
            tokens[token] = folders[folder]
        self.ledger.count("reply bundle")
        try:
            self.room.intake("import-replies", replies)
        except CommandFailed as error:
            self.ledger.outcome(f"import-replies refused: {str(error)[:120]}")
            return
        with self.ledger.lock:
            self.ledger.replies_imported.update(tokens)


def decrypted_items(out: Path) -> list[tuple[str, str, Path]]:
    """(kind, sha256, source folder) of every item `intake-keys decrypt` wrote under `out`."""
    items = []
    for record in sorted(out.glob("*/source.json")):
        for item in json.loads(record.read_text())["items"]:
            items.append((item["kind"], _sha((record.parent / item["file"]).read_bytes()), record.parent))
    return items
