"""tests/ports.py: ports for test servers stay outside the kernel's range for outgoing connections."""

from __future__ import annotations

import errno
import random
import socket

import pytest

from tests import ports


def _range_file(monkeypatch, tmp_path, text: str) -> None:
    fake = tmp_path / "ip_local_port_range"
    fake.write_text(text)
    real_path = ports.Path

    def path(name):
        return fake if name == "/proc/sys/net/ipv4/ip_local_port_range" else real_path(name)

    monkeypatch.setattr(ports, "Path", path)


def test_ports_are_outside_the_outgoing_range_and_never_issued_twice():
    low, high = (int(n) for n in open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    issued = [ports.free_port() for _ in range(200)]
    assert len(set(issued)) == len(issued)
    assert all(ports.LOWEST <= port < low or high < port <= ports.HIGHEST for port in issued)


def test_a_seeded_random_does_not_make_two_processes_pick_alike(monkeypatch):
    """A test that seeds `random` (tests/test_cleaning_media.py does) must not make the next port
    predictable: two test workers that both ran it would pick the same one."""
    picks = set()
    for _ in range(5):
        monkeypatch.setattr(ports, "_issued", set())  # as in a fresh process
        random.seed(12)
        picks.add(ports.free_port())
    assert len(picks) > 1


@pytest.mark.parametrize("text", ["1024 60999\n", "10000 60999\n"])
def test_a_range_that_starts_low_leaves_the_ports_above_it(monkeypatch, tmp_path, text):
    _range_file(monkeypatch, tmp_path, text)
    assert 60999 < ports.free_port() <= ports.HIGHEST


def test_no_room_outside_the_range_is_a_clear_error(monkeypatch, tmp_path):
    _range_file(monkeypatch, tmp_path, "1024 65535\n")
    with pytest.raises(RuntimeError, match="no loopback port outside"):
        ports.free_port()


def test_an_error_other_than_in_use_is_raised_not_retried_for_ever(monkeypatch):
    def refuse(self, address):
        raise OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")

    monkeypatch.setattr(socket.socket, "bind", refuse)
    with pytest.raises(OSError) as raised:
        ports.free_port()
    assert raised.value.errno == errno.EADDRNOTAVAIL


def test_ports_all_in_use_give_up_after_a_bounded_number_of_tries(monkeypatch):
    def in_use(self, address):
        raise OSError(errno.EADDRINUSE, "Address already in use")

    monkeypatch.setattr(socket.socket, "bind", in_use)
    with pytest.raises(RuntimeError, match="no free loopback port"):
        ports.free_port()


@pytest.mark.parametrize("worker", ["gw0", "gw1", "gw2"])
def test_each_xdist_worker_takes_only_its_own_ports(monkeypatch, worker):
    monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "3")
    assert {ports.free_port() % 3 for _ in range(30)} == {int(worker[2:])}
