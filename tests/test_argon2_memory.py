"""Argon2id's working memory is "mapped for each derivation on its own and unmapped when it ends,
so no process keeps it" (SECURITY.md §2, "Plaintext and secrets in memory").

A real gunicorn (deploy/gunicorn.conf.py) serves a codename login and, on the journalist app, a
sign-in, each at the costs intake ships (KDF_MEMLIMIT, PASSPHRASE_MEMLIMIT). While the request
runs, a thread here reads every gunicorn process's /proc/PID/maps again and again: a private
anonymous read-write mapping of the derivation's memlimit appears in one worker (its own mapping,
not part of a heap or arena) and is gone once the answer has come, in every process."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from intake.config import KDF_MEMLIMIT
from intake.enrolment import reset_login
from intake.journalist_auth import PASSPHRASE_MEMLIMIT
from tests.fixtures_newsroom import Journalist, make_newsroom
from tests.fixtures_server import SourceClient, run_gunicorn, run_intake_server

JOURNALIST_APP = "intake.app.journalist:create_journalist_app()"
_MAPPING = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) ([0-9a-f]+) (\S+) (\d+)\s*(.*)$")
SLACK = 1 << 20  # libsodium maps exactly memlimit bytes; a page or two of rounding at most


@dataclass(frozen=True)
class Mapping:
    pid: int
    start: int
    end: int
    perms: str
    inode: int
    name: str

    @property
    def size(self) -> int:
        return self.end - self.start


def mappings(pid: int) -> list[Mapping]:
    found = []
    try:
        text = Path(f"/proc/{pid}/maps").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return found
    for line in text.splitlines():
        match = _MAPPING.match(line)
        if match:
            found.append(Mapping(pid, int(match[1], 16), int(match[2], 16), match[3], int(match[6]), match[7]))
    return found


def work_areas(pids: list[int], memlimit: int) -> set[Mapping]:
    """Mappings of an Argon2id derivation's size, of any kind (private or shared, named or not)."""
    return {m for pid in pids for m in mappings(pid) if memlimit <= m.size <= memlimit + SLACK}


def its_own(mapping: Mapping) -> bool:
    """A private anonymous read-write mapping: libsodium's own for the derivation (not a file, a heap or a shared area)."""
    return mapping.perms == "rw-p" and mapping.inode == 0 and mapping.name == ""


class Sampler:
    """Reads the processes' maps in a loop until stopped; keeps every work area it saw."""

    def __init__(self, pids: list[int], memlimit: int):
        self.pids, self.memlimit = pids, memlimit
        self.seen: set[Mapping] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.seen |= work_areas(self.pids, self.memlimit)
            self.samples += 1

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(10)


def _derivation_maps_and_unmaps(pids: list[int], memlimit: int, request) -> None:
    before = work_areas(pids, memlimit)
    with Sampler(pids, memlimit) as sampler:
        request()
    after = work_areas(pids, memlimit)  # the answer has come: the derivation ended before it
    during = {m for m in sampler.seen - before if its_own(m)}
    print(f"\n[argon2id memory] {sampler.samples} samples of {len(pids)} processes' maps: during the request "
          f"{[(m.pid, m.size >> 20) for m in during]} (pid, MiB); after it {len(after - before)}")
    assert during, f"no mapping of {memlimit >> 20} MiB appeared while the derivation ran ({sampler.samples} samples)"
    assert after - before == set(), f"still mapped after the request: {after - before}"
    assert not (during & after), "a derivation's work area outlived it"


@pytest.fixture
def source_server(tmp_path: Path) -> Iterator:
    with run_intake_server(tmp_path) as running:
        assert running.settings.kdf_memlimit == KDF_MEMLIMIT  # the shipped cost
        yield running


@pytest.mark.slow
@pytest.mark.parametrize("codename", ["known", "unknown"])
def test_a_codename_derivations_memory_is_mapped_for_it_and_unmapped_when_it_ends(source_server, codename: str):
    from intake.codename import generate_codename

    typed = SourceClient(source_server.url).start_as_new_source()[0] if codename == "known" else generate_codename()
    pids = [source_server.gunicorn.process.pid, *source_server.gunicorn.worker_pids()]
    status = {}
    _derivation_maps_and_unmaps(pids, KDF_MEMLIMIT, lambda: status.setdefault("login", SourceClient(source_server.url).log_in(typed).status))
    assert status["login"] == (200 if codename == "known" else 401)


@pytest.mark.slow
def test_a_passphrase_checks_memory_is_mapped_for_it_and_unmapped_when_it_ends(tmp_path: Path):
    newsroom = make_newsroom(tmp_path)
    with newsroom.store() as store:  # alice's login hashed at the shipped cost (the fixture's is the minimum)
        alice = Journalist(newsroom.alice.identity, reset_login(store, newsroom.settings.data_dir, "alice"))
    with run_gunicorn(JOURNALIST_APP, tmp_path, {"INTAKE_DATA": str(newsroom.settings.data_dir)}) as server:
        pids = [server.process.pid, *server.worker_pids()]
        client = SourceClient(server.url)
        login = client.get("/login")
        pages = []

        def sign_in() -> None:
            pages.append(client.submit(login, login.form_with("name", "passphrase", "code"),
                                       {"name": "alice", "passphrase": alice.enrolment.passphrase, "code": alice.code()}))

        _derivation_maps_and_unmaps(pids, PASSPHRASE_MEMLIMIT, sign_in)
        assert "Signed in as alice" in pages[0].text
