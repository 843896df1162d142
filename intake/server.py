"""Running the web app under gunicorn as a child process, on loopback.

The settings come from deploy/gunicorn.conf.py (worker model, no access log);
the address is given on the command line, which takes precedence over it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from intake.config import DATA_DIR_ENV, DB_KEY_FILE_ENV, load_settings
from intake.memory_wiping import WIPING_ENVIRONMENT
from intake.memory_key import environment_for_children
from intake.store import Store

GUNICORN_CONF = Path(__file__).resolve().parents[1] / "deploy" / "gunicorn.conf.py"
APP_FACTORY = "intake.app:create_app()"
JOURNALIST_APP_FACTORY = "intake.app.journalist:create_journalist_app()"
LOOPBACK = "127.0.0.1"


class ServerError(Exception):
    """gunicorn did not start or stopped unexpectedly."""


def prepare_data_dir(data_dir: Path, db_key_file: Path | None = None) -> dict[str, int]:
    """Check the key opens the store, clear what a crash left, and return the counts.

    Raises the store's errors (not initialised, wrong key) before anything is started.
    """
    settings = load_settings(data_dir, db_key_file=db_key_file)
    with Store.open(settings) as store:
        store.recover()
        store.purge_expired_sessions()
        return store.counts()


def gunicorn_command(port: int, host: str = LOOPBACK, app_factory: str = APP_FACTORY) -> list[str]:
    # Without its config gunicorn would run sync workers and keep gunicorn's own error log format:
    # refuse rather than serve that way.
    if not GUNICORN_CONF.is_file():
        raise ServerError(f"{GUNICORN_CONF} is missing: install intake from its source tree "
                          "(pip install -e, as deploy/setup-debian.sh does)")
    return [sys.executable, "-m", "gunicorn", "--bind", f"{host}:{port}", "--config", str(GUNICORN_CONF), app_factory]


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket() as probe:
        # As gunicorn binds: connections a crash left in TIME_WAIT (a minute) do not hold the port,
        # so a restart by systemd serves at once; a live listener still does.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _accepts_connections(port: int, host: str) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class GunicornServer:
    """gunicorn for one data dir, started by `start()` and stopped (gracefully) by `stop()`."""

    def __init__(self, data_dir: Path, port: int, *, db_key_file: Path | None = None, host: str = LOOPBACK,
                 app_factory: str = APP_FACTORY):
        self.app_factory = app_factory
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.host = host
        self._db_key_file = db_key_file
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self, ready_timeout: float = 30.0) -> None:
        if not port_is_free(self.port, self.host):
            raise ServerError(f"port {self.port} on {self.host} is already in use: choose another with --port or --journalist-port")
        # Freed memory wiped (intake.memory_wiping); the memory key shared by the retention schedule here and every worker.
        env = dict(os.environ, **WIPING_ENVIRONMENT, **{DATA_DIR_ENV: str(self.data_dir)}, **environment_for_children())
        if self._db_key_file is not None:
            env[DB_KEY_FILE_ENV] = str(Path(self._db_key_file).resolve())
        self._process = subprocess.Popen(gunicorn_command(self.port, self.host, self.app_factory), env=env, cwd=GUNICORN_CONF.parents[1])
        deadline = time.monotonic() + ready_timeout
        while not _accepts_connections(self.port, self.host):
            if self._process.poll() is not None:
                raise ServerError(f"gunicorn exited with status {self._process.returncode} while starting (see its messages above)")
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError(f"gunicorn did not start listening on {self.host}:{self.port} within {ready_timeout:.0f} s")
            time.sleep(0.1)

    def exit_status(self) -> int | None:
        """gunicorn's exit status, or None while it runs (or was never started)."""
        return self._process.poll() if self._process else None

    def begin_stop(self) -> None:
        """Ask gunicorn to stop gracefully without waiting (stop several servers at once)."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 35.0) -> int | None:
        """Graceful stop (SIGTERM: in-flight requests finish), then SIGKILL after `timeout`."""
        if self._process is None:
            return None
        if self._process.poll() is None:
            self.begin_stop()
            deadline = time.monotonic() + timeout
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
