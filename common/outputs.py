"""Where commands write: the one output guard. Each command declares what it
reads and what it will write; before any work `guard(writes, reads)`
refuses an output that is, or resolves to, an input or another output, or
that is a symbolic link planted where a file goes (never written through);
`writable_file`/`writable_dir` refuse a place that cannot be written, in
one line. Writes leave either the whole new file or the previous state (a
temporary file in the same folder, renamed into place), never half a file,
and no temporary file on an error or a signal.
"""
import contextlib
import errno
import math
import os
import shutil
import stat
import tempfile

import numpy as np

from common import cli


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
    written: not a folder, not a name ending in a separator (a folder
    meant), not a symbolic link, in an existing writable folder."""
    if os.path.isdir(path):
        raise OutputError(f'{option} {path}: a folder, not a file')
    if str(path).endswith(('/', os.sep)):
        raise OutputError(f'{option} {path}: names a folder (it ends in "/"); give a file name')
    refuse_link(path, option)
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
        with cli.signals_deferred():  # never left at 0 by a signal
            umask = os.umask(0)
            os.umask(umask)
        return 0o666 & ~umask


def _write_error(paths, what, error):
    """An OutputError for a failed write of `paths` (one file, or files of
    one folder), naming them, the folder and the cause."""
    folder = os.path.dirname(os.path.abspath(paths[0]))
    names = ', '.join(os.path.basename(p) for p in paths)
    return OutputError(f'{folder}: cannot write {what} ({names}): {error.strerror or error}')


def _temp_beside(path):
    """A new empty temporary file in `path`'s folder, hidden, with `path`'s
    extension (writers such as Pillow and np.save go by it)."""
    name = os.path.basename(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=f'.{name}.',
                               suffix=os.path.splitext(name)[1])
    os.close(fd)
    return tmp


@contextlib.contextmanager
def atomic_paths(paths, what='the files', on_written=None):
    """Temporary paths ({key: temp path} for `paths`, {key: path}) beside
    their final ones, for the block to write whole files to; when the block
    ends, each is synced to disk and renamed into place, all of them with
    stop signals held back (cli.signals_deferred), so that files that belong
    together (one image's outputs) appear together. On any error or
    interruption the temporary files are removed and every path keeps its
    previous state. An OSError (disk full, read-only folder) becomes an
    OutputError naming the files, the folder and the cause. `on_written`
    (if given) is called once all are in place, before a signal held back
    meanwhile is raised: what the caller records of the write is then
    never lost to an interruption."""
    tmps = {}
    try:
        with cli.signals_deferred():  # each made and recorded together: none left behind
            for key, path in paths.items():
                tmps[key] = _temp_beside(path)
        yield dict(tmps)
        for key, path in paths.items():
            os.chmod(tmps[key], _new_file_mode(path))
            fsync(tmps[key])
        with cli.signals_deferred():
            for key, path in paths.items():
                os.replace(tmps[key], path)
                del tmps[key]
            if on_written:
                on_written()
    except OSError as e:
        raise _write_error(list(paths.values()), what, e) from None
    finally:
        for tmp in tmps.values():
            with contextlib.suppress(OSError):
                os.remove(tmp)


@contextlib.contextmanager
def atomic_path(path, what='the file'):
    """atomic_paths for one file: yields its temporary path."""
    with atomic_paths({path: path}, what) as tmps:
        yield tmps[path]


def write_atomically(path, data, what='the file', mode='w'):
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


def file_key(path):
    """What makes two paths the same file: device and inode where it exists
    (hard links, symlinks), else its resolved path. A file replaced by
    atomic_paths gets a new key."""
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
        inputs.setdefault(file_key(path), (path, what))
    planned = {}
    for path, what in writes:
        key = file_key(path)
        if key in inputs:
            read_path, read_what = inputs[key]
            same = os.path.abspath(path) == os.path.abspath(read_path)
            raise OutputError(f'{what} would overwrite {read_what}' + ('' if same else f' (as {path})'))
        if key in planned:
            raise OutputError(f'{planned[key]} and {what} would both be {path}')
        planned[key] = what


def check_written(tmp, path, read, what):
    """After a writer that reports no error (Caffe's save ignores a full
    disk): `read(tmp)` must take the file back whole, else an OutputError
    naming `path`, the folder's free space and the likely cause."""
    try:
        read(tmp)
    except (ValueError, OSError):
        folder = os.path.dirname(os.path.abspath(path))
        free = shutil.disk_usage(folder).free
        raise OutputError(f'{folder}: cannot write {what} ({os.path.basename(path)}): written '
                          f'incomplete ({os.path.getsize(tmp)} bytes), {_size(free)} free: No space '
                          'left on device?') from None


def refuse_link(path, what):
    """An OutputError if `path` is a symbolic link: an output is replaced,
    never written through a link someone planted where it goes (its
    target could be any file)."""
    if os.path.islink(path):
        named = what if str(path) in what else f'{what} {path}'
        raise OutputError(f'{named} is a symbolic link (to {os.readlink(path)}): an output '
                          'is never written through a link; remove it or choose another path')


def guard(writes, reads=()):
    """The output guard, before any work: `writes` and `reads` are (path,
    description) pairs of everything the command will write and read.
    Refuses (OutputError, naming both parties) an output that is a planted
    symbolic link (refuse_link), that is or resolves to an input, or that
    two outputs share (check_apart)."""
    writes = list(writes)
    for path, what in writes:
        refuse_link(path, what)
    check_apart(writes, reads)


def open_no_follow(path, flags, mode=0o644, what='the file'):
    """os.open of `path` that never follows a symbolic link at it
    (O_NOFOLLOW): a link planted at a lock or output path is an OutputError
    naming it, not a write into its target."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OutputError(f'{what} {path} is a symbolic link (to {os.readlink(path)}): never '
                              'followed; remove it') from None
        raise


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
