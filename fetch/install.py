"""How each dataset and each set of weights is fetched and put in place."""
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from common import datasets, locations, outputs, weightfiles
from common.catalog import DOWNLOADS, ILSVRC_CONVERTED, ILSVRC_NETS, MODELS

from . import REPO, FetchError
from .archive import ArchiveReadError, unpack_folder
from .download import adopt, download, part_path
from .splits import write_derived_splits


@dataclass(frozen=True)
class Unpack:
    """Unpack the archive folder holding `marker` into <data root>/<dest>;
    <dest>/<marker> existing means this step is done."""
    source: str
    dest: str
    marker: str
    root_name: str | None = None  # the folder's own name, where it is known

    def done(self, data_root):
        return (Path(data_root) / self.dest / self.marker).exists()


@dataclass(frozen=True)
class Place:
    """Copy a single downloaded file to <data root>/<dest>."""
    source: str
    dest: str

    def done(self, data_root):
        return (Path(data_root) / self.dest).exists()


@dataclass(frozen=True)
class Dataset:
    steps: tuple
    # {file the models read: why it could be missing}; archive layouts are
    # partly unverified, so a missing one is reported after fetching.
    needs: dict = field(default_factory=dict)


_VOC2010, _VOC2011 = datasets.voc_year_dir(2010), datasets.voc_year_dir(2011)
DATASETS = {
    'voc2011': Dataset((Unpack('voc2011', _VOC2011, 'JPEGImages', 'VOC2011'),), {
        datasets.voc_split(_VOC2011, 'seg11valid').replace(os.sep, '/'):
            'seg11valid is derived once sbd is fetched too'}),
    'voc2012': Dataset((Unpack('voc2012', datasets.voc_year_dir(2012), 'JPEGImages', 'VOC2012'),)),
    'sbd': Dataset((Unpack('sbd', datasets.SBDD_DIR, 'cls', 'dataset'),), {
        f'{datasets.SBDD_DIR}/train.txt': 'not in the archive'}),
    'nyud': Dataset((Unpack('nyud', datasets.NYUD_DIR, 'segmentation'),), {
        f'{datasets.NYUD_DIR}/trainval.txt': 'derived from train.txt and val.txt, expected in the archive',
        f'{datasets.NYUD_DIR}/test.txt': 'expected in the archive'}),
    'siftflow': Dataset((Unpack('siftflow', datasets.SIFTFLOW_DIR, 'SemanticLabels'),), {
        f'{datasets.SIFTFLOW_DIR}/{split}.txt': "derived from the archive's TestSet1.txt"
        for split in ('trainval', 'test')}),
    'context': Dataset((Unpack('voc2010', _VOC2010, 'JPEGImages', 'VOC2010'),
                        Unpack('context-trainval', datasets.CONTEXT_DIR, 'trainval'),
                        Place('context-59-labels', f'{datasets.CONTEXT_DIR}/59_labels.txt')), {
        f'{datasets.CONTEXT_DIR}/labels.txt': 'expected in the annotations archive',
        **{datasets.voc_split(_VOC2010, split, 'Main').replace(os.sep, '/'): 'expected in the VOC2010 archive'
           for split in ('train', 'val')}}),
}
DOWNLOADS_DIR = 'downloads'  # archives, under the data root


def fetch_hint(path, data_root=locations.DATA_DIR):
    """How to get `path` (a file the data layers read, under the data
    root): 'get it with `python -m fetch data NAME`', with why it could still
    be missing after that; '' for a path no dataset here provides."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(data_root)).replace(os.sep, '/')
    for name, dataset in DATASETS.items():
        steps = [s for s in dataset.steps if rel == s.dest or rel.startswith(s.dest + '/')]
        if steps or rel in dataset.needs:
            fetched = all(s.done(data_root) for s in steps or dataset.steps)
            why = f' ({dataset.needs[rel]})' if fetched and rel in dataset.needs else ''
            return f'get it with `python -m fetch data {name}`{why}'
    return ''
SURGERY = REPO / 'surgery.py'


def _obtain(key, dest, urls, files, **download_args):
    """The verified file for source `key`: the user's --file, or a download to dest."""
    if key in files:
        return adopt(key, DOWNLOADS[key], files[key], dest=None)
    return download(key, DOWNLOADS[key], dest, url=urls.get(key), **download_args)


def fetch_dataset(name, data_root, urls=None, files=None, force=False,
                  remove_archives=False, **download_args):
    urls, files = urls or {}, files or {}
    data_root = Path(data_root)
    dataset = DATASETS[name]
    for step in dataset.steps:
        if step.done(data_root) and not force:
            print(f'{name}: {data_root / step.dest} already in place')
            continue
        archive = _obtain(step.source, data_root / DOWNLOADS_DIR / DOWNLOADS[step.source].filename,
                          urls, files, **download_args)
        if isinstance(step, Unpack):
            try:
                unpack_folder(archive, data_root / step.dest, step.marker, step.root_name, force,
                              progress=download_args.get('progress', True))
            except ArchiveReadError as e:
                if step.source in files:
                    raise FetchError(f'{e}; give a complete copy') from e
                Path(archive).unlink()  # a download must not be reused as if it were good
                raise FetchError(f'{e}; deleted it: run the same command again to download '
                                 'it anew') from e
        else:
            dest = data_root / step.dest
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(archive, part_path(dest))
            os.replace(part_path(dest), dest)
        if remove_archives and step.source not in files:
            Path(archive).unlink()
    for path in write_derived_splits(data_root):
        print(f'wrote {path}')
    for rel, why in dataset.needs.items():
        if not (data_root / rel).exists():
            print(f'{name}: warning: {data_root / rel} is missing ({why})', file=sys.stderr)


def weights_path(name, models_root):
    """Where the downloaded weights of `name` (an ILSVRC net or a model folder) go."""
    if name in ILSVRC_NETS:
        return Path(locations.ilsvrc_download(name, models_root))
    if locations.published_weights(name, models_root):
        return Path(locations.published_weights(name, models_root))
    raise FetchError(f'no published weights for {name!r}; choose from '
                     + ', '.join(weight_names()))


def weight_names():
    return list(ILSVRC_NETS) + [m.folder for m in MODELS.values() if m.weights]


def converted_path(net, models_root):
    return Path(locations.ilsvrc_weights(net, models_root))


def convert_ilsvrc(net, weights, out, force=False):
    """Cast an ILSVRC classifier into fully convolutional form with
    `surgery.py convert`, writing to a .part name first."""
    out = Path(out)
    if out.exists() and not force:
        print(f'{net}: {out} already converted')
        return out
    if not SURGERY.exists():
        raise FetchError(f'{net}: {SURGERY} not found; the download is kept at {weights}, '
                         'run the command again once surgery.py exists')
    part = out.with_name(out.name + '.part')
    part.unlink(missing_ok=True)  # left by a failed run; convert will not overwrite
    cmd = [sys.executable, str(SURGERY), 'convert', '--net', net,
           '--weights', str(weights), '--out', str(part)]
    print('$ ' + subprocess.list2cmdline(cmd))
    status, err = run_quietly(cmd)
    if status != 0 or not part.exists():
        part.unlink(missing_ok=True)
        last = err.strip().splitlines()[-1:] or [f'exit status {status}']
        raise FetchError(f'{net}: surgery.py convert failed: {last[0]}')
    os.replace(part, out)
    print(f'{net}: wrote {out}')
    return out


def run_quietly(cmd):
    """Run a command of the repository, its stdout passed on and its stderr
    kept: (exit status, stderr), so that its error becomes part of fetch's
    one line. Interrupted, it is asked to stop (SIGTERM: it removes its
    temporary files) and waited for before the interruption goes on."""
    with subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, text=True) as proc:
        try:
            _, err = proc.communicate()
        except KeyboardInterrupt:
            proc.terminate()
            proc.communicate()
            raise
    return proc.returncode, err


def reference_net(name, models_root):
    """The net definition the weights `name` must fit (weightfiles.net_for_weights
    of where they are stored): the models root's own copy where it has one,
    else the repository's. None for GoogLeNet (no net of the repository's
    own reads it as downloaded)."""
    stored = str(weights_path(name, models_root))
    candidates = [weightfiles.net_for_weights(stored), weightfiles.net_for_weights(
        os.path.join(locations.MODELS_DIR, os.path.relpath(stored, models_root)))]
    if candidates[0] is None:
        return None
    return next((p for p in candidates if os.path.isfile(p)), candidates[-1])


def weights_check(name, models_root, allow_modules=()):
    """A check (path -> None, raising ValueError) that a file is a caffemodel
    fitting the reference_net of `name`, as every command will load it."""
    proto = reference_net(name, models_root)

    def check(path):
        weightfiles.read_caffemodel(str(path))  # refuses any other file before building a net
        if proto is None:
            return
        if not os.path.isfile(proto):
            raise weightfiles.CheckError(f'no net definition {proto} to check {path} against')
        import caffe  # deferred: fetching data needs no Caffe

        import loading  # deferred with caffe, which it loads
        if os.path.basename(proto) == locations.DEPLOY_PROTOTXT:  # a model folder: the one way
            loading.deploy(os.path.dirname(proto), allow_modules)
        else:
            loading.check_net(proto, allow=allow_modules)
        weightfiles.check_weights(str(path), caffe.Net(proto, caffe.TEST), net_name=proto)
    return check


def fetch_weights(name, models_root, url=None, file=None, convert=True, force=False,
                  allow_modules=(), **download_args):
    dest = weights_path(name, models_root)
    outputs.guard([(str(dest), f'{name}: the weights'), (str(part_path(dest)), f'{name}: the download')],
                  [(str(file), f'--file {file}')] if file is not None else [])
    check = weights_check(name, models_root, allow_modules)
    if file is not None:
        adopt(name, DOWNLOADS[name], file, dest=dest, check=check)
    else:
        download(name, DOWNLOADS[name], dest, url=url, check=check, **download_args)
    if name in ILSVRC_CONVERTED and convert:
        convert_ilsvrc(name, dest, converted_path(name, models_root), force=force)
    return dest
