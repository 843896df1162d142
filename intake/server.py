"""Running the web app under gunicorn as a child process.

The settings come from deploy/gunicorn.conf.py (worker model, no access log);
the listening sockets are made here (intake.listeners) and inherited by gunicorn,
which the command line tells so (``--bind fd://N``, which takes precedence over the
config's ``bind``).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from intake.child_processes import dies_with_this_process
from intake.cli_i18n import _, said
from intake.config import DATA_DIR_ENV, DB_KEY_FILE_ENV, load_settings
from intake.listeners import LOOPBACK, ListenerError, open_tcp_listener, open_unix_listener
from intake.memory_wiping import WIPING_ENVIRONMENT
from intake.memory_key import environment_for_children
from intake.store import Store
from intake.store.page_size import PageRewriteError, convert_page_size
from intake.told import told

GUNICORN_CONF = Path(__file__).resolve().parents[1] / "deploy" / "gunicorn.conf.py"
APP_FACTORY = "intake.app:create_app()"
JOURNALIST_APP_FACTORY = "intake.app.journalist:create_journalist_app()"
# How long in-flight requests (a slow upload over Tor) may take to finish after a stop is asked for.
DEFAULT_GRACE_PERIOD = 30
# What a stop may take beyond the grace period: gunicorn's own shutdown, then SIGKILL.
_STOP_MARGIN = 5.0
# A request both apps answer without touching the store: asked until gunicorn serves.
_READY_PROBE = b"GET /static/style.css HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


log = logging.getLogger(__name__)


class ServerError(Exception):
    """gunicorn did not start or stopped unexpectedly."""


def prepare_data_dir(data_dir: Path, db_key_file: Path | None = None) -> dict[str, int]:
    """Check the key opens the store, clear what a crash left, and return the counts.
    A store made with 16 KiB pages is rewritten with 4 KiB ones first (intake.store.page_size).

    Raises the store's errors (not initialised, wrong key) before anything is started.
    """
    settings = load_settings(data_dir, db_key_file=db_key_file)
    try:
        rewrite = convert_page_size(settings.db_path, settings.db_key)
    except PageRewriteError as error:
        log.warning(_("The database keeps its older, slower 16 KiB pages: rewriting it with 4 KiB pages failed ({reason}). "
                      "Run `intake check`.").format(reason=said(error)))
    else:
        if rewrite == "in use":
            log.warning(_("The database keeps its older, slower 16 KiB pages for now: another program has it open. "
                          "It is rewritten with 4 KiB pages at a start when nothing else uses it."))
        elif rewrite == "no room":
            log.warning(_("The database keeps its older, slower 16 KiB pages for now: rewriting it with 4 KiB pages "
                          "needs free disk space of a tenth more than it takes, plus 64 MiB. Free some, then start intake again."))
    with Store.open(settings) as store:
        store.recover()
        store.purge_expired_sessions()
        return store.counts()


def gunicorn_command(fds: list[int], app_factory: str = APP_FACTORY,
                     grace_period: int = DEFAULT_GRACE_PERIOD) -> list[str]:
    # Without its config gunicorn would run sync workers and keep gunicorn's own error log format:
    # refuse rather than serve that way.
    if not GUNICORN_CONF.is_file():
        raise ServerError(told("{path} is missing: install intake from its source tree "
                               "(pip install -e, as deploy/setup-debian.sh does)", path=GUNICORN_CONF))
    binds = [arg for fd in fds for arg in ("--bind", f"fd://{fd}")]
    return [sys.executable, "-m", "gunicorn", *binds, "--graceful-timeout", str(grace_period),
            "--config", str(GUNICORN_CONF), app_factory]


def _answers_http(family: socket.AddressFamily, address, timeout: float) -> bool:
    """True once gunicorn answers a request at this address."""
    try:
        with socket.socket(family, socket.SOCK_STREAM) as client:
            client.settimeout(timeout)
            client.connect(address)
            client.sendall(_READY_PROBE)
            return client.recv(16).startswith(b"HTTP/1.")
    except OSError:
        return False


class GunicornServer:
    """gunicorn for one app of one data dir, started by `start()` and stopped (gracefully) by `stop()`.

    It listens on a unix socket (`socket_path`, for tor), a loopback TCP port (`port`), or both."""

    def __init__(self, data_dir: Path, *, socket_path: Path | None = None, port: int | None = None,
                 socket_group: int | None = None, db_key_file: Path | None = None,
                 app_factory: str = APP_FACTORY, grace_period: int = DEFAULT_GRACE_PERIOD):
        if socket_path is None and port is None:
            raise ValueError("gunicorn needs a socket path or a port")
        self.app_factory = app_factory
        self.data_dir = Path(data_dir).resolve()
        self.socket_path = Path(socket_path) if socket_path is not None else None
        self.port = port
        self.host = LOOPBACK
        self.grace_period = grace_period
        self._socket_group = socket_group
        self._db_key_file = db_key_file
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str | None:
        """The loopback URL, when it listens on a TCP port."""
        return f"http://{self.host}:{self.port}/" if self.port is not None else None

    def _open_listeners(self) -> list[socket.socket]:
        listeners: list[socket.socket] = []
        try:
            if self.socket_path is not None:
                listeners.append(open_unix_listener(self.socket_path, self._socket_group))
            if self.port is not None:
                listeners.append(open_tcp_listener(self.port, self.host))
        except ListenerError as error:
            for sock in listeners:
                sock.close()
            raise ServerError(*error.args) from None
        return listeners

    def start(self, ready_timeout: float = 30.0) -> None:
        listeners = self._open_listeners()
        # Freed memory wiped (intake.memory_wiping); the memory key shared by the retention schedule here and every worker.
        env = dict(os.environ, **WIPING_ENVIRONMENT, **{DATA_DIR_ENV: str(self.data_dir)}, **environment_for_children())
        if self._db_key_file is not None:
            env[DB_KEY_FILE_ENV] = str(Path(self._db_key_file).resolve())
        fds = [sock.fileno() for sock in listeners]
        try:
            self._process = subprocess.Popen(
                gunicorn_command(fds, self.app_factory, self.grace_period), env=env, cwd=GUNICORN_CONF.parents[1],
                pass_fds=fds,
                # Its own session: Ctrl-C in a terminal reaches intake only, which then stops gunicorn
                # gracefully (SIGINT would make gunicorn drop uploads in flight).
                start_new_session=True,
                # SIGTERM (a graceful stop) if intake itself is killed outright.
                preexec_fn=dies_with_this_process(signal.SIGTERM),
            )
        finally:
            probe = (listeners[0].family, listeners[0].getsockname())
            for sock in listeners:  # gunicorn holds them now; when it exits, they close
                sock.close()
        self._wait_until_serving(*probe, ready_timeout)

    def _wait_until_serving(self, family: socket.AddressFamily, address, ready_timeout: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + ready_timeout
        while not _answers_http(family, address, timeout=1.0):
            if self._process.poll() is not None:
                raise ServerError(told("gunicorn exited with status {status} while starting (see its messages above)",
                                        status=self._process.returncode))
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError(told("gunicorn did not start serving {address} within {seconds:.0f} s",
                                        address=self.socket_path or self.url, seconds=ready_timeout))
            time.sleep(0.1)

    def exit_status(self) -> int | None:
        """gunicorn's exit status, or None while it runs (or was never started)."""
        return self._process.poll() if self._process else None

    def begin_stop(self) -> None:
        """Ask gunicorn to stop gracefully without waiting (stop several servers at once)."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)

    def stop(self) -> int | None:
        """Graceful stop (SIGTERM: in-flight requests finish within the grace period), then SIGKILL."""
        if self._process is None:
            return None
        if self._process.poll() is None:
            self.begin_stop()
            deadline = time.monotonic() + self.grace_period + _STOP_MARGIN
            while True:
                try:
                    self._process.wait(1.0)
                    break
                except subprocess.TimeoutExpired:
                    if time.monotonic() > deadline:
                        self._process.kill()
                        self._process.wait()
                        break
                    self._signal_workers_again()
        return self._process.returncode

    def _signal_workers_again(self) -> None:
        # A gevent worker that gets SIGTERM while it boots (gevent patches the standard library
        # before the worker installs its own handlers) swallows it, and gunicorn would wait
        # graceful_timeout (30 s) for it. Tell the workers again; a worker already stopping
        # gracefully just keeps doing so.
        assert self._process is not None
        pid = self._process.pid
        try:
            workers = [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            return
        for worker in workers:
            try:
                os.kill(worker, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def __enter__(self) -> GunicornServer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()
