"""Where commands write: checks made before any work starts, and writes that
leave either the whole new file or the previous state (a temporary file in
the same folder, renamed into place), never half a file.
"""
import math
import os
import tempfile

import numpy as np


class OutputError(ValueError):
    """An output that cannot be written; the message names it and why."""


def _nearest_existing(path):
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def writable_dir(path, option):
    """Check, before any work, that folder `path` (given as `option`) exists
    or can be made, and can be written; creates nothing."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputError(f'{option} {path}: a file, not a folder')
    existing = _nearest_existing(path)
    if not os.path.isdir(existing):
        raise OutputError(f'{option} {path}: {existing} is a file, not a folder')
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f'{option} {path}: {existing} is not writable')


def writable_file(path, option):
    """Check, before any work, that file `path` (given as `option`) can be
    written: not a folder, in an existing writable folder."""
    if os.path.isdir(path):
        raise OutputError(f'{option} {path}: a folder, not a file')
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OutputError(f'{option} {path}: no folder {folder}')
    if not os.access(folder, os.W_OK | os.X_OK) or \
            os.path.exists(path) and not os.access(path, os.W_OK):
        raise OutputError(f'{option} {path}: not writable')


def fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path, data, what='file', mode='w'):
    """Write `data` (text or, with mode 'wb', bytes) to `path` through a temp
    file in the same folder, replaced into place; on an I/O error (disk full)
    the temp file is removed, `path` keeps its previous content, and a
    OutputError names the folder and the cause."""
    folder = os.path.dirname(path) or '.'
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix='.' + os.path.basename(path) + '.')
        with os.fdopen(fd, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if tmp and os.path.exists(tmp):
            os.remove(tmp)
        raise OutputError(f'cannot write the {what} {os.path.basename(path)} into '
                            f'{os.path.abspath(folder)}: {e.strerror or e}') from None


def jsonable(x):
    """`x` with arrays as lists and nan as None (strict JSON)."""
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, float) and math.isnan(x):
        return None
    return x
