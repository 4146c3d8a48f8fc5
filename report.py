"""Evaluation you can look at: a report of where a model is right and wrong.

One scoring (score.py --report DIR, or training after each scoring) becomes,
in one folder:

    report.html   one self-contained page (every image embedded as a data
                  URI: it opens offline and can be mailed): the model, the
                  weights (path and sha256), split and image count; per
                  head (SIFT Flow: semantic and geometric, each its own
                  section) the paper's four metrics, per-class IU and
                  accuracy as a sorted bar chart with pixel counts (classes
                  the split lacks marked, as score.py's table marks them),
                  the confusion matrix as a heat map (rows normalised), and
                  the n worst and n best images by per-image mean IU, each
                  as photo, ground truth and prediction in the VOC palette;
                  a training run's curves;
    report.json   the same numbers: per head score.py --json's entry (the
                  metrics, per-class scores, and `hist`, the confusion
                  matrix as integer pixel counts, rows ground truth, columns
                  prediction) plus every image's scores and the worst and
                  best lists;
    report-<score blob>-classes.png, report-<score blob>-confusion.png
                  the figures, beside them.

Every file goes to a temporary name in the folder and is renamed when
whole; report.html last, so a page on disk always finds its figures.

Per-image mean IU (IMAGE_MEAN_IU): the mean, over the classes present in
one image's ground truth or prediction on its scored pixels (void, 255,
left out), of n_ii / (t_i + sum_j n_ji - n_ii) from that image's confusion
matrix. A class predicted but absent from the ground truth counts with IU 0,
so an image where the net hallucinates a class ranks low; an image with no
scored pixel has no score and is in neither list.

The photo shown is the file the data layer read for the image's first input
top (the colour image; HHA for an HHA-only net), loaded as the data layer
loads it: scoring neither flips nor shifts (score.EVAL_PARAMS), so it is the
image the net saw, pixel for pixel, without undoing a mean subtraction that
differs from input to input.

Figures are drawn by matplotlib's Agg canvas; the page is built with the
standard library's html module.
"""
import base64
import heapq
import html
import io
import json
import math
import os
import re
from datetime import datetime

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

import layers
from common import datasets, outputs
from common.metrics import METRICS, class_note
from common.snapshots import file_sha256

# How many worst and best images a report shows by default (--report-images).
DEFAULT_IMAGES = 8
# The longest side of an image as embedded (bigger ones are shrunk: a page
# of 16 VOC images stays a few MB).
SHOWN_SIDE = 320
IMAGE_MEAN_IU = ('per-image mean IU: the mean, over the classes present in the image\'s '
                 'ground truth or prediction on its scored pixels (void left out), of '
                 'n_ii / (t_i + sum_j n_ji - n_ii) from the image\'s own confusion matrix; '
                 'a class predicted but not in the ground truth counts with IU 0')
HIST_AXES = 'confusion matrix in pixels: rows ground truth, columns prediction'
FIGURE_DPI = 100


# --- per-image scores -----------------------------------------------------------

def image_scores(hist):
    """(mean IU, pixel accuracy, scored pixels) of one image's confusion
    matrix, mean IU as IMAGE_MEAN_IU defines it; (nan, nan, 0) for an image
    with no scored pixel."""
    hist = np.asarray(hist)
    tp, gt, pred = np.diag(hist), hist.sum(1), hist.sum(0)
    pixels = int(gt.sum())
    if not pixels:
        return math.nan, math.nan, 0
    union = gt + pred - tp
    present = union > 0
    return float(np.mean(tp[present] / union[present])), float(tp.sum() / pixels), pixels


class ImageScores:
    """Every image's scores on one head, and the label maps of the `n`
    worst and `n` best (by per-image mean IU; ties: the earlier image
    first), kept as the images come so that a pass holds 2n maps at most."""

    def __init__(self, n):
        self.n = n
        self.records = []   # {'id', 'mean_iu', 'pixel_acc', 'pixels'} in scoring order
        self._worst = []    # heap of (-mean IU, -seq, shown): its top is the least bad
        self._best = []     # heap of (mean IU, -seq, shown): its top is the least good

    def add(self, idx, label, pred, hist, photo=None):
        """Score one image. `label` and `pred` are H x W class maps (void 255
        in `label`), `hist` its confusion matrix; `photo` a callable giving
        the photo's path, asked only if the image is kept."""
        mean_iu, pixel_acc, pixels = image_scores(hist)
        record = dict(id=str(idx), mean_iu=mean_iu, pixel_acc=pixel_acc, pixels=pixels)
        seq = len(self.records)
        self.records.append(record)
        if math.isnan(mean_iu) or not self.n:
            return
        shown = None
        for heap, key in ((self._worst, -mean_iu), (self._best, mean_iu)):
            if len(heap) == self.n and (key, -seq) <= heap[0][:2]:
                continue  # not among the n: nothing to keep
            if shown is None:  # copies: the blobs change with the next image
                shown = dict(record, label=np.array(label, dtype=np.uint8),
                             pred=np.array(pred, dtype=np.uint8),
                             photo=photo() if photo else None, seq=seq)
            item = (key, -seq, shown)
            if len(heap) < self.n:
                heapq.heappush(heap, item)
            else:
                heapq.heapreplace(heap, item)

    def worst(self):
        """The n worst images' records (with 'label', 'pred', 'photo'), worst first."""
        return sorted((s for _, _, s in self._worst), key=lambda s: (s['mean_iu'], s['seq']))

    def best(self):
        """The n best images' records, best first."""
        return sorted((s for _, _, s in self._best), key=lambda s: (-s['mean_iu'], s['seq']))


class Collector:
    """score.compute_hists' `on_image`: an ImageScores per scored output, in
    the outputs' order (`outputs`), each image's photo path found through
    the net's data layer (layers.py) when an image is kept."""

    def __init__(self, n=DEFAULT_IMAGES):
        self.n = n
        self.outputs = []
        self._examples = None

    def __call__(self, net, idx, per_output):
        if not self.outputs:
            self.outputs = [ImageScores(self.n) for _ in per_output]
        for scores, (label, pred, hist) in zip(self.outputs, per_output):
            scores.add(idx, label, pred, hist, lambda: self.photo_path(net, idx))

    def photo_path(self, net, idx):
        """The absolute path of the file the data layer read for example
        `idx`'s first input top, or None (a net without a layers.py data
        layer). The data layer's paths are relative to the current folder,
        which scoring keeps at the model folder."""
        if self._examples is None:
            data = [layer for layer in net.layers if hasattr(layer, 'example_files')]
            self._examples = {} if not data else {
                layers.example_id(e): (data[0], e) for e in data[0].examples}
        if idx not in self._examples:
            return None
        layer, example = self._examples[idx]
        tops = [t for t in layer.top_names if t not in layer.label_tops]
        return os.path.abspath(layer.example_files(example)[tops[0]]) if tops else None


# --- figures --------------------------------------------------------------------

def _png(fig):
    """A matplotlib figure as PNG bytes (Agg canvas)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=FIGURE_DPI)
    return buf.getvalue()


def class_order(result):
    """Class names as the chart lists them: counted classes by IU, best
    first (ties by name), then the classes that do not count."""
    per_class = result['per_class']
    counted = sorted((n for n, c in per_class.items() if c['counted']),
                     key=lambda n: (-per_class[n]['iu'], n))
    return counted + [n for n, c in per_class.items() if not c['counted']]


def class_chart(result, title):
    """Per-class IU and accuracy (%) as horizontal bars sorted by IU, with
    each class's ground-truth pixels; classes that do not count are greyed
    and marked as score.py's table marks them. PNG bytes."""
    per_class, excluded = result['per_class'], result['excluded']
    names = class_order(result)
    n = len(names)
    fig = Figure(figsize=(9, 0.24 * n + 1.5))
    ax = fig.subplots()
    y = np.arange(n)
    counted = np.array([per_class[k]['counted'] for k in names])
    iu = np.array([100 * per_class[k]['iu'] if per_class[k]['counted'] else 0 for k in names])
    acc = np.array([100 * per_class[k]['acc'] if per_class[k]['counted'] else 0 for k in names])
    ax.barh(y - 0.2, iu, height=0.4, color='tab:blue', label='IU')
    ax.barh(y + 0.2, acc, height=0.4, color='tab:orange', label='accuracy')
    fontsize = 9 if n <= 30 else 7
    labels = [k + ('' if counted[i] else f'  {class_note(k, per_class[k], excluded)}')
              for i, k in enumerate(names)]
    ax.set_yticks(y, labels=labels, fontsize=fontsize)
    for tick, is_counted in zip(ax.get_yticklabels(), counted):
        if not is_counted:
            tick.set_color('0.5')
    for i, k in enumerate(names):
        ax.text(102, i, f"{per_class[k]['pixels']:,} px", va='center', fontsize=fontsize,
                color='0.2' if counted[i] else '0.5')
    ax.set_xlim(0, 125)
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xticks(range(0, 101, 20))
    ax.set_xlabel('% (pixels: ground truth)')
    ax.grid(axis='x', color='0.9')
    ax.set_axisbelow(True)
    # above the bars, clear of the pixel counts
    ax.legend(loc='lower right', bbox_to_anchor=(1.0, 1.0), ncols=2, fontsize=8, frameon=False)
    ax.set_title(title, fontsize=10, loc='left')
    fig.tight_layout()
    return _png(fig)


def normalized_rows(hist):
    """Each row of a confusion matrix divided by its sum (nan for a class
    with no ground truth)."""
    hist = np.asarray(hist, dtype=np.float64)
    rows = hist.sum(1, keepdims=True)
    with np.errstate(divide='ignore', invalid='ignore'):
        return np.where(rows > 0, hist / rows, np.nan)


def confusion_figure(hist, names, title):
    """The confusion matrix as a heat map, each row (ground truth) divided
    by its pixels, class names on both axes; sized so that 60 classes stay
    readable, cells annotated (in %) up to 25 classes. PNG bytes."""
    norm = normalized_rows(hist)
    n = len(names)
    side = max(4.5, 0.2 * n + 2.8)
    fig = Figure(figsize=(side + 1.3, side))
    ax = fig.subplots()
    cmap = matplotlib.colormaps['Blues'].with_extremes(bad='0.88')  # rows with no ground truth
    image = ax.imshow(np.ma.masked_invalid(norm), cmap=cmap, vmin=0, vmax=1,
                      interpolation='nearest')
    fontsize = 9 if n <= 25 else 7
    ax.set_xticks(range(n), labels=names, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(n), labels=names, fontsize=fontsize)
    ax.set_xticks(np.arange(n + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(n + 1) - 0.5, minor=True)
    ax.grid(which='minor', color='white', linewidth=0.5)
    ax.tick_params(which='minor', length=0)
    ax.set_xlabel('prediction')
    ax.set_ylabel('ground truth')
    if n <= 25:
        for (i, j), v in np.ndenumerate(norm):
            if v >= 0.005:
                ax.text(j, i, f'{100 * v:.0f}', ha='center', va='center', fontsize=7,
                        color='white' if v > 0.5 else 'black')
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02,
                 label="fraction of the ground-truth class's pixels")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _png(fig)


def top_confusions(hist, names, k=10):
    """The k largest off-diagonal entries of the row-normalised matrix:
    [(true class, predicted class, fraction of the true class, pixels)]."""
    norm = normalized_rows(hist)
    np.fill_diagonal(norm, np.nan)
    flat = np.where(np.isnan(norm), -1, norm).ravel()
    order = [i for i in np.argsort(-flat, kind='stable')[:k] if flat[i] > 0]
    n = len(names)
    return [(names[i // n], names[i % n], float(flat[i]), int(np.asarray(hist).flat[i]))
            for i in order]


# --- images ---------------------------------------------------------------------

def _shrunk(im, resample):
    factor = SHOWN_SIDE / max(im.size)
    if factor >= 1:
        return im
    return im.resize((max(1, round(im.width * factor)), max(1, round(im.height * factor))),
                     resample)


def label_png(label):
    """An H x W class map as PNG bytes in the VOC palette (void 255 its own colour)."""
    im = Image.fromarray(np.asarray(label, dtype=np.uint8), mode='P')
    im.putpalette(datasets.voc_palette().tobytes())
    buf = io.BytesIO()
    _shrunk(im, Image.NEAREST).save(buf, format='PNG', optimize=True)
    return buf.getvalue()


def photo_jpeg(path, shape):
    """The photo at `path` as JPEG bytes, or None if it cannot be read or is
    not of the label's `shape` (then the page says so)."""
    try:
        rgb = layers.load_image(path)
    except (OSError, ValueError):
        return None
    if rgb.shape[:2] != tuple(shape):
        return None
    buf = io.BytesIO()
    _shrunk(Image.fromarray(rgb), Image.BILINEAR).save(buf, format='JPEG', quality=88)
    return buf.getvalue()


def data_uri(data, mime):
    return f'data:{mime};base64,' + base64.b64encode(data).decode('ascii')


# --- the page ---------------------------------------------------------------------

STYLE = '''
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1350px; }
h1 { font-size: 1.5em; } h2 { border-bottom: 2px solid #ccc; margin-top: 1.8em; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { padding: 0.2em 0.7em; border-bottom: 1px solid #e4e4e4; text-align: left; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.metrics td.num { font-size: 1.3em; font-weight: bold; }
.facts td:first-child { color: #666; } code { font-size: 0.95em; word-break: break-all; }
.muted { color: #888; } .note { color: #555; font-size: 0.92em; max-width: 60em; }
img.figure { max-width: 100%; border: 1px solid #eee; }
.example { display: inline-block; vertical-align: top; margin: 0 1.2em 1.2em 0; }
.example img { height: 180px; margin-right: 3px; border: 1px solid #ddd; }
.example img.label { image-rendering: pixelated; }
.example .missing { display: inline-block; height: 180px; width: 120px; background: #eee;
  color: #888; text-align: center; line-height: 180px; margin-right: 3px; }
.caption { font-size: 0.9em; max-width: 60em; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; border: 1px solid #999;
  vertical-align: middle; margin: 0 0.2em 0 0.5em; }
'''


def _e(value):
    return html.escape(str(value), quote=True)


def _percent(value):
    return '&ndash;' if value is None or not math.isfinite(value) else f'{100 * value:.1f}'


def _value_attr(value):
    """A number as written in a data-value attribute: repr, '' for nan."""
    return '' if value is None or not math.isfinite(value) else repr(float(value))


def metrics_table(head, result):
    """The four metrics and the loss; each cell carries its exact value."""
    rows = [(key, title, result[key], True) for key, title in METRICS]
    rows.append(('loss', 'loss (mean over images)', result.get('loss', math.nan), False))
    cells = []
    for key, title, value, percent in rows:
        shown = _percent(value) + ' %' if percent else (
            '&ndash;' if value is None or not math.isfinite(value) else f'{value:.6g}')
        cells.append(f'<tr><td>{_e(title)}</td><td class="num" data-head="{_e(head)}" '
                     f'data-key="{_e(key)}" data-value="{_value_attr(value)}">{shown}</td></tr>')
    return '<table class="metrics">' + ''.join(cells) + '</table>'


def class_table(result):
    """Per-class IU, accuracy and pixels in the chart's order."""
    rows = []
    for name in class_order(result):
        c = result['per_class'][name]
        note = class_note(name, c, result['excluded'])
        rows.append(f'<tr{"" if c["counted"] else " class=muted"}><td>{_e(name)}</td>'
                    f'<td class="num">{_percent(c["iu"])}</td><td class="num">{_percent(c["acc"])}'
                    f'</td><td class="num">{c["pixels"]:,}</td><td>{_e(note)}</td></tr>')
    return ('<table><tr><th>class</th><th class="num">IU %</th><th class="num">acc. %</th>'
            '<th class="num">pixels</th><th></th></tr>' + ''.join(rows) + '</table>')


def legend(classes, names):
    """Colour swatches of the classes in `classes` (indices) in the VOC palette."""
    palette = datasets.voc_palette()
    parts = []
    for c in classes:
        name = names[c] if c < len(names) else str(c)
        r, g, b = palette[c]
        parts.append(f'<span class="swatch" style="background: rgb({r},{g},{b})"></span>{_e(name)}')
    return ''.join(parts)


def example_html(rank, shown, names):
    """One image: photo, ground truth and prediction side by side, its scores and legend."""
    photo = photo_jpeg(shown['photo'], shown['label'].shape) if shown['photo'] else None
    tiles = [f'<img alt="photo {_e(shown["id"])}" title="photo" src="{data_uri(photo, "image/jpeg")}">'
             if photo else '<span class="missing">no photo</span>']
    for what in ('label', 'pred'):
        title = 'ground truth' if what == 'label' else 'prediction'
        tiles.append(f'<img class="label" alt="{title} {_e(shown["id"])}" title="{title}" '
                     f'src="{data_uri(label_png(shown[what]), "image/png")}">')
    label, pred = shown['label'], shown['pred']
    present = sorted(set(np.unique(label[label != datasets.VOID]).tolist())
                     | set(np.unique(pred[label != datasets.VOID]).tolist()))
    void = ' <span class="swatch" style="background: rgb({},{},{})"></span>void'.format(
        *datasets.voc_palette()[datasets.VOID]) if (label == datasets.VOID).any() else ''
    return (f'<div class="example" data-id="{_e(shown["id"])}" data-mean-iu="{shown["mean_iu"]!r}">'
            + ''.join(tiles)
            + f'<div class="caption">#{rank} <b>{_e(shown["id"])}</b>: mean IU '
              f'{_percent(shown["mean_iu"])} %, pixel acc. {_percent(shown["pixel_acc"])} % '
              f'({shown["pixels"]:,} scored pixels)<br>{legend(present, names)}{void}</div></div>')


def head_section(head, result, images, figures):
    """The HTML of one head: metrics, class chart and table, confusion
    matrix, worst and best images."""
    names = list(result['per_class'])
    absent = [n for n, c in result['per_class'].items() if not c['counted']]
    parts = [f'<section id="{_e(head)}"><h2>Head <code>{_e(head)}</code> '
             f'({len(names)} classes)</h2>', metrics_table(head, result),
             f'<p class="note">Means over the {result["n_counted"]} classes with ground-truth '
             'pixels in this split (as score.py counts them)'
             + (f'; not counted: {_e(", ".join(absent))}' if absent else '') + '.</p>',
             '<h3>Per-class IU and accuracy</h3>',
             f'<img class="figure" alt="per-class IU and accuracy of {_e(head)}" '
             f'src="{data_uri(figures["classes"], "image/png")}">',
             f'<details><summary>as a table</summary>{class_table(result)}</details>',
             '<h3>Confusion matrix</h3>',
             '<p class="note">Each row is a ground-truth class, divided by its pixels: a row '
             'shows where that class\'s pixels went. Grey rows: no ground truth.</p>',
             f'<img class="figure" alt="confusion matrix of {_e(head)}" '
             f'src="{data_uri(figures["confusion"], "image/png")}">']
    confusions = top_confusions(result['hist'], names)
    if confusions:
        parts.append('<p>Largest confusions:</p><table><tr><th>ground truth</th><th>predicted as'
                     '</th><th class="num">% of its pixels</th><th class="num">pixels</th></tr>'
                     + ''.join(f'<tr><td>{_e(t)}</td><td>{_e(p)}</td><td class="num">'
                               f'{_percent(f)}</td><td class="num">{c:,}</td></tr>'
                               for t, p, f, c in confusions) + '</table>')
    if images is not None and images.n:
        for kind, shown in (('worst', images.worst()), ('best', images.best())):
            parts.append(f'<h3>The {len(shown)} {kind} images (per-image mean IU)</h3>'
                         f'<div class="examples" data-kind="{kind}" data-head="{_e(head)}">')
            parts += [example_html(i + 1, s, names) for i, s in enumerate(shown)]
            parts.append('</div>')
    parts.append('</section>')
    return '\n'.join(parts)


def page(scoring, sha256, sections, curves=None):
    """The whole report.html."""
    title = f"{scoring['model']} on {scoring['split']}"
    facts = [('model', scoring['model']), ('weights', scoring['weights']),
             ('weights sha256', sha256), ('split', scoring['split']),
             ('images', scoring['images'])]
    if 'iteration' in scoring:
        facts.append(('training iteration', scoring['iteration']))
    facts.append(('written', datetime.now().isoformat(timespec='seconds')))
    heads = ''.join(f'<li><a href="#{_e(h)}">{_e(h)}</a></li>' for h in scoring['heads'])
    body = [f'<h1>Evaluation report: {_e(title)}</h1>',
            '<table class="facts">' + ''.join(f'<tr><td>{_e(k)}</td><td><code>{_e(v)}</code>'
                                              f'</td></tr>' for k, v in facts) + '</table>',
            f'<p class="note">Metrics as in the FCN paper (score.py); {_e(IMAGE_MEAN_IU)}. '
            'Images in the PASCAL VOC palette.</p>']
    if len(scoring['heads']) > 1:
        body.append(f'<p>Heads: <ul>{heads}</ul></p>')
    if curves:
        body.append('<h2>Training curves</h2><img class="figure" alt="training curves" '
                    f'src="{data_uri(curves, "image/png")}">')
    body += sections
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<title>{_e(title)}</title><style>{STYLE}</style></head>\n<body>\n'
            + '\n'.join(body) + '\n</body></html>\n')


# --- writing ----------------------------------------------------------------------

def figure_names(head):
    """The figure files of head `head` (its score blob)."""
    safe = re.sub(r'[^\w.-]', '_', head)
    return {'classes': f'report-{safe}-classes.png', 'confusion': f'report-{safe}-confusion.png'}


def head_json(result, images, figures):
    """score.py --json's entry of one head, plus the images' scores and the figures' names."""
    entry = outputs.jsonable(result)
    if images is not None:
        entry['images'] = outputs.jsonable(images.records)
        for kind, shown in (('worst', images.worst()), ('best', images.best())):
            entry[kind] = [{k: s[k] for k in ('id', 'mean_iu', 'pixel_acc', 'pixels')}
                           for s in shown]
    entry['figures'] = figures
    return entry


def output_files(folder, heads):
    """The paths write() writes into `folder` for the score blobs `heads`:
    what a command declares to the output guard before any work."""
    return [os.path.join(folder, name) for name in ('report.json', 'report.html')] + \
        [os.path.join(folder, name) for head in heads for name in figure_names(head).values()]


def write(folder, scoring, images=None, sha256=None, curves=None):
    """Write the report of one scoring into `folder` (made if missing);
    returns the path of report.html.

    `scoring` is score.evaluate's dict (model, weights, split, images,
    heads: {score blob: metrics with 'hist', 'excluded', 'loss'}), with
    'iteration' for a training run; `images` {score blob: ImageScores};
    `sha256` the weights' (computed if not given); `curves` a PNG file of
    training curves to show. Raises OSError if a file cannot be written.
    """
    os.makedirs(folder, exist_ok=True)
    images = images or {}
    if sha256 is None:
        sha256 = file_sha256(scoring['weights'])
    sections, heads = [], {}
    for head, result in scoring['heads'].items():
        title = f"{scoring['model']} {head} on {scoring['split']}"
        names = list(result['per_class'])
        figures = {'classes': class_chart(result, f'{title}: per-class IU and accuracy'),
                   'confusion': confusion_figure(result['hist'], names,
                                                 f'{title}: confusion matrix (rows normalised)')}
        files = figure_names(head)
        for kind, data in figures.items():
            outputs.write_atomically(os.path.join(folder, files[kind]), data, 'report figure', 'wb')
        sections.append(head_section(head, result, images.get(head), figures))
        heads[head] = head_json(result, images.get(head), files)
    curves_png = None
    if curves and os.path.isfile(curves):
        with open(curves, 'rb') as f:
            curves_png = f.read()
    document = {**outputs.jsonable({k: v for k, v in scoring.items() if k != 'heads'}),
                'weights_sha256': sha256, 'definitions': {'hist': HIST_AXES,
                                                          'mean_iu of an image': IMAGE_MEAN_IU},
                'heads': heads}
    if curves_png:
        document['curves'] = os.path.relpath(curves, folder)
    outputs.write_atomically(os.path.join(folder, 'report.json'),
                             json.dumps(document, indent=1, allow_nan=False), 'report')
    path = os.path.join(folder, 'report.html')
    outputs.write_atomically(path, page(scoring, sha256, sections, curves_png), what='report')
    return path
