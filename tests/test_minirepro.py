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

import datasets
import layers
import minirepro
import nets
import synthetic

SEEDS = (0, 1)


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp('minirepro') / 'out'
    cwd = os.getcwd()
    summary, checks = minirepro.main(['--quick', '--seeds', str(len(SEEDS)), '--out', str(out)])
    assert os.getcwd() == cwd  # training works inside the model folders, then comes back
    return out, summary, checks


def test_report_json_and_markdown(run):
    out, summary, checks = run
    report = json.loads((out / 'results.json').read_text())
    assert report['seeds'] == list(SEEDS)
    assert [c['worse'] for c in report['checks']] == list(minirepro.ORDER[:-1])
    for stage in minirepro.STAGES:
        for key, _ in minirepro.METRICS:
            entry = report['summary'][stage.folder][key]
            assert len(entry['values']) == len(SEEDS)
            assert all(0 <= v <= 1 for v in entry['values'])
            assert entry['mean'] == pytest.approx(np.mean(entry['values']))
    assert summary['fcn8s']['mean_iu']['mean'] == pytest.approx(report['summary']['fcn8s']['mean_iu']['mean'])
    table = (out / 'table.md').read_text()
    assert '| net | pixel acc. | mean acc. | mean IU | f.w. IU |' in table
    for stage in minirepro.STAGES:
        assert f'| {stage.title} |' in table
    assert table.count('seed-to-seed spread') == len(checks)
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


def test_model_folders_are_real_and_staged(run):
    out, _, _ = run
    for seed in SEEDS:
        root = out / f'seed-{seed}'
        assert (root / 'classifier' / 'fcn.caffemodel').is_file()
        assert 'coercing fc6[0] -> fc6[0]' in (root / 'classifier' / 'surgery.log').read_text()
        for stage in minirepro.STAGES:
            folder = root / stage.folder
            model = nets.load(str(folder))
            assert (model.stride, model.fixed_trunk, model.at_once) == \
                (stage.stride, stage.fixed_trunk, stage.at_once)
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


def test_check_order_compares_margins_with_the_spread():
    def result(seed, ious):
        return {'seed': seed, 'metrics': {s: {k: iu for k, _ in minirepro.METRICS}
                                          for s, iu in zip(minirepro.ORDER + ('fcn8s-atonce',), ious)}}
    results = [result(0, (0.20, 0.30, 0.40, 0.41, 0.3)), result(1, (0.22, 0.33, 0.42, 0.44, 0.3)),
               result(2, (0.21, 0.30, 0.41, 0.40, 0.3))]
    checks = minirepro.check_order(minirepro.summarize(results), results)
    assert [c['holds'] for c in checks] == [True, True, False]
    assert [c['seeds_better'] for c in checks] == [3, 3, 2]


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
