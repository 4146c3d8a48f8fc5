"""Unpack the one folder of a tar or zip archive that holds a dataset.

Archives wrap their data in folders of their own (VOC2011's trainval tar
unpacks as TrainVal/VOCdevkit/VOC2011/...), so the folder is located by a
marker it must contain (e.g. JPEGImages) instead of by a fixed path.
Entries are unpacked into a staging folder beside the destination and moved
into place only when all of them are out; absolute paths, '..' and links are
refused.
"""
import gzip
import lzma
import os
import posixpath
import shutil
import tarfile
import zipfile
import zlib
from pathlib import Path

from tqdm import tqdm

from . import FetchError


class ArchiveLayoutError(FetchError):
    """The archive does not hold the expected folder."""


class ArchiveReadError(FetchError):
    """The archive is truncated or corrupt."""


# What tarfile, zipfile and the decompressors raise on a truncated or
# corrupt archive (other OSErrors are the disk's, and say so themselves).
READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError,
               gzip.BadGzipFile)
# What zipfile raises for members it cannot extract at all: encrypted
# (RuntimeError) or compressed with a method it lacks (NotImplementedError).
UNSUPPORTED_ERRORS = (RuntimeError, NotImplementedError)


def _clean_name(name):
    """The member's path as a tuple of parts, or None if it would escape."""
    name = name.replace('\\', '/')
    if name.startswith('/'):
        return None
    parts = tuple(p for p in posixpath.normpath(name).split('/') if p not in ('', '.'))
    if not parts or '..' in parts:
        return None
    return parts


class _Archive:
    """A tar (any compression) or zip archive seen as (parts, is_dir, open)."""

    def __init__(self, path):
        self.path = Path(path)
        if zipfile.is_zipfile(self.path):
            self._zip = zipfile.ZipFile(self.path)
            self.members = [(info, info.is_dir()) for info in self._zip.infolist()]
            self._open = self._zip.open
            self._name = lambda info: info.filename
        elif tarfile.is_tarfile(self.path):
            self._tar = tarfile.open(self.path)
            # Links and devices are never needed for datasets, and unsafe.
            self.members = [(m, m.isdir()) for m in self._tar.getmembers()
                            if m.isfile() or m.isdir()]
            self._open = self._tar.extractfile
            self._name = lambda m: m.name
        else:
            raise ArchiveLayoutError(f'{path}: neither a tar nor a zip archive')

    def entries(self):
        for member, is_dir in self.members:
            parts = _clean_name(self._name(member))
            if parts is not None:
                yield parts, is_dir, member

    def open(self, member):
        return self._open(member)

    def close(self):
        (getattr(self, '_zip', None) or self._tar).close()


def locate_root(names, marker, root_name=None):
    """The shortest folder prefix P (a tuple of parts) such that P/marker is
    in the archive; with root_name, P's last part must be root_name."""
    marker = tuple(marker.split('/'))
    candidates = set()
    for parts in names:
        for i in range(len(parts) - len(marker) + 1):
            if parts[i:i + len(marker)] == marker:
                prefix = parts[:i]
                if root_name is None or (prefix and prefix[-1] == root_name):
                    candidates.add(prefix)
                    break
    if not candidates:
        tops = sorted({parts[0] for parts in names})[:10]
        raise ArchiveLayoutError(
            f'no folder holding {"/".join(marker)}'
            + (f' named {root_name}' if root_name else '')
            + f' in the archive (top level: {", ".join(tops)})')
    shortest = min(len(c) for c in candidates)
    roots = sorted(c for c in candidates if len(c) == shortest)
    if len(roots) > 1:
        raise ArchiveLayoutError('several candidate folders: '
                                 + ', '.join('/'.join(r) for r in roots))
    return roots[0]


def unpack_folder(archive_path, dest, marker, root_name=None, force=False, progress=True):
    """Unpack the archive folder that holds `marker` so that its contents
    land in `dest` (which may already hold other files, e.g. classes.txt).

    Entries already in `dest` are kept unless `force`. The entry holding the
    marker is moved in last, so the marker's presence means "complete"; an
    error or an interruption leaves no staging folder behind.
    """
    dest = Path(dest)
    staging = dest.parent / f'.{dest.name}.unpacking'
    try:
        _unpack(archive_path, dest, marker, root_name, staging, progress)
        _move_in(staging, dest, first_part=marker.split('/')[0], force=force)
    except READ_ERRORS as e:
        raise ArchiveReadError(f'{archive_path}: truncated or corrupt archive '
                               f'({e or type(e).__name__})') from e
    except UNSUPPORTED_ERRORS as e:
        raise ArchiveLayoutError(f'{archive_path}: cannot unpack it ({e})') from e
    finally:  # on an error or an interruption, nothing half-unpacked stays
        shutil.rmtree(staging, ignore_errors=True)


def _unpack(archive_path, dest, marker, root_name, staging, progress):
    """Unpack the folder holding `marker` into `staging`."""
    archive = _Archive(archive_path)
    try:
        entries = list(archive.entries())
        root = locate_root([parts for parts, _, _ in entries], marker, root_name)
        if staging.exists():
            shutil.rmtree(staging)  # left by an interrupted run
        staging.mkdir(parents=True)
        inside = [(parts[len(root):], is_dir, member) for parts, is_dir, member in entries
                  if parts[:len(root)] == root and len(parts) > len(root)]
        _check_kinds(archive_path, root, inside)
        for rel, is_dir, member in tqdm(inside, desc=f'unpack {dest.name}', unit='file',
                                        mininterval=0.5, disable=None if progress else True):
            target = staging.joinpath(*rel)
            if is_dir:
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as src, open(target, 'wb') as out:
                shutil.copyfileobj(src, out, 1 << 20)
    finally:
        archive.close()


def _check_kinds(archive_path, root, inside):
    """An ArchiveLayoutError naming the archive and the member if a path is
    both a file and a folder in it (a file member, and a folder member or a
    member inside it): it cannot be unpacked as it is."""
    files = {rel for rel, is_dir, _ in inside if not is_dir}
    folders = {rel for rel, is_dir, _ in inside if is_dir} | \
        {rel[:i] for rel, _, _ in inside for i in range(1, len(rel))}
    both = sorted(files & folders)
    if both:
        member = '/'.join(root + both[0])
        raise ArchiveLayoutError(f'{archive_path}: member {member} is both a file and a folder '
                                 'in the archive; it cannot be unpacked (a damaged or '
                                 'hand-made archive?)')


def _move_in(staging, dest, first_part, force):
    dest.mkdir(parents=True, exist_ok=True)
    children = sorted(staging.iterdir(), key=lambda p: p.name == first_part)
    for child in children:
        target = dest / child.name
        if target.exists() or target.is_symlink():
            if not force:
                print(f'keeping existing {target}')
                continue
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink()
        os.replace(child, target)
