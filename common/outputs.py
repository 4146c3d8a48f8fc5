"""Where commands write: checks made before any work starts, and writes that
leave either the whole new file or the previous state (a temporary file in
the same folder, renamed into place), never half a file.
"""
import contextlib
import math
import os
import shutil
import stat
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


def _new_file_mode(path):
    """The permissions `path` should get: those of the file it replaces, else
    what a plain open() would give (0666 less the umask); a temporary file
    from mkstemp has 0600."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _write_error(path, what, error):
    folder = os.path.dirname(os.path.abspath(path))
    return OutputError(f'cannot write the {what} {os.path.basename(path)} into {folder}: '
                       f'{error.strerror or error}')


@contextlib.contextmanager
def atomic_path(path, what='file'):
    """A temporary path beside `path` for the block to write the whole file
    to (with `path`'s extension, for writers that go by it: Pillow, np.save,
    Caffe's net.save); renamed to `path` (after fsync) when the block ends.
    On any error or interruption (KeyboardInterrupt, cli.Interrupted) the
    temporary file is removed and `path` keeps its previous state. An
    OSError (disk full, read-only folder) becomes an OutputError naming the
    file, the folder and the cause."""
    folder = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f'.{name}.', suffix=os.path.splitext(name)[1])
        os.close(fd)
        yield tmp
        os.chmod(tmp, _new_file_mode(path))
        fsync(tmp)
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise _write_error(path, what, e) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.remove(tmp)


def write_atomically(path, data, what='file', mode='w'):
    """Write `data` (text or, with mode 'wb', bytes) to `path` through
    atomic_path: on an I/O error (disk full) `path` keeps its previous
    content and an OutputError names the folder and the cause."""
    with atomic_path(path, what) as tmp, open(tmp, mode) as f:
        f.write(data)


def check_space(folder, needed, what):
    """Before writing about `needed` bytes into `folder` (or the nearest
    folder of it that exists): an OutputError if its file system has less
    free, naming the folder and both figures. Where the free space cannot
    be read, the writes themselves will say."""
    existing = _nearest_existing(folder)
    try:
        free = shutil.disk_usage(existing).free
    except OSError:
        return
    if needed > free:
        raise OutputError(f'{os.path.abspath(folder)}: not enough free space for {what}: about '
                          f'{_size(needed)} needed, {_size(free)} free')


def _size(n):
    for unit in ('bytes', 'kB', 'MB', 'GB'):
        if n < 1000 or unit == 'GB':
            return f'{n:.0f} {unit}' if unit == 'bytes' else f'{n:.1f} {unit}'
        n /= 1000


def _file_key(path):
    """What makes two paths the same file: device and inode where it exists
    (hard links, symlinks), else its resolved path."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError:
        return real
    return st.st_dev, st.st_ino


def check_apart(writes, reads=()):
    """Before any work: an OutputError if an output would overwrite an input
    or two outputs are the same file. `writes` and `reads` are (path,
    description) pairs, e.g. ('out/a.png', 'the label PNG of photos/a.jpg');
    the message names both parties and the path."""
    inputs = {}
    for path, what in reads:
        inputs.setdefault(_file_key(path), (path, what))
    planned = {}
    for path, what in writes:
        key = _file_key(path)
        if key in inputs:
            read_path, read_what = inputs[key]
            same = os.path.abspath(path) == os.path.abspath(read_path)
            raise OutputError(f'{what} would overwrite {read_what}' + ('' if same else f' (as {path})'))
        if key in planned:
            raise OutputError(f'{planned[key]} and {what} would both be {path}')
        planned[key] = what


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
