"""report.py: the evaluation report of score.py --report and of training.

Tiny model folders (a narrow VGG16 from nets' Model) are trained for a few
iterations by training.py on fixture data (VOC layout; a SIFT Flow layout for
two heads), which writes the training report; score.py --report then scores
the snapshot. The report's numbers are checked against score.py --json's,
its confusion matrix against a histogram counted here from the saved
predictions and the label files, and every image of the page is decoded.
"""
import base64
import hashlib
import html.parser
import io
import json
import os

import numpy as np
import pytest
import scipy.io
from PIL import Image

import caffe
from common import datasets
import report
import score
import training
import nets
from nets import Model, SIFTFlow

caffe.set_mode_cpu()

VOC_CLASSES = ('background', 'red square', 'blue square')  # write_voc's learnable scenes
VAL_IDS = [f'v{i}' for i in range(7)]
SHOWN = 2  # --report-images


class Page(html.parser.HTMLParser):
    """What a report page holds: its images, its metric cells (data-key)
    and the examples of each list (data-kind), in document order."""

    def __init__(self, text):
        super().__init__()
        self.images, self.metrics, self.examples, self._kind = [], [], {}, None
        self._cell = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == 'img':
            self.images.append(a)
        if 'data-key' in a:
            self._cell = dict(a, text='')
            self.metrics.append(self._cell)
        if 'data-kind' in a:
            self._kind = (a['data-head'], a['data-kind'])
            self.examples[self._kind] = []
        if 'data-id' in a and self._kind:
            self.examples[self._kind].append((a['data-id'], float(a['data-mean-iu'])))

    def handle_endtag(self, tag):
        if tag == 'td':
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell['text'] += data


def decode(src):
    """A data URI's image, decoded by Pillow."""
    header, _, payload = src.partition(',')
    assert header.startswith('data:image/') and header.endswith(';base64'), header[:40]
    im = Image.open(io.BytesIO(base64.b64decode(payload, validate=True)))
    im.load()
    return im


def counted_hist(labels, preds, n):
    """The confusion matrix counted pixel by pixel with np.add.at (void 255 skipped)."""
    hist = np.zeros((n, n), np.int64)
    for label, pred in zip(labels, preds):
        scored = label != datasets.VOID
        np.add.at(hist, (label[scored].astype(int), pred[scored].astype(int)), 1)
    return hist


def mean_iu_by_classes(label, pred):
    """Per-image mean IU written out class by class (IMAGE_MEAN_IU)."""
    scored = label != datasets.VOID
    ius = []
    for c in sorted(set(label[scored].tolist()) | set(pred[scored].tolist())):
        inter = np.sum(scored & (label == c) & (pred == c))
        union = np.sum(scored & ((label == c) | (pred == c)))
        ius.append(inter / union)
    return np.mean(ius)


@pytest.fixture(scope='module')
def voc_run(tmp_path_factory, model_writer, voc_writer):
    """A tiny FCN-32s trained 20 iterations (writing its training report),
    then scored by score.py with --json, --save-dir and --report."""
    root = tmp_path_factory.mktemp('voc')
    data = voc_writer(str(root / 'data' / 'voc'), {'train': [f't{i}' for i in range(4)],
                                                   'val': VAL_IDS}, learnable=True)
    folder = model_writer(root / 'fcn32s', classes=VOC_CLASSES, val_size=len(VAL_IDS))
    cwd = os.getcwd()
    try:
        training.train(folder, max_iter=20, test_interval=20, quiet=True)
    finally:
        os.chdir(cwd)
    weights = training.Snapshots(os.path.join(folder, 'snapshot')).latest()['caffemodel']
    out = root / 'out'
    out.mkdir()
    score.main(['--model', folder, '--weights', weights, '--split', 'val',
                '--json', str(out / 'metrics.json'), '--save-dir', str(out / 'pred'),
                '--report', str(out / 'report'), '--report-images', str(SHOWN)])
    return dict(folder=folder, weights=weights, data=data, out=out,
                json=json.loads((out / 'metrics.json').read_text()),
                report=json.loads((out / 'report' / 'report.json').read_text()),
                html=(out / 'report' / 'report.html').read_text())


def test_confusion_matrix_equals_a_histogram_of_the_saved_predictions(voc_run):
    labels = [voc_run['data'][idx][1] for idx in VAL_IDS]
    preds = [np.asarray(Image.open(voc_run['out'] / 'pred' / f'{idx}.png')) for idx in VAL_IDS]
    hist = counted_hist(labels, preds, len(VOC_CLASSES))
    assert hist.sum() == sum(int((label != datasets.VOID).sum()) for label in labels)
    np.testing.assert_array_equal(np.array(voc_run['report']['heads']['score']['hist']), hist)


def test_report_numbers_equal_score_json(voc_run):
    metrics, rep = voc_run['json'], voc_run['report']
    for key in ('model', 'weights', 'split', 'images'):
        assert rep[key] == metrics[key]
    assert rep['images'] == len(VAL_IDS)
    for head, entry in metrics['heads'].items():
        for key, value in entry.items():
            assert rep['heads'][head][key] == value, (head, key)
    with open(voc_run['weights'], 'rb') as f:
        assert rep['weights_sha256'] == hashlib.sha256(f.read()).hexdigest()


def test_html_metrics_equal_the_json(voc_run):
    page, head = Page(voc_run['html']), voc_run['report']['heads']['score']
    cells = {(c['data-head'], c['data-key']): c for c in page.metrics}
    assert set(cells) == {('score', k) for k, _ in score.METRICS} | {('score', 'loss')}
    for key, _ in score.METRICS:
        cell = cells['score', key]
        assert float(cell['data-value']) == head[key]
        assert cell['text'].strip() == f'{100 * head[key]:.1f} %'
    assert float(cells['score', 'loss']['data-value']) == head['loss']
    assert voc_run['report']['weights_sha256'] in voc_run['html']


def test_every_image_is_embedded_and_decodes(voc_run):
    page = Page(voc_run['html'])
    # two figures, and photo, ground truth and prediction of the worst and best
    assert len(page.images) == 2 + 2 * SHOWN * 3
    for img in page.images:
        im = decode(img['src'])
        assert im.width > 0 and im.height > 0
    assert 'http://' not in voc_run['html'] and 'https://' not in voc_run['html']
    # the label tiles are the label files' and the saved predictions' pixels
    tiles = {img['alt']: decode(img['src']) for img in page.images}
    for idx, _ in page.examples['score', 'worst']:
        np.testing.assert_array_equal(np.asarray(tiles[f'ground truth {idx}']), voc_run['data'][idx][1])
        np.testing.assert_array_equal(np.asarray(tiles[f'prediction {idx}']),
                                      np.asarray(Image.open(voc_run['out'] / 'pred' / f'{idx}.png')))
        photo = tiles[f'photo {idx}']
        assert photo.format == 'JPEG' and photo.size == voc_run['data'][idx][0].shape[1::-1]
    # the figures beside the page are those it shows
    figures = voc_run['report']['heads']['score']['figures']
    for kind, name in figures.items():
        with Image.open(voc_run['out'] / 'report' / name) as im:
            assert im.format == 'PNG'
        data = base64.b64encode((voc_run['out'] / 'report' / name).read_bytes()).decode()
        assert data in voc_run['html'], kind
    assert not [n for n in os.listdir(voc_run['out'] / 'report') if n.startswith('.')]


def test_per_image_scores_and_worst_first_order(voc_run):
    head = voc_run['report']['heads']['score']
    expected = {}
    for idx in VAL_IDS:
        pred = np.asarray(Image.open(voc_run['out'] / 'pred' / f'{idx}.png'))
        expected[idx] = mean_iu_by_classes(voc_run['data'][idx][1], pred)
    assert [r['id'] for r in head['images']] == VAL_IDS
    for record in head['images']:
        assert record['mean_iu'] == pytest.approx(expected[record['id']], rel=1e-12)
    assert len(set(expected.values())) > 2  # the order below means something
    order = sorted(VAL_IDS, key=lambda i: (expected[i], VAL_IDS.index(i)))
    assert [r['id'] for r in head['worst']] == order[:SHOWN]
    best = sorted(VAL_IDS, key=lambda i: (-expected[i], VAL_IDS.index(i)))
    assert [r['id'] for r in head['best']] == best[:SHOWN]
    page = Page(voc_run['html'])
    assert [i for i, _ in page.examples['score', 'worst']] == order[:SHOWN]
    assert [i for i, _ in page.examples['score', 'best']] == best[:SHOWN]
    shown = [v for _, v in page.examples['score', 'worst']]
    assert shown == sorted(shown)


def test_training_writes_the_report_of_its_latest_scoring(voc_run):
    snapshot = os.path.join(voc_run['folder'], 'snapshot')
    with open(os.path.join(snapshot, 'report.json')) as f:
        rep = json.load(f)
    latest = training.Snapshots(snapshot).latest()
    assert rep['iteration'] == latest['iteration'] == 20
    assert rep['weights'] == latest['caffemodel']
    assert rep['weights_sha256'] == latest['caffemodel_sha256']
    assert rep['curves'] == 'curves.png'
    with open(os.path.join(snapshot, 'log.jsonl')) as f:
        logged = [json.loads(line) for line in f][-1]['metrics']['score']
    for key, _ in score.METRICS:
        assert rep['heads']['score'][key] == pytest.approx(logged[key], rel=1e-12)
    with open(os.path.join(snapshot, 'report.html')) as f:
        page = Page(f.read())
    curves = [img for img in page.images if img['alt'] == 'training curves']
    assert len(curves) == 1
    with open(os.path.join(snapshot, 'curves.png'), 'rb') as f:
        assert np.array_equal(np.asarray(decode(curves[0]['src'])), np.asarray(Image.open(f)))
    shown = min(report.DEFAULT_IMAGES, len(VAL_IDS))
    assert len(page.images) == 1 + 2 + 2 * shown * 3


def write_siftflow(root, ids):
    """A SIFT Flow layout under root/data/sift-flow: 40 x 40 images, labels
    as the files store them (semantic 0 void, 1..33 without the test set's
    absent classes; geometric -1 void, 1..3); trainval and test list `ids`."""
    data = root / 'data' / 'sift-flow'
    for folder in ('Images', 'SemanticLabels', 'GeoLabels'):
        (data / folder / datasets.SIFTFLOW_SUBDIR).mkdir(parents=True)
    for split in ('trainval', 'test'):
        (data / f'{split}.txt').write_text('\n'.join(ids) + '\n')
    rng = np.random.default_rng(0)
    absent = [datasets.SIFTFLOW_CLASSES.index(c) + 1 for c in datasets.SIFTFLOW_ABSENT_FROM_TEST]
    for idx in ids:
        sem = np.repeat(np.repeat(rng.integers(0, len(datasets.SIFTFLOW_CLASSES) + 1, (4, 4)),
                                  10, 0), 10, 1)
        sem[np.isin(sem, absent)] = 1
        geo = np.repeat(rng.integers(-1, 4, (4, 1)), 10, 0) * np.ones((1, 40), int)
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(
            data / 'Images' / datasets.SIFTFLOW_SUBDIR / f'{idx}.jpg')
        scipy.io.savemat(data / 'SemanticLabels' / datasets.SIFTFLOW_SUBDIR / f'{idx}.mat', {'S': sem})
        scipy.io.savemat(data / 'GeoLabels' / datasets.SIFTFLOW_SUBDIR / f'{idx}.mat', {'S': geo})


def test_siftflow_heads_each_get_their_section(tmp_path):
    write_siftflow(tmp_path, ['coast_a', 'forest_b', 'street_c'])
    folder = tmp_path / 'siftflow-tiny'
    nets.write_net_py(str(folder), Model(SIFTFlow(val_size=2), trunk='vgg16', stride=32, base_lr=1e-3,
                                         init=(), momentum=0.9, normalize_loss=True,
                                         trunk_width=1 / 32, trunk_filler='msra'),
                      'A two-headed SIFT Flow model for the report tests.')
    cwd = os.getcwd()
    try:
        training.train(str(folder), max_iter=2, test_interval=2, quiet=True)
    finally:
        os.chdir(cwd)
    weights = training.Snapshots(str(folder / 'snapshot')).latest()['caffemodel']
    out = tmp_path / 'out'
    out.mkdir()
    score.main(['--model', str(folder), '--weights', weights, '--json', str(out / 'm.json'),
                '--report', str(out / 'report'), '--report-images', '1'])
    metrics = json.loads((out / 'm.json').read_text())
    for where in (out / 'report', folder / 'snapshot'):
        rep = json.loads((where / 'report.json').read_text())
        assert list(rep['heads']) == ['score_sem', 'score_geo']
        text = (where / 'report.html').read_text()
        page = Page(text)
        for head in ('score_sem', 'score_geo'):
            assert f'<section id="{head}">' in text
            assert {k for h, k in ((c['data-head'], c['data-key']) for c in page.metrics)
                    if h == head} == {k for k, _ in score.METRICS} | {'loss'}
            assert len(page.examples[head, 'worst']) == len(page.examples[head, 'best']) == \
                (1 if where.name == 'report' else 3)
            for name in rep['heads'][head]['figures'].values():
                assert (where / name).is_file()
        for img in page.images:
            decode(img['src'])
        # the test set's absent classes are marked, as score.py's table marks them
        assert rep['heads']['score_sem']['excluded'] == list(datasets.SIFTFLOW_ABSENT_FROM_TEST)
        for name in datasets.SIFTFLOW_ABSENT_FROM_TEST:
            assert f'<td>{name}</td><td class="num">' in text
        assert text.count('<td>excluded</td>') == len(datasets.SIFTFLOW_ABSENT_FROM_TEST)
    rep = json.loads((out / 'report' / 'report.json').read_text())
    for head, entry in metrics['heads'].items():
        for key, value in entry.items():
            assert rep['heads'][head][key] == value, (head, key)


def test_a_60_class_report_renders(tmp_path):
    """PASCAL-Context's 60 classes: a synthetic confusion matrix with absent classes."""
    names = datasets.CONTEXT_CLASSES
    n = len(names)
    rng = np.random.default_rng(1)
    hist = rng.integers(0, 50, (n, n)) + np.diag(rng.integers(100, 5000, n))
    hist[[7, 30, 44]] = 0  # classes absent from the split
    result = dict(score.metrics(hist, names), hist=hist, excluded=[], loss=0.5)
    images = report.ImageScores(3)
    for k in range(5):
        label = rng.integers(0, n, (30, 40))
        label[0] = datasets.VOID
        pred = np.where(rng.random((30, 40)) < 0.2 * k, rng.integers(0, n, (30, 40)), label)
        images.add(f'img{k}', label, pred, score.fast_hist(label, pred, n))
    scoring = dict(model='context-synthetic', weights='/nowhere/w.caffemodel', split='val',
                   images=5, heads={'score': result})
    path = report.write(str(tmp_path), scoring, {'score': images}, sha256='0' * 64)
    text = open(path).read()
    page = Page(text)
    assert len(page.images) == 2 + 2 * 3 * 2  # no photos: ground truth and prediction
    assert text.count('no photo') == 2 * 3
    for img in page.images:
        decode(img['src'])
    for name in names:
        assert f'<td>{name}</td>' in text
    assert text.count('(absent: not counted)') == 3
    # big enough that 60 names fit on each axis
    with Image.open(tmp_path / 'report-score-confusion.png') as im:
        assert min(im.size) >= 60 * 20
    with Image.open(tmp_path / 'report-score-classes.png') as im:
        assert im.size[1] >= 60 * 20
    rep = json.loads((tmp_path / 'report.json').read_text())
    np.testing.assert_array_equal(rep['heads']['score']['hist'], hist)
    assert [r['id'] for r in rep['heads']['score']['worst']][0] == 'img4'
    assert [r['id'] for r in rep['heads']['score']['best']][0] == 'img0'


def test_report_option_errors(voc_run, tmp_path):
    args = ['--model', voc_run['folder'], '--weights', voc_run['weights'], '--split', 'val']
    (tmp_path / 'file').write_text('')
    with pytest.raises(SystemExit, match=r'--report .*file: a file, not a folder'):
        score.main(args + ['--report', str(tmp_path / 'file')])
    with pytest.raises(SystemExit):
        score.main(args + ['--report', str(tmp_path / 'r'), '--report-images', '-1'])
    with pytest.raises(SystemExit):
        score.main(['--model', voc_run['folder'], '--upper-bound', '8', '--report', str(tmp_path)])
    assert not (tmp_path / 'r').exists()
