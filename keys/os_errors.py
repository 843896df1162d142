"""An operating system's refusal (a missing folder, a full disk) in a person's words.

Both commands, `intake-keys` and `intake`, end with one line when a file or folder cannot be
used; the system's own text ("No such file or directory") is English whatever the reader's
language, so the usual causes are worded here as told words (keys.told) and translated where
they are shown. A hidden file the tools were making (a partial export, a backup's staging
folder) is named by its folder: the place the person chose.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from keys.told import N_, Told, told

HIDDEN_PREFIX = ".intake-"  # keys.files.TEMP_PREFIX and intake's staging names start so

_WORDS = {
    errno.ENOENT: N_("{path}: there is no such file or folder"),
    errno.EEXIST: N_("{path} already exists"),
    errno.EISDIR: N_("{path} is a folder, not a file"),
    errno.ENOTDIR: N_("{path}: a part of this path is not a folder"),
    errno.EACCES: N_("{path}: permission denied"),
    errno.EPERM: N_("{path}: the operation is not permitted"),
    errno.EROFS: N_("{path} is on a read-only file system"),
    errno.EIO: N_("{path}: the disk reported an input/output error"),
    errno.ENAMETOOLONG: N_("{path}: the name is too long"),
}


def os_error_words(error: OSError) -> Told:
    """What went wrong with which path, as told words."""
    filename = os.fsdecode(error.filename) if isinstance(error.filename, (str, bytes, os.PathLike)) else None
    path = Path(filename) if filename else None
    if path is not None and path.name.startswith(HIDDEN_PREFIX):
        path = path.parent
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        if path is None:
            return told("a disk is full: free some space and try again")
        return told("the disk holding {path} is full: free some space there and try again", path=path)
    if error.errno == errno.EPIPE:
        return told("the output was closed before everything was written")
    if path is None:
        return told("{reason}", reason=error.strerror or str(error))
    if error.errno in _WORDS:
        return told(_WORDS[error.errno], path=path)
    return told("{path}: {reason}", path=path, reason=error.strerror or str(error))
