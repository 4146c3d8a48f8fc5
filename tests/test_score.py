"""score.py: metrics on known confusion matrices, and scoring real pycaffe nets.

The nets' score blobs are 1x1 convolutions of one-hot predictions made by
Python layers defined here (ordinary Caffe layers), from fixed frames or from
the labels that layers.py's real SIFT Flow data layer reads, so the answer is
known.
"""
import ast
import collections
import json
import os

import numpy as np
import pytest
import scipy.io
from PIL import Image

import caffe
from caffe import layers as L

from helpers import write_net

from common import datasets
import score

caffe.set_mode_cpu()


def loop_metrics(gt, pred, n):
    """Independent per-class computation over label maps (255 void).

    Means over classes with ground-truth pixels.
    """
    valid = gt != 255
    ius, accs, weighted = [], [], 0.0
    for c in range(n):
        t = np.sum(valid & (gt == c))
        if t == 0:
            continue
        tp = np.sum(valid & (gt == c) & (pred == c))
        predicted = np.sum(valid & (pred == c))
        ius.append(tp / (t + predicted - tp))
        accs.append(tp / t)
        weighted += t * ius[-1]
    return dict(pixel_acc=np.sum(valid & (gt == pred)) / valid.sum(), mean_acc=np.mean(accs),
                mean_iu=np.mean(ius), fw_iu=weighted / valid.sum(), n_counted=len(ius))


def assert_metrics(result, expected):
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, rel=1e-12), key


# --- metrics -----------------------------------------------------------------

# Class 2 has no ground truth but is predicted twice.
HIST = np.array([[3, 1, 0],
                 [0, 2, 2],
                 [0, 0, 0]])


def test_metrics_hand_built():
    result = score.metrics(HIST, class_names=('a', 'b', 'c'))
    assert_metrics(result, dict(pixel_acc=5 / 8, mean_acc=(3 / 4 + 2 / 4) / 2,
                                mean_iu=(3 / 4 + 2 / 5) / 2,
                                fw_iu=(4 * 3 / 4 + 4 * 2 / 5) / 8, n_counted=2))
    # the absent class is reported but not averaged (the reference's nanmean
    # would have averaged its IU of 0 in: (3/4 + 2/5 + 0) / 3)
    assert result['per_class']['c'] == dict(iu=0.0, acc=pytest.approx(np.nan, nan_ok=True),
                                            pixels=0, counted=False)
    assert result['per_class']['b'] == dict(iu=2 / 5, acc=2 / 4, pixels=4, counted=True)


def test_metrics_perfect_and_default_names():
    result = score.metrics(np.diag([5, 0, 7]))
    assert_metrics(result, dict(pixel_acc=1, mean_acc=1, mean_iu=1, fw_iu=1, n_counted=2))
    assert list(result['per_class']) == ['0', '1', '2']
    with pytest.raises(ValueError):
        score.metrics(HIST, class_names=('a', 'b'))
    with pytest.raises(ValueError, match='zebra'):
        score.metrics(HIST, class_names=('a', 'b', 'c'), exclude=('zebra',))


def test_fast_hist_ignores_void():
    gt = np.array([0, 1, 255, 2, 1])
    pred = np.array([0, 2, 1, 2, 1])
    np.testing.assert_array_equal(score.fast_hist(gt, pred, 3),
                                  [[1, 0, 0], [0, 1, 1], [0, 0, 1]])
    with pytest.raises(ValueError):
        score.fast_hist(gt, np.array([0, 3, 0, 0, 0]), 3)


@pytest.mark.parametrize('seed', range(5))
def test_metrics_match_per_class_loops(seed):
    rng = np.random.RandomState(seed)
    n = 8
    gt = rng.randint(0, n, size=(4, 30, 40))
    gt[gt == 5] = 1                        # class 5: absent from the ground truth
    gt[rng.rand(*gt.shape) < 0.1] = 255    # void
    pred = np.where(rng.rand(*gt.shape) < 0.6, gt % 255, rng.randint(0, n, size=gt.shape))
    pred[gt == 255] = rng.randint(0, n, size=(gt == 255).sum())
    assert (pred == 5).any()               # ... yet predicted
    hist = sum(score.fast_hist(g, p, n) for g, p in zip(gt, pred))
    result = score.metrics(hist)
    assert_metrics(result, loop_metrics(gt, pred, n))
    assert result['n_counted'] == n - 1 and not result['per_class']['5']['counted']


def test_exclusion_treats_class_as_void():
    names = datasets.SIFTFLOW_CLASSES
    rng = np.random.RandomState(0)
    hist = rng.randint(0, 50, size=(len(names), len(names)))
    cow = names.index('cow')
    result = score.metrics(hist, names, exclude=('cow',))
    hist_without_cow = hist.copy()
    hist_without_cow[cow] = 0
    expected = score.metrics(hist_without_cow, names)
    for key in ('pixel_acc', 'mean_acc', 'mean_iu', 'fw_iu', 'n_counted'):
        assert result[key] == pytest.approx(expected[key], rel=1e-12), key
    assert result['n_counted'] == len(names) - 1
    assert not result['per_class']['cow']['counted']


def test_siftflow_absent_classes_do_not_count():
    names = datasets.SIFTFLOW_CLASSES
    hist = np.diag(np.arange(1, len(names) + 1))
    for name in datasets.SIFTFLOW_ABSENT_FROM_TEST:
        hist[names.index(name)] = 0
        hist[0, names.index(name)] = 1     # a stray prediction of an absent class
    result = score.metrics(hist, names, exclude=datasets.SIFTFLOW_ABSENT_FROM_TEST)
    assert result['n_counted'] == 30
    present = [i for i, name in enumerate(names) if name not in datasets.SIFTFLOW_ABSENT_FROM_TEST]
    awning_iu = 1 / (1 + 3)                # 1 hit, 3 misses predicted as absent classes
    assert result['mean_iu'] == pytest.approx((awning_iu + len(present) - 1) / len(present))


# --- scoring nets --------------------------------------------------------------

N_CL = 4
# (prediction, label) frames; class 3 is predicted once but never labelled.
FRAMES = [
    (np.array([[0, 1, 1, 1], [2, 3, 0, 0]]), np.array([[0, 0, 1, 1], [2, 2, 255, 0]])),
    (np.array([[1, 2], [1, 0]]), np.array([[1, 2], [255, 0]])),
]
FRAMES_HIST = np.array([[3, 1, 0, 0], [0, 3, 0, 0], [0, 0, 2, 1], [0, 0, 0, 0]])
CASES = {'hand': FRAMES}


class FramesLayer(caffe.Layer):
    """Emits the frames of CASES[param 'case'] in turn as one-hot 'data' and 'label'."""

    def setup(self, bottom, top):
        self.frames = CASES[ast.literal_eval(self.param_str)['case']]
        self.i = 0

    def reshape(self, bottom, top):
        pred, label = self.frames[self.i % len(self.frames)]
        top[0].reshape(1, N_CL, *label.shape)
        top[1].reshape(1, 1, *label.shape)

    def forward(self, bottom, top):
        pred, label = self.frames[self.i % len(self.frames)]
        top[0].data[0] = np.eye(N_CL)[pred].transpose(2, 0, 1)
        top[1].data[0, 0] = label
        self.i += 1

    def backward(self, top, propagate_down, bottom):
        pass


def frames_net(tmp_path, name='net.prototxt'):
    """FramesLayer -> 1x1 'score' convolution (zero until set) -> unnormalized loss."""
    n = caffe.NetSpec()
    n.data, n.label = L.Python(module=__name__, layer='FramesLayer', ntop=2,
                               param_str=repr(dict(case='hand')))
    n.score = L.Convolution(n.data, kernel_size=1, num_output=N_CL, bias_term=False)
    n.loss = L.SoftmaxWithLoss(n.score, n.label,
                               loss_param=dict(ignore_label=255, normalize=False))
    return write_net(n, tmp_path / name)


def expected_loss(frames):
    """Mean over frames of the summed softmax loss of one-hot logits."""
    e = np.e
    losses = []
    for pred, label in frames:
        valid = label != 255
        hits = np.sum(valid & (pred == label))
        misses = valid.sum() - hits
        losses.append(hits * np.log((e + N_CL - 1) / e) + misses * np.log(e + N_CL - 1))
    return np.mean(losses)


def set_identity(net):
    net.params['score'][0].data[...] = np.eye(N_CL)[:, :, None, None]


def test_compute_hist_known_answer(tmp_path):
    net = caffe.Net(frames_net(tmp_path), caffe.TEST)
    set_identity(net)
    ids = ['first', 'second']
    hist, loss = score.compute_hist(net, str(tmp_path / 'pred'), ids)
    np.testing.assert_array_equal(hist, FRAMES_HIST)
    assert loss == pytest.approx(expected_loss(FRAMES), rel=1e-5)
    palette = datasets.voc_palette()
    for idx, (pred, _) in zip(ids, FRAMES):
        im = Image.open(tmp_path / 'pred' / f'{idx}.png')
        assert im.mode == 'P'
        np.testing.assert_array_equal(np.array(im), pred)
        np.testing.assert_array_equal(np.array(im.getpalette()).reshape(-1, 3),
                                      palette[:len(im.getpalette()) // 3])


def test_seg_tests_scores_the_solvers_weights(tmp_path, capsys):
    train, test = frames_net(tmp_path, 'train.prototxt'), frames_net(tmp_path, 'test.prototxt')
    solver_path = tmp_path / 'solver.prototxt'
    solver_path.write_text(f'train_net: "{train}"\ntest_net: "{test}"\ntest_iter: 1\n'
                           'test_interval: 1000000\nbase_lr: 0\nlr_policy: "fixed"\n'
                           'display: 0\nmax_iter: 1\nsnapshot_prefix: "unused"\n')
    solver = caffe.SGDSolver(str(solver_path))
    set_identity(solver.net)
    assert not solver.test_nets[0].params['score'][0].data.any()

    result = score.seg_tests(solver, str(tmp_path / 'pred_{}'), ['a', 'b'],
                             class_names=('w', 'x', 'y', 'z'))
    np.testing.assert_array_equal(result['hist'], FRAMES_HIST)
    assert result['iteration'] == 0
    assert result['loss'] == pytest.approx(expected_loss(FRAMES), rel=1e-5)
    assert_metrics(result, dict(pixel_acc=8 / 10, mean_acc=(3 / 4 + 1 + 2 / 3) / 3,
                                mean_iu=(3 / 4 + 3 / 4 + 2 / 3) / 3,
                                fw_iu=(4 * 3 / 4 + 3 * 3 / 4 + 3 * 2 / 3) / 10, n_counted=3))
    assert not result['per_class']['z']['counted']
    assert sorted(os.listdir(tmp_path / 'pred_0')) == ['a.png', 'b.png']
    log = capsys.readouterr().out
    for what in ('loss', 'overall accuracy', 'mean accuracy', 'mean IU', 'fwavacc'):
        assert f'Iteration 0 {what} ' in log

    # no saving
    result = score.do_seg_tests(solver.test_nets[0], 7, None, ['a'])
    assert result['iteration'] == 7 and not os.path.exists(tmp_path / 'pred_7')


# --- the command ---------------------------------------------------------------

SEM_CL, GEO_CL = len(datasets.SIFTFLOW_CLASSES), len(datasets.SIFTFLOW_GEO_CLASSES)
SIFTFLOW_SUBDIR = 'spatial_envelope_256x256_static_8outdoorcategories'
TEST_IDS = ('coast_a', 'forest_b', 'street_c')


def fake_prediction(label, classes):
    """A deterministic 'prediction' from a label map: right except on a lattice."""
    y, x = np.mgrid[:label.shape[0], :label.shape[1]]
    pred = np.where(label == 255, 0, label)
    return np.where((7 * y + 3 * x) % 4 == 0, (pred + 1) % classes, pred)


class FakePredictionLayer(caffe.Layer):
    """One-hot fake_prediction of its label bottom (param 'classes')."""

    def setup(self, bottom, top):
        self.classes = ast.literal_eval(self.param_str)['classes']

    def reshape(self, bottom, top):
        top[0].reshape(1, self.classes, *bottom[0].data.shape[2:])

    def forward(self, bottom, top):
        pred = fake_prediction(bottom[0].data[0, 0].astype(int), self.classes)
        top[0].data[0] = np.eye(self.classes)[pred].transpose(2, 0, 1)

    def backward(self, top, propagate_down, bottom):
        pass


def siftflow_labels(idx):
    """(semantic, geometric) label maps of a fake SIFT Flow image, as stored
    in the files (semantic 0 void, 1..33; geometric -1 void, 1..3)."""
    rng = np.random.RandomState(sum(map(ord, idx)))
    absent = [datasets.SIFTFLOW_CLASSES.index(c) + 1 for c in datasets.SIFTFLOW_ABSENT_FROM_TEST]
    sem = rng.randint(0, SEM_CL + 1, size=(6, 7))
    sem[np.isin(sem, absent)] = 1
    geo = rng.randint(-1, GEO_CL + 1, size=(6, 7))
    return sem, geo


@pytest.fixture
def siftflow_model(tmp_path):
    """models/siftflow-tiny/test.prototxt (a folder with no net.py) reading the data with the real
    SIFTFlowSegDataLayer; its heads score fake_prediction of the labels."""
    data = tmp_path / 'data' / 'sift-flow'
    for folder in ('Images', 'SemanticLabels', 'GeoLabels'):
        (data / folder / SIFTFLOW_SUBDIR).mkdir(parents=True)
    (data / 'train.txt').write_text('not_there\n')
    (data / 'test.txt').write_text('\n'.join(TEST_IDS) + '\n')
    for idx in TEST_IDS:
        sem, geo = siftflow_labels(idx)
        Image.new('RGB', (7, 6), (90, 120, 200)).save(
            data / 'Images' / SIFTFLOW_SUBDIR / f'{idx}.jpg')
        scipy.io.savemat(data / 'SemanticLabels' / SIFTFLOW_SUBDIR / f'{idx}.mat', {'S': sem})
        scipy.io.savemat(data / 'GeoLabels' / SIFTFLOW_SUBDIR / f'{idx}.mat', {'S': geo})

    def heads(n, bottoms):
        for head, classes in (('sem', SEM_CL), ('geo', GEO_CL)):
            n['onehot_' + head] = L.Python(bottoms[head], module=__name__,
                                           layer='FakePredictionLayer',
                                           param_str=repr(dict(classes=classes)))
            n['score_' + head] = L.Convolution(n['onehot_' + head], kernel_size=1,
                                               num_output=classes, bias_term=False)
        return n

    model = tmp_path / 'models' / 'siftflow-tiny'
    model.mkdir(parents=True)
    n = caffe.NetSpec()
    n.data, n.sem, n.geo = L.Python(module='layers', layer='SIFTFlowSegDataLayer', ntop=3,
                                    param_str=repr(dict(siftflow_dir='../../data/sift-flow',
                                                        split='train', mean=datasets.SIFTFLOW_MEAN,
                                                        seed=1337, num_classes=dict(sem=SEM_CL,
                                                                                    geo=GEO_CL))))
    heads(n, {'sem': n.sem, 'geo': n.geo})
    # loss blob names as in siftflow-*
    n.loss = L.SoftmaxWithLoss(n.score_sem, n.sem, loss_param=dict(ignore_label=255))
    n.loss_geo = L.SoftmaxWithLoss(n.score_geo, n.geo, loss_param=dict(ignore_label=255))
    write_net(n, model / 'test.prototxt')

    # weights: identity score layers (so scoring shows they were loaded)
    w = caffe.NetSpec()
    w.sem, w.geo = (L.Input(shape=dict(dim=[1, 1, 6, 7])) for _ in range(2))
    weights = caffe.Net(write_net(heads(w, {'sem': w.sem, 'geo': w.geo}), tmp_path / 'w.prototxt'),
                        caffe.TEST)
    for head, classes in (('sem', SEM_CL), ('geo', GEO_CL)):
        weights.params['score_' + head][0].data[...] = np.eye(classes)[:, :, None, None]
    weights.save(str(tmp_path / 'tiny.caffemodel'))
    return model


def test_command_scores_both_siftflow_heads(siftflow_model, tmp_path, capsys):
    out = tmp_path / 'metrics.json'
    # its fake prediction layers live in this module: allowed by name
    score.main(['--model', str(siftflow_model), '--weights', str(tmp_path / 'tiny.caffemodel'),
                '--allow-module', __name__, '--split', 'test', '--limit', '2', '--json', str(out),
                '--save-dir', str(tmp_path / 'pred')])
    report = json.loads(out.read_text())
    assert report['split'] == 'test' and report['images'] == 2

    labels = [siftflow_labels(idx) for idx in TEST_IDS[:2]]
    sem = np.stack([np.where(s == 0, 255, s - 1) for s, _ in labels])
    geo = np.stack([np.where(g <= 0, 255, g - 1) for _, g in labels])
    for head, gt, n in (('score_sem', sem, SEM_CL), ('score_geo', geo, GEO_CL)):
        pred = np.stack([fake_prediction(g, n) for g in gt])
        assert_metrics(report['heads'][head], loop_metrics(gt, pred, n))
        # softmax loss of one-hot logits, averaged over valid pixels, then images
        valid = gt != 255
        hits = (valid & (pred == gt)).sum(axis=(1, 2))
        misses = valid.sum(axis=(1, 2)) - hits
        losses = (hits * np.log((np.e + n - 1) / np.e) + misses * np.log(np.e + n - 1)) \
            / valid.sum(axis=(1, 2))
        assert report['heads'][head]['loss'] == pytest.approx(losses.mean(), rel=1e-5)
    sem_classes = report['heads']['score_sem']['per_class']
    assert list(sem_classes) == list(datasets.SIFTFLOW_CLASSES)
    for name in datasets.SIFTFLOW_ABSENT_FROM_TEST:
        assert not sem_classes[name]['counted']
    assert report['heads']['score_sem']['excluded'] == list(datasets.SIFTFLOW_ABSENT_FROM_TEST)
    assert list(report['heads']['score_geo']['per_class']) == list(datasets.SIFTFLOW_GEO_CLASSES)
    assert sorted(os.listdir(tmp_path / 'pred' / 'score_geo')) == ['coast_a.png', 'forest_b.png']

    table = capsys.readouterr().out
    assert 'pixel acc.' in table and 'f.w. IU' in table
    sem_row = next(line for line in table.splitlines() if line.startswith('score_sem'))
    assert f"{100 * report['heads']['score_sem']['mean_iu']:.1f}" in sem_row


def test_command_errors(siftflow_model, tmp_path):
    with pytest.raises(SystemExit, match='weights not found'):
        score.main(['--model', str(siftflow_model), '--weights', str(tmp_path / 'none'),
                    '--allow-module', __name__])
    with pytest.raises(SystemExit, match=f'names the Python module "{__name__}", not one of the '
                                         f'project.s .*pass --allow-module {__name__}$'):
        score.main(['--model', str(siftflow_model), '--weights', str(tmp_path / 'none')])
    with pytest.raises(SystemExit, match='no val.prototxt or test.prototxt'):
        score.main(['--model', str(tmp_path), '--weights', str(tmp_path / 'tiny.caffemodel')])


# --- upper bounds from the output stride ------------------------------------

def coarsen_by_loops(label, factor, n):
    """coarsen() written out cell by cell: the most frequent scored class of
    each cell (lowest index on ties, 0 for an all-void cell)."""
    out = np.zeros_like(label)
    for y in range(0, label.shape[0], factor):
        for x in range(0, label.shape[1], factor):
            cell = label[y:y + factor, x:x + factor]
            counts = collections.Counter(int(v) for v in cell.ravel() if 0 <= v < n)
            out[y:y + factor, x:x + factor] = max(sorted(counts), key=counts.get) if counts else 0
    return out


def test_coarsen_keeps_what_the_stride_resolves_and_loses_thin_parts():
    label = np.zeros((37, 45), np.int64)
    label[8:24, 16:40] = 2                     # a block on the 8-pixel grid
    assert np.array_equal(score.coarsen(label, 8, 3), label)
    assert np.array_equal(score.coarsen(label, 1, 3), label)
    thin = label.copy()
    thin[30, :] = 1                            # a 1-pixel line: a stride of 8 loses it
    assert not (score.coarsen(thin, 8, 3) == 1).any()
    assert (score.coarsen(thin, 1, 3) == thin).all()
    voided = np.full((8, 8), datasets.VOID)
    voided[0, :3] = 2                          # void does not vote: 3 pixels of class 2 win
    assert (score.coarsen(voided, 8, 3) == 2).all()
    rng = np.random.RandomState(0)
    for factor in (2, 3, 5, 32):
        random_label = rng.choice([0, 1, 2, 3, datasets.VOID], size=(23, 41))
        assert np.array_equal(score.coarsen(random_label, factor, 4),
                              coarsen_by_loops(random_label, factor, 4))


def test_upper_bound_command_scores_coarsened_ground_truth(siftflow_model, tmp_path, capsys):
    out = tmp_path / 'bounds.json'
    score.main(['--model', str(siftflow_model), '--upper-bound', '1', '2', '3', '--split', 'test',
                '--json', str(out), '--allow-module', __name__])
    report = json.loads(out.read_text())
    assert report['split'] == 'test' and report['images'] == len(TEST_IDS)
    labels = [siftflow_labels(idx) for idx in TEST_IDS]
    sem = [np.where(s == 0, 255, s - 1) for s, _ in labels]
    geo = [np.where(g <= 0, 255, g - 1) for _, g in labels]
    for gt, truth, n in (('sem', sem, SEM_CL), ('geo', geo, GEO_CL)):
        assert report['factors']['1'][gt]['mean_iu'] == pytest.approx(1.0)  # stride 1 loses nothing
        for factor in (2, 3):
            pred = np.stack([coarsen_by_loops(t, factor, n) for t in truth])
            result = report['factors'][str(factor)][gt]
            assert result['mean_iu'] < 1.0
            assert_metrics(result, loop_metrics(np.stack(truth), pred, n))
    # SIFT Flow's absent classes are left out here too
    assert report['factors']['2']['sem']['excluded'] == list(datasets.SIFTFLOW_ABSENT_FROM_TEST)
    printed = capsys.readouterr().out
    assert 'upper bounds' in printed and len([l for l in printed.splitlines() if l[:1] in '123']) == 6
    with pytest.raises(SystemExit):
        score.main(['--model', str(siftflow_model)])  # neither --weights nor --upper-bound
    with pytest.raises(SystemExit, match='2'):
        score.main(['--model', str(siftflow_model), '--upper-bound', '0'])
    assert 'argument --upper-bound: must be 1 or more, got 0' in capsys.readouterr().err
