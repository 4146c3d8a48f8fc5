"""The caffe tool alone trains an FCN from LMDB and scores it: the recipe of
tools/caffe/lmdb_recipe.py run by tools/caffe/train-check.sh, as the GPU
bundle runs them (`caffe train -gpu 0`), here with the CPU build's tool.
And the GPU check stops with a clear message where a library is missing."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile

import lmdb
import numpy as np
import pytest
from caffe.proto import caffe_pb2
from google.protobuf import text_format

import caffe
from common import datasets
import nets
import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(REPO, 'tools', 'caffe')
CAFFE = os.path.join(sys.prefix, 'bin', 'caffe')
caffe.set_mode_cpu()


def load_recipe_module():
    spec = importlib.util.spec_from_file_location('lmdb_recipe', os.path.join(TOOLS, 'lmdb_recipe.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def recipe(tmp_path_factory):
    """The recipe as the bundle carries it, written by the script's command line."""
    folder = tmp_path_factory.mktemp('recipe') / 'train'
    subprocess.run([sys.executable, os.path.join(TOOLS, 'lmdb_recipe.py'), str(folder)],
                   check=True, capture_output=True, text=True)
    figures = dict(line.split() for line in (folder / 'recipe.txt').read_text().splitlines()
                   if line and not line.startswith('#'))
    return folder, figures, load_recipe_module()


def train_check(recipe_dir, logs):
    return subprocess.run(['bash', os.path.join(TOOLS, 'train-check.sh'), str(recipe_dir), str(logs), CAFFE],
                          capture_output=True, text=True)


def read_lmdb(path):
    """[(key, Datum)] in the order Caffe's Data layer reads them."""
    out = []
    with lmdb.open(str(path), readonly=True, lock=False) as env, env.begin() as txn:
        for key, value in txn.cursor():
            d = caffe_pb2.Datum()
            d.ParseFromString(value)
            out.append((key, d))
    return out


def datum_array(d):
    return np.frombuffer(d.data, np.uint8).reshape(d.channels, d.height, d.width)


def test_lmdb_holds_the_scenes_in_order(recipe):
    folder, figures, module = recipe
    size = int(figures['image_size'])
    for split, count in (('train', int(figures['train_images'])), ('val', int(figures['val_images']))):
        images = read_lmdb(folder / 'lmdb' / f'{split}-image')
        labels = read_lmdb(folder / 'lmdb' / f'{split}-label')
        assert len(images) == len(labels) == count
        assert [k for k, _ in images] == [k for k, _ in labels] == sorted(k for k, _ in images)
        for index in (0, count - 1):  # the scenes of synthetic.py, in their order
            image, label = module.small_scene(module.SEED, split, index)
            np.testing.assert_array_equal(datum_array(images[index][1]), image.transpose(2, 0, 1))
            np.testing.assert_array_equal(datum_array(labels[index][1])[0], label)
        arrays = [datum_array(d) for _, d in labels]
        assert all(a.shape == (1, size, size) for a in arrays)
        values = set(np.unique(np.concatenate([a.ravel() for a in arrays])))
        assert values <= set(range(len(synthetic.CLASSES))) | {datasets.VOID}
        assert datasets.VOID in values and 0 in values and len(values) > 3
    # the baseline: background's share of the non-void pixels, averaged over val images
    shares = [float((a == 0).sum() / (a != datasets.VOID).sum())
              for a in (datum_array(d) for _, d in read_lmdb(folder / 'lmdb' / 'val-label'))]
    assert float(figures['background_share']) == pytest.approx(np.mean(shares), abs=1e-6)
    assert 0.5 < float(figures['background_share']) < 0.95


def test_nets_read_lmdb_with_data_layers_and_score_accuracy(recipe):
    folder, figures, _ = recipe
    for name, split in (('train.prototxt', 'train'), ('val.prototxt', 'val')):
        param = caffe_pb2.NetParameter()
        text_format.Merge((folder / name).read_text(), param)
        data = [layer for layer in param.layer if layer.type == 'Data']
        assert [(d.top[0], d.data_param.source) for d in data] == [
            ('data', f'lmdb/{split}-image'), ('label', f'lmdb/{split}-label')]
        assert all(d.data_param.backend == caffe_pb2.DataParameter.LMDB for d in data)
        assert not [layer for layer in param.layer if layer.type == 'Python']
        accuracy = [layer for layer in param.layer if layer.type == 'Accuracy']
        if split == 'val':
            assert len(accuracy) == 1 and accuracy[0].accuracy_param.ignore_label == datasets.VOID
            assert list(accuracy[0].bottom) == ['score', 'label']
        else:
            assert not accuracy
    # Caffe's Data layers deliver the first val scene, mean subtracted, and its label.
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        net = caffe.Net('val.prototxt', caffe.TEST, weights='start.caffemodel')
        net.forward()
    finally:
        os.chdir(cwd)
    size = int(figures['image_size'])
    assert net.blobs['score'].data.shape == (1, len(synthetic.CLASSES), size, size)
    first = read_lmdb(folder / 'lmdb' / 'val-label')[0][1]
    np.testing.assert_array_equal(net.blobs['label'].data[0], datum_array(first))
    # start weights: zero score layers (every class equally likely), bilinear upsampling
    assert not net.blobs['score'].data.any()
    assert net.params['upscore8'][0].data[0, 0].max() > 0


def test_caffe_tool_trains_and_beats_all_background_on_cpu(recipe, tmp_path):
    folder, figures, _ = recipe
    result = train_check(folder, tmp_path / 'logs')
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / 'logs' / 'training.json').read_text())
    assert report['device'] == 'cpu' and report['passed'] is True
    assert report['iterations'] == int(figures['iterations'])
    # zero score layers: the first loss is that of a uniform guess, ln(classes)
    assert report['loss_start'] == pytest.approx(np.log(len(synthetic.CLASSES)), rel=1e-4)
    assert report['loss_end'] < 0.8 * report['loss_start']
    assert report['val_pixel_accuracy'] > report['background_share'] + 0.05
    assert report['background_share'] == float(figures['background_share'])
    assert 'passed' in result.stdout
    # the recipe folder is left as it was (snapshots go to a scratch folder)
    assert not (folder / 'snapshot').exists()
    assert 'Optimization Done' in (tmp_path / 'logs' / 'train.log').read_text()


def test_train_check_fails_when_training_is_too_short(recipe, tmp_path):
    *_, module = recipe
    short = tmp_path / 'short'
    module.write(str(short), train=4, val=2, iterations=5)
    result = train_check(short, tmp_path / 'logs')
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads((tmp_path / 'logs' / 'training.json').read_text())
    assert report['passed'] is False and report['loss_fell'] is False
    assert 'FAILED' in result.stdout


def test_recipe_goes_into_a_new_folder(recipe):
    folder, _, _ = recipe
    result = subprocess.run([sys.executable, os.path.join(TOOLS, 'lmdb_recipe.py'), str(folder)],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f'lmdb_recipe.py: {folder} is not empty: the recipe goes into a new folder']


def test_lmdb_source_asks_for_its_classes_and_val_size():
    with pytest.raises(ValueError, match='one head'):
        nets.LMDB()
    with pytest.raises(ValueError, match='val_size'):
        nets.LMDB(heads=(nets.Head('', synthetic.CLASSES),))


def test_train_check_says_what_is_missing(tmp_path):
    (tmp_path / 'empty').mkdir()
    result = train_check(tmp_path / 'empty', tmp_path / 'logs')
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f'train-check.sh: {tmp_path / "empty"} has no solver.prototxt (write it with tools/caffe/lmdb_recipe.py)']


def test_gpu_check_stops_when_the_machine_lacks_a_library(tmp_path):
    """run-gpu-checks.sh in a bundle's layout whose host-libs.txt names a
    library no machine has: it stops before running anything, says which,
    and still writes its output folder."""
    bundle = tmp_path / 'fcn-caffe-gpu'
    (bundle / 'bin').mkdir(parents=True)
    for script in ('run-gpu-checks.sh', 'train-check.sh'):
        shutil.copy(os.path.join(TOOLS, script), bundle / script)
    os.symlink(CAFFE, bundle / 'bin' / 'caffe')
    (bundle / 'host-libs.txt').write_text('# from the machine\nlibfcn-absent.so.1\n')
    env = {k: v for k, v in os.environ.items() if k not in ('OUT', 'CUDA_LIBS')}
    result = subprocess.run(['bash', str(bundle / 'run-gpu-checks.sh'), '--logs', str(tmp_path / 'out')],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 1
    stopped = [line for line in result.stdout.splitlines() if 'STOPPED' in line]
    assert len(stopped) == 1 and 'this machine lacks libfcn-absent.so.1' in stopped[0]
    assert 'device_query' not in result.stdout and 'Traceback' not in result.stdout + result.stderr
    figures = json.loads((tmp_path / 'out' / 'figures.json').read_text())
    assert figures['passed'] is False and figures['failed_steps'] == ['prerequisites']
    assert 'libfcn-absent.so.1' in figures['error']
    assert figures['training'] is None and figures['caffe_time_ms'] == []
    assert stopped[0] in (tmp_path / 'out' / 'run.log').read_text()
    with tarfile.open(tmp_path / 'out' / 'logs.tar.gz') as tar:
        assert tar.getnames()[0] == 'logs'
