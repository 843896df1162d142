"""Faults (DESIGN.md section 6): kill -9 during concurrent submissions loses no acknowledged
submission and shows no partial one (each part of a request, the message or a file, is
published once whole, so an unanswered request may show its first parts, never a part in
part); a full disk, a wrong database key and tampered ciphertext each give a clear error.

Everything here runs the real thing: `intake serve --no-tor` (gunicorn, gevent workers),
browser-like clients over loopback, a real small file system for the full disk, and the
journalist's own tools (`intake export`, `intake-keys decrypt`) to see what a journalist sees.
A bug these found has its own quick test here: recovery took a killed writer its parent had not
reaped yet (a zombie) for a live one and kept its upload; and its opposite, a writer whose
first thread had ended while another still ran (shown as a zombie) was taken for gone.
Already covered elsewhere and not repeated: a wrong key at `intake init` and `intake status`
(test_cli_setup.py), a damaged bundle file (test_keys_cli.py), a damaged database page
(test_journalist_cli.py), a writer killed in-process and SQLITE_FULL simulated with
max_page_count (test_store.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from keys import cli as keys_cli
from keys.bundle_reader import ExportBundle
from keys.server_key import trust_server
from keys.envelope import EnvelopeWriter, Metadata
from keys.envelope_reader import decrypt_bytes
from keys.files import TEMP_PREFIX
from keys.identity import KDF_MIN, Identity

import intake.newsroom_cli  # noqa: F401  (attaches the journalist-side commands)
from intake.cli import cli
from intake.config import load_settings
from intake.server_identity import server_public_key
from intake.store import Store, processes
from intake.store.connection import connect, connect_blobs
from intake.store.newsroom import Newsroom
from intake.store.slots_file import SLOT_BYTES, slots_path
from intake.store.store import blobs_path
from intake.store.submission_writer import INLINE_BYTES
from tests.fixtures_app import make_instance, upload_body
from tests.fixtures_serve import REPO, INTAKE, ServeProcess, descendants, free_port
from tests.fixtures_server import Page, SourceClient, Upload, encode_multipart, init_instance

MiB = 1024 * 1024
PASSPHRASE = "correct horse battery staple"
SERVING = "Ctrl-C stops intake."
WRONG_KEY = "Error: the database key does not open this database (wrong key, or not an intake database)"


# --- the server and its clients --------------------------------------------------------------


@contextlib.contextmanager
def serving(data_dir: Path, env: dict[str, str] | None = None) -> Iterator[tuple[ServeProcess, str]]:
    """`intake serve --no-tor` on free loopback ports (its start-up: prepare_data_dir, then gunicorn)."""
    port = free_port()
    serve = ServeProcess(["serve", "--data", str(data_dir), "--no-tor", "--port", str(port),
                          "--journalist-port", str(free_port())], env=env)
    try:
        serve.read_until(SERVING)
        yield serve, f"http://127.0.0.1:{port}"
    except BaseException:
        serve.stop()
        print(f"intake serve's output:\n{serve.output}{''.join(iter(lambda: serve._queue.get(timeout=5) or '', ''))}")
        raise
    finally:
        serve.stop()


def kill_everything(serve: ServeProcess) -> list[int]:
    """SIGKILL `intake serve` and every process under it (both gunicorn masters and their workers)
    at one instant: all are stopped first, so none can react (a worker whose master dies would
    otherwise finish its requests gracefully), then all are killed."""
    pids = [serve.process.pid, *descendants(serve.process.pid)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    serve.process.wait(10)
    deadline = time.monotonic() + 10
    while any(_runs(pid) for pid in pids):
        assert time.monotonic() < deadline, "a killed process is still running"
        time.sleep(0.01)
    return pids


def _runs(pid: int) -> bool:
    """Some thread of it has not ended (its first one shows as a zombie before the others end)."""
    try:
        return _state(pid) not in ("Z", "X", None) or len(os.listdir(f"/proc/{pid}/task")) > 1
    except FileNotFoundError:
        return False


def _start_time(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


@dataclass
class Part:
    kind: str  # "message" or "file"
    name: str | None
    content: bytes


@dataclass
class Sent:
    """One POST of the submit form: its parts, and whether the server acknowledged it (303 to the thanks page)."""

    parts: list[Part]
    acknowledged: bool = False
    status: int | None = None
    page: str = ""


def post_submission(client: SourceClient, page: Page, parts: list[Part], *, piece: int = 256 * 1024, pause: float = 0.0,
                    on_progress=None) -> tuple[int, str, str]:
    """Send the submit form found on `page` as a browser does, the body in pieces of `piece` bytes with
    `pause` seconds between them (a trickle, like an upload over Tor). Returns (status, Location, body)."""
    form = page.form_with("message", "files")
    message = "".join(p.content.decode() for p in parts if p.kind == "message")
    files = [Upload(p.name or "", p.content) for p in parts if p.kind == "file"]
    content_type, pieces = encode_multipart(form, {"message": message}, {"files": files})
    body = b"".join(pieces)
    conn = http.client.HTTPConnection("127.0.0.1", int(client.base_url.rsplit(":", 1)[1]), timeout=60)
    try:
        conn.putrequest("POST", form.action or "/submit")
        conn.putheader("Cookie", "; ".join(f"{k}={v}" for k, v in client.cookies.items()))
        conn.putheader("Content-Type", content_type)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        with memoryview(body) as view:
            for start in range(0, len(body), piece):
                conn.send(view[start : start + piece])
                if on_progress is not None:
                    on_progress(start + piece)
                if pause:
                    time.sleep(pause)
        response = conn.getresponse()
        text = response.read().decode("utf-8", errors="replace")
        return response.status, response.headers.get("Location", ""), text
    finally:
        conn.close()


def acknowledged(status: int, location: str) -> bool:
    return status == 303 and location.rstrip("/").endswith("/thanks")


def unique_message(tag: str, size: int = 0) -> bytes:
    text = f"{tag} {os.urandom(8).hex()} " + "x" * size
    return text.encode()


def unique_file(size: int) -> bytes:
    return os.urandom(size)


# --- what the journalists see ------------------------------------------------------------------


def visible_submissions(settings, identity: Identity) -> dict[str, tuple[str, str | None, bytes]]:
    """Every visible submission, decrypted from the store: id -> (kind, name, content)."""
    found = {}
    with Store.open(settings) as store:
        for submission in store.submissions():
            ciphertext = b"".join(store.submission_ciphertext(submission.id))
            assert len(ciphertext) == submission.size
            metadata, content = decrypt_bytes(ciphertext, identity.private_key)
            assert metadata.kind == submission.kind
            found[submission.id] = (metadata.kind, metadata.name, content)
    return found


def exported(data_dir: Path, out: Path, identity: Identity) -> list[tuple[str, str | None, bytes]]:
    """`intake export --all`, then every item of the bundle decrypted with the journalist's key."""
    result = CliRunner().invoke(cli, ["export", "--data", str(data_dir), "--out", str(out), "--all"])
    assert result.exit_code == 0, result.output
    items = []
    server = server_public_key(data_dir)
    with ExportBundle.open(out) as bundle:
        bundle.verify({bytes(server.verify_key): server})
        for source in bundle.read_manifest(identity):
            for item in source.items:
                reader = bundle.open_item(item, identity)
                content = b"".join(reader.chunks())
                items.append((item.kind, reader.metadata.name, content))
    return items


def store_space(settings) -> dict[str, object]:
    """Free pages left in each database, pending rows, and which submissions own slots (or chunks
    in the blobs database, in a store that has one)."""
    main = connect(settings.db_path, settings.db_key, busy_timeout_ms=10_000)
    blobs = connect_blobs(blobs_path(settings), settings.db_key, busy_timeout_ms=10_000) if blobs_path(settings).exists() else None
    slots = slots_path(settings.db_path)
    try:
        return {
            "main free pages": main.execute("PRAGMA freelist_count").fetchone()[0],
            "blobs free pages": blobs.execute("PRAGMA freelist_count").fetchone()[0] if blobs else 0,
            "pending": [row[0] for row in main.execute("SELECT id FROM submissions WHERE state != 'ready'")],
            "ready": {row[0] for row in main.execute("SELECT id FROM submissions WHERE state = 'ready'")},
            "main chunk owners": {row[0] for row in main.execute("SELECT DISTINCT submission_id FROM submission_chunks")},
            "blob chunk owners": {row[0] for row in blobs.execute("SELECT DISTINCT submission_id FROM chunks")} if blobs else set(),
            "slot owners": {row[0] for row in main.execute("SELECT DISTINCT submission_id FROM slots WHERE submission_id IS NOT NULL")},
            "slots in use": main.execute("SELECT count(*) FROM slots WHERE submission_id IS NOT NULL").fetchone()[0],
            "slots to overwrite": main.execute("SELECT count(*) FROM slots WHERE submission_id IS NULL AND dirty = 1").fetchone()[0],
            "slots file length": slots.stat().st_size if slots.exists() else 0,
            "slot rows": main.execute("SELECT count(*) FROM slots").fetchone()[0],
            "slots after the last in use": main.execute(
                "SELECT count(*) FROM slots WHERE slot > (SELECT coalesce(max(slot), -1) FROM slots WHERE submission_id IS NOT NULL)"
            ).fetchone()[0],
        }
    finally:
        main.close()
        if blobs:
            blobs.close()


def in_order_sent(parts: list[Part]) -> list[Part]:
    """The parts as the form sends them: the message first, then the files in the order chosen."""
    return [p for p in parts if p.kind == "message"] + [p for p in parts if p.kind == "file"]


def check_whole_parts(sent: list[Sent], visible: list[tuple[str, str | None, bytes]]) -> tuple[int, int]:
    """Every acknowledged request is there in full; of every other request, what is there is its first
    parts in the order sent, each whole (a part is published once it has arrived whole, so a cut or a
    refusal keeps the parts before it); nothing is there that was not sent (a part stored in part would
    be that: items are compared by their whole content). Returns (acknowledged requests, requests
    visible in full, requests without an answer visible in part)."""
    key = lambda kind, name, content: (kind, name, hashlib.sha256(content).hexdigest())  # noqa: E731
    seen: dict[tuple, int] = {}
    for kind, name, content in visible:
        k = key(kind, name, content)
        seen[k] = seen.get(k, 0) + 1
    assert all(count == 1 for count in seen.values()), "a submission is visible twice"
    expected: set[tuple] = set()
    visible_requests = in_part = 0
    for request in sent:
        keys = [key(p.kind, p.name, p.content) for p in in_order_sent(request.parts)]
        present = [k in seen for k in keys]
        if request.acknowledged:
            assert all(present), f"an acknowledged request lost {present.count(False)} of its {len(keys)} parts"
        else:
            assert present == sorted(present, reverse=True), f"an unacknowledged request kept parts out of order: {present}"
        visible_requests += all(present)
        in_part += any(present) and not all(present)
        expected |= set(keys)
    assert seen.keys() <= expected, "something is visible that no source sent (or a part of it)"
    return sum(r.acknowledged for r in sent), visible_requests, in_part


def check_refusal_lists_what_was_kept(request: Sent, visible: list[tuple[str, str | None, bytes]]) -> None:
    """A refused request's page names each of its parts that was kept, or says nothing was kept."""
    kept = [p for p in in_order_sent(request.parts) if (p.kind, p.name, p.content) in visible]
    if not kept:
        assert "Nothing you sent was kept" in request.page and "arrived safely" not in request.page
        return
    assert "This arrived safely and was kept:" in request.page and "the rest" in request.page
    for part in kept:
        assert (part.name if part.kind == "file" else "Your message") in request.page
    for part in in_order_sent(request.parts)[len(kept):]:
        assert part.kind == "message" or part.name not in request.page


# --- 1. kill -9 during concurrent submissions ------------------------------------------------------


class Load:
    """Sources submitting at once, each in its own thread, until the server dies."""

    def __init__(self, url: str):
        self.url = url
        self.sent: list[Sent] = []
        self.stop = threading.Event()
        self.killing = threading.Event()  # set just before the kill: a broken connection is expected from then on
        self.ready = threading.Barrier(6)
        self.trickled = 0  # bytes of the current trickled upload sent so far
        self.errors: list[BaseException] = []
        self.threads = [
            threading.Thread(target=self._run, args=(plan,), daemon=True)
            for plan in (self._messages, self._message_and_small_file, self._large_files, self._two_files, self._trickle)
        ]

    @property
    def acknowledged(self) -> int:
        return sum(r.acknowledged for r in self.sent)

    def start(self) -> None:
        for thread in self.threads:
            thread.start()
        self.ready.wait(60)  # every source has its codename: the submissions begin now

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)
            assert not thread.is_alive()

    def _run(self, plan) -> None:
        client = SourceClient(self.url, timeout=60)
        try:
            _, page = client.start_as_new_source()
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.errors.append(error)
            self.ready.abort()
            return
        self.ready.wait(60)
        rng = random.Random(os.urandom(8))
        while not self.stop.is_set():
            parts, pace = plan(rng)
            request = Sent(parts)
            self.sent.append(request)
            try:
                status, location, text = post_submission(client, page, parts, **pace)
            except (OSError, http.client.HTTPException) as error:
                if not self.killing.is_set():
                    self.errors.append(error)  # a connection broken by a live server
                return  # the server is gone
            request.status, request.page = status, text
            request.acknowledged = acknowledged(status, location)
            if not request.acknowledged:
                self.errors.append(AssertionError(f"a submission was refused with status {status}"))
                return

    def _messages(self, rng) -> tuple[list[Part], dict]:
        return [Part("message", None, unique_message("short", rng.randrange(0, 2000)))], {}

    def _message_and_small_file(self, rng) -> tuple[list[Part], dict]:
        return [Part("message", None, unique_message("with a file")),
                Part("file", f"notes-{rng.randrange(10**6)}.bin", unique_file(rng.randrange(1, 2 * INLINE_BYTES)))], {}

    def _large_files(self, rng) -> tuple[list[Part], dict]:
        # Several slots in the slots file, or one piece in the database.
        return [Part("message", None, unique_message("large")),
                Part("file", f"large-{rng.randrange(10**6)}.bin", unique_file(rng.randrange(4 * MiB, 10 * MiB)))], {}

    def _two_files(self, rng) -> tuple[list[Part], dict]:
        return [Part("file", f"a-{rng.randrange(10**6)}.bin", unique_file(rng.randrange(1 * MiB, 5 * MiB))),
                Part("file", f"b-{rng.randrange(10**6)}.bin", unique_file(rng.randrange(INLINE_BYTES, 5 * MiB)))], {}

    def _trickle(self, rng) -> tuple[list[Part], dict]:
        # 9 MiB at about 3 MiB/s: always in the middle of an upload with chunks stored when the kill comes.
        def progress(sent: int) -> None:
            self.trickled = sent

        self.trickled = 0
        return [Part("file", f"trickled-{rng.randrange(10**6)}.bin", unique_file(9 * MiB))], {
            "piece": 64 * 1024, "pause": 0.02, "on_progress": progress}


def wait_for(condition, timeout: float, load: Load) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert not load.errors, load.errors
        assert time.monotonic() < deadline, "the load never reached the moment to kill"
        time.sleep(0.005)


def trickle_has_stored_a_chunk(load: Load, pending) -> bool:
    """The trickled upload is past its first 4 MiB chunk (stored in the slots file under a pending
    row) with at least 1.5 MiB, half a second, still to go: it is certainly in flight at the kill."""
    return 5 * MiB < load.trickled < 7.5 * MiB and pending() >= 1


KILL_MOMENTS = {
    # Early: few acknowledgements yet, the trickled upload has its first chunk stored.
    "first-chunk-in-flight": trickle_has_stored_a_chunk,
    # Anywhere: a random instant in the first seconds of the load.
    "random": None,
    # Later: many acknowledgements in, the trickled upload (not the first one, often) in flight.
    "after-many-acks": lambda load, pending: load.acknowledged >= 100 and trickle_has_stored_a_chunk(load, pending),
}


@pytest.mark.slow
@pytest.mark.parametrize("moment", list(KILL_MOMENTS))
def test_kill_9_during_concurrent_submissions_loses_no_acknowledged_one_and_shows_no_partial_one(tmp_path: Path, moment: str):
    data_dir, settings, (journalist,) = init_instance(tmp_path, 1)
    started = time.monotonic()
    with serving(data_dir) as (serve, url), Store.open(settings) as watcher:
        load = Load(url)
        load.start()
        condition = KILL_MOMENTS[moment]
        if condition is None:
            time.sleep(random.uniform(0.2, 2.0))
        else:
            wait_for(lambda: condition(load, lambda: watcher.counts()["pending uploads"]), 30, load)
            time.sleep(random.uniform(0, 0.05))
        assert not load.errors, load.errors
        load.killing.set()
        kill_everything(serve)
        load.join()
    with Store.open(settings) as store:  # as the crash left it (no recovery yet)
        interrupted = store.counts()["pending uploads"]
    assert not load.errors, load.errors
    acked = load.acknowledged
    if moment != "random":
        assert interrupted >= 1, "the kill came while no upload was in flight"

    with serving(data_dir) as (serve, url):  # the start-up of `intake serve` recovers the store
        space = store_space(settings)
        assert space["pending"] == [], "a pending upload survived the restart"
        assert space["blob chunk owners"] <= space["ready"] and space["main chunk owners"] <= space["ready"]
        assert space["slot owners"] <= space["ready"] and space["slots to overwrite"] == 0
        assert space["main free pages"] == 0 and space["blobs free pages"] == 0, "the interrupted uploads' space was not given back"
        assert not blobs_path(settings).exists(), "a blobs database was created in a store that never had one"
        # The interrupted uploads' slots were overwritten (random bytes) and are free for the next
        # uploads; those after the last slot in use were cut off the file.
        assert space["slots after the last in use"] == 0 and space["slots file length"] <= space["slot rows"] * SLOT_BYTES
        # The restarted service takes submissions again.
        client = SourceClient(url)
        _, page = client.start_as_new_source()
        after = Sent([Part("message", None, unique_message("after the restart"))])
        status, location, _ = post_submission(client, page, after.parts)
        after.acknowledged = acknowledged(status, location)
        assert after.acknowledged

    visible = visible_submissions(settings, journalist)
    with Store.open(settings) as store:
        counts = store.counts()
    assert counts["submissions"] == len(visible) and counts["pending uploads"] == 0
    acked_requests, visible_requests, in_part = check_whole_parts(load.sent + [after], list(visible.values()))
    export = exported(data_dir, tmp_path / "export.bundle", journalist)
    assert sorted(export, key=repr) == sorted(visible.values(), key=repr)
    print(f"\n[{moment}] {len(load.sent)} requests sent, {acked} acknowledged before the kill and all present;"
          f" {visible_requests - 1 - acked} more complete and {in_part} in their first parts without an answer; {interrupted} uploads interrupted and"
          f" removed; {len(visible)} submissions exported and decrypted; {time.monotonic() - started:.1f} s")


@pytest.mark.slow
def test_serve_starts_again_on_its_port_at_once_after_a_kill_9(tmp_path: Path):
    """systemd restarts intake 5 s after a crash; the closed connections' TIME_WAIT on the port (a
    minute) must not make `intake serve` refuse the port as in use (scripts/soak found it did)."""
    data_dir, _, _ = init_instance(tmp_path, 1)
    port, journalist_port = free_port(), free_port()
    args = ["serve", "--data", str(data_dir), "--no-tor", "--port", str(port), "--journalist-port", str(journalist_port)]
    first = ServeProcess(args)
    try:
        first.read_until(SERVING)
        # Connections open at the kill: the kernel closes the server's side first, so TIME_WAIT is on its port.
        assert SourceClient(f"http://127.0.0.1:{port}").get("/").status == 200
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
        time.sleep(1)  # accepted by a worker
        kill_everything(first)
        for client in clients:
            client.close()
    finally:
        first.stop()
    again = ServeProcess(args)
    try:
        output = again.read_until(SERVING)
        assert "already in use" not in output
        assert SourceClient(f"http://127.0.0.1:{port}").get("/").status == 200
    finally:
        again.stop()
    # A port a live program listens on is still refused.
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.1", port))
        other.listen()
        refused = subprocess.run(INTAKE + args, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert refused.returncode == 1 and f"port {port} on 127.0.0.1 is already in use" in refused.stderr


# --- 2. a real full disk ---------------------------------------------------------------------------


@contextlib.contextmanager
def small_filesystem(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small file system here (mount: {mounted.stderr.strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


@pytest.mark.slow
def test_a_full_disk_refuses_clearly_keeps_everything_acknowledged_and_recovers_when_space_is_freed(tmp_path: Path):
    with small_filesystem(tmp_path / "disk", "40m") as disk:
        data_dir, settings, (journalist,) = init_instance(disk, 1)
        with serving(data_dir) as (serve, url):
            # Someone else's file on the same disk: what the operator deletes to free space.
            ballast = disk / "ballast"
            ballast.write_bytes(b"\0" * (free_bytes(disk) - 16 * MiB))
            client = SourceClient(url)
            _, page = client.start_as_new_source()
            sent: list[Sent] = []
            refused = None
            for number in range(40):
                parts = [Part("message", None, unique_message(f"tip {number}")),
                         # 5.5 MiB: a chunk goes to the slots file while the body still arrives; 3 MiB: all at the end.
                         Part("file", f"scan-{number}.pdf", unique_file(int((5.5 if number % 2 else 3) * MiB) + number * 1000))]
                request = Sent(parts)
                sent.append(request)
                request.status, location, request.page = post_submission(client, page, parts)
                request.acknowledged = acknowledged(request.status, location)
                if not request.acknowledged:
                    refused = request
                    break
            assert refused is not None, "the disk never filled"
            assert sum(r.acknowledged for r in sent) >= 2
            # A clear page for the source: what happened, what was kept (its message may have been, before
            # its file filled the disk), what to do; nothing internal.
            assert refused.status == 503, refused.page[:2000]
            if "This arrived safely and was kept" in refused.page:  # its message was, before its file filled the disk
                assert "Not everything arrived" in refused.page
                assert "The service cannot accept the rest at the moment" in refused.page
            else:
                assert "Not accepting submissions right now" in refused.page
            check_refusal_lists_what_was_kept(refused, list(visible_submissions(settings, journalist).values()))
            for internal in ("Traceback", "sqlite", "SQLITE", "intake.db", str(disk), "Error", "full"):
                assert internal not in refused.page, internal
            # Small messages are refused too while the disk is full, or accepted whole.
            for number in range(3):
                parts = [Part("message", None, unique_message(f"while full {number}", 20_000))]
                request = Sent(parts)
                sent.append(request)
                request.status, location, request.page = post_submission(client, page, parts)
                request.acknowledged = acknowledged(request.status, location)
                assert request.acknowledged or request.status == 503
            # A file larger than the room left is refused while its body still arrives (a 4 MiB chunk
            # fails to go in): the source still gets the page, not a broken connection.
            parts = [Part("message", None, unique_message("with a large file")), Part("file", "big.mov", unique_file(9 * MiB))]
            request = Sent(parts)
            sent.append(request)
            request.status, location, request.page = post_submission(client, page, parts)
            assert request.status == 503, request.status
            check_refusal_lists_what_was_kept(request, list(visible_submissions(settings, journalist).values()))
            with Store.open(settings) as store:
                assert store.counts()["pending uploads"] == 0, "a refused upload left a pending row"
            check_whole_parts(sent, list(visible_submissions(settings, journalist).values()))

            ballast.unlink()
            again = Sent([Part("message", None, unique_message("after freeing space")),
                          Part("file", "after.pdf", unique_file(3 * MiB))])
            sent.append(again)
            status, location, _ = post_submission(client, page, again.parts)
            again.acknowledged = acknowledged(status, location)
            assert again.acknowledged, status

        visible = visible_submissions(settings, journalist)
        acked, _, _ = check_whole_parts(sent, list(visible.values()))
        space = store_space(settings)
        assert space["pending"] == [] and space["blob chunk owners"] <= space["ready"] and space["slot owners"] <= space["ready"]
        # The refused uploads' slots could not all be overwritten while the disk was full: they wait,
        # unclaimable, for the next reclaim (the retention run's, here run as the service would).
        with Store.open(settings) as store:
            Newsroom(store).reclaim_space()
        space = store_space(settings)
        assert space["slots to overwrite"] == 0 and space["slots file length"] <= space["slot rows"] * SLOT_BYTES
        print(f"\n[disk full] refused with 503 after {sent.index(refused)} acknowledged requests of 3-5.5 MiB;"
              f" {sum(r.acknowledged for r in sent[sent.index(refused) + 1 : -2])} of 3 small messages accepted while full;"
              f" {acked} acknowledged requests kept and decrypted; accepted again after freeing space")


# --- each part of a request becomes visible once whole ----------------------------------------------


def test_a_part_refused_at_its_publish_is_not_kept_and_the_message_before_it_is(tmp_path: Path):
    """When the file's publish fails (here: the main database may not grow), nothing of the file is
    kept, and the message that arrived whole before it is, and the caller heard of the message only."""
    from intake.app.ingest import ingest_submission
    from intake.store import StoreFullError

    instance = make_instance(tmp_path, journalist_count=1)
    (journalist,) = instance.journalists
    published = []
    with Store.open(instance.settings) as store:
        source = store.create_source(os.urandom(32), os.urandom(32))
        store.recover()
        pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
        store._conn.execute(f"PRAGMA max_page_count = {pages}")  # room for a short row, not for a 200 KiB one
        body, content_type = upload_body("token", message="a short message",
                                         files=[("scan.pdf", os.urandom(200_000), "application/pdf")])
        with pytest.raises(StoreFullError):
            ingest_submission(io.BytesIO(body), content_type, store=store, source_id=source.id, max_bytes=10 * MiB,
                              check_form_token=lambda token: None, on_published=published.append)
        assert store.counts()["pending uploads"] == 0
        (kept,) = store.submissions()
        assert decrypt_bytes(b"".join(store.submission_ciphertext(kept.id)), journalist.private_key)[1] == b"a short message"
    assert [(item.kind, item.size) for item in published] == [("message", 15)]


@pytest.mark.parametrize("sizes", [(200_000, 200_000, 1000, INLINE_BYTES + 10), (1000, 50_000, 100_000), (1000, 600_000, 3000)])
def test_parts_of_one_request_are_published_together_in_order_and_read_back(tmp_path: Path, sizes):
    instance = make_instance(tmp_path, journalist_count=1)
    (journalist,) = instance.journalists
    contents = [os.urandom(size) for size in sizes]
    with Store.open(instance.settings) as store:
        source = store.create_source(os.urandom(32), os.urandom(32))
        recipients = store.active_recipients()
        uploads = []
        for content in contents:
            upload = store.start_submission(source.id, "file", recipients)
            upload.write(_seal(recipients, content, Metadata("file", name="f")))
            uploads.append(upload)
        ids = store.commit_together(uploads)
        # The main database took at most INLINE_BYTES of last pieces in that one transaction; the rest went to the slots file.
        inline = store._conn.execute("SELECT coalesce(sum(length(data)), 0) FROM submission_chunks").fetchone()[0]
        assert inline <= INLINE_BYTES
        read = [decrypt_bytes(b"".join(store.submission_ciphertext(i)), journalist.private_key)[1] for i in ids]
        assert read == contents and store.counts()["pending uploads"] == 0
        assert [s.id for s in store.submissions()] == list(ids)  # in the form's order, as before


_DIES_MID_UPLOAD = """
import os, sys
from pathlib import Path
from intake.config import load_settings
from intake.store import Store
settings = load_settings(Path(sys.argv[1]))
store = Store.open(settings)
upload = store.start_submission(store.create_source(os.urandom(32), b"p" * 32).id, "file", store.active_recipients())
upload.write(os.urandom(2 * settings.upload_chunk_bytes + 5))
store._settle()  # its pieces are stored beside it: the first one's pending row is in now
os._exit(9)  # killed mid-upload; its parent (this test) does not reap it: a zombie, as after kill -9 of a server
"""


def test_recover_removes_the_upload_of_a_killed_writer_its_parent_has_not_reaped_yet(settings):
    writer = subprocess.Popen([sys.executable, "-c", _DIES_MID_UPLOAD, str(settings.data_dir)], cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        # Its first thread shows as a zombie before its other threads have ended: until they
        # have, it may still write (test below), so recovery waits for that.
        while _state(writer.pid) != "Z" or len(os.listdir(f"/proc/{writer.pid}/task")) != 1:
            assert time.monotonic() < deadline, "the writer did not die"
            time.sleep(0.01)
        with Store.open(settings) as store:
            assert store.counts()["pending uploads"] == 1
            assert store.recover() == 1
            assert store.counts()["pending uploads"] == 0
    finally:
        writer.wait()



_MAIN_THREAD_ENDS_MID_UPLOAD = """
import ctypes, os, sys, threading, time
from pathlib import Path
from intake.config import load_settings
from intake.store import Store
settings = load_settings(Path(sys.argv[1]))
release = Path(sys.argv[2])
store = Store.open(settings)
upload = store.start_submission(store.create_source(os.urandom(32), b"p" * 32).id, "file", store.active_recipients())
upload.write(os.urandom(2 * settings.upload_chunk_bytes + 5))
store._settle()  # its pieces are stored beside it: the first one's pending row is in now

def stuck():  # stands for a thread stuck in a write on a stalled disk: it may still write
    while not release.exists():
        time.sleep(0.01)
    os._exit(9)  # then the whole process ends

threading.Thread(target=stuck).start()
ctypes.CDLL(None).pthread_exit(None)  # the first thread ends, as a kill ends it before a thread stuck in the kernel
"""


def test_recover_keeps_the_upload_of_a_writer_whose_first_thread_ended_while_another_still_runs(settings, tmp_path: Path):
    """/proc shows a process whose first thread has ended as a zombie, though another of its
    threads (one stuck in a write on a stalled disk, after kill -9) may still write: its upload
    and its slots stay until the last thread has ended."""
    release = tmp_path / "release"
    writer = subprocess.Popen([sys.executable, "-c", _MAIN_THREAD_ENDS_MID_UPLOAD, str(settings.data_dir), str(release)], cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while _state(writer.pid) != "Z":
            assert time.monotonic() < deadline, "the writer's first thread did not end"
            assert writer.poll() is None, "the writer exited"
            time.sleep(0.01)
        assert len(os.listdir(f"/proc/{writer.pid}/task")) > 1  # the ended first thread and those still running
        # The same test decides whether freed slots it wrote may be overwritten (slot_table._cleanable).
        assert processes.writer_alive(f"{writer.pid}:{_start_time(writer.pid)}")
        with Store.open(settings) as store:
            assert store.recover() == 0
            assert store.counts()["pending uploads"] == 1
        release.touch()
        while _state(writer.pid) != "Z" or len(os.listdir(f"/proc/{writer.pid}/task")) != 1:
            assert time.monotonic() < deadline, "the writer's last thread did not end"
            time.sleep(0.01)
        with Store.open(settings) as store:
            assert not processes.writer_alive(f"{writer.pid}:{_start_time(writer.pid)}")
            assert store.recover() == 1  # now nothing of it can write
            assert store.counts()["pending uploads"] == 0
    finally:
        release.touch()
        writer.wait()



_OUT_OF_DESCRIPTORS = """
import os, resource, subprocess, sys
from intake.store import processes
from intake.store.errors import StoreError
child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
writer = f"{child.pid}:{open(f'/proc/{child.pid}/stat').read().rsplit(')', 1)[1].split()[19]}"
assert processes.writer_alive(writer)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
held = []
try:
    while True:
        held.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
alive = processes.writer_alive(writer)
try:
    named = processes.current_writer()
except StoreError as error:
    named = "refused: " + str(error)
for fd in held:
    os.close(fd)
child.stdin.close()
child.wait()
print(alive, named, sep="\\n")
"""


def test_a_writer_is_not_taken_for_gone_when_proc_cannot_be_read():
    """Out of file descriptors (EMFILE), /proc cannot be read: a live writer must still count as
    alive (taking it for gone would hand its slots to another upload), and a process that cannot
    read its own start time refuses to name itself rather than record a name that reads as gone."""
    result = subprocess.run([sys.executable, "-c", _OUT_OF_DESCRIPTORS], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    alive, named = result.stdout.splitlines()
    assert alive == "True"
    assert named.startswith("refused: could not read this process's start time from /proc")


# --- 3. a wrong database key at `intake serve` ------------------------------------------------------


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_serve_with_the_wrong_key_is_one_line_starts_nothing_and_changes_nothing(tmp_path: Path):
    data_dir, _, _ = init_instance(tmp_path, 1)
    wrong = tmp_path / "wrong.key"
    wrong.write_text(os.urandom(32).hex() + "\n")
    wrong.chmod(0o600)
    before = _digest(data_dir)
    port = free_port()
    result = subprocess.run(
        INTAKE + ["serve", "--data", str(data_dir), "--no-tor", "--port", str(port), "--db-key-file", str(wrong)],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )
    assert result.returncode == 1
    assert (result.stdout + result.stderr).strip().splitlines() == [WRONG_KEY]
    assert _digest(data_dir) == before
    with pytest.raises(OSError):  # nothing was started
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


# --- 4. tampered ciphertext in the store -------------------------------------------------------------


def _seal(recipients, content: bytes, metadata: Metadata) -> bytes:
    out = io.BytesIO()
    with EnvelopeWriter(out, [r.public_key for r in recipients], metadata) as envelope:
        envelope.write(content)
    return out.getvalue()


def _submit(store: Store, source_id: str, kind: str, content: bytes, name: str | None = None) -> str:
    recipients = store.active_recipients()
    envelope = _seal(recipients, content, Metadata(kind, name=name))
    with store.start_submission(source_id, kind, recipients) as upload:
        upload.write(envelope)
        return upload.commit()


def _flip_a_slot_byte(settings, submission_id: str, seq: int) -> None:
    """Change one byte in the middle of a slot of a stored envelope, in the slots file."""
    main = connect(settings.db_path, settings.db_key, busy_timeout_ms=1000)
    try:
        (slot,) = main.execute("SELECT slot FROM slots WHERE submission_id = ? AND seq = ?", (submission_id, seq)).fetchone()
    finally:
        main.close()
    with open(slots_path(settings.db_path), "r+b") as slots:
        slots.seek(slot * SLOT_BYTES + SLOT_BYTES // 2)
        byte = slots.read(1)[0]
        slots.seek(-1, os.SEEK_CUR)
        slots.write(bytes([byte ^ 0x01]))


def _flip_a_byte(conn, table: str, submission_id: str, seq: int) -> None:
    """Change one byte in the middle of a stored piece, at the SQLite level with the real key:
    SQLCipher's page authentication sees a legitimate write; only the envelope can tell."""
    (data,) = conn.execute(f"SELECT data FROM {table} WHERE submission_id = ? AND seq = ?", (submission_id, seq)).fetchone()
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0x01
    conn.execute(f"UPDATE {table} SET data = ? WHERE submission_id = ? AND seq = ?", (bytes(damaged), submission_id, seq))


@dataclass
class TamperedRun:
    code: int
    err: str
    out: Path
    files: dict[str, Path]
    contents: list[bytes]
    sent: dict[str, bytes]  # what each item was: "before", "damaged", "after", "other source"


def tampered_export_decrypted(tmp_path: Path, capsys, where: str) -> TamperedRun:
    """One source sends three items, another one; one byte of the second item is changed in the store;
    then `intake export` and `intake-keys decrypt`, as the journalist would run them."""
    data_dir, _, (journalist,) = init_instance(tmp_path, 1)
    secret = tmp_path / "journalist.secret"
    journalist.save(secret, PASSPHRASE, KDF_MIN)
    trust_server(secret, server_public_key(data_dir))
    passphrase = tmp_path / "passphrase"
    passphrase.write_text(PASSPHRASE + "\n")
    settings = load_settings(data_dir, upload_chunk_bytes=1 * MiB)  # a few MiB make several chunk rows
    sent = {"before": b"the message before " + os.urandom(8).hex().encode(),
            "damaged": (os.urandom(3 * MiB + 12345) if where == "slots file" else b"a short tip " + os.urandom(8).hex().encode()),
            "after": b"the message after " + os.urandom(8).hex().encode(),
            "other source": b"another source's tip " + os.urandom(8).hex().encode()}
    with Store.open(settings) as store:
        first = store.create_source(os.urandom(32), os.urandom(32))
        second = store.create_source(os.urandom(32), os.urandom(32))
        _submit(store, first.id, "message", sent["before"])
        if where == "slots file":
            damaged_id = _submit(store, first.id, "file", sent["damaged"], "leak.pdf")
        else:
            damaged_id = _submit(store, first.id, "message", sent["damaged"])
        _submit(store, first.id, "message", sent["after"])
        _submit(store, second.id, "message", sent["other source"])
    if where == "main database":  # a one-piece envelope, in the main database
        conn = connect(settings.db_path, settings.db_key, busy_timeout_ms=1000)
        try:
            _flip_a_byte(conn, "submission_chunks", damaged_id, 0)
        finally:
            conn.close()
    else:  # a slot in the middle of a large envelope, in the slots file
        _flip_a_slot_byte(settings, damaged_id, 4)

    bundle = tmp_path / "export.bundle"
    result = CliRunner().invoke(cli, ["export", "--data", str(data_dir), "--out", str(bundle)])
    assert result.exit_code == 0, result.output  # the server cannot open envelopes; it hands them on verbatim
    out = tmp_path / "decrypted"
    capsys.readouterr()
    code = keys_cli.main(["decrypt", str(bundle), "--key", str(secret), "--passphrase-file", str(passphrase), "--out", str(out)])
    err = capsys.readouterr().err
    files = {str(p.relative_to(out)): p for p in out.rglob("*") if p.is_file()}
    contents = [p.read_bytes() for name, p in files.items() if not name.endswith((".json", ".html"))]
    return TamperedRun(code, err, out, files, contents, sent)


@pytest.mark.parametrize("where", ["main database", "slots file"])
def test_tampered_ciphertext_in_the_store_is_one_clear_error_and_no_partial_plaintext(tmp_path: Path, capsys, where: str):
    run = tampered_export_decrypted(tmp_path, capsys, where)
    # The bundle is intact (the server handed on what it stored), so decrypt goes on past the damaged item
    # and ends with its own exit status.
    assert run.code == keys_cli.EXIT_DAMAGED_ITEMS
    lines = run.err.strip().splitlines()
    # One line naming the damaged item and saying the data was damaged (which of the envelope spec's two
    # refusals depends on where the byte is: a damaged only-and-last piece cannot be told from a cut-off one).
    assert len(lines) == 1 and "Traceback" not in run.err, run.err
    assert lines[0].startswith("intake-keys: error: source '") and " was damaged on the server before export" in lines[0], lines[0]
    assert lines[0].endswith((": the envelope failed authentication: it was modified or reordered",
                              ": the envelope is truncated or damaged at its end")), lines[0]
    assert not [name for name in run.files if Path(name).name.startswith(TEMP_PREFIX)], "a partial plaintext file was left"
    # What came before the damaged item is complete and recorded; the damaged one is nowhere, in whole or in part.
    assert run.sent["before"] in run.contents
    damaged = run.sent["damaged"]
    assert not any(content and content in damaged for content in run.contents), "partial plaintext of the damaged item"
    records = [json.loads(p.read_text()) for name, p in run.files.items() if name.endswith("source.json")]
    assert sum(len(record["items"]) for record in records) == len(run.contents)
    print(f"\n[tampered, {where}] decrypt named the damaged item in one line and wrote {len(run.contents)} of 4 items")


def test_items_after_a_tampered_one_still_decrypt(tmp_path: Path, capsys):
    run = tampered_export_decrypted(tmp_path, capsys, "slots file")
    assert run.code != 0
    assert run.sent["after"] in run.contents and run.sent["other source"] in run.contents
