"""minirepro.py --quick: the whole mini-reproduction end to end with a few
iterations (synthetic data, classifier, surgery, five FCN model folders
trained by training.py, scoring, report, figures, infer.py): the plumbing,
not the numbers. And synthetic.py's data set."""
import json
import os

import numpy as np
import pytest
from caffe.proto import caffe_pb2
from google.protobuf import text_format
from PIL import Image

from common import datasets
import layers
import minirepro
import nets
import synthetic

SEEDS = (0, 1)


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp('minirepro') / 'out'
    cwd = os.getcwd()
    summary, checks, _ = minirepro.main(['--quick', '--ablations', '--seeds', str(len(SEEDS)),
                                         '--out', str(out)])
    assert os.getcwd() == cwd  # training works inside the model folders, then comes back
    return out, summary, checks


def test_report_json_and_markdown(run):
    out, summary, checks = run
    report = json.loads((out / 'results.json').read_text())
    assert report['seeds'] == list(SEEDS)
    assert [c['worse'] for c in report['checks']] == list(minirepro.ORDER[:-1])
    for stage in minirepro.STAGES + minirepro.ABLATIONS:
        for key, _ in minirepro.METRICS:
            entry = report['summary'][stage.folder][key]
            assert len(entry['values']) == len(SEEDS)
            assert all(0 <= v <= 1 for v in entry['values'])
            assert entry['mean'] == pytest.approx(np.mean(entry['values']))
    for result in report['per_seed']:  # wall and CPU time of every net
        for times in (result['seconds'], result['cpu_seconds']):
            assert all(times[s.folder] > 0 for s in minirepro.STAGES + minirepro.ABLATIONS)
    assert summary['fcn8s']['mean_iu']['mean'] == pytest.approx(report['summary']['fcn8s']['mean_iu']['mean'])
    table = (out / 'table.md').read_text()
    assert '| net | pixel acc. | mean acc. | mean IU | f.w. IU |' in table
    for stage in minirepro.STAGES + minirepro.ABLATIONS:
        assert f'| {stage.title} |' in table
    assert [f['name'] for f in report['findings']] == \
        [s.folder for s in minirepro.ABLATIONS] + ['upper-bounds']
    assert table.count('paper: ') == len(report['findings'])
    for c in checks:  # each ordering verdict, with its paired interval
        assert f"- {minirepro.TITLES[c['worse']]} < {minirepro.TITLES[c['better']]}: mean IU " in table
    assert table.count('% lower bound') == len(checks)
    assert table.count('% interval') == len(minirepro.ABLATIONS)
    # the output strides' upper bounds: a finer stride's cells nest in the
    # coarser's, so its majority labels get at least as many pixels right
    bounds = report['upper_bounds']
    assert list(bounds) == [str(f) for f in minirepro.UPPER_BOUND_STRIDES]
    accuracies = [bounds[str(f)]['pixel_acc'] for f in minirepro.UPPER_BOUND_STRIDES]
    assert all(0 < a <= 1 for a in accuracies) and accuracies == sorted(accuracies)
    assert all(0 < bounds[str(f)]['mean_iu'] <= 1 for f in minirepro.UPPER_BOUND_STRIDES)
    assert '## Upper bounds from the output stride' in table


def test_figures_and_infer_outputs(run):
    out, _, _ = run
    for name in ('curves.png', 'figure4.png'):
        with Image.open(out / name) as im:
            assert im.format == 'PNG' and im.size[0] > 400
    labels = sorted(p for p in os.listdir(out / 'infer') if not p.endswith('_overlay.png'))
    assert len(labels) == 1
    stem = labels[0][:-4]
    image = layers.load_image(str(out / 'data' / 'voc' / 'JPEGImages' / f'{stem}.jpg'))
    with Image.open(out / 'infer' / labels[0]) as label:
        assert label.mode == 'P' and label.size == image.shape[1::-1]
        assert np.asarray(label).max() < len(synthetic.CLASSES)
    with Image.open(out / 'infer' / f'{stem}_overlay.png') as overlay:
        assert overlay.size == image.shape[1::-1]
    # each seed's FCN-8s has the evaluation report of its last scoring
    results = json.loads((out / 'results.json').read_text())
    for seed in SEEDS:
        snapshot = out / f'seed-{seed}' / 'fcn8s' / 'snapshot'
        report = json.loads((snapshot / 'report.json').read_text())
        assert report['model'] == 'fcn8s' and (snapshot / 'report.html').is_file()
        scored = results['per_seed'][SEEDS.index(seed)]['metrics']['fcn8s']
        assert report['heads']['score']['mean_iu'] == pytest.approx(scored['mean_iu'], rel=1e-12)


def test_model_folders_are_real_and_staged(run):
    out, _, _ = run
    # one classifier, convolutionalized, for every seed
    assert (out / 'classifier' / 'fcn.caffemodel').is_file()
    assert 'coercing fc6[0] -> fc6[0]' in (out / 'classifier' / 'surgery.log').read_text()
    orders = []
    for seed in SEEDS:
        root = out / f'seed-{seed}'
        for stage in minirepro.STAGES + minirepro.ABLATIONS:
            folder = root / stage.folder
            model = nets.load(str(folder))
            assert (model.stride, model.fixed_trunk, model.at_once) == \
                (stage.stride, stage.fixed_trunk, stage.at_once)
            assert (model.learned_upsampling, model.loss, model.loss_sampling) == \
                (stage.learned_upsampling, stage.loss, stage.loss_sampling)
            solver = (folder / 'solver.prototxt').read_text()
            assert f'iter_size: {round(1 / stage.loss_sampling)}' in solver
            assert f'power: {minirepro.FCN_LR_DECAY_POWER:g}' in solver  # the rate decays to zero
            if stage.at_once:  # the narrow trunk's skip scales, in the generated net
                assert model.at_once_scales == minirepro.AT_ONCE_SCALES
                net = caffe_pb2.NetParameter()
                text_format.Merge((folder / 'train.prototxt').read_text(), net)
                scales = {l.name: l.scale_param.filler.value for l in net.layer if l.type == 'Scale'}
                assert (scales['scale_pool4'], scales['scale_pool3']) == minirepro.AT_ONCE_SCALES
            assert model.source.heads[0].classes == synthetic.CLASSES
            assert os.path.samefile(os.path.join(folder, model.source.voc_dir), out / 'data' / 'voc')
            assert 'type: "Adam"' in (folder / 'solver.prototxt').read_text()
            latest = json.loads((folder / 'snapshot' / 'latest.json').read_text())
            assert latest['iteration'] == stage.iterations(minirepro.QUICK)
            assert (folder / 'snapshot' / 'log.jsonl').is_file()
            start = 'classifier' if stage.start == 'classifier' else f'../{stage.start}'
            assert start in (folder / 'net.py').read_text()
            assert model.source.train_split == f'train-seed-{seed}'
        # each seed sees the same train scenes in its own order
        orders.append(layers.read_split(str(out / 'data' / 'voc' / 'ImageSets' / 'Segmentation'
                                            / f'train-seed-{seed}.txt')))
    assert sorted(orders[0]) == sorted(orders[1]) and orders[0] != orders[1]


def fake_result(seed, ious, seconds=None):
    """A seed's result with the given mean IU per net (every metric the same)."""
    folders = [s.folder for s in minirepro.STAGES + minirepro.ABLATIONS][:len(ious)]
    metrics = {f: {k: iu for k, _ in minirepro.METRICS} for f, iu in zip(folders, ious)}
    seconds = dict(zip(folders, seconds or [1.0] * len(ious)))
    return {'seed': seed, 'metrics': metrics, 'seconds': seconds, 'cpu_seconds': seconds}


def test_check_order_judges_paired_gains():
    # The nets' spreads (0.10 apart from seed to seed) dwarf every step, but
    # each seed's gains are steady: the steps hold. The last step is better
    # in two seeds of three only: not shown.
    results = [fake_result(0, (0.20, 0.30, 0.40, 0.41, 0.3)), fake_result(1, (0.30, 0.41, 0.50, 0.55, 0.3)),
               fake_result(2, (0.40, 0.49, 0.61, 0.60, 0.3))]
    checks = minirepro.check_order(results)
    assert [(c['worse'], c['better']) for c in checks] == list(zip(minirepro.ORDER, minirepro.ORDER[1:]))
    assert [c['holds'] for c in checks] == [True, True, False]
    assert [c['wins'] for c in checks] == [3, 3, 2]
    first = checks[0]
    assert first['gains'] == pytest.approx([0.10, 0.11, 0.09])
    assert first['mean'] == pytest.approx(0.10)
    assert first['se'] == pytest.approx(0.01 / np.sqrt(3))
    # Student's t for 2 degrees of freedom, one-sided 95%: 2.920
    assert first['low'] == pytest.approx(0.10 - 2.920 * 0.01 / np.sqrt(3), abs=1e-4)
    assert first['high'] is None and first['one_sided']
    # two-sided (the ablations'): 4.303
    both = minirepro.paired_gain(results, 'fcn32s-fixed', 'fcn32s')
    assert (both['low'], both['high']) == pytest.approx((0.10 - 4.303 * 0.01 / np.sqrt(3),
                                                         0.10 + 4.303 * 0.01 / np.sqrt(3)), abs=1e-4)
    text = minirepro.format_checks(checks)
    assert text.count('holds') == 2 and 'NOT shown' in text and '+10.0 (per seed +10.0, +11.0, +9.0' in text


def test_ablation_findings_against_the_papers():
    # learned: +-1 around FCN-32s (no significant difference: shows);
    # sampling: the same mean IU, twice the time (shows); sigmoid: 10 points
    # worse in every seed (does not show)
    ious = [(0.2, 0.40, 0.45, 0.50, 0.5, 0.41, 0.40, 0.30), (0.2, 0.42, 0.47, 0.52, 0.5, 0.41, 0.43, 0.32),
            (0.2, 0.44, 0.49, 0.54, 0.5, 0.45, 0.43, 0.34)]
    seconds = [1, 10, 1, 1, 1, 10, 20, 10]
    results = [fake_result(i, iu, seconds) for i, iu in enumerate(ious)]
    bounds = {'factors': {32: {'label': {'mean_iu': 0.45}}, 16: {'label': {'mean_iu': 0.6}},
                          8: {'label': {'mean_iu': 0.8}}}}
    findings = {f['name']: f for f in minirepro.ablation_findings(results, bounds)}
    assert [findings[s.folder]['shows'] for s in minirepro.ABLATIONS] == [True, True, False]
    assert findings['fcn32s-sampled']['time_ratio'] == pytest.approx(2.0)
    assert findings['upper-bounds']['shows']  # 0.42 < 0.45, 0.47 < 0.6, 0.52 < 0.8
    findings = minirepro.ablation_findings(results[:2], {'factors': {32: {'label': {'mean_iu': 0.4}}}})
    assert not findings[-1]['shows']  # FCN-32s above its stride's bound


def test_synthetic_voc_layout_and_determinism(tmp_path):
    splits, crops, mean = synthetic.write(str(tmp_path), seed=3, train=4, val=2, crops_train=7,
                                          crops_val=3)
    voc = tmp_path / 'voc'
    assert layers.read_split(str(voc / 'ImageSets' / 'Segmentation' / 'train.txt')) == splits['train']
    voids = 0
    for idx in splits['train'] + splits['val']:
        image = layers.load_image(str(voc / 'JPEGImages' / f'{idx}.jpg'))
        with Image.open(voc / 'SegmentationClass' / f'{idx}.png') as png:
            assert png.mode == 'P'
            assert np.array_equal(np.array(png.getpalette()).reshape(-1, 3)[:256], datasets.voc_palette())
        label = layers.load_voc_label(str(voc / 'SegmentationClass' / f'{idx}.png'),
                                      len(synthetic.CLASSES))
        assert label.shape == image.shape[:2]
        assert set(np.unique(label)) <= set(range(len(synthetic.CLASSES))) | {datasets.VOID}
        assert (label > 0).any() and (label != datasets.VOID).any()
        voids += (label == datasets.VOID).sum()
    assert voids > 0  # void borders around the objects
    assert len(mean) == 3 and all(0 < v < 255 for v in mean)
    assert [cls for _, cls in synthetic.read_crops(str(tmp_path / 'crops'), 'train')] == \
        [cls for _, cls in crops['train']]
    with Image.open(tmp_path / 'crops' / 'train_0000.jpg') as im:
        assert im.size == (synthetic.CROP_SIZE, synthetic.CROP_SIZE)
    # the same seed gives the same scene; another seed another one
    a = synthetic.scene(synthetic.example_rng(3, 'train', 0))
    b = synthetic.scene(synthetic.example_rng(3, 'train', 0))
    c = synthetic.scene(synthetic.example_rng(4, 'train', 0))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[1], c[1]) or not np.array_equal(a[0], c[0])


def test_crops_are_centred_well_inside_their_class():
    image = np.zeros((40, 50, 3), np.uint8)  # every pixel its own colour: (row, column, 7)
    image[..., 0], image[..., 1], image[..., 2] = np.arange(40)[:, None], np.arange(50), 7
    label = np.zeros((40, 50), np.uint8)
    label[10:30, 5:25] = 2          # a 20 x 20 square
    label[0:40, 40:43] = 3          # a bar 3 pixels wide: thinner than CROP_CENTER_DEPTH
    fill = np.array([1, 2, 3], np.uint8)
    rng = np.random.default_rng(0)
    half = synthetic.CROP_SIZE // 2
    for cls, rows, cols in ((2, (10 + 3, 30 - 3), (5 + 3, 25 - 3)), (3, (0, 40), (41, 42))):
        for _ in range(20):
            cut = synthetic.centred_crop(image, label, cls, rng, fill)
            assert cut.shape == (synthetic.CROP_SIZE, synthetic.CROP_SIZE, 3)
            # where the crop's centre came from in the image
            (y, x), = np.argwhere((image == cut[half, half]).all(axis=2))
            assert label[y, x] == cls and rows[0] <= y < rows[1] and cols[0] <= x < cols[1]
            assert (cut == fill).all(axis=2).sum() == synthetic.CROP_SIZE ** 2 - 40 * 50
    assert synthetic.centred_crop(image, label, 4, rng, fill) is None
