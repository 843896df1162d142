"""intake.tor against a real tor that cannot reach any network.

Unmarked tests cover the pure helpers. Tests marked ``slow`` run the real tor
binary, either in ``offline`` mode (``DisableNetwork 1``) or as a stand-in
"system tor" that also has ``DisableNetwork 1``: nothing is ever contacted.
"""

from __future__ import annotations

import base64
import os
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nacl.public
import pytest

from intake import tor as intake_tor
from intake.onion_keys import (
    InvalidClientKeyError,
    OnionKeyError,
    client_auth_line,
    ensure_onion_keys,
    generate_client_auth_keypair,
    load_or_create_onion_key,
    onion_address_for_key,
)
from intake.tor import OnionServices, TorError

ONION = "abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqrstuvwx.onion"


def _alive(pid: int) -> bool:
    """True if pid runs and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def _tor_processes_using(path: Path) -> list[int]:
    """Pids of tor processes whose command line mentions path."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"tor") and any(str(path).encode() in a for a in cmdline):
            if _alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def _sockets(directory: Path) -> tuple[Path, Path]:
    """Where the source and journalist apps would listen (tor needs no socket to exist yet)."""
    return directory / "source.sock", directory / "journalist.sock"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- helpers without tor -----------------------------------------------------------

def test_client_auth_keypair_is_an_x25519_pair_in_base32():
    public, private = generate_client_auth_keypair()
    assert len(public) == len(private) == 52
    raw_private = base64.b32decode(private + "====")
    derived = nacl.public.PrivateKey(raw_private).public_key
    assert base64.b32decode(public + "====") == bytes(derived)


def test_client_auth_line_is_what_tor_reads_from_client_onion_auth_dir():
    _public, private = generate_client_auth_keypair()
    line = client_auth_line(ONION, private.lower())
    assert line == f"{ONION.removesuffix('.onion')}:descriptor:x25519:{private}"


def test_client_auth_line_refuses_a_bad_address_or_key():
    _public, private = generate_client_auth_keypair()
    with pytest.raises(OnionKeyError):
        client_auth_line("example.com", private)
    with pytest.raises(InvalidClientKeyError):
        client_auth_line(ONION, "AAAA")


def test_invalid_journalist_client_key_is_refused_before_tor_starts(tmp_path):
    services = OnionServices(tmp_path, "offline")
    with pytest.raises(InvalidClientKeyError):
        services.start(*_sockets(tmp_path), ["not-a-key"])
    assert services.pid is None


def test_unknown_tor_mode_is_refused(tmp_path):
    with pytest.raises(TorError, match="unknown tor mode"):
        OnionServices(tmp_path, "public")


def test_onion_key_file_is_private_and_stable(tmp_path):
    key = load_or_create_onion_key(tmp_path / "onion" / "source.key")
    assert load_or_create_onion_key(tmp_path / "onion" / "source.key") == key
    assert _mode(tmp_path / "onion" / "source.key") == 0o600
    assert _mode(tmp_path / "onion") == 0o700
    address = onion_address_for_key(key)
    assert address.endswith(".onion") and len(address) == 62


def test_corrupt_onion_key_file_gives_a_clear_error(tmp_path):
    (tmp_path / "onion").mkdir(mode=0o700)
    (tmp_path / "onion" / "source.key").write_bytes(b"garbage")
    with pytest.raises(OnionKeyError, match="not a tor v3 onion secret key"):
        load_or_create_onion_key(tmp_path / "onion" / "source.key")


# --- offline mode, real tor ----------------------------------------------------------

@pytest.fixture
def journalist_keys():
    return [generate_client_auth_keypair() for _ in range(2)]


@pytest.fixture
def started():
    """Start OnionServices and always stop them."""
    running: list[OnionServices] = []

    def start(services: OnionServices, *args):
        running.append(services)
        return services.start(*args)

    yield start
    for services in running:
        services.stop()


@pytest.mark.slow
def test_offline_mode_makes_both_addresses_at_once(tmp_path, started, journalist_keys):
    seen = []
    services = OnionServices(tmp_path, "offline", progress=lambda p, s: seen.append((p, s)))
    t0 = time.monotonic()
    source, journalist = started(services, *_sockets(tmp_path), [journalist_keys[0][0]])
    assert time.monotonic() - t0 < 10
    for address in (source, journalist):
        assert address.endswith(".onion") and len(address) == 62
    assert source != journalist
    assert services.wait_for_bootstrap(30) is False  # at once: nothing is contacted
    assert "offline" in services.bootstrap.summary
    assert seen == [(0, "network disabled (offline mode)")]
    # tor itself derived the same source address from the key intake wrote
    assert (tmp_path / "tor" / "source_service" / "hostname").read_text().strip() == source


@pytest.mark.slow
def test_addresses_are_the_same_after_a_restart_and_keys_are_private(tmp_path, started, journalist_keys):
    first = OnionServices(tmp_path, "offline")
    addresses = started(first, *_sockets(tmp_path), [journalist_keys[0][0]])
    first.stop()
    again = OnionServices(tmp_path, "offline")
    assert started(again, *_sockets(tmp_path / "elsewhere"), [k for k, _ in journalist_keys]) == addresses
    assert _mode(tmp_path / "onion") == 0o700
    assert _mode(tmp_path / "tor") == 0o700
    for name in ("source.key", "journalist.key"):
        assert _mode(tmp_path / "onion" / name) == 0o600
    assert sorted(p.name for p in (tmp_path / "onion").iterdir()) == ["journalist.key", "source.key"]


@pytest.mark.slow
def test_journalist_service_requires_client_auth(tmp_path, started, journalist_keys):
    services = OnionServices(tmp_path, "offline")
    publics = [public for public, _ in journalist_keys]
    _source, journalist = started(services, *_sockets(tmp_path), publics)
    record = services.services["journalist"]
    assert record.published and record.how == "add_onion"
    assert (record.pow_defenses, record.max_streams) == (True, 20)  # tor refuses keywords it does not know
    # what tor echoed in its ADD_ONION reply (Flags=V3Auth): exactly our clients
    assert sorted(record.client_auth) == sorted(publics)
    current = services.getinfo("onions/current").split()
    assert current == [journalist.removesuffix(".onion")]


@pytest.mark.slow
def test_source_service_has_pow_intro_dos_and_stream_limits(tmp_path, started):
    services = OnionServices(tmp_path, "offline")
    started(services, *_sockets(tmp_path), [generate_client_auth_keypair()[0]])
    record = services.services["source"]
    assert (record.pow_defenses, record.intro_dos_defense, record.max_streams) == (True, True, 20)
    options = services.getconf("HiddenServiceOptions")
    assert options["HiddenServicePoWDefensesEnabled"] == ["1"]
    assert options["HiddenServiceEnableIntroDoSDefense"] == ["1"]
    assert options["HiddenServiceMaxStreamsCloseCircuit"] == ["1"]
    assert options["HiddenServiceExportCircuitID"] == ["haproxy"]  # intake.circuits reads the line
    assert options["HiddenServicePort"] == [f"80 unix:{tmp_path / 'source.sock'}"]


@pytest.mark.slow
def test_journalist_service_is_not_published_without_clients(tmp_path, started):
    services = OnionServices(tmp_path, "offline")
    _source, journalist = started(services, *_sockets(tmp_path), [])
    assert not services.services["journalist"].published
    assert services.getinfo("onions/current").split() == []
    public, _private = generate_client_auth_keypair()
    assert services.update_journalist_clients([public]) == journalist
    assert services.getinfo("onions/current").split() == [journalist.removesuffix(".onion")]
    assert services.services["journalist"].client_auth == (public,)


@pytest.mark.slow
def test_changing_journalist_clients_keeps_the_address(tmp_path, started, journalist_keys):
    services = OnionServices(tmp_path, "offline")
    _source, journalist = started(services, *_sockets(tmp_path), [journalist_keys[0][0]])
    assert services.update_journalist_clients([k for k, _ in journalist_keys]) == journalist
    assert len(services.services["journalist"].client_auth) == 2
    assert services.getinfo("onions/current").split() == [journalist.removesuffix(".onion")]


@pytest.mark.slow
def test_stop_leaves_no_tor_process_behind(tmp_path, started):
    services = OnionServices(tmp_path, "offline")
    started(services, *_sockets(tmp_path), [])
    pid = services.pid
    assert pid and _alive(pid)
    services.stop()
    services.stop()  # idempotent
    assert not _alive(pid)
    assert _tor_processes_using(tmp_path) == []


@pytest.mark.slow
def test_tor_exits_when_intake_is_killed(tmp_path):
    """kill -9 of the owner: tor sees its owning control connection close and exits."""
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from intake.tor import OnionServices
        services = OnionServices(Path({str(tmp_path)!r}), "offline")
        services.start(Path({str(tmp_path)!r}) / 's.sock', Path({str(tmp_path)!r}) / 'j.sock', [])
        print(services.pid, flush=True)
        time.sleep(60)
    """)
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                             cwd=Path(__file__).resolve().parents[1])
    try:
        tor_pid = int(owner.stdout.readline())
        assert _alive(tor_pid)
    finally:
        owner.kill()
        owner.wait()
    deadline = time.monotonic() + 10
    while _alive(tor_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(tor_pid)


@pytest.mark.slow
def test_private_keys_are_never_logged(tmp_path, started, caplog):
    caplog.set_level(1)  # everything, stem's TRACE included
    caplog.set_level(1, logger="stem")
    public, private = generate_client_auth_keypair()
    services = OnionServices(tmp_path, "offline")
    started(services, *_sockets(tmp_path), [public])
    services.update_journalist_clients([public])
    services.stop()
    text = caplog.text
    assert "tor:" in text  # tor's own output did reach the log
    for name in ("source.key", "journalist.key"):
        secret = (tmp_path / "onion" / name).read_bytes()[32:]
        assert base64.b64encode(secret).decode() not in text
    assert private not in text


@pytest.mark.slow
def test_a_tor_that_refuses_its_config_gives_a_clear_error(tmp_path):
    services = OnionServices(tmp_path, "offline", extra_torrc=["NoSuchTorOption 1"])
    with pytest.raises(TorError, match="tor exited.*NoSuchTorOption"):
        services.start(*_sockets(tmp_path), [])
    assert services.pid is None


# --- system mode, against a stand-in system tor (also DisableNetwork 1) ----------------

@pytest.fixture
def system_tor(tmp_path):
    """A tor like the Debian system tor: control socket + cookie auth; here with no network.
    Returns (control_socket, tor_data_dir)."""
    data = tmp_path / "system-tor"
    data.mkdir(mode=0o700)
    torrc = data / "torrc"
    extra: list[str] = []

    def launch(*torrc_lines: str) -> Path:
        extra.extend(torrc_lines)
        torrc.write_text("\n".join([
            f"DataDirectory {data}",
            f"ControlSocket unix:{data / 'control'}",
            "CookieAuthentication 1",
            "DisableNetwork 1",
            "SocksPort 0",
            "Log notice stdout",
            "GeoIPFile /nonexistent",
            "GeoIPv6File /nonexistent",
            # no __OwningControllerProcess: stem would take ownership of a tor owned by
            # its own pid, which a system tor never is; the fixture stops it instead
            *extra,
        ]) + "\n")
        process = subprocess.Popen(["tor", "--defaults-torrc", os.devnull, "-f", str(torrc)],
                                   stdout=open(data / "tor.log", "ab"), stderr=subprocess.STDOUT)
        processes.append(process)
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(data / "control"))
                return data / "control"
            except OSError:
                assert process.poll() is None, "stand-in system tor exited"
                assert time.monotonic() < deadline, "stand-in system tor did not start"
                time.sleep(0.05)

    processes: list[subprocess.Popen] = []
    yield launch
    for process in processes:
        process.terminate()
        process.wait(10)


@pytest.mark.slow
def test_system_mode_adds_both_services_and_removes_them_on_stop(tmp_path, system_tor, started):
    control = system_tor()
    public, _ = generate_client_auth_keypair()
    services = OnionServices(tmp_path / "data", "system", control_socket=control)
    addresses = started(services, *_sockets(tmp_path), [public])
    source = services.services["source"]
    assert (source.how, source.pow_defenses, source.intro_dos_defense) == ("add_onion", True, False)
    assert services.services["journalist"].client_auth == (public,)
    assert services.pid is None  # not ours to stop
    services.stop()
    # the services went with the control connection: adding them again does not collide
    again = OnionServices(tmp_path / "data", "system", control_socket=control)
    assert started(again, *_sockets(tmp_path), [public]) == addresses
    assert again.services["source"].how == "add_onion"


@pytest.mark.slow
def test_system_mode_accepts_a_source_service_from_the_system_torrc(tmp_path, system_tor, started):
    key_file = tmp_path / "data" / "onion" / "source.key"
    load_or_create_onion_key(key_file)
    hs_dir = tmp_path / "system-tor" / "intake-source"
    hs_dir.mkdir(mode=0o700, parents=True)
    (hs_dir / "hs_ed25519_secret_key").write_bytes(key_file.read_bytes())
    (hs_dir / "hs_ed25519_secret_key").chmod(0o600)
    control = system_tor(f"HiddenServiceDir {hs_dir}", f"HiddenServicePort 80 unix:{tmp_path / 'source.sock'}",
                         "HiddenServicePoWDefensesEnabled 1", "HiddenServiceEnableIntroDoSDefense 1")
    services = OnionServices(tmp_path / "data", "system", control_socket=control)
    source, _journalist = started(services, *_sockets(tmp_path), [generate_client_auth_keypair()[0]])
    assert services.services["source"].how == "system-torrc"
    assert (hs_dir / "hostname").read_text().strip() == source
    # intake did not try to add what tor already publishes (tor refuses that with a "Bug" warning)
    assert "Bug" not in (tmp_path / "system-tor" / "tor.log").read_text()


@pytest.mark.slow
def test_system_mode_without_a_control_socket_says_so(tmp_path):
    services = OnionServices(tmp_path, "system", control_socket=tmp_path / "nothing-here")
    with pytest.raises(TorError, match="no tor control socket"):
        services.start(*_sockets(tmp_path), [])


def _closed_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_launch_with_no_reachable_network_says_tor_could_not_bootstrap(tmp_path, started):
    """A launched tor whose only (private) authority is a closed loopback port: the
    services still get their addresses, and bootstrap fails with tor's reason."""
    dead_authority = (f"DirAuthority dead orport={_closed_loopback_port()} no-v2 v3ident={'A' * 40} "
                      f"127.0.0.1:{_closed_loopback_port()} {'B' * 40}")
    services = OnionServices(tmp_path, "launch", extra_torrc=[
        "TestingTorNetwork 1", dead_authority, "GeoIPFile /nonexistent", "GeoIPv6File /nonexistent"])
    source, journalist = started(services, *_sockets(tmp_path), [generate_client_auth_keypair()[0]])
    assert source.endswith(".onion") and journalist.endswith(".onion")
    deadline = time.monotonic() + 20
    while services.bootstrap.problem is None and time.monotonic() < deadline:
        assert services.wait_for_bootstrap(1) is False
    status = services.bootstrap
    assert not status.done
    assert "refused" in status.problem.lower()
    assert "Connection refused" in status.describe()


@pytest.mark.slow
def test_system_mode_says_when_the_system_torrc_publishes_another_onion_for_our_port(
        tmp_path, system_tor, started):
    hs_dir = tmp_path / "system-tor" / "other"
    control = system_tor(f"HiddenServiceDir {hs_dir}", f"HiddenServicePort 80 unix:{tmp_path / 'source.sock'}")
    services = OnionServices(tmp_path / "data", "system", control_socket=control)
    source, _journalist = started(services, *_sockets(tmp_path), [generate_client_auth_keypair()[0]])
    assert services.services["source"].how == "add_onion"  # intake's own address still works
    assert (hs_dir / "hostname").read_text().strip() != source
    assert any(f"different onion address for unix:{tmp_path / 'source.sock'}" in n for n in services.notices)


def test_onion_keys_and_addresses_can_be_made_without_tor(tmp_path):
    source, journalist = ensure_onion_keys(tmp_path)
    assert ensure_onion_keys(tmp_path) == (source, journalist)
    assert source != journalist and source.endswith(".onion")


@pytest.mark.slow
def test_deploy_torrc_is_valid_for_debians_system_tor():
    deploy = Path(__file__).resolve().parents[1] / "deploy" / "torrc"
    defaults = Path("/usr/share/tor/tor-service-defaults-torrc")
    if not defaults.exists():
        pytest.skip("not a Debian tor package")
    result = subprocess.run(
        ["tor", "--defaults-torrc", str(defaults), "-f", str(deploy), "--DisableNetwork", "1",
         "--verify-config"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-2000:]


@pytest.mark.slow
def test_offline_mode_cannot_be_turned_online_by_extra_torrc_lines(tmp_path, started):
    services = OnionServices(tmp_path, "offline", extra_torrc=["DisableNetwork 0"])
    started(services, *_sockets(tmp_path), [])
    assert services.getconf("DisableNetwork") == {"DisableNetwork": ["1"]}


def test_every_stem_name_intake_uses_exists():
    """`except stem.StemError` named a class stem does not have: the handler itself raised
    AttributeError when tor went away. Every stem.* name in intake.tor, intake.tor_control and
    intake.system_torrc must resolve."""
    import ast
    import importlib

    from intake import system_torrc, tor_control

    used = set()
    for node in (node for module in (intake_tor, tor_control, system_torrc) for node in ast.walk(ast.parse(Path(module.__file__).read_text()))):
        if isinstance(node, ast.Attribute):
            parts, inner = [node.attr], node.value
            while isinstance(inner, ast.Attribute):
                parts.append(inner.attr)
                inner = inner.value
            if isinstance(inner, ast.Name) and inner.id == "stem":
                used.add("stem." + ".".join(reversed(parts)))
    assert "stem.ControllerError" in used
    for dotted in sorted(used):
        module, _, name = dotted.rpartition(".")
        try:
            target = importlib.import_module(module)
        except ImportError:  # stem.control.Controller.from_socket_file: a class, not a module
            owner, _, attr = module.rpartition(".")
            target = getattr(importlib.import_module(owner), attr)
        assert hasattr(target, name), f"{dotted} does not exist in stem"
