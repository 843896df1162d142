"""Child processes that die with their parent, however the parent ends.

`intake serve` starts two gunicorn masters and, in launch/offline mode, a tor. Stopping
them in order is the parent's job on SIGTERM or Ctrl-C; but a parent killed outright
(``kill -9``, the OOM killer, a crash in C) runs no clean-up, and its children would keep
serving and holding the ports and sockets a restart needs. Linux's PR_SET_PDEATHSIG makes
the kernel signal the child when its parent goes, so nothing outlives intake.

The kernel ties the signal to the *thread* that forked the child: start children from the
thread that lives as long as the process (in `intake serve`, the main thread).
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# Resolved once, here: the function run between fork and exec must not import or allocate much.
_prctl = ctypes.CDLL(None, use_errno=True).prctl
_prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
_prctl.restype = ctypes.c_int


def die_with_parent(sig: int = signal.SIGTERM, parent_pid: int | None = None) -> None:
    """Have the kernel send `sig` to this process when its parent dies.

    With `parent_pid`, a parent that already died (before the request took effect) is
    caught too: the signal is then sent at once."""
    if _prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))
    if parent_pid is not None and os.getppid() != parent_pid:
        os.kill(os.getpid(), sig)


def dies_with_this_process(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A ``preexec_fn`` for subprocess.Popen: the child gets `sig` when this process dies."""
    parent = os.getpid()
    return lambda: die_with_parent(sig, parent)
