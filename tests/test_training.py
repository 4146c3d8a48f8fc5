"""training.py: the loop behind every solve.py, on small nets built by the
same nets/ functions (a narrow VGG16 trunk) and fixture data in the VOC layout."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import caffe
from common import caffe_setup, datasets
from common import locations
import nets
import training
from helpers import write_model, write_voc

caffe.set_mode_cpu()



def make_model(root, name, **options):
    """A tiny model folder `name` beside the others in `root` (the
    repository's layout: data in root/data)."""
    return write_model(os.path.join(root, name), **options)


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('train'))
    write_voc(os.path.join(root, 'data', 'voc'), {'train': [f't{i}' for i in range(4)],
                                                 'val': [f'v{i}' for i in range(2)]}, learnable=True)
    yield root


@pytest.fixture(autouse=True)
def restore_cwd():
    cwd = os.getcwd()
    yield
    os.chdir(cwd)


def weights_of(caffemodel, folder):
    net = caffe.Net(os.path.join(folder, 'deploy.prototxt'), caffe.TEST, weights=caffemodel)
    return {k: [b.data.copy() for b in v] for k, v in net.params.items()}


def test_training_lowers_loss_and_writes_log_plot_and_snapshots(workspace):
    folder = make_model(workspace, 'fcn32s')
    records = training.train(folder, max_iter=40, test_interval=20, quiet=True)
    losses = [r['loss'] for r in records if 'metrics' not in r and r.get('loss') is not None]
    assert len(losses) == 2  # display 20
    scored = [r for r in records if 'metrics' in r]
    assert [r['iteration'] for r in scored] == [20, 40]
    first = records[0]['loss']
    assert scored[-1]['metrics']['score']['loss'] < 0.8 * np.log(21)
    assert losses[-1] < first
    with open(os.path.join(folder, 'snapshot', 'log.jsonl')) as f:
        lines = [json.loads(line) for line in f]
    assert lines == records
    assert {'iteration', 'loss', 'metrics', 'seconds'} <= set(lines[-1])
    assert set(lines[-1]['metrics']['score']) >= {'pixel_acc', 'mean_acc', 'mean_iu', 'fw_iu'}
    assert os.path.getsize(os.path.join(folder, 'snapshot', 'curves.png')) > 1000
    latest = training.Snapshots(os.path.join(folder, 'snapshot')).latest()
    assert latest['iteration'] == 40 and latest['caffemodel'].endswith('train_iter_40.caffemodel')


def test_loss_ablations_train_with_sampled_sigmoid_loss(workspace):
    """Sigmoid cross-entropy on half the final-layer cells, two images a
    step: the loss goes down, and the loss only sees whole sampled cells."""
    folder = make_model(workspace, 'fcn32s-sigmoid-sampled',
                        loss='sigmoid', loss_sampling=0.5)
    with open(os.path.join(folder, 'solver.prototxt')) as f:
        assert 'iter_size: 2' in f.read()
    records = training.train(folder, max_iter=40, test_interval=40, quiet=True)
    losses = [r['loss'] for r in records if 'metrics' not in r and r.get('loss') is not None]
    assert losses[-1] < 0.8 * records[0]['loss']
    assert records[-1]['metrics']['score']['pixel_acc'] > 0.5
    os.chdir(folder)
    net = caffe.Net('train.prototxt', caffe.TRAIN)
    net.forward()
    label, sampled = net.blobs['label'].data[0, 0], net.blobs['label_sampled'].data[0, 0]
    voided = (sampled == datasets.VOID) & (label != datasets.VOID)
    assert voided.any() and ((sampled == label) | voided).all()
    onehot = net.blobs['label_onehot'].data[0]
    assert onehot.shape[0] == 21 and (onehot[:, sampled == datasets.VOID] == 255).all()


def test_staged_16s_starts_from_the_32s_predictions(workspace):
    folder32 = os.path.join(workspace, 'fcn32s')
    if not os.path.exists(os.path.join(folder32, 'snapshot', 'latest.json')):
        training.train(make_model(workspace, 'fcn32s'), max_iter=20, test_interval=20, quiet=True)
    weights32 = training.Snapshots(os.path.join(folder32, 'snapshot')).latest()['caffemodel']
    folder16 = make_model(workspace, 'fcn16s', stride=16, init=[folder32])
    os.chdir(folder16)
    solver, _ = training.make_solver(nets.load(folder16), 20, 20)
    training.initialize(solver, nets.load(folder16), {'': weights32})
    net16 = solver.test_nets[0]
    net16.share_with(solver.net)
    os.chdir(folder32)
    net32 = caffe.Net('val.prototxt', caffe.TEST, weights=weights32)
    training.surgery.interp(net32, ['upscore'])
    for _ in range(2):
        os.chdir(folder16)
        net16.forward()
        os.chdir(folder32)
        net32.forward()
        np.testing.assert_array_equal(net16.blobs['data'].data, net32.blobs['data'].data)
        # Same trunk and score_fr; the new pool4 skip contributes exactly zero.
        np.testing.assert_array_equal(net16.blobs['score_fr'].data, net32.blobs['score_fr'].data)
        assert not net16.blobs['score_pool4c'].data.any()
        np.testing.assert_array_equal(net16.blobs['fuse_pool4'].data, net16.blobs['upscore2'].data)
        # So the predictions are the 32s ones, up to bilinear x2-then-x16
        # versus x32 interpolation differences near decision boundaries.
        s16, s32 = net16.blobs['score'].data[0], net32.blobs['score'].data[0]
        assert s16.shape == s32.shape
        assert (s16.argmax(0) == s32.argmax(0)).mean() > 0.95


def test_previous_stage_weights_are_found_by_model_name(workspace, monkeypatch):
    folder32 = os.path.join(workspace, 'fcn32s')
    if not os.path.exists(os.path.join(folder32, 'snapshot', 'latest.json')):
        training.train(make_model(workspace, 'fcn32s'), max_iter=20, test_interval=20, quiet=True)
    # init names a sibling folder (a user's own models, side by side)
    folder16 = make_model(workspace, 'fcn16s-named', stride=16, init=['fcn32s'])
    weights = training.start_weights(nets.load(folder16))
    assert weights[''] == training.Snapshots(os.path.join(folder32, 'snapshot')).latest()['caffemodel']
    # else the repository's model folder of that name
    monkeypatch.setattr(locations, 'MODELS_DIR', workspace)
    elsewhere = make_model(os.path.join(workspace, 'elsewhere'), 'fcn16s', stride=16, init=['fcn32s'])
    assert training.start_weights(nets.load(elsewhere)) == weights


def test_missing_start_weights_say_how_to_get_them(workspace, monkeypatch):
    monkeypatch.setattr(locations, 'MODELS_DIR', os.path.join(workspace, 'empty'))
    folder = make_model(workspace, 'from-ilsvrc', init=['vgg16'])
    with pytest.raises(training.TrainingError, match='python -m fetch weights vgg16'):
        training.start_weights(nets.load(folder))
    folder = make_model(workspace, 'from-untrained', stride=16, init=['never-trained'])
    monkeypatch.chdir(workspace)
    with pytest.raises(training.TrainingError,
                       match=r'train it first \(cd empty/never-trained && python solve.py\)'):
        training.start_weights(nets.load(folder))
    with pytest.raises(training.TrainingError, match=r'python -m fetch weights voc-fcn32s'):
        training.start_weights(nets.load(make_model(workspace, 'after-voc', init=['voc-fcn32s'])))


def test_nan_loss_stops_with_the_promised_message(workspace):
    folder = make_model(workspace, 'diverging')
    training.train(folder, max_iter=8, test_interval=4, quiet=True)
    # A learning rate far too high: the loss overflows to inf/NaN.
    solver_path = os.path.join(folder, 'solver.prototxt')
    with open(solver_path) as f:
        text = f.read().replace('base_lr: 0.001', 'base_lr: 1e+12')
    with open(solver_path, 'w') as f:
        f.write(text)
    with pytest.raises(training.Diverged) as err:
        training.train(folder, max_iter=40, test_interval=4, resume=True, quiet=True)
    message = str(err.value)
    assert 'training stopped' in message and 'the last good snapshot is' in message
    assert 'iteration 8' in message and 'train_iter_8.caffemodel' in message
    latest = training.Snapshots(os.path.join(folder, 'snapshot')).latest()
    assert latest['iteration'] == 8  # nothing written after the divergence
    for blobs in weights_of(latest['caffemodel'], folder).values():
        assert all(np.isfinite(b).all() for b in blobs)


def run_training(folder, steps, interval, resume=False, wait=True):
    """Train in a subprocess with single-threaded BLAS, so runs are
    bit-for-bit repeatable (multithreaded reductions may reorder sums)."""
    code = textwrap.dedent(f'''
        import training
        training.train({folder!r}, max_iter={steps}, test_interval={interval}, resume={resume},
                       quiet=True)
    ''')
    env = dict(os.environ, GLOG_minloglevel='2', OPENBLAS_NUM_THREADS='1', OMP_NUM_THREADS='1')
    proc = subprocess.Popen([sys.executable, '-c', code], env=env)
    if wait:
        assert proc.wait() == 0
    return proc


def test_resume_after_sigkill_ends_with_identical_weights(workspace):
    steps, interval = 24, 8
    reference = make_model(workspace, 'uninterrupted')
    run_training(reference, steps, interval)
    expected = weights_of(training.Snapshots(os.path.join(reference, 'snapshot')).latest()['caffemodel'],
                          reference)

    folder = make_model(workspace, 'killed')
    proc = run_training(folder, steps, interval, wait=False)
    pointer = os.path.join(folder, 'snapshot', 'latest.json')
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(pointer) and json.load(open(pointer))['iteration'] >= interval:
            break
        time.sleep(0.05)
    assert proc.poll() is None, 'the run ended before it could be killed'
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = json.load(open(pointer))['iteration']
    assert interval <= killed_at < steps

    run_training(folder, steps, interval, resume=True)
    resumed = training.Snapshots(os.path.join(folder, 'snapshot')).latest()
    assert resumed['iteration'] == steps
    got = weights_of(resumed['caffemodel'], folder)
    for name in expected:
        for a, b in zip(expected[name], got[name]):
            np.testing.assert_array_equal(a, b, err_msg=name)
    with open(os.path.join(folder, 'snapshot', 'log.jsonl')) as f:
        iterations = [json.loads(line)['iteration'] for line in f if 'metrics' in line]
    assert iterations == list(range(interval, steps + 1, interval))


def test_resume_without_snapshot_is_an_error(workspace):
    folder = make_model(workspace, 'fresh')
    with pytest.raises(training.TrainingError, match='no complete snapshot'):
        training.train(folder, max_iter=4, test_interval=2, resume=True, quiet=True)


def test_several_gpus_need_an_nccl_build(workspace, capsys):
    folder = make_model(workspace, 'multi-gpu')
    if caffe.has_nccl():
        pytest.skip('this Caffe has NCCL; multi-GPU needs GPUs to test')
    with pytest.raises(SystemExit):
        training.main(folder, ['--gpu', '0,1'])
    # A CPU-only Caffe has neither: the missing CUDA is named first.
    missing = 'NCCL' if caffe_setup.cuda_available() else 'this Caffe is built for the CPU only'
    assert missing in capsys.readouterr().err
