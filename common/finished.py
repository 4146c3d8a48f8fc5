"""Whether an item's outputs are finished, for --skip-done: a rerun of an
interrupted run (Ctrl-C, a killed job, a lost cluster node) does only the
items whose outputs are missing or not whole.

Outputs are written through temporary files renamed when whole
(common/outputs.py), so a file at its final name is normally whole; what
is checked here is what else can happen to a file between two runs: a
copy or a sync cut short, a disk that filled, a hand edit, a symlink
planted where an output goes (not the command's own file: redone, which
replaces the link itself). A PNG is whole when every chunk's checksum
holds up to its end chunk; a .npy when its header reads and its size is
the header's plus the array's; any other file when it is a non-empty
regular file.
"""
import os

import numpy as np
from PIL import Image


def whole(path):
    """Whether `path` is a whole output file (see the module docstring)."""
    if os.path.islink(path) or not os.path.isfile(path):
        return False
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == '.png':
            with Image.open(path) as im:
                im.verify()  # every chunk's CRC, up to IEND
            return True
        if ext == '.npy':
            return _whole_npy(path)
        return os.path.getsize(path) > 0
    except Exception:  # noqa: BLE001 -- any failure to read it means: not whole
        return False


def _whole_npy(path):
    with open(path, 'rb') as f:
        version = np.lib.format.read_magic(f)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read_header(f)
        header = f.tell()
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    return not dtype.hasobject and os.path.getsize(path) == expected


def finished(paths):
    """Whether every one of an item's output `paths` is whole: the item is
    done and --skip-done passes it by."""
    return bool(paths) and all(whole(p) for p in paths)


def unfinished(items, outputs_of):
    """The items (in order) whose outputs, `outputs_of(item)` (paths), are
    not all whole: what a --skip-done run still has to do."""
    return [item for item in items if not finished(list(outputs_of(item)))]
