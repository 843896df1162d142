"""Per-circuit accounting, the fair derivation queue and the body clock, without a server
(tests/test_abuse.py drives them through real gunicorn)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from intake.body_pace import BodyTooSlowError, PacedSocket, WorkerLimits, _BodyClock, worker_limits_from_environment
from intake.circuits import CircuitBusyError, CircuitLedger, circuit_from_proxy_line
from intake.codename import KdfBusyError, KdfGate
from tests.fixtures_circuits import tor_line


def test_the_line_tor_writes_names_one_circuit() -> None:
    # The exact line of tor's own unit test (test_hs_service.c) for circuit 666.
    assert tor_line(666, 42) == b"PROXY TCP6 fc00:dead:beef:4dad::0:29a ::1 666 42\r\n"
    assert circuit_from_proxy_line(tor_line(666)) == circuit_from_proxy_line(tor_line(666, 443))
    assert circuit_from_proxy_line(tor_line(666)) != circuit_from_proxy_line(tor_line(667))
    assert circuit_from_proxy_line(tor_line(0xFFFFFFFF)) is not None


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY TCP4 127.0.0.1 127.0.0.1 1 80\r\n",  # not tor's
        b"PROXY TCP6 fc00:dead:beef:4dae::1 ::1 1 80\r\n",  # outside tor's network
        b"PROXY TCP6 2001:db8::1 ::1 1 80\r\n",
        b"PROXY TCP6 not-an-address ::1 1 80\r\n",
        b"PROXY UNKNOWN\r\n",
        b"GET / HTTP/1.1\r\n",
        b"",
    ],
)
def test_anything_but_tors_line_names_no_circuit(line: bytes) -> None:
    assert circuit_from_proxy_line(line) is None


def test_the_circuit_key_shows_nothing_of_the_id() -> None:
    key = circuit_from_proxy_line(tor_line(0xC1C1D2D2))
    assert "c1c1" not in repr(key).lower() and str(0xC1C1D2D2) not in repr(key)
    assert b"\xc1\xc1\xd2\xd2" not in key.digest


def test_the_ledger_caps_each_circuit_and_the_total() -> None:
    ledger = CircuitLedger(per_circuit=2, total=3)
    a, b = circuit_from_proxy_line(tor_line(1)), circuit_from_proxy_line(tor_line(2))
    with ledger.hold(a), ledger.hold(a):
        with pytest.raises(CircuitBusyError):
            with ledger.hold(a):
                pass
        with ledger.hold(b):
            with pytest.raises(CircuitBusyError):
                with ledger.hold(None):  # unknown circuits count towards the total only
                    pass
    assert ledger.held() == 0 and ledger.held(a) == 0
    for _ in range(3):
        with ledger.hold(a):
            pass


def _wait_admitted(gate: KdfGate, count: int) -> None:
    deadline = time.monotonic() + 5
    while gate._admitted < count and time.monotonic() < deadline:
        time.sleep(0.001)


def _slow(seconds: float, label: str, log: list[str]) -> str:
    time.sleep(seconds)
    log.append(label)
    return label


def test_waiting_derivations_are_served_round_robin_across_circuits() -> None:
    """One circuit queues 6 calls before another circuit's 2: with first come first served
    the others would run last; round robin runs them second and fourth."""
    gate = KdfGate(concurrency=1, queue=10, timeout=10, per_circuit=10)
    log: list[str] = []
    release = threading.Event()
    attacker, genuine = circuit_from_proxy_line(tor_line(7)), circuit_from_proxy_line(tor_line(8))

    def first() -> None:
        release.wait(10)
        log.append("a")

    calls = [(first, (), attacker)] + [(_slow, (0.01, "a", log), attacker)] * 6 + [(_slow, (0.01, "g", log), genuine)] * 2
    threads = []
    for admitted, (fn, args, circuit) in enumerate(calls, start=1):
        thread = threading.Thread(target=gate.run, args=(fn, *args), kwargs={"circuit": circuit})
        thread.start()
        threads.append(thread)
        _wait_admitted(gate, admitted)  # queued in this order
    release.set()
    for thread in threads:
        thread.join()
    assert log == ["a", "a", "g", "a", "g", "a", "a", "a", "a"]


def test_one_circuit_cannot_hold_more_than_its_share_of_derivations() -> None:
    gate = KdfGate(concurrency=2, queue=8, timeout=10, per_circuit=2)
    attacker = circuit_from_proxy_line(tor_line(9))
    release = threading.Event()
    held = [threading.Thread(target=gate.run, args=(release.wait, 5), kwargs={"circuit": attacker}) for _ in range(2)]
    for thread in held:
        thread.start()
    _wait_admitted(gate, 2)
    with pytest.raises(KdfBusyError):
        gate.run(len, "x", circuit=attacker)
    started = time.monotonic()
    releaser = threading.Timer(0.1, release.set)
    releaser.start()
    assert gate.run(len, "xyz", circuit=circuit_from_proxy_line(tor_line(10))) == 3  # waits for a slot, not refused
    assert time.monotonic() - started < 2
    for thread in held:
        thread.join()


def test_a_waiter_that_gave_up_does_not_take_a_slot() -> None:
    gate = KdfGate(concurrency=1, queue=2, timeout=0.1, per_circuit=3)
    release = threading.Event()
    runner = threading.Thread(target=gate.run, args=(release.wait, 5))
    runner.start()
    _wait_admitted(gate, 1)
    with pytest.raises(KdfBusyError):
        gate.run(len, "x")  # waits 0.1 s, gives up
    release.set()
    runner.join()
    assert gate.run(len, "ab") == 2  # the slot came back


def test_the_body_clock_wants_the_minimum_rate_in_each_window() -> None:
    limits = WorkerLimits(body_min_rate=100, body_window=10, body_deadline=100)
    clock = _BodyClock(limits, now=0)
    clock.received(999, now=5)
    with pytest.raises(BodyTooSlowError) as stopped:
        clock.check(now=10)  # 999 < 100 B/s x 10 s
    assert not stopped.value.past_deadline and stopped.value.seconds == 10  # the window, told to the source
    clock = _BodyClock(limits, now=0)
    clock.received(1000, now=9)
    clock.check(now=10)  # enough: the next window starts
    assert clock.seconds_left(now=10) == 10
    with pytest.raises(BodyTooSlowError):
        clock.received(10, now=20)
    clock = _BodyClock(limits, now=0)
    for window_end in range(10, 100, 10):
        clock.received(1000, now=window_end - 1)
        clock.check(now=window_end)
    with pytest.raises(BodyTooSlowError, match="deadline") as stopped:
        clock.received(1000, now=100)
    assert stopped.value.past_deadline and stopped.value.seconds == 100


def test_bad_limits_in_the_environment_stop_the_server_with_a_clear_message() -> None:
    assert worker_limits_from_environment({}) == WorkerLimits()
    with pytest.raises(SystemExit, match="INTAKE_BODY_MIN_BYTES_PER_SECOND must be a number"):
        worker_limits_from_environment({"INTAKE_BODY_MIN_BYTES_PER_SECOND": "fast"})
    with pytest.raises(SystemExit, match="INTAKE_TOR_CIRCUIT_IDS must be auto, required or off"):
        worker_limits_from_environment({"INTAKE_TOR_CIRCUIT_IDS": "yes"})
    with pytest.raises(SystemExit, match="at least INTAKE_BODY_WINDOW_SECONDS"):
        worker_limits_from_environment({"INTAKE_BODY_DEADLINE_SECONDS": "10"})


def test_a_circuit_starts_derivations_only_at_human_speed() -> None:
    gate = KdfGate(concurrency=2, queue=2, timeout=1, per_circuit=1, circuit_interval=0.5, circuit_burst=2)
    attacker, other = circuit_from_proxy_line(tor_line(11)), circuit_from_proxy_line(tor_line(12))
    assert gate.run(len, "a", circuit=attacker) == 1
    assert gate.run(len, "a", circuit=attacker) == 1
    with pytest.raises(KdfBusyError, match="in a row"):
        gate.run(len, "a", circuit=attacker)
    assert gate.run(len, "bb", circuit=other) == 2  # another circuit has its own bucket
    assert gate.run(len, "ccc") == 3  # an unknown circuit is not metered
    time.sleep(0.55)
    assert gate.run(len, "a", circuit=attacker) == 1


def test_the_request_rate_of_a_circuit_is_metered_while_it_holds_a_connection() -> None:
    ledger = CircuitLedger(per_circuit=5, total=10, rate=10, burst=3)
    circuit = circuit_from_proxy_line(tor_line(13))
    with ledger.hold(circuit):
        assert [ledger.allow_request(circuit) for _ in range(4)] == [True, True, True, False]
        assert ledger.allow_request(None)
        time.sleep(0.15)
        assert ledger.allow_request(circuit)
    with ledger.hold(circuit):  # the bucket went with the circuit's last connection
        assert [ledger.allow_request(circuit) for _ in range(3)] == [True, True, True]


def test_a_stopped_body_says_the_same_limit_to_every_later_read_and_keeps_no_traceback() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        paced = PacedSocket(ours, WorkerLimits(body_min_rate=1, body_window=10, body_deadline=0.2))
        paced.start_body()
        with pytest.raises(BodyTooSlowError) as first:
            paced.recv(10)
        assert (first.value.past_deadline, first.value.seconds) == (True, 0.2)
        # What is kept is a copy never raised: the raised one's traceback holds the request's frames.
        assert paced.too_slow is not first.value and paced.too_slow.__traceback__ is None
        theirs.sendall(b"late")
        with pytest.raises(BodyTooSlowError) as again:
            paced.recv(10)
        assert (again.value.past_deadline, again.value.seconds) == (True, 0.2)
