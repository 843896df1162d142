"""The sockets gunicorn serves on, made by `intake serve` and handed to gunicorn.

Tor reaches both apps over unix sockets (``HiddenServicePort 80 unix:PATH``): only
processes that may open the socket file (intake's user and tor's group) can talk to
the journalist interface, where a loopback TCP port would let any local process, or
a request forged by any server on the host, bypass the onion's client authorisation.
Loopback TCP ports are opened only when asked for (``--port``, ``--journalist-port``,
``intake demo``).

intake binds each socket itself and gunicorn inherits it (``--bind fd://N``): the check
that a port is free *is* the bind, with no window in which another process could take
the port, and intake sets the socket file's group and mode before anyone can connect.
"""

from __future__ import annotations

import errno
import grp
import os
import socket
import stat
from pathlib import Path

from intake.told import told

LOOPBACK = "127.0.0.1"
SOCKET_NAMES = {"source": "source.sock", "journalist": "journalist.sock"}
# Tor's group on Debian (debian-tor) and on other systems; the first one intake is in is used.
TOR_GROUPS = ("debian-tor", "_tor", "tor", "toranon")
_BACKLOG = 1024
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes including the NUL


class ListenerError(Exception):
    """A socket could not be opened; the message is one line for the operator."""


def open_tcp_listener(port: int, host: str = LOOPBACK) -> socket.socket:
    """A listening TCP socket on host:port.

    SO_REUSEADDR: the connections of a run that just stopped linger in TIME_WAIT on this
    port for up to a minute, and must not block a restart (gunicorn sets it on its own
    sockets for the same reason). A port that another process listens on is still refused.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(_BACKLOG)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise ListenerError(told("port {port} on {host} is already in use: choose another with --port "
                                     "or --journalist-port", port=port, host=host)) from None
        raise ListenerError(told("cannot listen on {host}:{port}: {reason}", host=host, port=port, reason=error.strerror)) from None
    return sock


def tor_group() -> int | None:
    """The gid of a tor group this process belongs to (it can then hand its sockets to tor), or None."""
    mine = set(os.getgroups()) | {os.getegid()}
    for name in TOR_GROUPS:
        try:
            gid = grp.getgrnam(name).gr_gid
        except KeyError:
            continue
        if gid in mine:
            return gid
    return None


def prepare_socket_dir(path: Path, group: int | None) -> Path:
    """Create the socket directory: 0700, or 0710 with `group` (tor's) so tor can reach a
    socket by its name but not list the directory.

    An existing directory is used only if it is this user's and closed to others (e.g.
    systemd's RuntimeDirectory): never loosen or take over a shared one such as /tmp."""
    path = Path(path).absolute()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        info = path.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o007:
            raise ListenerError(told("{path} must be a directory of intake's own user that others cannot enter: "
                                     "choose another --socket-dir", path=path)) from None
    if group is not None and path.stat().st_gid != group:
        os.chown(path, -1, group)
    os.chmod(path, 0o710 if group is not None else 0o700)
    return path


def _check_path_length(path: Path) -> None:
    text = os.fspath(path)
    if len(os.fsencode(text)) > _SUN_PATH_MAX:
        raise ListenerError(told("the socket path {path} is longer than {limit} bytes: choose a shorter --socket-dir",
                                 path=text, limit=_SUN_PATH_MAX))


def _remove_stale_socket(path: Path) -> None:
    """A socket file left by a run that crashed is removed; one that still answers is refused."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ListenerError(told("{path} exists and is not a socket: remove it or choose another --socket-dir", path=path))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(os.fspath(path))
        except OSError:
            path.unlink(missing_ok=True)
            return
    raise ListenerError(told("{path} is in use: is another intake serving this data dir?", path=path))


def open_unix_listener(path: Path, group: int | None) -> socket.socket:
    """A listening unix socket at path, mode 0660, in `group` (tor's) when given."""
    path = Path(path)
    _check_path_length(path)
    _remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # The directory (0700/0710) keeps others out until the mode below is set.
        sock.bind(os.fspath(path))
        if group is not None:
            os.chown(path, -1, group)
        os.chmod(path, 0o660)
        sock.listen(_BACKLOG)
    except OSError as error:
        sock.close()
        raise ListenerError(told("cannot listen on {path}: {reason}", path=path, reason=error.strerror)) from None
    return sock
