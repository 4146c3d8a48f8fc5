"""Training snapshots and their manifests.

A snapshot is Caffe's pair <prefix>_iter_N.caffemodel / .solverstate; its
manifest <prefix>_iter_N.json records both files' sizes and sha256, and
`latest.json` (a copy of the newest manifest) is replaced atomically once
both files are on disk. So a crash mid-write never leaves a corrupt
"latest", and a file changed later is caught before it is used.
"""
import functools
import hashlib
import json
import os
import shutil

from common import locations, outputs


# History blobs a solver keeps per learnable parameter blob (Caffe's
# sgd_solver.cpp and its subclasses): the solverstate holds them in order.
HISTORY_PER_PARAM = {'SGD': 1, 'Nesterov': 1, 'AdaGrad': 1, 'RMSProp': 1,
                     'AdaDelta': 2, 'Adam': 2}


class SnapshotError(ValueError):
    """A snapshot that cannot be used or written; the message says what to do
    (training's advice), `problem` only what is wrong, for commands whose
    advice differs."""

    def __init__(self, message, problem=None):
        super().__init__(message)
        self.problem = problem or message


class Snapshots:
    """Complete snapshots in a folder. Each snapshot's manifest
    (<prefix>_iter_N.json) records its two files' sizes and sha256;
    `latest.json`, a copy of the newest manifest, is replaced atomically
    once both files are on disk, so a crash mid-write never leaves a
    corrupt "latest", and a file changed later is caught before it is used."""

    FILES = (('solverstate', '.solverstate'), ('caffemodel', '.caffemodel'))

    def __init__(self, folder, prefix=None):
        self.folder = os.path.abspath(folder)
        # the solver's snapshot_prefix (relative to the current directory, as Caffe takes it)
        self.prefix = os.path.abspath(prefix or os.path.join(folder, locations.SNAPSHOT_PREFIX))
        self.pointer = os.path.join(self.folder, 'latest.json')

    def _read(self, path, listing=False):
        """A manifest's entry with absolute paths; SnapshotError naming the
        file if it is unreadable or incomplete (and, unless `listing` the
        complete snapshots, what to resume from instead)."""
        try:
            with open(path) as f:
                entry = json.load(f)
            for key, _ in self.FILES:
                entry[key] = os.path.join(os.path.dirname(path), entry[key])
                int(entry[key + '_bytes']), str(entry[key + '_sha256'])
            int(entry['iteration'])
        except (OSError, ValueError, KeyError, TypeError) as e:
            kind = type(e).__name__ if not isinstance(e, OSError) else e.strerror
            problem = f'{path}: not a readable snapshot manifest ({kind}: {e})'
            raise SnapshotError(problem if listing else
                                f'{problem}; {self._alternatives(exclude=path)}', problem) from None
        return entry

    def check(self, entry, full=True, listing=False):
        """Raise SnapshotError unless both files of `entry` are as recorded
        (size, and with `full` the sha256); the message names what to resume
        from instead, unless `listing` the complete snapshots."""
        for key, _ in self.FILES:
            path = entry[key]
            if not os.path.isfile(path):
                problem = 'is missing'
            elif os.path.getsize(path) != entry[key + '_bytes']:
                problem = f'has {os.path.getsize(path)} bytes, {entry[key + "_bytes"]} recorded'
            elif full and file_sha256(path) != entry[key + '_sha256']:
                problem = 'does not match its recorded sha256 (corrupted)'
            else:
                continue
            problem = f'snapshot {path} {problem}'
            raise SnapshotError(problem if listing else
                                f'{problem}; {self._alternatives(exclude=entry[key])}', problem)

    def latest(self, full=False):
        """{'iteration', 'solverstate', 'caffemodel', ...} of the newest
        complete snapshot (absolute paths), checked (sizes; with `full` the
        sha256 too), or None if there is none."""
        if not os.path.exists(self.pointer):
            return None
        entry = self._read(self.pointer)
        self.check(entry, full)
        return entry

    def for_solverstate(self, path):
        """The manifest entry of a solverstate written here, or None for a
        solverstate without one (made elsewhere)."""
        manifest = os.path.splitext(path)[0] + '.json'
        return self._read(manifest) if os.path.isfile(manifest) else None

    def complete(self):
        """Entries of every snapshot in the folder whose files have their
        recorded sizes, oldest first."""
        found = []
        for name in sorted(os.listdir(self.folder)) if os.path.isdir(self.folder) else ():
            if not (name.endswith('.json') and '_iter_' in name):
                continue
            try:
                entry = self._read(os.path.join(self.folder, name), listing=True)
                self.check(entry, full=False, listing=True)
            except SnapshotError:
                continue
            found.append(entry)
        return sorted(found, key=lambda e: e['iteration'])

    def _alternatives(self, exclude):
        """What the user can resume from instead, in words."""
        exclude = os.path.splitext(exclude)[0]
        older = [e['solverstate'] for e in self.complete()
                 if os.path.splitext(e['solverstate'])[0] != exclude]
        if not older:
            return 'no other complete snapshot here: start without --resume'
        return 'other complete snapshots: ' + ', '.join(older[::-1]) + \
            ' (resume one with --resume FILE)'

    def current(self, iteration):
        """The entry latest.json holds if it is the snapshot of `iteration`
        with its files whole (sizes), else None: what an interrupted run
        names instead of writing the same snapshot again."""
        try:
            entry = self.latest()
        except SnapshotError:
            return None
        return entry if entry and entry['iteration'] == iteration else None

    def _retire(self, prefix, iteration):
        """Before Caffe writes <prefix>.caffemodel/.solverstate where files
        of the same iteration are (a run resumed from an older snapshot, or
        one killed while writing): point latest.json at the newest complete
        snapshot before it (or remove it), so that nothing names files while
        they are rewritten; then remove the manifest and the files (Caffe
        would abort on one it cannot overwrite)."""
        try:
            if os.path.exists(self.pointer) and self._pointer_iteration() == iteration:
                older = [e for e in self.complete() if e['iteration'] < iteration]
                if older:
                    self._point(older[-1])
                else:
                    os.remove(self.pointer)
            for path in (prefix + '.json', prefix + '.caffemodel', prefix + '.solverstate'):
                if os.path.lexists(path):
                    os.remove(path)
        except OSError as e:
            raise SnapshotError(f'cannot replace the earlier snapshot {prefix}.*: '
                                f'{e.strerror}') from None

    def _pointer_iteration(self):
        try:
            with open(self.pointer) as f:
                return int(json.load(f)['iteration'])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _point(self, entry):
        """Replace latest.json by `entry` (absolute paths as read)."""
        relative = {**entry, **{key: os.path.relpath(entry[key], self.folder)
                                for key, _ in self.FILES}}
        outputs.write_atomically(self.pointer, json.dumps(relative), what='snapshot manifest')

    def needed_bytes(self, net, solver_type):
        """About what a snapshot of `net` takes on disk: the weights, and the
        solver's history (HISTORY_PER_PARAM blobs per parameter)."""
        params = sum(b.data.nbytes for blobs in net.params.values() for b in blobs)
        return params * (1 + HISTORY_PER_PARAM.get(solver_type, 2)) + (1 << 20)

    def save(self, solver, solver_type='SGD'):
        """Snapshot the solver; point latest.json at it once it is on disk.
        Checks the free space first: Caffe aborts on a failed write."""
        try:
            os.makedirs(self.folder, exist_ok=True)
            os.makedirs(os.path.dirname(self.prefix), exist_ok=True)  # Caffe writes there
            free = shutil.disk_usage(os.path.dirname(self.prefix)).free
        except OSError as e:
            raise SnapshotError(f'cannot write snapshots into {self.folder}: '
                                f'{e.strerror}') from None
        needed = self.needed_bytes(solver.net, solver_type)
        if free < needed:
            raise SnapshotError(
                f'cannot snapshot iteration {solver.iter} into {self.folder}: '
                f'{free / 2**20:.1f} MiB free, a snapshot needs about {needed / 2**20:.1f} MiB '
                '(disk full?); free some space and --resume')
        prefix = f'{self.prefix}_iter_{solver.iter}'
        self._retire(prefix, solver.iter)
        solver.snapshot()
        entry = {'iteration': solver.iter}
        for key, ext in self.FILES:
            path = prefix + ext
            outputs.fsync(path)
            entry[key] = os.path.relpath(path, self.folder)
            entry[key + '_bytes'] = os.path.getsize(path)
            entry[key + '_sha256'] = file_sha256(path)
        for path in (prefix + '.json', self.pointer):
            outputs.write_atomically(path, json.dumps(entry), what='snapshot manifest')
        outputs.fsync(self.folder)
        return {**entry, **{key: os.path.join(self.folder, entry[key]) for key, _ in self.FILES}}


def file_sha256(path):
    stat = os.stat(path)
    return _sha256_of(os.path.abspath(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _sha256_of(path, size, mtime_ns):
    """Cached by size and modification time: solve.py checks a snapshot
    before building its nets and again as training starts from it, and a
    VGG16 snapshot is about 1 GB to hash."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()
