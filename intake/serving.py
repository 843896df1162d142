"""`intake serve`: the tip line's processes, started in order and stopped together.

gunicorn runs the source app and the journalist app as two child processes, each on
a unix socket that tor forwards its onion to (intake.listeners), and on a loopback
port only when one is asked for; tor runs through :mod:`intake.tor` from this (parent)
process, never from a forked worker, so one controller owns it; the retention schedule
and the file-times ticker (intake.store.file_times) are threads here. :meth:`TipLine.serve` blocks until SIGTERM or SIGINT (or until a
child dies), then stops everything: gunicorn first, which finishes the requests in
flight (uploads over Tor included) within the grace period, then tor. Children are
started from the main thread with PR_SET_PDEATHSIG (intake.child_processes), so none
outlives even a `kill -9` of this process. SIGHUP re-reads the journalists'
client-authorisation keys and republishes the journalist onion with them (same
address), cutting the connections open on it. With the system tor, losing it is not
fatal: intake keeps serving and publishes its onions again when tor is back.

Signal handlers only set flags: a stop asked for while something is starting
takes effect between steps, never half-way through starting a process.
"""

from __future__ import annotations

import os
import shlex
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from intake.cli_i18n import _, language_option, ngettext, said
from intake.config import DEFAULT_DB_KEY_FILE, db_key_path, load_settings
from intake.listeners import SOCKET_NAMES, ListenerError, prepare_socket_dir, tor_group
from intake.retention import PurgeSchedule
from intake.server import DEFAULT_GRACE_PERIOD, JOURNALIST_APP_FACTORY, GunicornServer, ServerError
from intake.store import Store
from intake.store.file_times import FileTimesTicker
from intake.store.newsroom import Newsroom
from intake.onion_keys import OnionKeyError
from intake.tor import DEFAULT_SYSTEM_CONTROL_SOCKET, OnionServices, TorError

TOR_MODES = ("launch", "system", "offline", "none")
DEFAULT_BOOTSTRAP_TIMEOUT = 120.0
_WATCH_INTERVAL = 0.5


class _SignalFlag:
    """What a signal handler asks for, without a lock. A handler runs in the main thread between
    two bytecodes, possibly while that thread holds a threading.Event's lock (inside its wait());
    Event.set() from the handler then waits for that lock for ever. A plain attribute is set
    atomically, and the main loop looks at it every _WATCH_INTERVAL."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def clear(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float) -> bool:
        if not self._set:
            time.sleep(timeout)  # a signal's handler runs during the sleep, which then goes on (PEP 475)
        return self._set
# How often intake tries the system tor's control socket again after losing it.
_RECONNECT_INTERVAL = 2.0
SOCKET_DIR_NAME = "sockets"

Say = Callable[[str], None]


class TorConfigError(TorError):
    """The extra torrc file cannot be used."""


@dataclass(frozen=True)
class TorPlan:
    """How `intake serve` uses Tor (see docs/operator.md, "Choosing how intake uses Tor")."""

    mode: str = "launch"
    # Lines appended to the torrc of the tor intake launches: for private test networks only.
    extra_torrc: tuple[str, ...] = ()
    control_socket: Path | None = None  # system mode: the system tor's control socket
    bootstrap_timeout: float = DEFAULT_BOOTSTRAP_TIMEOUT

    def __post_init__(self) -> None:
        if self.mode not in TOR_MODES:
            raise TorError(_("unknown tor mode {mode!r} (choose one of {modes})").format(mode=self.mode, modes=", ".join(TOR_MODES)))
        if self.extra_torrc and self.mode not in ("launch", "offline"):
            raise TorConfigError(_("extra torrc lines only apply to a tor that intake launches (--tor launch or offline)"))
        if self.control_socket is not None and self.mode != "system":
            raise TorConfigError(_("a tor control socket is only given with --tor system"))


def read_torrc_lines(path: Path) -> tuple[str, ...]:
    """The configuration lines of a torrc fragment (blank lines and comments left out)."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or "not text"
        raise TorConfigError(_("cannot read the extra torrc file {path}: {reason}").format(path=path, reason=reason)) from None
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))


class TipLine:
    """The source and journalist interfaces under gunicorn, their onion services, retention."""

    def __init__(self, data_dir: Path, *, source_port: int | None = None, journalist_port: int | None = None,
                 socket_dir: Path | None = None, grace_period: int = DEFAULT_GRACE_PERIOD,
                 db_key_file: Path | None = None, tor: TorPlan = TorPlan(), say: Say = print):
        self.settings = load_settings(data_dir, db_key_file=db_key_file)
        self.data_dir = Path(data_dir).resolve()
        self._db_key_file = db_key_file
        self.socket_dir = Path(socket_dir).absolute() if socket_dir else self.data_dir / SOCKET_DIR_NAME
        self.tor_plan = tor
        self.say = say
        self._socket_group = tor_group()
        common = dict(socket_group=self._socket_group, grace_period=grace_period, db_key_file=db_key_file)
        self.source = GunicornServer(self.data_dir, socket_path=self.socket_dir / SOCKET_NAMES["source"],
                                     port=source_port, **common)
        self.journalist = GunicornServer(self.data_dir, socket_path=self.socket_dir / SOCKET_NAMES["journalist"],
                                         port=journalist_port, app_factory=JOURNALIST_APP_FACTORY, **common)
        self.onions: OnionServices | None = None
        self._retention: PurgeSchedule | None = None
        self._file_times: FileTimesTicker | None = None
        self._stop_requested = _SignalFlag()
        self._reload_requested = _SignalFlag()

    # -- the whole life --

    def serve(self, banner: str | None = None) -> int:
        """Start everything, print `banner` (by default, how to stop), serve until SIGTERM/SIGINT, stop everything.
        Returns the exit status: 0 when asked to stop, 1 when a part failed while serving."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        try:
            if not self._start():
                return 0
            self.say(banner or _("Ctrl-C stops intake."))
            return self._watch()
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        (self._reload_requested if signum == signal.SIGHUP else self._stop_requested).set()

    def _start(self) -> bool:
        """Start the parts in order; False if a stop was asked for meanwhile."""
        try:
            prepare_socket_dir(self.socket_dir, self._socket_group)
        except ListenerError as error:
            raise ServerError(*error.args) from None
        except OSError as error:
            raise ServerError(_("cannot prepare the socket directory {folder}: {reason}")
                              .format(folder=self.socket_dir, reason=error.strerror)) from None
        for server in (self.source, self.journalist):
            server.start()
            if self._stop_requested.is_set():
                return False
        self._retention = PurgeSchedule(self.settings).start()
        self._file_times = FileTimesTicker(self.data_dir).start()
        self._say_where_it_listens()
        if self.tor_plan.mode == "none":
            self.say(_("Tor is off (--no-tor): no onion service is published."))
            return not self._stop_requested.is_set()
        self._start_tor()
        return not self._stop_requested.is_set()

    def _say_where_it_listens(self) -> None:
        if self._socket_group is not None:
            sockets = _("unix sockets in {folder} (group-shared with tor)").format(folder=self.socket_dir)
        else:
            sockets = _("unix sockets in {folder}").format(folder=self.socket_dir)
        if self.source.url is None and self.journalist.url is None:
            self.say(_("intake is serving {folder} on {sockets}, for tor; no TCP port is open.")
                     .format(folder=self.data_dir, sockets=sockets))
            return
        where = [label.format(url=server.url) for label, server in
                 ((_("the source interface at {url}"), self.source), (_("the journalist interface at {url}"), self.journalist))
                 if server.url]
        self.say(_("intake is serving {folder}: {where} (loopback only), and to tor on {sockets}.")
                 .format(folder=self.data_dir, where=", ".join(where), sockets=sockets))

    def stop(self) -> None:
        """Stop both gunicorns together, letting requests in flight finish (they may come
        through tor, so tor stops after them), then tor. Idempotent."""
        for server in (self.source, self.journalist):
            server.begin_stop()  # their listeners close at once: no new visitors
        for server in (self.source, self.journalist):
            server.stop()
        if self.onions is not None:
            self.onions.stop()
        if self._retention is not None:
            self._retention.stop()
        if self._file_times is not None:
            self._file_times.stop()

    # -- tor --

    def _start_tor(self) -> None:
        plan = self.tor_plan
        client_keys = self._journalist_client_keys()
        self.say({
            "launch": _("Starting tor (intake's own, joining the Tor network)..."),
            "offline": _("Starting tor offline (DisableNetwork 1: nothing is contacted)..."),
            "system": _("Attaching to the system tor at {socket}...").format(socket=plan.control_socket or DEFAULT_SYSTEM_CONTROL_SOCKET),
        }[plan.mode])
        self.onions = OnionServices(self.data_dir, plan.mode, control_socket=plan.control_socket,
                                    extra_torrc=plan.extra_torrc, progress=self._on_bootstrap_progress)
        source, journalist = self.onions.start(self.source.socket_path, self.journalist.socket_path, client_keys)
        self.say(_("Source onion:      {url}").format(url=f"http://{source}/"))
        self._say_journalist_onion()
        for notice in self.onions.notices:  # told words (intake.tor)
            self.say(_("Note: {notice}").format(notice=said(notice)))
        if plan.mode == "offline":
            self.say(_("Tor is offline: these addresses are made but not published, so nobody can reach them."))

    def _say_journalist_onion(self) -> None:
        assert self.onions is not None
        service = self.onions.services["journalist"]
        if service.published:
            count = len(service.client_auth)
            self.say(ngettext("Journalist onion:  {url}  (client authorisation: reachable only with a journalist's key;"
                              " {count} key authorised)",
                              "Journalist onion:  {url}  (client authorisation: reachable only with a journalist's key;"
                              " {count} keys authorised)", count).format(url=f"http://{service.address}/", count=count))
        elif self._under_systemd():
            self.say(_("Journalist onion:  {url}  NOT published: no journalist has a client-authorisation key yet. "
                       "Add one with `intake-admin journalist add --name NAME --public-key FILE` (for a journalist "
                       "registered at set-up: `intake-admin journalist reset-login --name NAME`), then "
                       "`systemctl reload intake`.").format(url=f"http://{service.address}/"))
        else:
            self.say(_("Journalist onion:  {url}  NOT published: no journalist has a client-authorisation key yet. "
                       "Add one with `{intake} journalist add {instance} --name NAME --public-key FILE` (for a "
                       "journalist registered by `intake init`: `{intake} journalist reset-login {instance} "
                       "--name NAME`), then send intake SIGHUP or restart it.")
                     .format(url=f"http://{service.address}/", instance=self._instance_options(),
                             intake="intake" + language_option()))

    def _under_systemd(self) -> bool:
        """The database key came from systemd's credential (deploy/intake.service): the operator's
        commands go through intake-admin, which opens it the same way."""
        credentials = os.environ.get("CREDENTIALS_DIRECTORY")
        return bool(credentials) and self._db_key_file is None and db_key_path(self.data_dir).parent == Path(credentials)

    def _instance_options(self) -> str:
        """--data, and --db-key-file unless the key is where intake looks by itself, as a shell takes them."""
        options = f"--data {shlex.quote(str(self.data_dir))}"
        key = db_key_path(self.data_dir, self._db_key_file)
        if key != self.data_dir / DEFAULT_DB_KEY_FILE:
            options += f" --db-key-file {shlex.quote(str(Path(key).resolve()))}"
        return options

    def _on_bootstrap_progress(self, percent: int, summary: str) -> None:
        self.say(_("Tor: bootstrapped {percent}% ({summary})").format(percent=percent, summary=summary))

    def _journalist_client_keys(self) -> list[str]:
        """The client-authorisation public keys of the active journalists, read afresh."""
        with Store.open(self.settings) as store:
            return Newsroom(store).client_auth_keys()

    def _reload_journalist_clients(self) -> None:
        assert self.onions is not None
        self.onions.update_journalist_clients(self._journalist_client_keys())
        self._say_journalist_onion()

    # -- while serving --

    def _watch(self) -> int:
        onions = self.onions
        needs_bootstrap = onions is not None and self.tor_plan.mode != "offline"
        deadline = time.monotonic() + self.tor_plan.bootstrap_timeout
        gave_up = False
        system_tor_lost = False
        next_attempt = 0.0
        while not self._stop_requested.wait(_WATCH_INTERVAL):
            for name, server in (("source", self.source), ("journalist", self.journalist)):
                status = server.exit_status()
                if status is not None and not self._stop_requested.is_set():
                    message = (_("gunicorn for the source interface exited (status {status}): stopping intake.")
                               if name == "source" else
                               _("gunicorn for the journalist interface exited (status {status}): stopping intake."))
                    self.say(message.format(status=status))
                    return 1
            if onions is None:
                continue
            if system_tor_lost:
                if time.monotonic() < next_attempt:
                    continue
                next_attempt = time.monotonic() + _RECONNECT_INTERVAL
                if not self._republish_on_system_tor():
                    continue
                system_tor_lost, gave_up = False, False
                needs_bootstrap, deadline = True, time.monotonic() + self.tor_plan.bootstrap_timeout
            try:
                onions.check_running()
                if self._reload_requested.is_set():
                    self._reload_requested.clear()
                    self._reload_journalist_clients()
                if needs_bootstrap:
                    if onions.wait_for_bootstrap(0):
                        needs_bootstrap = False
                        self.say(_("Tor is connected: the onion services are being published "
                                   "(reachable within a minute or two)."))
                    elif not gave_up and time.monotonic() > deadline:
                        gave_up = True
                        self.say(_("Tor could not bootstrap: {reason}. intake keeps serving and tor keeps trying "
                                   "(docs/operator.md lists the usual causes).").format(reason=onions.bootstrap.describe()))
            except (TorError, OnionKeyError) as error:
                if self._stop_requested.is_set():
                    break
                if self.tor_plan.mode != "system" or onions.connected:
                    self.say(_("Tor failed: {error}. Stopping intake.").format(error=said(error)))
                    return 1
                system_tor_lost, next_attempt = True, time.monotonic()
                self.say(_("Lost the system tor ({error}): the onion services are unreachable until it is "
                           "back. intake keeps serving and publishes them again as soon as it is.").format(error=said(error)))
        return 0

    def _republish_on_system_tor(self) -> bool:
        """One attempt to attach to the system tor again and publish both onions; True if done."""
        assert self.onions is not None
        if not self.onions.control_socket.exists():
            return False  # not back yet (and no need to open the store to find out)
        try:
            self.onions.reconnect(self._journalist_client_keys())
        except (TorError, OnionKeyError):
            return False
        self._reload_requested.clear()  # the keys were just read afresh
        self.say(_("The system tor is back: both onion services are published again, at the same addresses."))
        self._say_journalist_onion()
        return True
