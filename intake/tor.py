"""Tor for intake: launch or attach to tor, publish the two onion services.

The rest of the app asks :class:`OnionServices` for "the source onion for this
unix socket and the journalist onion for that one" and gets ``xxx.onion``
addresses back; tor itself (launched or attached, its control connection) is
intake.tor_control's, and what a system torrc already publishes, intake.system_torrc's.
These three are the only modules that import stem. Both services forward virtual
port 80 to ``unix:PATH`` (``HiddenServicePort`` and ``ADD_ONION Port=80,unix:PATH``),
never to a TCP port that any local process could reach (intake.listeners makes the
sockets).

Modes
-----
``launch``
    Start a private tor process owned by intake. Its DataDirectory is
    ``<data_dir>/tor/`` (0700); it is controlled over a unix socket in that
    directory with cookie authentication, and it exits when intake does
    (``__OwningControllerProcess`` and ``TAKEOWNERSHIP``; and at once, by
    PR_SET_PDEATHSIG, if intake is killed outright). It opens no SOCKS
    port, logs only to its stdout (read by intake, never written to disk),
    with ``SafeLogging 1``. ``extra_torrc`` lines are appended to its torrc:
    tests use them to join a private Tor network.
``offline``
    As ``launch``, plus ``DisableNetwork 1``: the onion keys and addresses
    are made and returned at once and nothing is contacted.
``system``
    Attach to an already running tor's control socket (default
    ``/run/tor/control``) with cookie authentication. The services are
    ephemeral and not detached, so they vanish when intake disconnects. When
    that tor restarts or stops, :meth:`OnionServices.reconnect` attaches again
    and publishes both services again (the caller retries until tor is back).

The two services
----------------
Both keys live in ``<data_dir>/onion/`` (0700) as ``source.key`` and
``journalist.key`` (0600), in tor's own ``hs_ed25519_secret_key`` file
format, so addresses are stable across restarts and the files can be handed
to any tor. Keys are made on first use by :mod:`intake.onion_keys` (RFC 8032 key
expansion, exactly what tor does for ``ADD_ONION NEW:ED25519-V3``) so that the
address is known before tor is even started.

* Source service (virtual port 80): proof-of-work defences
  (``PoWDefensesEnabled``) and a per-circuit stream limit that closes abusive
  circuits. In ``launch``/``offline`` mode it is a torrc service
  (``HiddenServiceDir`` under the tor data dir) because that is the only way
  tor 0.4.9 offers to also enable the introduction-point DoS defence
  (``HiddenServiceEnableIntroDoSDefense``): ``ADD_ONION`` has no keyword for
  it ("Unrecognized keyword argument"). In ``system`` mode it is added with
  ``ADD_ONION ... PoWDefensesEnabled=1``, so it has PoW and stream limits but
  no intro-point defence, unless the system torrc already publishes the same
  key (see docs/operator.md); tor then answers "Onion address collision",
  which proves it serves our address, and we take that as published.
* Journalist service (virtual port 80): v3 client authorisation, one x25519
  key per journalist (``Flags=V3Auth ClientAuthV3=<base32 public key>``), with
  PoW defences and the same stream limit as the source service,
  always via ``ADD_ONION`` so that the list of journalists can change without
  restarting tor. With no journalist key it is not published at all (tor
  refuses V3Auth without clients, and publishing it open would expose the
  journalist interface); its address is still returned. Changing the clients
  re-adds it and closes its rendezvous circuits, which DEL_ONION leaves open:
  a removed journalist's open connection is cut, not just future ones.

Secrets
-------
Private keys never appear in exceptions or logs. stem's errors are caught as
``stem.ControllerError`` (the base of its control-connection errors:
``SocketClosed``, ``ProtocolError``, ``OperationFailed``...); stem's own trace of
control commands is silenced in intake.tor_control.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import stem

from intake import system_torrc
from intake.onion_keys import (
    KEY_HEADER,
    load_or_create_onion_key,
    normalise_client_public_key,
    onion_address_for_key,
    private_dir,
    write_private_file,
)
from intake.told import Told, told
from intake.tor_control import BootstrapStatus, ProgressCallback, TorControl, TorError, torrc_quote

log = logging.getLogger(__name__)

MODES = ("launch", "offline", "system")
DEFAULT_SYSTEM_CONTROL_SOCKET = Path("/run/tor/control")

ONION_VIRTUAL_PORT = 80
# Tor Browser opens at most ~6 connections per site; 20 streams per rendezvous
# circuit is ample for a person and closes circuits that open hundreds.
MAX_STREAMS_PER_CIRCUIT = 20

__all__ = ["BootstrapStatus", "OnionService", "OnionServices", "TorError", "unix_socket_target"]


# --- status records ------------------------------------------------------------

@dataclass(frozen=True)
class OnionService:
    """One service as intake asked for it and tor confirmed it."""
    name: str                     # "source" or "journalist"
    address: str                  # "xxx.onion"
    target: str                   # where tor forwards virtual port 80: "unix:/path/to/app.sock"
    published: bool               # tor serves it (False: journalist with no clients)
    how: str                      # "torrc", "add_onion", "system-torrc" or "not published"
    pow_defenses: bool = False
    intro_dos_defense: bool = False
    max_streams: int = 0
    client_auth: tuple[str, ...] = ()   # client public keys tor echoed back


def unix_socket_target(path: Path) -> str:
    """``unix:/absolute/path``, the target of HiddenServicePort and of ADD_ONION's Port=.
    Tor splits both on spaces (ADD_ONION also on commas) and takes no quotes there."""
    text = os.fspath(Path(path).absolute())
    if any(c in text for c in " \t\r\n,\"'\\\0"):
        raise TorError(told("tor cannot forward to {path}: a socket path must not contain spaces, commas, quotes or "
                            "backslashes", path=text))
    return f"unix:{text}"


# --- the controller ------------------------------------------------------------

class OnionServices:
    """A tor (ours or the system's) and intake's two onion services on it.

    >>> tor = OnionServices(data_dir, "offline")
    >>> source, journalist = tor.start(Path("run/source.sock"), Path("run/journalist.sock"), [journalist_public_b32])
    >>> tor.wait_for_bootstrap(60)   # False at once in offline mode
    >>> tor.stop()
    """

    def __init__(
        self,
        data_dir: Path,
        mode: str = "launch",
        *,
        control_socket: Path | None = None,
        extra_torrc: Sequence[str] | None = None,
        progress: ProgressCallback | None = None,
        tor_binary: str | None = None,
    ) -> None:
        if mode not in MODES:
            raise TorError(told("unknown tor mode {mode!r} (choose one of {modes})", mode=mode, modes=", ".join(MODES)))
        self.mode = mode
        self.data_dir = Path(data_dir).absolute()
        self.onion_dir = self.data_dir / "onion"
        self.tor_dir = self.data_dir / "tor"
        if mode == "system":
            self.control_socket = Path(control_socket or DEFAULT_SYSTEM_CONTROL_SOCKET)
        else:
            self.control_socket = Path(control_socket) if control_socket else self.tor_dir / "control"
        for line in extra_torrc or ():
            if any(c in line for c in "\n\r\0"):
                raise TorError(told("an extra torrc line contains a line break"))
        self.extra_torrc = list(extra_torrc or ())
        self._tor = TorControl(self.tor_dir, self.control_socket, tor_binary=tor_binary, progress=progress)
        self._lock = self._tor.lock
        self._source_key: bytes | None = None
        self._source_target: str | None = None
        self._journalist_target: str | None = None
        self._journalist_key: bytes | None = None
        self._added: list[str] = []          # service ids we ADD_ONIONed
        self._services: dict[str, OnionService] = {}
        self._stopped = False
        self.notices: list[str] = []  # things the operator should be told, one line each

    # -- public API --

    @property
    def services(self) -> dict[str, OnionService]:
        """``{"source": OnionService, "journalist": OnionService}`` once started."""
        return dict(self._services)

    @property
    def bootstrap(self) -> BootstrapStatus:
        """The last bootstrap status seen (see :meth:`wait_for_bootstrap`)."""
        return self._tor.bootstrap

    @property
    def pid(self) -> int | None:
        """The pid of the tor we launched (None in system mode or when stopped)."""
        return self._tor.pid

    def start(self, source_socket: Path, journalist_socket: Path,
              journalist_client_keys: Iterable[str]) -> tuple[str, str]:
        """Start (or attach to) tor and publish both services, each forwarding virtual port 80
        to the app's unix socket.

        Returns ``(source_onion, journalist_onion)`` as ``"xxx.onion"``; both
        are known at once, before tor has bootstrapped.
        """
        keys = [normalise_client_public_key(k) for k in journalist_client_keys]
        source_target, journalist_target = (unix_socket_target(path) for path in (source_socket, journalist_socket))
        with self._lock:
            if self._tor.controller is not None or self._stopped:
                raise TorError(told("these onion services were already started"))
            self._source_key = load_or_create_onion_key(self.onion_dir / "source.key")
            self._journalist_key = load_or_create_onion_key(self.onion_dir / "journalist.key")
            self._source_target, self._journalist_target = source_target, journalist_target
            try:
                if self.mode == "system":
                    self._tor.attach()
                    self._services["source"] = self._add_source_onion()
                else:
                    self._launch()
                    self._services["source"] = OnionService(
                        "source", onion_address_for_key(self._source_key), source_target, True, "torrc",
                        pow_defenses=True, intro_dos_defense=True,
                        max_streams=MAX_STREAMS_PER_CIRCUIT)
                    self._check_torrc_source_address()
                self._services["journalist"] = self._add_journalist_onion(keys)
            except BaseException:
                self.stop()
                raise
        log.info("source onion %s, journalist onion %s",
                 self._services["source"].address, self._services["journalist"].address)
        return self._services["source"].address, self._services["journalist"].address

    def reconnect(self, journalist_client_keys: Iterable[str]) -> None:
        """System mode, after the connection to the system tor was lost (tor restarted or
        stopped): attach again and publish both services again, same addresses. Raises
        TorError while tor is not back."""
        if self.mode != "system":
            raise TorError(told("only a system tor is reconnected to; intake's own tor is not restarted"))
        keys = [normalise_client_public_key(k) for k in journalist_client_keys]
        with self._lock:
            if self._stopped or self._source_key is None:
                raise TorError(told("these onion services are not started"))
            self._tor.close_controller()
            self._added.clear()  # they went with the old connection
            self._tor.attach()
            try:
                self._services["source"] = self._add_source_onion()
                self._services["journalist"] = self._add_journalist_onion(keys)
            except TorError:
                self._tor.close_controller()
                raise

    def update_journalist_clients(self, journalist_client_keys: Iterable[str]) -> str:
        """Replace the journalist service's authorised clients; same address.

        Connections open on the journalist service are cut: tor keeps the rendezvous
        circuits of a removed service open (DEL_ONION closes only its introduction
        circuits), and a removed journalist could go on using theirs."""
        keys = [normalise_client_public_key(k) for k in journalist_client_keys]
        with self._lock:
            if self._tor.controller is None:
                raise TorError(told("tor is not running"))
            old = self._services.get("journalist")
            if old and old.how == "add_onion":
                sid = old.address.removesuffix(".onion")
                self._tor.msg(f"DEL_ONION {sid}", told("could not remove the journalist onion service"))
                if sid in self._added:
                    self._added.remove(sid)
                self._services["journalist"] = dataclasses.replace(
                    old, published=False, how="not published", client_auth=())
            self._services["journalist"] = self._add_journalist_onion(keys)
            self._close_rendezvous_circuits(self._services["journalist"].address)
            return self._services["journalist"].address

    def wait_for_bootstrap(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for tor to reach the Tor network.

        Calls ``progress(percent, summary)`` whenever that changes. Returns
        True once bootstrapped; False on timeout (then :attr:`bootstrap` says
        how far tor got and why, e.g. no route to the network). In ``offline``
        mode it returns False at once. Raises TorError if tor died.
        """
        if self.mode == "offline":
            self._tor.set_bootstrap(BootstrapStatus(0, "network disabled (offline mode)"))
            return False
        return self._tor.wait_for_bootstrap(timeout)

    def check_running(self) -> None:
        """Raise TorError if our tor exited or the control connection to tor is lost
        (e.g. the system tor restarted, taking our services with it)."""
        self._tor.check_running()

    @property
    def connected(self) -> bool:
        """Whether the control connection to tor is open (False once tor went away)."""
        return self._tor.connected

    def getinfo(self, key: str) -> str:
        """Tor's answer to ``GETINFO key`` (read-only, for status and diagnostics)."""
        return self._tor.getinfo(key)

    def getconf(self, key: str) -> dict[str, list[str]]:
        """Tor's answer to ``GETCONF key`` as {option: [values]} (read-only)."""
        return self._tor.getconf(key)

    def stop(self) -> None:
        """Remove our services, and stop the tor we launched (no orphan). Idempotent."""
        with self._lock:
            self._stopped = True
            if self.mode == "system" and self._tor.controller is not None:
                for sid in self._added:
                    try:
                        self._tor.controller.msg(f"DEL_ONION {sid}")
                    except stem.ControllerError:
                        pass
            self._added.clear()
        self._tor.stop()

    def __enter__(self) -> "OnionServices":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- our own tor --

    def _torrc(self, source_key_dir: Path) -> str:
        lines = [
            "# Written by intake at each start; edits are lost.",
            f"DataDirectory {torrc_quote(self.tor_dir)}",
            f"ControlSocket unix:{torrc_quote(self.control_socket)}",
            "CookieAuthentication 1",
            f"__OwningControllerProcess {os.getpid()}",
            "SocksPort 0",
            "SafeLogging 1",
            "Log notice stdout",
            "AvoidDiskWrites 1",
            f"HiddenServiceDir {torrc_quote(source_key_dir)}",
            f"HiddenServicePort {ONION_VIRTUAL_PORT} {self._source_target}",
            "HiddenServicePoWDefensesEnabled 1",
            "HiddenServiceEnableIntroDoSDefense 1",
            f"HiddenServiceMaxStreams {MAX_STREAMS_PER_CIRCUIT}",
            "HiddenServiceMaxStreamsCloseCircuit 1",
            # intake.circuits: tor opens each connection with a PROXY line naming its circuit,
            # so the app can cap connections, uploads and codename checks per circuit.
            "HiddenServiceExportCircuitID haproxy",
        ]
        lines += self.extra_torrc
        if self.mode == "offline":
            lines.append("DisableNetwork 1")  # last: no extra line can turn the network on
        return "\n".join(lines) + "\n"

    def _launch(self) -> None:
        assert self._source_key is not None
        self._tor.check_launchable()
        private_dir(self.tor_dir)
        # tor's copy of the source key: rewritten from onion/source.key at each start.
        hs_dir = self.tor_dir / "source_service"
        if hs_dir.exists():
            shutil.rmtree(hs_dir)
        private_dir(hs_dir)
        write_private_file(hs_dir / "hs_ed25519_secret_key", KEY_HEADER + self._source_key)
        self._tor.launch(self._torrc(hs_dir))

    def _notice(self, text: Told) -> None:
        # The caller shows self.notices to the operator; logging them too would say it twice.
        if text not in self.notices:
            self.notices.append(text)
        log.info("%s", text)

    # -- services --

    def _check_torrc_source_address(self) -> None:
        hostname = self.tor_dir / "source_service" / "hostname"
        if hostname.exists():
            tor_says = hostname.read_text().strip()
            if tor_says != self._services["source"].address:
                raise TorError(told("tor derived {derived} from the source onion key, intake expected {expected}",
                                    derived=tor_says, expected=self._services["source"].address))

    @staticmethod
    def _reply_fields(reply: stem.response.ControlMessage) -> list[tuple[str, str]]:
        fields = []
        for _code, _div, content in reply.content():
            key, sep, value = content.partition("=")
            if sep:
                fields.append((key, value))
        return fields

    def _add_onion(self, key: bytes, args: str, what: Told, *,
                   collision_ok: bool = False) -> list[tuple[str, str]] | None:
        """ADD_ONION with ``key``; the fields of tor's reply. With ``collision_ok``, None
        when tor answers that it already publishes this address."""
        blob = base64.b64encode(key).decode("ascii")
        reply = self._tor.send(f"ADD_ONION ED25519-V3:{blob} {args}", what)
        if not reply.is_ok():
            if collision_ok and reply.content()[-1][0] == "550" and "collision" in str(reply).lower():
                return None
            raise TorError(told("{what}: tor said {reply!r}", what=what, reply=str(reply).strip()))
        fields = self._reply_fields(reply)
        sid = dict(fields).get("ServiceID", "")
        if sid + ".onion" != onion_address_for_key(key):
            raise TorError(told("{what}: tor returned an unexpected service id", what=what))
        self._added.append(sid)
        return fields

    def _add_source_onion(self) -> OnionService:
        key, target = self._source_key, self._source_target
        assert key is not None and target is not None
        address = onion_address_for_key(key)
        args = (f"Flags=MaxStreamsCloseCircuit MaxStreams={MAX_STREAMS_PER_CIRCUIT} "
                f"PoWDefensesEnabled=1 Port={ONION_VIRTUAL_PORT},{target}")
        # Asked first, because ADD_ONION of an address the torrc already publishes is refused only
        # after tor logs a "Bug" warning with a stack trace, which would alarm the operator.
        if system_torrc.publishes(self._tor.controller, address, target) or self._add_onion(
                key, args, told("could not add the source onion service"), collision_ok=True) is None:
            # Only a holder of this key can publish this address: the system tor's torrc does
            # (HiddenServiceDir with intake's source.key, as in deploy/torrc), and its per-service
            # options (PoW, intro-point DoS defence, stream limits) apply.
            log.info("the system tor already publishes the source address (from its torrc)")
            return OnionService("source", address, target, True, "system-torrc")
        self._check_system_torrc_services(target)
        return OnionService("source", address, target, True, "add_onion", pow_defenses=True,
                            max_streams=MAX_STREAMS_PER_CIRCUIT)

    def _check_system_torrc_services(self, target: str) -> None:
        """Tell the operator if the system torrc publishes another onion for our socket
        (deploy/torrc's source service, without intake's key installed)."""
        if system_torrc.hostname_files(self._tor.controller, target):
            self._notice(told("the system tor's torrc publishes a different onion address for {target}: install "
                              "intake's onion/source.key in that HiddenServiceDir, or remove that service "
                              "(docs/operator.md)", target=target))

    def _add_journalist_onion(self, client_keys: list[str]) -> OnionService:
        assert self._journalist_key is not None and self._journalist_target is not None
        address = onion_address_for_key(self._journalist_key)
        target = self._journalist_target
        if not client_keys:  # published=False tells the caller, who knows how to add a journalist
            return OnionService("journalist", address, target, False, "not published")
        # PoW too: client auth keeps strangers from reaching the service, not from flooding
        # its introduction points with requests that tor must answer.
        args = (f"Flags=V3Auth,MaxStreamsCloseCircuit MaxStreams={MAX_STREAMS_PER_CIRCUIT} "
                f"PoWDefensesEnabled=1 Port={ONION_VIRTUAL_PORT},{target} "
                + " ".join(f"ClientAuthV3={k}" for k in sorted(set(client_keys))))
        fields = self._add_onion(self._journalist_key, args, told("could not add the journalist onion service"))
        assert fields is not None
        echoed = tuple(v.upper() for k, v in fields if k == "ClientAuthV3")
        if sorted(echoed) != sorted(set(client_keys)):
            raise TorError(told("tor did not confirm the journalist service's client authorisation"))
        return OnionService("journalist", address, target, True, "add_onion", pow_defenses=True,
                            max_streams=MAX_STREAMS_PER_CIRCUIT, client_auth=echoed)

    def _close_rendezvous_circuits(self, address: str) -> int:
        """Close this service's rendezvous circuits (the open connections of its clients);
        returns how many. Tor names a service circuit's onion in REND_QUERY."""
        controller = self._tor.controller
        assert controller is not None
        sid = address.removesuffix(".onion")
        try:
            circuits = [c.id for c in controller.get_circuits()
                        if c.purpose == "HS_SERVICE_REND" and c.rend_query == sid]
            for circuit in circuits:
                try:
                    controller.close_circuit(circuit)
                except stem.InvalidRequest:
                    pass  # it closed meanwhile (552 unknown circuit)
        except stem.ControllerError as exc:
            raise TorError(told("could not close the journalist service's open circuits ({error})", error=type(exc).__name__)) from None
        if circuits:
            log.info("closed %d open circuit(s) to the journalist service", len(circuits))
        return len(circuits)
