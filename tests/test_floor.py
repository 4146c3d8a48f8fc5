"""The floor's matrix: every kind of bad input against every command, as
real processes. COMMANDS lists every command; KINDS every kind of bad
input; CASES holds one entry for each (kind, command) pair, so that a
command added to COMMANDS without its cases fails
test_every_command_meets_every_kind, and a command that skips the floor
fails its row.

Each case ends in one line naming the culprit, exit status 1 (130/143 for
signals), no traceback, no Caffe abort, inputs unchanged and no temporary
file left. Signals go at random moments (TRUST_SEED to replay), several
tries each; the full disk is a real small tmpfs (root only).
"""
import io
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time

import numpy as np
import pytest
from PIL import Image

import caffe

from common import datasets, locations
from helpers import OWN_CLASSES, descendants, write_model, write_own_data, write_voc

sys.path.insert(0, os.path.join(locations.REPO_DIR, 'tools'))
import resume_trials  # noqa: E402  (tools/ is not a package)

REPO = locations.REPO_DIR
CLASSES = datasets.VOC_CLASSES[:5]
ABORTS = ('Traceback', 'Check failed', '*** ')
SEED = int(os.environ.get('TRUST_SEED', time.time()))  # printed with every failure
rng = random.Random(SEED)
EVIL = 'evil_layer'  # a module a prototxt names: importing it leaves a marker file
EVIL_LAYER = '''
layer {
  name: "evil"
  type: "Python"
  bottom: "%s"
  top: "evil"
  python_param { module: "%s" layer: "Evil" }
}
'''


# ---------------------------------------------------------------- the world

@pytest.fixture(scope='module')
def world(tmp_path_factory):
    """A template model folder (a tiny FCN-8s named voc-fcn8s, as fetch
    installs its published weights into it, with solve.py), VOC-layout
    data, its weights good and NaN, a photo, an ILSVRC-like classifier pair
    for surgery, and the evil module."""
    root = tmp_path_factory.mktemp('floor')
    write_voc(str(root / 'data' / 'voc'), {'train': ['t0'], 'val': ['v0', 'v1']}, learnable=True)
    # for runs long enough to be interrupted at work: a split of 16 images, 16 photos, an archive
    write_voc(str(root / 'data' / 'voc'), {'many': [f'm{i}' for i in range(24)]}, seed=1,
              learnable=True)
    write_own_data(root / 'own', train=4, val=2)  # a data folder of one's own (nets new, check-data)
    (root / 'photos').mkdir()
    for i in range(16):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (200, 300, 3), dtype=np.uint8)).save(
            root / 'photos' / f'p{i}.jpg')
    with tarfile.open(root / 'nyud.tar', 'w') as tar:
        for i in range(3000):
            info = tarfile.TarInfo(f'nyud/segmentation/img_{i}.mat')
            info.size = 1000
            tar.addfile(info, io.BytesIO(bytes(1000)))
    template = root / 'template' / 'voc-fcn8s'
    write_model(template, stride=8, classes=CLASSES, val_size=1)
    shutil.copy(os.path.join(REPO, 'voc-fcn8s', 'solve.py'), template / 'solve.py')
    net = caffe.Net(str(template / 'deploy.prototxt'), caffe.TEST)
    net.save(str(root / 'w.caffemodel'))
    net.params['score_fr'][0].data[0, 0] = np.nan
    net.save(str(root / 'nan.caffemodel'))
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(
        root / 'photo.jpg')
    n = caffe.NetSpec()
    n.data = caffe.layers.Input(shape=dict(dim=[1, 2, 3, 3]))
    n.fc6 = caffe.layers.InnerProduct(n.data, num_output=4)
    (root / 'classifier.prototxt').write_text(str(n.to_proto()))
    f = caffe.NetSpec()
    f.data = caffe.layers.Input(shape=dict(dim=[1, 2, 3, 3]))
    f.fc6 = caffe.layers.Convolution(f.data, num_output=4, kernel_size=3)
    (root / 'fcn.prototxt').write_text(str(f.to_proto()))
    classifier = caffe.Net(str(root / 'classifier.prototxt'), caffe.TEST)
    classifier.save(str(root / 'classifier.caffemodel'))
    classifier.params['fc6'][0].data[0, 0] = np.inf
    classifier.save(str(root / 'classifier-nan.caffemodel'))
    (root / 'evil').mkdir()
    (root / 'evil' / f'{EVIL}.py').write_text(
        f'open({str(root / "EVIL_IMPORTED")!r}, "w").close()\n'
        'import caffe\n\nclass Evil(caffe.Layer):\n    pass\n')
    return root


class Case:
    """One case's own files: a copy of the model folder beside the data
    (<case>/voc-fcn8s, <case>/data -> the world's), where outputs go, and a
    victim file a planted link points at."""

    def __init__(self, world, name):
        self.world = world
        self.root = world / name
        self.root.mkdir()
        (self.root / 'data').symlink_to(world / 'data')
        self.model = self.root / 'voc-fcn8s'
        shutil.copytree(world / 'template' / 'voc-fcn8s', self.model)
        self.weights = world / 'w.caffemodel'
        self.out = self.root / 'out'
        self.victim = self.root / 'victim.txt'
        self.victim.write_text('precious\n')
        self.surgery = dict(weights=world / 'classifier.caffemodel',
                            classifier=world / 'classifier.prototxt', fcn=world / 'fcn.prototxt')

    def file(self, ext):
        """The file output of the command, in the case folder."""
        return self.root / f'result.{ext}'

    def inputs(self):
        """{path: bytes} of every file the commands read (model folder
        without snapshot/, weights, photo, the surgery pair, the data)."""
        out = {}
        for folder in (self.model, self.world / 'data', self.world / 'own'):
            for dirpath, dirs, names in os.walk(folder):
                dirs[:] = [d for d in dirs if d != locations.SNAPSHOT_DIR]
                for name in names:
                    out[os.path.join(dirpath, name)] = open(os.path.join(dirpath, name), 'rb').read()
        for path in [self.weights, self.world / 'nan.caffemodel', self.world / 'photo.jpg',
                     self.victim, *self.surgery.values()]:
            out[str(path)] = open(path, 'rb').read()
        return out

    def unchanged(self, before):
        """Whether every input of `before` (inputs()) is as it was."""
        after = self.inputs()
        return [p for p in before if before[p] != after.get(p)] == []

    def hidden(self):
        """Temporary files (hidden, or .part) left under the case folder."""
        return [os.path.join(d, n) for d, dirs, names in os.walk(self.root)
                for n in names + dirs if n.startswith('.') or n.endswith('.part')]


# ---------------------------------------------------------------- the commands

def infer_argv(c, json=None, out=None, weights=None):
    return ['infer.py', c.world / 'photo.jpg', '--model', c.model, '--weights', weights or c.weights,
            '--out', out or c.out, '--json', json or c.file('json')]


def score_argv(c, json=None, out=None, weights=None):
    return ['score.py', '--model', c.model, '--weights', weights or c.weights, '--split', 'val',
            '--save-dir', out or c.out, '--json', json or c.file('json')]


def export_argv(c, out=None, weights=None):
    return ['export.py', '--model', c.model, '--weights', weights or c.weights,
            '--out', out or c.file('onnx')]


def surgery_argv(c, out=None, weights=None, classifier=None):
    return ['surgery.py', 'convert', '--net', 'vgg16', '--weights', weights or c.surgery['weights'],
            '--classifier-proto', classifier or c.surgery['classifier'],
            '--fcn-proto', c.surgery['fcn'], '--out', out or c.file('caffemodel'), '--force']


def solve_argv(c, *extra):
    return [c.model / 'solve.py', '--cpu', '--max-iter', 2, '--test-interval', 1, *extra]


def fetch_argv(c, file=None, dest=None):
    return ['-m', 'fetch', 'weights', 'voc-fcn8s', '--dest', dest or c.root,
            '--file', file or c.weights, '--quiet']


def nets_argv(c, model=None):
    return ['-m', 'nets', model or c.model]


def new_argv(c, folder=None, *extra):
    return ['-m', 'nets', 'new', folder or c.root / 'my-fcn32s', '--data', c.world / 'own',
            '--classes', ','.join(OWN_CLASSES), '--trunk-width', 1 / 32, '--max-iter', 4, *extra]


def check_data_argv(c, data=None):
    return ['-m', 'nets', 'check-data', data or c.world / 'own', '--classes', ','.join(OWN_CLASSES)]


def benchmark_argv(c, json=None, model=None):
    return [os.path.join('tools', 'benchmark.py'), '--models', model or c.model, '--sizes', 37,
            '--train-sizes', '--iters', 1, '--no-stock', '--no-onnx', '--json', json or c.file('json')]


# command: (its prog in messages, argv of a good run)
COMMANDS = {
    'infer.py': ('infer.py', infer_argv),
    'score.py': ('score.py', score_argv),
    'export.py': ('export.py', export_argv),
    'surgery.py': ('surgery.py convert', surgery_argv),
    'solve.py': ('solve.py', solve_argv),
    'python -m fetch': ('fetch', fetch_argv),
    'python -m nets': ('python -m nets', nets_argv),
    'python -m nets new': ('python -m nets new', new_argv),
    'python -m nets check-data': ('python -m nets check-data', check_data_argv),
    'tools/benchmark.py': ('benchmark.py', benchmark_argv),
}


def run(c, argv, timeout=240):
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(
        [str(c.world / 'evil'), os.environ.get('PYTHONPATH', '')])}
    return subprocess.run([sys.executable, *map(str, argv)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)


# ---------------------------------------------------------------- the kinds

def edit(path, old, new, count=1):
    text = path.read_text()
    assert old in text, (old, path)
    path.write_text(text.replace(old, new, count))
    return path


def typo(path):
    """A misspelt field in a hand-edited prototxt: (the path, its line)."""
    text = path.read_text()
    line = next(i for i, l in enumerate(text.splitlines(), 1) if 'num_output:' in l)
    edit(path, 'num_output:', 'num_ouput:')
    return [f'{path}:{line}:', 'num_ouput']


def net_py_name_error(c):
    edit(c.model / 'net.py', 'model = ', 'undefined_name_in_net_py\nmodel = ')
    line = next(i for i, l in enumerate((c.model / 'net.py').read_text().splitlines(), 1)
                if l == 'undefined_name_in_net_py')
    return [f'{c.model / "net.py"}:{line}', 'NameError']


def foreign_module(path, bottom):
    with open(path, 'a') as f:
        f.write(EVIL_LAYER % (bottom, EVIL))
    return [str(path), f'"{EVIL}"', f'--allow-module {EVIL}']


def plant_link(path, c):
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    path.symlink_to(c.victim)
    return path


def missing(c, name):
    return c.root / 'missing' / name


# Each case: (kind, command) -> function(case) -> (argv, culprits), or
# None where the command reads or writes no such thing (said in NOT_APPLICABLE).
CASES = {
    # ---- an output that is an input
    ('output onto input', 'infer.py'): lambda c: (infer_argv(c, json=c.weights),
                                                  ['--json would overwrite the weights', c.weights]),
    ('output onto input', 'score.py'): lambda c: (
        score_argv(c, json=c.root / 'report.json') + ['--report', c.root],
        ['--json and --report', 'report.json', 'would both be']),
    ('output onto input', 'export.py'): lambda c: (export_argv(c, out=c.model / 'deploy.prototxt'),
                                                   ['would overwrite the deploy net', 'deploy.prototxt']),
    ('output onto input', 'surgery.py'): lambda c: (surgery_argv(c, out=c.surgery['weights']),
                                                    ['would overwrite the weights']),
    ('output onto input', 'solve.py'): lambda c: (
        solve_argv(c) if edit(c.model / 'solver.prototxt', 'snapshot_prefix: "snapshot/train"',
                              f'snapshot_prefix: "{c.root / "shared" / "train"}"') else None,
        ['snapshot_prefix', 'outside the model folder']),
    ('output onto input', 'python -m fetch'): lambda c: (
        fetch_argv(c, file=shutil.copy(c.weights, c.model / 'fcn8s-heavy-pascal.caffemodel')),
        ['voc-fcn8s: the weights', 'would overwrite --file']),
    ('output onto input', 'python -m nets'): lambda c: (
        nets_argv(c) if os.remove(c.model / 'deploy.prototxt') is None and
        os.link(c.model / 'net.py', c.model / 'deploy.prototxt') is None else None,
        ['deploy.prototxt would overwrite', 'net.py']),
    ('output onto input', 'python -m nets new'): lambda c: (new_argv(c, c.model),
                                                            [c.model, 'already holds a model']),
    ('output onto input', 'python -m nets check-data'): None,
    ('output onto input', 'tools/benchmark.py'): lambda c: (benchmark_argv(c, json=c.model / 'net.py'),
                                                            ['--json would overwrite', 'net.py']),
    # ---- an output folder that does not exist: made, or refused in one line
    ('output folder missing', 'infer.py'): lambda c: (infer_argv(c, out=missing(c, 'a')), None),
    ('output folder missing', 'score.py'): lambda c: (score_argv(c, json=missing(c, 'a.json')),
                                                      ['--json', 'missing', 'no folder']),
    ('output folder missing', 'export.py'): lambda c: (export_argv(c, out=missing(c, 'a.onnx')),
                                                       ['--out', 'missing', 'no folder']),
    ('output folder missing', 'surgery.py'): lambda c: (surgery_argv(c, out=missing(c, 'a.caffemodel')), None),
    ('output folder missing', 'solve.py'): lambda c: (solve_argv(c), None),  # snapshot/ is made
    ('output folder missing', 'python -m fetch'): lambda c: (
        ['-m', 'fetch', 'classes', '--dest', missing(c, 'data')], None),
    ('output folder missing', 'python -m nets'): lambda c: (nets_argv(c, model=missing(c, 'model')),
                                                            ['missing/model', 'no net.py']),
    ('output folder missing', 'python -m nets new'): lambda c: (new_argv(c, missing(c, 'my-fcn32s')), None),
    ('output folder missing', 'python -m nets check-data'): None,
    ('output folder missing', 'tools/benchmark.py'): lambda c: (benchmark_argv(c, json=missing(c, 'a.json')),
                                                                ['--json', 'no folder']),
    # ---- a symbolic link planted where an output goes
    ('symlink at an output', 'infer.py'): lambda c: (infer_argv(c, json=plant_link(c.file('json'), c)),
                                                     ['--json', 'result.json', 'symbolic link']),
    ('symlink at an output', 'score.py'): lambda c: (score_argv(c, json=plant_link(c.file('json'), c)),
                                                     ['--json', 'result.json', 'symbolic link']),
    ('symlink at an output', 'export.py'): lambda c: (export_argv(c, out=plant_link(c.file('onnx'), c)),
                                                      ['--out', 'result.onnx', 'symbolic link']),
    ('symlink at an output', 'surgery.py'): lambda c: (surgery_argv(c, out=plant_link(c.file('caffemodel'), c)),
                                                       ['--out', 'result.caffemodel', 'symbolic link']),
    ('symlink at an output', 'solve.py'): lambda c: (
        solve_argv(c) if plant_link(c.model / 'snapshot' / 'solve.lock', c) else None,
        ['solve.lock', 'symbolic link']),
    ('symlink at an output', 'python -m fetch'): lambda c: (
        fetch_argv(c) if plant_link(c.model / 'fcn8s-heavy-pascal.caffemodel', c) else None,
        ['fcn8s-heavy-pascal.caffemodel', 'symbolic link']),
    ('symlink at an output', 'python -m nets'): lambda c: (
        nets_argv(c) if plant_link(c.model / 'deploy.prototxt', c) else None,
        ['deploy.prototxt', 'symbolic link']),
    ('symlink at an output', 'python -m nets new'): lambda c: (
        new_argv(c) if plant_link(c.root / 'my-fcn32s' / 'train.prototxt', c) else None,
        ['train.prototxt', 'symbolic link']),
    ('symlink at an output', 'python -m nets check-data'): None,
    ('symlink at an output', 'tools/benchmark.py'): lambda c: (
        benchmark_argv(c, json=plant_link(c.file('json'), c)), ['--json', 'symbolic link']),
    # ---- a mistake in net.py
    ('net.py NameError', 'infer.py'): lambda c: (infer_argv(c), net_py_name_error(c)),
    ('net.py NameError', 'score.py'): lambda c: (score_argv(c), net_py_name_error(c)),
    ('net.py NameError', 'export.py'): lambda c: (export_argv(c), net_py_name_error(c)),
    ('net.py NameError', 'surgery.py'): None,
    ('net.py NameError', 'solve.py'): lambda c: (solve_argv(c), net_py_name_error(c)),
    ('net.py NameError', 'python -m fetch'): lambda c: (fetch_argv(c), net_py_name_error(c)),
    ('net.py NameError', 'python -m nets'): lambda c: (nets_argv(c), net_py_name_error(c)),
    ('net.py NameError', 'python -m nets new'): lambda c: (
        new_argv(c, c.root / 'my-fcn16s', '--stride', 16, '--from', c.model), net_py_name_error(c)),
    ('net.py NameError', 'python -m nets check-data'): None,
    ('net.py NameError', 'tools/benchmark.py'): lambda c: (benchmark_argv(c), net_py_name_error(c)),
    # ---- a typo in a hand-edited prototxt
    ('prototxt typo', 'infer.py'): lambda c: (infer_argv(c), typo(c.model / 'deploy.prototxt')),
    ('prototxt typo', 'score.py'): lambda c: (score_argv(c), typo(c.model / 'val.prototxt')),
    ('prototxt typo', 'export.py'): lambda c: (export_argv(c), typo(c.model / 'deploy.prototxt')),
    ('prototxt typo', 'surgery.py'): lambda c: (
        surgery_argv(c, classifier=shutil.copy(c.surgery['classifier'], c.root / 'cls.prototxt')),
        typo(c.root / 'cls.prototxt')),
    ('prototxt typo', 'solve.py'): lambda c: (solve_argv(c), typo(c.model / 'train.prototxt')),
    ('prototxt typo', 'python -m fetch'): lambda c: (fetch_argv(c), typo(c.model / 'deploy.prototxt')),
    ('prototxt typo', 'python -m nets'): None,
    ('prototxt typo', 'python -m nets new'): None,
    ('prototxt typo', 'python -m nets check-data'): None,
    ('prototxt typo', 'tools/benchmark.py'): lambda c: (benchmark_argv(c), typo(c.model / 'deploy.prototxt')),
    # ---- a Python layer of a module other than the project's
    ('foreign module', 'infer.py'): lambda c: (infer_argv(c), foreign_module(c.model / 'deploy.prototxt', 'score')),
    ('foreign module', 'score.py'): lambda c: (score_argv(c), foreign_module(c.model / 'val.prototxt', 'score')),
    ('foreign module', 'export.py'): lambda c: (export_argv(c), foreign_module(c.model / 'deploy.prototxt', 'score')),
    ('foreign module', 'surgery.py'): lambda c: (
        surgery_argv(c, classifier=shutil.copy(c.surgery['classifier'], c.root / 'cls.prototxt')),
        foreign_module(c.root / 'cls.prototxt', 'fc6')),
    ('foreign module', 'solve.py'): lambda c: (solve_argv(c), foreign_module(c.model / 'train.prototxt', 'score')),
    ('foreign module', 'python -m fetch'): lambda c: (fetch_argv(c),
                                                      foreign_module(c.model / 'deploy.prototxt', 'score')),
    ('foreign module', 'python -m nets'): None,
    ('foreign module', 'python -m nets new'): None,
    ('foreign module', 'python -m nets check-data'): None,
    ('foreign module', 'tools/benchmark.py'): lambda c: (benchmark_argv(c),
                                                         foreign_module(c.model / 'deploy.prototxt', 'score')),
    # ---- weights that hold NaN or infinity
    ('NaN weights', 'infer.py'): lambda c: (infer_argv(c, weights=c.world / 'nan.caffemodel'),
                                            ['nan.caffemodel', 'layer score_fr blob 0', 'non-finite']),
    ('NaN weights', 'score.py'): lambda c: (score_argv(c, weights=c.world / 'nan.caffemodel'),
                                            ['nan.caffemodel', 'non-finite']),
    ('NaN weights', 'export.py'): lambda c: (export_argv(c, weights=c.world / 'nan.caffemodel'),
                                             ['nan.caffemodel', 'non-finite']),
    ('NaN weights', 'surgery.py'): lambda c: (surgery_argv(c, weights=c.world / 'classifier-nan.caffemodel'),
                                              ['classifier-nan.caffemodel', 'infinity']),
    ('NaN weights', 'solve.py'): lambda c: (solve_argv(c, '--weights', c.world / 'nan.caffemodel'),
                                            ['nan.caffemodel', 'non-finite']),
    ('NaN weights', 'python -m fetch'): lambda c: (fetch_argv(c, file=c.world / 'nan.caffemodel'),
                                                   ['nan.caffemodel', 'non-finite']),
    ('NaN weights', 'python -m nets'): None,
    ('NaN weights', 'python -m nets new'): None,
    ('NaN weights', 'python -m nets check-data'): None,
    ('NaN weights', 'tools/benchmark.py'): None,
}
KINDS = sorted({kind for kind, _ in CASES})
# Why a command has no case of a kind: it reads no such input.
NOT_APPLICABLE = {
    ('net.py NameError', 'surgery.py'): 'convert reads two prototxts, no model folder',
    ('prototxt typo', 'python -m nets'): 'it writes the prototxts (a typo is regenerated away)',
    ('foreign module', 'python -m nets'): 'it writes the prototxts, runs no net',
    ('NaN weights', 'python -m nets'): 'it reads no weights',
    ('NaN weights', 'tools/benchmark.py'): 'it measures nets without weights',
    ('prototxt typo', 'python -m nets new'): 'it writes the prototxts',
    ('foreign module', 'python -m nets new'): 'it writes the prototxts, runs no net',
    ('NaN weights', 'python -m nets new'): 'it reads no weights (solve.py reads --from\'s)',
    **{(kind, 'python -m nets check-data'): 'it reads a data folder (its problems: test_own_data) '
       'and writes nothing' for kind in ('output onto input', 'output folder missing',
                                        'symlink at an output', 'net.py NameError', 'prototxt typo',
                                        'foreign module', 'NaN weights', 'full disk')},
}


def test_every_command_meets_every_kind():
    """A command added to COMMANDS must add its row of every kind (or say
    why it reads no such input)."""
    for kind in KINDS + ['full disk', 'signal']:
        for command in COMMANDS:
            if kind in ('full disk', 'signal'):
                assert command in FULL_DISK and command in SIGNAL_RUNS, command
                assert FULL_DISK[command] is not None or ('full disk', command) in NOT_APPLICABLE
                continue
            assert (kind, command) in CASES, (kind, command)
            assert CASES[kind, command] is not None or (kind, command) in NOT_APPLICABLE


def one_line(out, culprits, rc=1, context=''):
    text = out.stdout + out.stderr
    assert out.returncode == rc, (context, out.returncode, text)
    for abort in ABORTS:
        assert abort not in text, (context, text)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, (context, out.stderr)
    for culprit in culprits:
        assert str(culprit) in lines[0], (context, culprit, lines[0])
    return lines[0]


@pytest.mark.parametrize('kind, command', [k for k, v in CASES.items() if v is not None])
def test_bad_input(world, kind, command, request):
    c = Case(world, f'c-{abs(hash((kind, command))) % 10**8}')
    argv, culprits = CASES[kind, command](c)
    before = c.inputs()
    out = run(c, argv)
    prog = COMMANDS[command][0]
    context = f'{kind} x {command}'
    if culprits is None:  # a missing output folder that the command makes
        assert out.returncode == 0 and not any(a in out.stderr for a in ABORTS), (context, out.stderr)
        line = 'exit 0, the folder made'
    else:
        line = one_line(out, culprits, context=context)
        assert line.startswith(f'{prog}: error: '), (context, line)
    print(f'\nMATRIX | {kind} | {command} | {line}')  # the table, with pytest -s
    assert not (world / 'EVIL_IMPORTED').exists(), context
    assert c.unchanged(before), context
    assert c.hidden() == [], context
    assert c.victim.read_text() == 'precious\n'


# ---------------------------------------------------------------- a full disk

def fill(disk):
    """Fill `disk` to the last byte."""
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with open(disk / 'filler', 'wb') as f:
        f.write(b'\0' * free)
        with pytest.raises(OSError):
            f.write(b'\0' * 65536)
            f.flush()


def nets_on_disk(c, disk):
    shutil.copytree(c.model, disk / 'model')
    return nets_argv(c, model=disk / 'model')


# command: function(case, disk) -> argv whose outputs go to the disk
FULL_DISK = {
    'infer.py': lambda c, d: infer_argv(c, out=d / 'out', json=c.file('json')),
    'score.py': lambda c, d: score_argv(c, out=d / 'pred', json=d / 's.json'),
    'export.py': lambda c, d: export_argv(c, out=d / 'a.onnx'),
    'surgery.py': lambda c, d: surgery_argv(c, out=d / 'a.caffemodel'),
    'solve.py': lambda c, d: solve_argv(c),  # the snapshot folder is the disk
    'python -m fetch': lambda c, d: ['-m', 'fetch', 'classes', '--dest', d / 'data'],
    'python -m nets': nets_on_disk,
    'python -m nets new': lambda c, d: new_argv(c, d / 'my-fcn32s'),
    'python -m nets check-data': None,
    'tools/benchmark.py': lambda c, d: benchmark_argv(c, json=d / 'b.json'),
}


@pytest.mark.parametrize('command', [command for command, argv in FULL_DISK.items() if argv])
def test_full_disk(world, tiny_disk, command):
    c = Case(world, f'disk-{command.replace("/", "-").replace(" ", "-")}')
    if command == 'solve.py':
        (c.model / 'snapshot').symlink_to(tiny_disk)
    argv = FULL_DISK[command](c, tiny_disk)
    before = c.inputs()
    on_disk_before = {p.name: p.read_bytes() for p in tiny_disk.rglob('*') if p.is_file()}
    fill(tiny_disk)
    out = run(c, argv)
    context = f'full disk x {command}'
    line = one_line(out, [], context=context)
    assert line.startswith(f'{COMMANDS[command][0]}: error: '), (context, line)
    assert re.search(r'No space left on device|not enough free space', line), (context, line)
    print(f'\nMATRIX | full disk | {command} | {line}')
    assert c.unchanged(before), context
    left = [p for p in tiny_disk.rglob('*') if p.name.startswith('.') or p.name.endswith('.part')]
    assert left == [], (context, left)
    for name, data in on_disk_before.items():  # files there before stay whole
        assert next(tiny_disk.rglob(name)).read_bytes() == data, (context, name)


# ---------------------------------------------------------------- signals

def start(c, argv):
    env = {**os.environ, 'PYTHONUNBUFFERED': '1'}
    proc = subprocess.Popen([sys.executable, *map(str, argv)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    resume_trials.wait_until_it_handles_signals(proc)
    return proc


# command: a run of a few seconds (the good run, longer where it is short)
SIGNAL_RUNS = {
    **{command: argv for command, (_, argv) in COMMANDS.items()},
    'infer.py': lambda c: ['infer.py', c.world / 'photos', '--model', c.model, '--weights', c.weights,
                           '--out', c.out, '--json', c.file('json')],
    'score.py': lambda c: ['score.py', '--model', c.model, '--weights', c.weights, '--split', 'many',
                           '--save-dir', c.out, '--json', c.file('json')],
    'solve.py': lambda c: solve_argv(c)[:2] + ['--max-iter', 30, '--test-interval', 10],
    'python -m fetch': lambda c: ['-m', 'fetch', 'data', 'nyud', '--dest', c.root / 'fetched',
                                  '--file', c.world / 'nyud.tar', '--quiet'],
    'tools/benchmark.py': lambda c: [os.path.join('tools', 'benchmark.py'), '--models', c.model,
                                     '--sizes', 37, 64, 100, '--train-sizes', 37, '--iters', 2,
                                     '--no-stock', '--json', c.file('json')],
}
# command: the file whose appearance says the run is under way (its work
# begun), for commands whose work lasts long enough to be cut
UNDER_WAY = {
    'infer.py': lambda c: c.out / 'p0.png',
    'score.py': lambda c: c.out / 'm0.png',
    'solve.py': lambda c: c.model / 'snapshot' / 'solve.lock',
    'python -m fetch': lambda c: c.root / 'fetched' / '.nyud.unpacking',
    'tools/benchmark.py': lambda c: c.root / 'never',  # its workers write nothing: by time
    'export.py': lambda c: '.result.onnx.*',  # its temporary file, in the case folder
}
# (signal, times sent, when): 'start' a random moment of the first 1.5 s
# (loading Python, Caffe and the model); 'work' a random moment of the
# first half second once the run is under way (UNDER_WAY), or of 1.5-3 s.
TRIES = [(signal.SIGINT, 1, 'work'), (signal.SIGINT, 3, 'start'), (signal.SIGTERM, 2, 'work')]


def wait_under_way(c, command, proc, when):
    """Sleep until the random moment of `when`; returns what it waited for."""
    if when == 'start':
        delay = rng.uniform(0, 1.5)
    elif command in UNDER_WAY:
        marker = UNDER_WAY[command](c)
        there = (lambda: any(c.root.glob(marker))) if isinstance(marker, str) else marker.exists
        end = time.monotonic() + 3
        while not there() and proc.poll() is None and time.monotonic() < end:
            time.sleep(0.002)
        delay = rng.uniform(0, 0.05 if isinstance(marker, str) else 0.5)
    else:
        delay = rng.uniform(1.5, 3)
    time.sleep(delay)
    return f'{delay:.2f} s after {when}'


@pytest.mark.parametrize('signum, times, when', TRIES, ids=lambda v: getattr(v, 'name', str(v)))
@pytest.mark.parametrize('command', SIGNAL_RUNS)
def test_signals_at_random_moments(world, command, signum, times, when):
    c = Case(world, f'sig-{command.replace("/", "-").replace(" ", "-")}-{signum}-{times}')
    before = c.inputs()
    proc = start(c, SIGNAL_RUNS[command](c))
    moment = wait_under_way(c, command, proc, when)
    for _ in range(times):
        try:
            proc.send_signal(signum)
        except ProcessLookupError:
            break
        time.sleep(rng.uniform(0, 0.1))
    out, err = proc.communicate(timeout=240)
    context = f'seed {SEED}: {command}, {signal.Signals(signum).name} x{times} {moment}'
    assert 'Traceback' not in err and 'Check failed' not in err, (context, err)
    if proc.returncode != 0:
        assert proc.returncode == 128 + signum, (context, proc.returncode, err)
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1, (context, err)
        assert lines[0].startswith(f'{COMMANDS[command][0]}: interrupted ({signal.Signals(signum).name})'), \
            (context, lines[0])
    print(f'\nMATRIX | signal {signal.Signals(signum).name} x{times} | {command} | '
          f'{lines[0] if proc.returncode else "finished first (exit 0)"}')
    assert c.unchanged(before), context
    assert c.hidden() == [], (context, c.hidden())


# ---------------------------------------------------------------- trusted only once checked

# (engine, its options) of the engines that run the export; OpenVINO at f32,
# whose labels are Caffe's
EXPORTED_ENGINES = {'onnx': [], 'openvino': ['--precision', 'f32']}


@pytest.mark.parametrize('engine', EXPORTED_ENGINES)
def test_an_onnx_cache_from_other_weights_is_made_again(world, engine):
    """A file under the cache's name recording other weights (or another
    deploy net, mean, format) is not used: exported again, labels as Caffe's."""
    import hashlib
    import json

    import onnx_engine
    c = Case(world, f'onnx-cache-{engine}')
    weights = shutil.copy(c.weights, c.root / 'a.caffemodel')
    other = c.root / 'b.caffemodel'
    net = caffe.Net(str(c.model / 'deploy.prototxt'), caffe.TEST, weights=str(weights))
    net.params['score_fr'][1].data[...] = np.arange(len(CLASSES)) * 100.0  # another class wins
    net.save(str(other))
    digest = hashlib.sha256(open(weights, 'rb').read()).hexdigest()
    cache = onnx_engine.cache_path(str(weights), digest)
    onnx_engine.export(str(c.model / 'deploy.prototxt'), str(other), cache,
                       onnx_engine.model_metadata(str(c.model)))  # planted: the other weights'
    labels = {}
    for run_engine, options in (('caffe', []), (engine, EXPORTED_ENGINES[engine])):
        out = run(c, infer_argv(c, out=c.root / run_engine, json=c.root / f'{run_engine}.json',
                                weights=weights) + ['--engine', run_engine] + options)
        assert out.returncode == 0, out.stderr
        labels[run_engine] = np.asarray(Image.open(c.root / run_engine / 'photo.png'))
    np.testing.assert_array_equal(labels[engine], labels['caffe'])
    assert onnx_engine.read_export(cache)['caffemodel_sha256'] == digest
    assert json.loads(onnx_engine.read_export(cache)['classes'])['score'] == list(CLASSES)


@pytest.mark.parametrize('command', ['infer.py', 'score.py'])
def test_a_damaged_or_linked_export_weights_file_with_openvino(world, command):
    """The export's weights file (.onnx.data) with a byte changed: the cache
    is not used but made again (the labels Caffe's); a link planted there:
    one line naming it, its target untouched."""
    import hashlib

    import onnx_engine
    c = Case(world, f'ov-data-{command}')
    weights = shutil.copy(c.weights, c.root / 'a.caffemodel')
    argv = {'infer.py': infer_argv, 'score.py': score_argv}[command]
    first = run(c, argv(c, weights=weights) + ['--engine', 'openvino', '--precision', 'f32'])
    assert first.returncode == 0, first.stderr
    cache = onnx_engine.cache_path(str(weights), hashlib.sha256(open(weights, 'rb').read()).hexdigest())
    data = onnx_engine.data_path(cache)
    with open(data, 'r+b') as f:
        f.seek(os.path.getsize(data) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(onnx_engine.ExportError):
        onnx_engine.read_export(cache)
    again = run(c, argv(c, weights=weights, out=c.root / 'again', json=c.root / 'again.json')
                + ['--engine', 'openvino', '--precision', 'f32'])
    assert again.returncode == 0, again.stderr
    onnx_engine.read_export(cache)  # made again, whole
    if command == 'infer.py':
        np.testing.assert_array_equal(np.asarray(Image.open(c.root / 'again' / 'photo.png')),
                                      np.asarray(Image.open(c.out / 'photo.png')))
    assert 'engine openvino (f32, cpu)' in again.stdout
    os.remove(data)
    os.symlink(c.victim, data)
    before = c.inputs()
    out = run(c, argv(c, weights=weights, out=c.root / 'third', json=c.root / 'third.json')
              + ['--engine', 'openvino'])
    line = one_line(out, [data], context=f'linked .onnx.data x {command}')
    assert line.startswith(f'{command}: error: ') and 'symbolic link' in line
    assert c.unchanged(before) and c.victim.read_text() == 'precious\n'


@pytest.mark.parametrize('command', ['infer.py', 'export.py'])
def test_advice_fits_the_command(world, command):
    """latest.json naming a deleted caffemodel: infer.py and export.py
    (which have no --resume) advise --weights."""
    import json
    c = Case(world, f'advice-{command}')
    snapshot = c.model / 'snapshot'
    snapshot.mkdir()
    entry = dict(iteration=4, solverstate='train_iter_4.solverstate', caffemodel='train_iter_4.caffemodel',
                 solverstate_bytes=1, caffemodel_bytes=1, solverstate_sha256='0', caffemodel_sha256='0')
    (snapshot / 'latest.json').write_text(json.dumps(entry))
    argv = COMMANDS[command][1](c)
    argv = argv[:argv.index('--weights')] + argv[argv.index('--weights') + 2:]
    line = one_line(run(c, argv), [snapshot / 'train_iter_4', 'is missing', '--weights'])
    assert '--resume' not in line


def test_export_out_naming_a_folder_that_does_not_exist(world):
    c = Case(world, 'export-folder')
    one_line(run(c, export_argv(c, out=str(c.root / 'exports') + '/')),
             ['export.py: error: --out', 'exports/', 'names a folder'])
    assert not (c.root / 'exports').exists() and c.hidden() == []


def test_fetch_names_the_archive_and_member_of_a_file_and_folder_of_one_name(world):
    import io
    import tarfile
    c = Case(world, 'fetch-archive')
    archive = c.root / 'nyud.tar'
    with tarfile.open(archive, 'w') as tar:
        for name in ('nyud/segmentation/a', 'nyud/segmentation/a/b.mat'):
            info = tarfile.TarInfo(name)
            info.size = 3
            tar.addfile(info, io.BytesIO(b'abc'))
    out = run(c, ['-m', 'fetch', 'data', 'nyud', '--dest', c.root / 'nyud-data', '--file', archive,
                  '--quiet'])
    line = one_line(out, ['fetch: error: ', archive, 'nyud/segmentation/a', 'both a file and a folder'])
    assert '.unpacking' not in line and c.hidden() == []


@pytest.mark.parametrize('name', ['latest.json', 'log.jsonl', 'curves.png'])
def test_solve_follows_no_link_at_its_files(world, name):
    """Besides its lock (the matrix's row), training's own files: a link
    planted at one is refused before any work, its target untouched."""
    c = Case(world, f'solve-link-{name}')
    link = plant_link(c.model / 'snapshot' / name, c)
    one_line(run(c, solve_argv(c)), ['solve.py: error: ', link, 'symbolic link'])
    assert c.victim.read_text() == 'precious\n' and os.path.islink(link)


# ---------------------------------------------------------------- on a Ray cluster (--ray local)
# infer.py and score.py spread over a local Ray cluster stand on the same
# floor: the guard refuses a bad output before any work (no cluster
# started), and a signal ends the whole cluster's work in one line, leaving
# no process, no temporary file and no Ray session folder behind.

@pytest.mark.parametrize('kind, command', [(kind, command) for kind in ('output onto input',
                                                                         'symlink at an output')
                                           for command in ('infer.py', 'score.py')])
def test_the_guard_holds_with_ray(world, kind, command):
    c = Case(world, f'ray-{kind.replace(" ", "-")}-{command}')
    argv, culprits = CASES[kind, command](c)
    before = c.inputs()
    line = one_line(run(c, [*argv, '--ray', 'local']), culprits, context=f'{kind} x {command} --ray')
    assert line.startswith(f'{command}: error: '), line
    assert c.unchanged(before) and c.hidden() == [] and c.victim.read_text() == 'precious\n'


@pytest.mark.parametrize('command, signum, times, when', [
    ('infer.py', signal.SIGTERM, 2, 'work'), ('score.py', signal.SIGINT, 1, 'work'),
    ('infer.py', signal.SIGTERM, 1, 'start')],
    ids=['infer.py-SIGTERMx2-work', 'score.py-SIGINT-work', 'infer.py-SIGTERM-start'])
def test_a_signal_stops_a_ray_run_in_one_line(world, command, signum, times, when):
    """'work': once the workers write; 'start': a random moment of the
    first 4 s (the net loading, Ray starting its processes, the workers
    loading theirs)."""
    c = Case(world, f'ray-sig-{command}-{when}')
    before = c.inputs()
    sessions = set(os.listdir(tempfile.gettempdir()))
    proc = start(c, [*SIGNAL_RUNS[command](c), '--ray', 'local'])
    if when == 'start':
        end = time.monotonic() + rng.uniform(0, 4)
        started = set()
        while time.monotonic() < end:  # the cluster's processes as they come
            started |= set(descendants(proc.pid))
            time.sleep(0.02)
    else:
        end = time.monotonic() + 120
        while not any(c.out.glob('*.png')) and proc.poll() is None and time.monotonic() < end:
            time.sleep(0.01)  # the workers' first outputs: the cluster's work under way
        started = set(descendants(proc.pid))
    for _ in range(times):
        proc.send_signal(signum)
        time.sleep(0.05)
    out, err = proc.communicate(timeout=120)
    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum, (f'seed {SEED}', proc.returncode, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f'{command}: interrupted ({name})'), (SEED, err)
    if when == 'work':
        assert ' of ' in lines[0] and 'no partial file' in lines[0], lines[0]
        assert len(started) >= 3, started  # gcs, raylet, workers
    deadline = time.monotonic() + 10
    while [p for p in started if os.path.exists(f'/proc/{p}')] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [p for p in started if os.path.exists(f'/proc/{p}')] == []
    assert [n for n in set(os.listdir(tempfile.gettempdir())) - sessions if n.startswith('fcn-ray-')] == []
    assert c.unchanged(before) and c.hidden() == [], c.hidden()
    assert not os.path.exists(c.file('json')), f'seed {SEED}'  # an interrupted run writes no --json
