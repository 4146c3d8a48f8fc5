"""The bad-input matrix: every bad input a user can give score.py, infer.py,
training and the fetch command ends in a one-line error naming the culprit
(file, layer, value, expected count), with no Python traceback and no Caffe
abort, and writes or loses nothing.

One tiny 5-class model folder per stride (helpers.write_model) beside
VOC-layout data, in the repository layout (tmp/<model>/, tmp/data/voc),
with weights saved from their deploy nets, serves the whole module.
"""
import gzip
import io
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile

import numpy as np
import pytest
import scipy.io

import caffe
from caffe.proto import caffe_pb2

from common import caffe_setup, weightfiles
from common import datasets
import layers
from common import locations
import nets
import training
from helpers import save_palette_png, write_model, write_voc
from fetch.splits import read_ids

REPO = locations.REPO_DIR
CLASSES = datasets.VOC_CLASSES[:5]
ABORTS = ('Traceback', 'Check failed', '*** ')


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope='module')
def repo(tmp_path_factory):
    """{name: path}: model folders fcn8, fcn32 (5 classes) and fcn8-21 (21,
    VOC's own: no class count in its param_str), their weights, VOC data
    with bad-label splits and a BOM split, and a text file."""
    root = tmp_path_factory.mktemp('repo')
    voc = root / 'data' / 'voc'
    write_voc(str(voc), {'train': ['train_0000'], 'val': ['val_0000', 'val_0001']}, learnable=True)
    splits = voc / 'ImageSets' / 'Segmentation'
    # Examples whose label holds 7 (a VOC class, but not one of the 5-class
    # nets') and 21 (no VOC class).
    for value in (7, 21):
        shutil.copy(voc / 'JPEGImages' / 'val_0000.jpg', voc / 'JPEGImages' / f'bad_{value:04d}.jpg')
        label = np.zeros(layers.load_image(str(voc / 'JPEGImages' / 'val_0000.jpg')).shape[:2], np.uint8)
        label[3, 4] = value
        save_palette_png(voc / 'SegmentationClass' / f'bad_{value:04d}.png', label)
        (splits / f'bad{value}.txt').write_text(f'bad_{value:04d}\n')
    # A split as Windows editors save it: BOM, CRLF, blank lines.
    (splits / 'bom.txt').write_bytes('\ufeffval_0000\r\n\r\nval_0001\r\n'.encode('utf-8'))

    paths = {'root': root, 'voc': voc}
    for name, stride, classes in (('fcn8', 8, CLASSES), ('fcn32', 32, CLASSES),
                                  ('fcn8-21', 8, datasets.VOC_CLASSES)):
        folder = write_model(root / name, stride=stride, classes=classes)
        weights = root / 'weights' / f'{name}.caffemodel'
        weights.parent.mkdir(exist_ok=True)
        caffe.Net(os.path.join(folder, 'deploy.prototxt'), caffe.TEST).save(str(weights))
        paths[name], paths[name + '.caffemodel'] = folder, str(weights)
    text = root / 'weights' / 'notes.txt'
    text.write_text('not weights\n')
    # Photos whose outputs would share a name: x_overlay.png is both.
    (root / 'clash').mkdir()
    for name in ('x.jpg', 'x_overlay.jpg'):
        shutil.copy(voc / 'JPEGImages' / 'val_0000.jpg', root / 'clash' / name)
    paths['text'] = str(text)
    # Weights no net can give right answers with: a NaN in one blob (as a
    # diverged run saves), and finite values so large the scores overflow.
    net = caffe.Net(os.path.join(paths['fcn8'], 'deploy.prototxt'), caffe.TEST,
                    weights=paths['fcn8.caffemodel'])
    net.params['score_fr'][0].data[1, 2] = np.nan
    paths['nan.caffemodel'] = str(root / 'weights' / 'nan.caffemodel')
    net.save(paths['nan.caffemodel'])
    net.params['score_fr'][0].data[...] = 1e38
    net.params['fc7'][0].data[...] = 1e30
    paths['huge.caffemodel'] = str(root / 'weights' / 'huge.caffemodel')
    net.save(paths['huge.caffemodel'])
    return paths


def run(*argv, cwd=REPO, capfd=None):
    """Run a command of the repository (python score.py ..., python -m fetch
    ..., python <model>/solve.py ...) in a subprocess, or, given `capfd`, its
    main() in this process (faster; an uncaught exception or a Caffe abort
    fails the test all the same): a CompletedProcess either way."""
    argv = [str(a) for a in argv]
    if capfd is None:
        return subprocess.run([sys.executable, *argv], cwd=cwd, capture_output=True, text=True,
                              timeout=120)
    import fetch.__main__
    import infer
    import score
    if argv[:2] == ['-m', 'fetch']:
        main, args = fetch.__main__.main, argv[2:]
    elif argv[0] in ('score.py', 'infer.py'):
        main, args = {'score.py': score.main, 'infer.py': infer.main}[argv[0]], argv[1:]
    else:  # a model folder's solve.py
        folder = os.path.dirname(os.path.join(cwd, argv[0]))
        main, args = (lambda a: training.main(folder, a)), argv[1:]
    capfd.readouterr()
    with locations.working_dir(cwd):
        try:
            rc = main(args) or 0
        except SystemExit as e:  # sys.exit('message') prints it and exits 1
            if isinstance(e.code, str):
                print(e.code, file=sys.stderr)
            rc = 1 if isinstance(e.code, str) else e.code or 0
    out = capfd.readouterr()
    return subprocess.CompletedProcess(argv, rc, out.out, out.err)


def assert_one_line_error(out, *culprits, rc=1):
    """Exit status `rc`, no traceback or Caffe abort, and stderr one line
    naming every culprit. Returns that line."""
    text = out.stdout + out.stderr
    assert out.returncode == rc, text
    for abort in ABORTS:
        assert abort not in text, text
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    for culprit in culprits:
        assert str(culprit) in lines[0], (culprit, lines[0])
    return lines[0]


def tree(folder):
    """{relative path: bytes} of every file under `folder` (what a case must not change)."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, 'rb') as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


# ---------------------------------------------------------------- score.py, infer.py

def score_argv(repo, model='fcn8', weights='fcn8.caffemodel', *extra):
    return ['score.py', '--model', repo[model], '--weights',
            repo.get(weights, weights), '--split', 'val', *extra]


SCORE_CASES = {
    # case: (argv from the fixture, culprits in the message)
    'weights are a text file': (
        lambda r: score_argv(r, 'fcn8', 'text'),
        lambda r: [r['text'], 'not a caffemodel']),
    'weights are missing': (
        lambda r: score_argv(r, 'fcn8', str(r['root'] / 'nowhere.caffemodel')),
        lambda r: ['weights not found', 'nowhere.caffemodel']),
    'FCN-32s weights for an FCN-8s net': (
        lambda r: score_argv(r, 'fcn8', 'fcn32.caffemodel'),
        lambda r: [r['fcn32.caffemodel'], 'no weights for the learned layers',
                   'score_pool4', 'score_pool3', 'upscore2', 'upscore_pool4', 'upscore8']),
    '21-class weights for a 5-class net': (
        lambda r: score_argv(r, 'fcn8', 'fcn8-21.caffemodel'),
        lambda r: [r['fcn8-21.caffemodel'], 'layer score_fr blob 0 has shape (21,',
                   'needs (5,']),
    'label value 7 in a 5-class set': (
        lambda r: score_argv(r)[:-1] + ['bad7'],
        lambda r: [r['voc'] / 'SegmentationClass' / 'bad_0007.png', 'label values 7',
                   "the net's 5 classes"]),
    'label value 21 in VOC, its 21 classes the dataset\'s': (
        lambda r: score_argv(r, 'fcn8-21', 'fcn8-21.caffemodel')[:-1] + ['bad21'],
        lambda r: [r['voc'] / 'SegmentationClass' / 'bad_0021.png', 'label values 21',
                   "the net's 21 classes"]),
    '--save-dir is an existing file': (
        lambda r: score_argv(r, 'fcn8', 'fcn8.caffemodel', '--save-dir', r['text']),
        lambda r: ['--save-dir', r['text'], 'a file, not a folder']),
    '--json in a missing folder': (
        lambda r: score_argv(r, 'fcn8', 'fcn8.caffemodel', '--json',
                             r['root'] / 'missing' / 'out.json'),
        lambda r: ['--json', r['root'] / 'missing', 'no folder']),
    'weights holding a NaN': (
        lambda r: score_argv(r, 'fcn8', 'nan.caffemodel'),
        lambda r: [r['nan.caffemodel'], 'layer score_fr blob 0', 'non-finite', 'NaN']),
    'weights whose scores overflow': (
        lambda r: score_argv(r, 'fcn8', 'huge.caffemodel'),
        lambda r: ['the loss (loss) is nan at image val_0000', r['huge.caffemodel'], 'no metrics']),
    '--save-dir onto the ground truth': (
        lambda r: score_argv(r, 'fcn8', 'fcn8.caffemodel', '--save-dir',
                             r['voc'] / 'SegmentationClass'),
        lambda r: ['the prediction of val_0000 would overwrite the label file',
                   r['voc'] / 'SegmentationClass' / 'val_0000.png']),
    '--json onto the split file': (
        lambda r: score_argv(r, 'fcn8', 'fcn8.caffemodel', '--json',
                             r['voc'] / 'ImageSets' / 'Segmentation' / 'val.txt'),
        lambda r: ['--json would overwrite', r['voc'] / 'ImageSets' / 'Segmentation' / 'val.txt']),
    '--json onto the weights': (
        lambda r: score_argv(r, 'fcn8', 'fcn8.caffemodel', '--json', r['fcn8.caffemodel']),
        lambda r: ['--json would overwrite the weights', r['fcn8.caffemodel']]),
}


# Rows run as real subprocesses (the others call main() in this process).
SUBPROCESS = {'FCN-32s weights for an FCN-8s net', 'truncated .tar.gz downloaded',
              '--weights a text file'}


def test_score_reads_a_bom_crlf_split_with_paths_from_the_current_directory(repo, tmp_path):
    """Relative --weights and --json are the user's, not the model folder's."""
    shutil.copy(repo['fcn8.caffemodel'], tmp_path / 'w.caffemodel')
    out = run(os.path.join(REPO, 'score.py'), '--model', repo['fcn8'], '--weights', 'w.caffemodel',
              '--split', 'bom', '--json', 'out.json', cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert 'on bom (2 images)' in out.stdout
    assert (tmp_path / 'out.json').is_file()
    assert not any(a in out.stdout + out.stderr for a in ABORTS)


def infer_argv(repo, weights, *extra, image=None):
    image = image or repo['voc'] / 'JPEGImages' / 'val_0000.jpg'
    return ['infer.py', image, '--model', repo['fcn8'], '--weights', repo[weights], *extra]


INFER_CASES = {
    'weights are a text file': (lambda r: infer_argv(r, 'text'),
                                lambda r: [r['text'], 'not a caffemodel']),
    'FCN-32s weights for an FCN-8s net': (
        lambda r: infer_argv(r, 'fcn32.caffemodel'),
        lambda r: [r['fcn32.caffemodel'], 'score_pool4', 'upscore8']),
    '--out is an existing file': (
        lambda r: infer_argv(r, 'fcn8.caffemodel', '--out', r['text']),
        lambda r: ['--out', r['text'], 'a file, not a folder']),
    'image is missing': (
        lambda r: infer_argv(r, 'fcn8.caffemodel', '--out', r['root'] / 'infer-out',
                             image=r['root'] / 'none.jpg'),
        lambda r: ['image not found', 'none.jpg']),
    'weights holding a NaN': (
        lambda r: infer_argv(r, 'nan.caffemodel', '--out', r['root'] / 'infer-out'),
        lambda r: [r['nan.caffemodel'], 'layer score_fr blob 0', 'NaN']),
    'weights whose scores overflow': (
        lambda r: infer_argv(r, 'huge.caffemodel', '--out', r['root'] / 'infer-out'),
        lambda r: ['val_0000.jpg', "the net's scores are not finite"]),
    '--out is the folder of PNG photos': (
        lambda r: infer_argv(r, 'fcn8.caffemodel', '--out', r['voc'] / 'SegmentationClass',
                             image=r['voc'] / 'SegmentationClass'),
        lambda r: ['the label PNG of', 'would overwrite the input photo',
                   r['voc'] / 'SegmentationClass' / sorted(os.listdir(r['voc'] / 'SegmentationClass'))[0],
                   'choose another --out']),
    "one photo's label PNG is another's overlay": (
        lambda r: infer_argv(r, 'fcn8.caffemodel', '--out', r['root'] / 'infer-out',
                             image=r['root'] / 'clash'),
        lambda r: ['the overlay of', 'x.jpg and the label PNG of', 'x_overlay.jpg',
                   'would both be', r['root'] / 'infer-out' / 'x_overlay.png']),
    '--json onto the weights': (
        lambda r: infer_argv(r, 'fcn8.caffemodel', '--out', r['root'] / 'infer-out',
                             '--json', r['fcn8.caffemodel']),
        lambda r: ['--json would overwrite the weights', r['fcn8.caffemodel']]),
}


COMMAND_CASES = {'score.py': SCORE_CASES, 'infer.py': INFER_CASES}

CPU_ONLY = not caffe_setup.cuda_available()
OPTION_CASES = {
    # case: (argv from the fixture, culprits): argparse's one line, exit status 2
    'infer.py --gpu 0 on a CPU-only build': (
        lambda r: infer_argv(r, 'fcn8.caffemodel', '--gpu', 0),
        lambda r: ['argument --gpu', 'built for the CPU only', 'leave out --gpu']),
    'infer.py --gpu -1': (lambda r: infer_argv(r, 'fcn8.caffemodel', '--gpu=-1'),
                          lambda r: ['argument --gpu', 'must be 0 or more, got -1']),
    'infer.py --max-side -1': (lambda r: infer_argv(r, 'fcn8.caffemodel', '--max-side=-1'),
                               lambda r: ['argument --max-side', 'must be 0 or more, got -1']),
    'infer.py --memory 0': (lambda r: infer_argv(r, 'fcn8.caffemodel', '--memory', 0),
                            lambda r: ['argument --memory', 'must be more than 0, got 0']),
    'infer.py --memory nan': (lambda r: infer_argv(r, 'fcn8.caffemodel', '--memory', 'nan'),
                              lambda r: ['argument --memory', "a finite number expected, got 'nan'"]),
    'score.py --gpu 0 on a CPU-only build': (
        lambda r: score_argv(r, 'fcn8', 'fcn8.caffemodel', '--gpu', 0),
        lambda r: ['argument --gpu', 'built for the CPU only']),
    'score.py --limit 0': (lambda r: score_argv(r, 'fcn8', 'fcn8.caffemodel', '--limit', 0),
                           lambda r: ['argument --limit', 'must be 1 or more, got 0']),
    'score.py --limit 2.5': (lambda r: score_argv(r, 'fcn8', 'fcn8.caffemodel', '--limit', 2.5),
                             lambda r: ['argument --limit', "an integer expected, got '2.5'"]),
    'score.py --upper-bound 8 0': (
        lambda r: ['score.py', '--model', r['fcn8'], '--upper-bound', 8, 0],
        lambda r: ['argument --upper-bound', 'must be 1 or more, got 0']),
    'fetch --retries -1': (
        lambda r: ['-m', 'fetch', 'weights', 'vgg16', '--retries=-1'],
        lambda r: ['argument --retries', 'must be 0 or more, got -1']),
    'fetch score-all --limit 0': (
        lambda r: ['-m', 'fetch', 'score-all', '--limit', 0],
        lambda r: ['argument --limit', 'must be 1 or more, got 0']),
    'fetch score-all --gpu 0 on a CPU-only build': (
        lambda r: ['-m', 'fetch', 'score-all', '--gpu', 0],
        lambda r: ['argument --gpu', 'built for the CPU only']),
}


@pytest.mark.parametrize('case', OPTION_CASES)
def test_option_out_of_range(repo, case, capfd):
    """Refused as argparse reads it: before Caffe (which aborts on a GPU
    it lacks), before any work."""
    if 'CPU-only' in case and not CPU_ONLY:
        pytest.skip('this Caffe is built with CUDA')
    argv, culprits = OPTION_CASES[case]
    before = tree(repo['root'])
    out = run(*argv(repo), capfd=capfd)
    command = 'python -m fetch' if argv(repo)[0] == '-m' else argv(repo)[0]
    line = assert_one_line_error(out, *culprits(repo), rc=2)
    assert line.startswith(command) and ': error: argument ' in line
    assert tree(repo['root']) == before


@pytest.mark.parametrize('command, case', [(c, case) for c, cases in COMMAND_CASES.items()
                                           for case in cases])
def test_command_rejects(repo, command, case, capfd):
    argv, culprits = COMMAND_CASES[command][case]
    before = tree(repo['root'])
    out = run(*argv(repo), capfd=None if case in SUBPROCESS else capfd)
    line = assert_one_line_error(out, *culprits(repo))
    assert line.startswith(f'{command}: error: ')
    assert 'Iteration' not in out.stdout and 'images)' not in out.stdout  # stopped before the work
    assert tree(repo['root']) == before


# ---------------------------------------------------------------- weights files

WEIGHTS_FILES = {
    # case: (bytes from (fixture paths, snapshots), message)
    'empty': (lambda r, s: b'', 'not a caffemodel'),
    'text': (lambda r, s: b'not weights\n', 'not a caffemodel'),
    'truncated': (lambda r, s: open(r['fcn8.caffemodel'], 'rb').read()[:-1000], 'not a caffemodel'),
    'a solverstate': (lambda r, s: open(s['fcn8'][0], 'rb').read(),
                      'a solverstate, not a caffemodel'),
}


@pytest.mark.parametrize('case', WEIGHTS_FILES)
def test_not_a_caffemodel(repo, snapshots, tmp_path, case):
    data, message = WEIGHTS_FILES[case]
    path = tmp_path / 'w.caffemodel'
    path.write_bytes(data(repo, snapshots))
    with pytest.raises(weightfiles.CheckError) as err:
        weightfiles.check_weights(str(path), snapshots['solver'].net)
    assert str(err.value).startswith(f'{path}: {message}')


def test_v1_caffemodels_are_checked_as_caffe_reads_them(tmp_path):
    """Old caffemodels (the published VGG16) store V1 layers and 4-D legacy
    blob shapes: one that fits loads, one that does not is named."""
    n = caffe.NetSpec()
    n.data = caffe.layers.Input(shape=dict(dim=[1, 3, 2, 2]))
    n.fc8 = caffe.layers.InnerProduct(n.data, num_output=2)
    (tmp_path / 'net.prototxt').write_text(str(n.to_proto()))
    net = caffe.Net(str(tmp_path / 'net.prototxt'), caffe.TEST)

    def v1_weights(name, dims):
        net_param = caffe_pb2.NetParameter()
        layer = net_param.layers.add(name='fc8', type=caffe_pb2.V1LayerParameter.INNER_PRODUCT)
        for shape in dims:
            blob = layer.blobs.add(num=shape[0], channels=shape[1], height=shape[2], width=shape[3])
            blob.data.extend(np.arange(np.prod(shape), dtype=np.float32))
        path = tmp_path / name
        path.write_bytes(net_param.SerializeToString())
        return str(path)

    good = v1_weights('good.caffemodel', [(1, 1, 2, 12), (1, 1, 1, 2)])
    weightfiles.load_weights(net, good)
    np.testing.assert_array_equal(net.params['fc8'][0].data.ravel(), np.arange(24))
    bad = v1_weights('bad.caffemodel', [(1, 1, 3, 8), (1, 1, 1, 2)])
    with pytest.raises(weightfiles.CheckError, match=r'bad\.caffemodel: layer fc8 blob 0 has shape '
                                                r'\(1, 1, 3, 8\), layer fc8 needs \(2, 12\)'):
        weightfiles.check_weights(bad, net)


# ---------------------------------------------------------------- labels

def mat(path, key, value):
    scipy.io.savemat(str(path), {key: value})
    return str(path)


LABEL_CASES = {
    # case: (load(tmp_path) raising DataError, file name, value, class count)
    'VOC palette PNG': (lambda d: layers.load_voc_label(
        save_png(d / 'voc.png', 7), 5), 'voc.png', '7', "the net's 5 classes"),
    'SBD GTcls mat': (lambda d: layers.load_sbd_label(mat(
        d / 'sbd.mat', 'GTcls', {'Segmentation': np.array([[0, 6]], np.uint8)}), 5),
        'sbd.mat', '6', "the net's 5 classes"),
    'NYUD mat': (lambda d: layers.load_nyud_label(mat(
        d / 'nyud.mat', 'segmentation', np.array([[0, 9]], np.uint8)), 5),
        'nyud.mat', '[9]', "the net's 5 classes"),
    'SIFT Flow semantic mat': (lambda d: layers.load_siftflow_label(mat(
        d / 'sem.mat', 'S', np.array([[1, 34]], np.int16)), 'semantic', 33),
        'sem.mat', '[34]', "the net's 33 classes"),
    'SIFT Flow geometric mat': (lambda d: layers.load_siftflow_label(mat(
        d / 'geo.mat', 'S', np.array([[-1, 4]], np.int16)), 'geometric', 3),
        'geo.mat', '[4]', "the net's 3 classes"),
    'PASCAL-Context mat': (lambda d: layers.load_context_label(mat(
        d / 'context.mat', 'LabelMap', np.array([[0, 3]], np.uint16)), np.arange(4), 3),
        'context.mat', '3', "the net's 3 classes"),
    'own data (SegDataLayer) PNG': (lambda d: layers.load_label_image(
        save_png(d / 'own.png', 4), 4), 'own.png', '4', "the net's 4 classes"),
}


def save_png(path, value):
    label = np.zeros((3, 4), np.uint8)
    label[1, 2] = value
    save_palette_png(str(path), label)
    return str(path)


@pytest.mark.parametrize('case', LABEL_CASES)
def test_label_outside_the_nets_classes(tmp_path, case):
    load, name, value, count = LABEL_CASES[case]
    with pytest.raises(layers.DataError) as err:
        load(tmp_path)
    message = str(err.value)
    assert '\n' not in message
    assert name in message and f'label values {value}' in message and count in message


def test_siftflow_layer_takes_a_count_per_head(tmp_path):
    """The net's class counts reach the layer per label top; one int for two
    heads is a ParamError naming them."""
    n = caffe.NetSpec()
    n.data, n.sem, n.geo = caffe.layers.Python(
        module='layers', layer='SIFTFlowSegDataLayer', ntop=3, param_str=str(dict(
            siftflow_dir=str(tmp_path), split='test', mean=datasets.SIFTFLOW_MEAN,
            num_classes=33)))
    proto = tmp_path / 'net.prototxt'
    proto.write_text(str(n.to_proto()))
    with pytest.raises(layers.ParamError, match=r"param 'num_classes' must give a count per "
                                                r'label top \(sem, geo\), got 33'):
        caffe.Net(str(proto), caffe.TEST)


# ---------------------------------------------------------------- split files

def test_split_files_tolerate_bom_crlf_and_blank_lines(tmp_path):
    split = tmp_path / 'val.txt'
    split.write_bytes('\ufeffa_0\r\n\r\n  \r\nb_1\r\n'.encode('utf-8'))
    assert layers.read_split(str(split)) == ['a_0', 'b_1']
    assert read_ids(split) == ['a_0', 'b_1']


# ---------------------------------------------------------------- training

@pytest.fixture(scope='module')
def snapshots(repo):
    """{model: (solverstate, caffemodel)} of an iteration-0 snapshot of each
    model's solver, and the fcn8 solver itself."""
    out = {}
    for name in ('fcn8', 'fcn32', 'fcn8-21'):
        model = nets.load(repo[name])
        with locations.working_dir(repo[name]):
            solver, _ = training.make_solver(model, 5, 5)
            os.makedirs(locations.SNAPSHOT_DIR, exist_ok=True)
            solver.snapshot()
        prefix = os.path.join(repo[name], 'snapshot', 'train_iter_0')
        out[name] = (prefix + '.solverstate', prefix + '.caffemodel')
        if name == 'fcn8':
            out['solver'] = solver
    return out


def write_state(path, data):
    path.write_bytes(data)
    return str(path)


def another_learned_net(state_path, tmp_path):
    state = caffe_pb2.SolverState()
    with open(state_path, 'rb') as f:
        state.ParseFromString(f.read())
    state.learned_net = str(tmp_path / 'gone.caffemodel')
    return write_state(tmp_path / 'moved.solverstate', state.SerializeToString())


SOLVERSTATE_CASES = {
    # case: (solverstate path from (snapshots, tmp_path), culprits)
    'a caffemodel given': (lambda s, d: s['fcn8'][1], ['train_iter_0.caffemodel',
                                                        'a caffemodel (weights), not a solverstate']),
    'truncated': (lambda s, d: write_state(d / 'cut.solverstate',
                                           open(s['fcn8'][0], 'rb').read()[:-100]),
                  ['cut.solverstate', 'truncated']),
    'empty': (lambda s, d: write_state(d / 'empty.solverstate', b''),
              ['empty.solverstate', '0 history blobs', 'truncated']),
    'from an FCN-32s': (lambda s, d: s['fcn32'][0],
                        ['fcn32/snapshot/train_iter_0.solverstate', 'history blobs where',
                         'another net']),
    'from a 21-class net': (lambda s, d: s['fcn8-21'][0],
                            ['fcn8-21/snapshot/train_iter_0.solverstate', 'score_fr[0]',
                             'another net']),
    'its caffemodel is gone': (lambda s, d: another_learned_net(s['fcn8'][0], d),
                               ['moved.solverstate', 'gone.caffemodel', 'weights not found']),
}


@pytest.mark.parametrize('case', SOLVERSTATE_CASES)
def test_solverstate_checks(repo, snapshots, tmp_path, case):
    path, culprits = SOLVERSTATE_CASES[case]
    path = path(snapshots, tmp_path)
    net = snapshots['solver'].net
    with locations.working_dir(repo['fcn8']):
        weightfiles.check_solverstate(snapshots['fcn8'][0], net, 'SGD')  # the good one passes
        with pytest.raises(weightfiles.CheckError) as err:
            weightfiles.check_solverstate(path, net)
    assert '\n' not in str(err.value)
    for culprit in culprits:
        assert culprit in str(err.value), (culprit, str(err.value))


SOLVE_CASES = {
    # case: (solve.py options from (fixture paths, snapshots), culprits); the
    # paths are relative to where the user is (the model folder's parent).
    '--weights a text file': (
        lambda r, s: ['--weights', os.path.relpath(r['text'], r['root'])],
        lambda r, s: ['notes.txt', 'not a caffemodel']),
    '--weights of a 21-class net': (
        lambda r, s: ['--weights', os.path.relpath(r['fcn8-21.caffemodel'], r['root'])],
        lambda r, s: ['fcn8-21.caffemodel', 'layer score_fr blob 0 has shape (21,', 'needs (5,']),
    '--resume a caffemodel': (
        lambda r, s: ['--resume', os.path.relpath(s['fcn8'][1], r['root'])],
        lambda r, s: ['train_iter_0.caffemodel', 'not a solverstate']),
    '--resume the solverstate of another net': (
        lambda r, s: ['--resume', os.path.relpath(s['fcn8-21'][0], r['root'])],
        lambda r, s: ['fcn8-21/snapshot/train_iter_0.solverstate', 'score_fr[0]', 'another net']),
}


@pytest.mark.parametrize('case', SOLVE_CASES)
def test_solve_rejects(repo, snapshots, case, capfd):
    """The real command, `python fcn8/solve.py ...` from the folder above."""
    options, culprits = SOLVE_CASES[case]
    shutil.copy(os.path.join(REPO, 'voc-fcn8s', 'solve.py'), os.path.join(repo['fcn8'], 'solve.py'))
    before = tree(repo['root'])
    out = run(os.path.join('fcn8', 'solve.py'), '--cpu', '--max-iter', 1,
              *options(repo, snapshots), cwd=repo['root'],
              capfd=None if case in SUBPROCESS else capfd)
    line = assert_one_line_error(out, *culprits(repo, snapshots))
    assert line.startswith('solve.py: ')
    assert tree(repo['root']) == before


@pytest.mark.parametrize('classes, value', [(CLASSES, 7), (datasets.VOC_CLASSES, 21)])
def test_solve_stops_on_a_training_label_outside_the_nets_classes(tmp_path, classes, value):
    """`cd model && python solve.py` with a train label holding 7 for a
    5-class net, or 21 for VOC's 21 classes (which its param_str leaves to
    the data layer): one line naming the file, the value and the count."""
    voc = tmp_path / 'data' / 'voc'
    write_voc(str(voc), {'train': ['train_0000'], 'val': ['val_0000']}, learnable=True)
    label = np.zeros(layers.load_image(str(voc / 'JPEGImages' / 'train_0000.jpg')).shape[:2],
                     np.uint8)
    label[2, 2] = value
    save_palette_png(voc / 'SegmentationClass' / 'train_0000.png', label)
    folder = write_model(tmp_path / 'fcn32', classes=classes, val_size=1)
    with open(os.path.join(folder, 'train.prototxt')) as f:
        assert ('num_classes' in f.read()) == (len(classes) != len(datasets.VOC_CLASSES))
    shutil.copy(os.path.join(REPO, 'voc-fcn8s', 'solve.py'), os.path.join(folder, 'solve.py'))
    before = tree(tmp_path)
    out = run('solve.py', '--cpu', '--max-iter', 1, cwd=folder)
    assert_one_line_error(out, 'solve.py: error: ', voc / 'SegmentationClass' / 'train_0000.png',
                          f'label values {value}', f"the net's {len(classes)} classes")
    assert tree(tmp_path) == before


def test_start_weights_of_the_previous_stage_may_leave_new_layers(repo, snapshots, tmp_path):
    """FCN-32s weights start an FCN-8s: its skip and upsampling layers are new
    (fillers, surgery), but weights sharing no layer are refused."""
    solver = snapshots['solver']
    model = nets.load(repo['fcn8'])
    training.initialize(solver, model, {'': repo['fcn32.caffemodel']})
    other = caffe.NetSpec()
    other.data = caffe.layers.Input(shape=dict(dim=[1, 3, 2, 2]))
    other.elsewhere = caffe.layers.InnerProduct(other.data, num_output=2)
    (tmp_path / 'other.prototxt').write_text(str(other.to_proto()))
    caffe.Net(str(tmp_path / 'other.prototxt'), caffe.TEST).save(str(tmp_path / 'other.caffemodel'))
    with pytest.raises(training.TrainingError, match=r'other\.caffemodel: no weights for any '
                                                     r'learned layer'):
        training.initialize(solver, model, {'': str(tmp_path / 'other.caffemodel')})


# ---------------------------------------------------------------- fetch

@pytest.fixture(scope='module')
def models_root(repo, tmp_path_factory):
    """A models root whose voc-fcn8s is the tiny FCN-8s (fetch checks weights
    against the deploy net of the folder they go into)."""
    root = tmp_path_factory.mktemp('models')
    write_model(root / 'voc-fcn8s', stride=8, classes=CLASSES)
    return root


def fetch(*argv, capfd=None):
    return run('-m', 'fetch', *argv, '--quiet', capfd=capfd)


def installed(models_root):
    return models_root / 'voc-fcn8s' / 'fcn8s-heavy-pascal.caffemodel'


def encrypted_zip(tmp_path):
    """A zip of a NYUD-like folder whose members are marked encrypted
    (general purpose flag bit 0), as a password-protected zip is."""
    path = tmp_path / 'nyud.zip'
    with zipfile.ZipFile(path, 'w') as zf:
        zf.writestr('nyud/segmentation/img_0.mat', b'0' * 100)
    data = bytearray(path.read_bytes())
    for signature, flag_offset in ((b'PK\x03\x04', 6), (b'PK\x01\x02', 8)):
        at = data.index(signature)
        data[at + flag_offset] |= 1
    path.write_bytes(bytes(data))
    return path


def cut_archive(tmp_path):
    """A .tar.gz of a NYUD-like folder, cut to half its bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w:gz') as tar:
        for i in range(20):
            data = np.random.default_rng(i).bytes(4096)
            info = tarfile.TarInfo(f'nyud/segmentation/img_{i}.mat')
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path = tmp_path / 'nyud.tar.gz'
    path.write_bytes(buf.getvalue()[:len(buf.getvalue()) // 2])
    with pytest.raises(EOFError):  # the fixture really is cut
        with gzip.open(path) as f:
            f.read()
    return path


FETCH_CASES = {
    # case: (argv from (repo, models root, tmp_path), culprits)
    'published weights --file a text file': (
        lambda r, m, d: ['weights', 'voc-fcn8s', '--dest', m, '--file', r['text']],
        lambda r, m, d: ['voc-fcn8s: ', r['text'], 'not a caffemodel']),
    'published weights --file of another net': (
        lambda r, m, d: ['weights', 'voc-fcn8s', '--dest', m, '--file', r['fcn32.caffemodel']],
        lambda r, m, d: [r['fcn32.caffemodel'], 'score_pool4', 'upscore8',
                         m / 'voc-fcn8s' / 'deploy.prototxt']),
    'published weights downloaded from another net': (
        lambda r, m, d: ['weights', 'voc-fcn8s', '--dest', m, '--url',
                         'file://' + r['fcn8-21.caffemodel']],
        lambda r, m, d: ['voc-fcn8s: ', 'fcn8s-heavy-pascal.caffemodel.part', 'score_fr']),
    'vgg16 --file a text file': (
        lambda r, m, d: ['weights', 'vgg16', '--dest', m, '--file', r['text']],
        lambda r, m, d: ['vgg16: ', r['text'], 'not a caffemodel']),
    '--file for an unknown source': (
        lambda r, m, d: ['data', 'nyud', '--dest', d / 'data', '--file', f'bogus={r["text"]}'],
        lambda r, m, d: ['unknown source bogus; sources are nyud']),
    'truncated .tar.gz given with --file': (
        lambda r, m, d: ['data', 'nyud', '--dest', d / 'data', '--file', cut_archive(d)],
        lambda r, m, d: [d / 'nyud.tar.gz', 'truncated or corrupt archive']),
    'an encrypted zip given with --file': (
        lambda r, m, d: ['data', 'nyud', '--dest', d / 'data', '--file', encrypted_zip(d)],
        lambda r, m, d: [d / 'nyud.zip', 'cannot unpack it', 'encrypted']),
    '--dest is a file': (
        lambda r, m, d: ['weights', 'voc-fcn8s', '--dest', r['text'], '--file', r['fcn8.caffemodel']],
        lambda r, m, d: ['--dest', r['text'], 'a file, not a folder']),
    '--dest below a file': (
        lambda r, m, d: ['data', 'nyud', '--dest', os.path.join(r['text'], 'data'), '--file',
                         cut_archive(d)],
        lambda r, m, d: ['--dest', r['text'], 'is a file, not a folder']),
    '--url with a malformed host': (
        lambda r, m, d: ['weights', 'vgg16', '--dest', m, '--url', 'http://[bad/x.caffemodel'],
        lambda r, m, d: ['vgg16: http://[bad/x.caffemodel', 'not a URL urllib can fetch']),
    '--url without a scheme': (
        lambda r, m, d: ['weights', 'vgg16', '--dest', m, '--url', 'mirror/x.caffemodel'],
        lambda r, m, d: ['vgg16: mirror/x.caffemodel', 'not a URL urllib can fetch']),
    '--url of a scheme urllib lacks': (
        lambda r, m, d: ['weights', 'vgg16', '--dest', m, '--url', 'gopher://host/x'],
        lambda r, m, d: ['gopher://host/x', "scheme 'gopher'"]),
    'truncated .tar.gz downloaded': (
        lambda r, m, d: ['data', 'nyud', '--dest', d / 'data', '--url',
                         'file://' + str(cut_archive(d))],
        lambda r, m, d: ['nyud.tar.gz', 'truncated or corrupt archive', 'deleted it']),
}


@pytest.mark.parametrize('case', FETCH_CASES)
def test_fetch_rejects(repo, models_root, tmp_path, case, capfd):
    argv, culprits = FETCH_CASES[case]
    argv = argv(repo, models_root, tmp_path)
    before, kept = tree(models_root), tree(tmp_path)
    out = fetch(*argv, capfd=None if case in SUBPROCESS else capfd)
    line = assert_one_line_error(out, *culprits(repo, models_root, tmp_path))
    assert line.startswith('fetch: error: ')
    assert tree(models_root) == before  # nothing installed, nothing half-written
    # The user's files stay; no download, staging folder or .part is left.
    assert tree(tmp_path) == kept


def test_fetch_installs_good_weights_and_replaces_a_bad_installed_file(repo, models_root):
    dest = installed(models_root)
    try:
        out = fetch('weights', 'voc-fcn8s', '--dest', models_root, '--file', repo['fcn8.caffemodel'])
        assert out.returncode == 0, out.stderr
        assert dest.read_bytes() == open(repo['fcn8.caffemodel'], 'rb').read()
        # A bad file left where the weights go (by an older version, or by
        # hand) is not "already present": it is fetched again.
        dest.write_bytes(b'11 bytes!!\n')
        out = fetch('weights', 'voc-fcn8s', '--dest', models_root, '--url',
                    'file://' + repo['fcn8.caffemodel'])
        assert out.returncode == 0, out.stderr
        assert 'not a caffemodel' in out.stderr and 'fetching it again' in out.stderr
        assert dest.read_bytes() == open(repo['fcn8.caffemodel'], 'rb').read()
        assert not any(a in out.stdout + out.stderr for a in ABORTS)
    finally:
        dest.unlink(missing_ok=True)
