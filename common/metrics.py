"""The FCN paper's metrics of a confusion matrix: pure numpy arithmetic.

With n_ij the pixels of class i predicted as j and t_i = sum_j n_ij:
  pixel accuracy   sum_i n_ii / sum_i t_i
  mean accuracy    mean over counted classes of n_ii / t_i
  mean IU          mean over counted classes of n_ii / (t_i + sum_j n_ji - n_ii)
  f.w. IU          sum_i t_i IU_i / sum_i t_i over counted classes
Metrics are fractions in [0, 1] everywhere in the API (dicts, JSON, the
'>>>' log lines); only tables printed for people show percentages, as the
paper does.

Counted classes: a class with no ground-truth pixels (t_i = 0) has no
accuracy, and any stray prediction of it would give IU 0, so it is left out
of the means whether or not it is predicted; those stray predictions still
count, as misses of the pixels' true classes. Classes in an explicit
`exclude` list are treated as void: their ground-truth pixels leave every
metric (stray predictions of them still count against the true classes).
SIFT Flow's test set lacks cow, desert and moon: the reference release
averaged over all 33 classes and called its semantic scores "not quite
right"; here they do not count.
"""
import math

import numpy as np

from common import datasets

# The paper's table columns: (metrics key, title).
METRICS = (('pixel_acc', 'pixel acc.'), ('mean_acc', 'mean acc.'), ('mean_iu', 'mean IU'),
           ('fw_iu', 'f.w. IU'))



def fast_hist(a, b, n):
    """n x n confusion matrix of ground truth `a` (rows) vs prediction `b`.

    Pixels whose ground truth is outside [0, n) (void, 255) are ignored.
    A prediction outside [0, n) on a scored pixel raises ValueError.
    """
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    if a.shape != b.shape:
        raise ValueError(f'fast_hist: {a.size} labels vs {b.size} predictions')
    k = (a >= 0) & (a < n)
    a, b = a[k].astype(np.int64), b[k].astype(np.int64)
    if b.size and (b.min() < 0 or b.max() >= n):
        raise ValueError(f'fast_hist: prediction outside [0, {n})')
    return np.bincount(n * a + b, minlength=n ** 2).reshape(n, n)


def _class_scores(hist):
    """Per-class (hits n_ii, pixels t_i, accuracy, IU) of a confusion matrix."""
    tp, gt, pred = np.diag(hist), hist.sum(1), hist.sum(0)
    with np.errstate(divide='ignore', invalid='ignore'):
        return tp, gt, tp / gt, tp / (gt + pred - tp)


def metrics(hist, class_names=None, exclude=()):
    """The paper's metrics (fractions) of confusion matrix `hist`.

    Returns {'pixel_acc', 'mean_acc', 'mean_iu', 'fw_iu', 'n_counted',
    'per_class': {name: {'iu', 'acc', 'pixels', 'counted'}}}, classes named
    by `class_names` (default '0', '1', ...). See the module docstring for
    which classes count; `exclude` holds class names, and an excluded class's
    per-class entry says what it would have scored. A class's 'iu' or 'acc'
    is nan where undefined; the means are nan if no class counts.
    """
    hist = np.asarray(hist, dtype=np.float64)
    n = hist.shape[0]
    names = [str(i) for i in range(n)] if class_names is None else list(class_names)
    if len(names) != n:
        raise ValueError(f'metrics: {len(names)} class names for {n} classes')
    unknown = set(exclude) - set(names)
    if unknown:
        raise ValueError(f'metrics: excluded classes not among the names: {sorted(unknown)}')
    excluded = np.isin(names, list(exclude))
    # excluded classes' ground truth is void: their rows leave the matrix
    tp, gt, acc, iu = _class_scores(np.where(excluded[:, None], 0, hist))
    counted = gt > 0
    pixels = gt.sum()
    if pixels:
        summary = dict(pixel_acc=tp.sum() / pixels, mean_acc=acc[counted].mean(),
                       mean_iu=iu[counted].mean(), fw_iu=(gt * iu)[counted].sum() / pixels)
    else:
        summary = dict.fromkeys(('pixel_acc', 'mean_acc', 'mean_iu', 'fw_iu'), math.nan)
    result = {k: float(v) for k, v in summary.items()}
    result['n_counted'] = int(counted.sum())
    _, gt, acc, iu = (np.where(excluded, whole, voided) for whole, voided
                      in zip(_class_scores(hist), (tp, gt, acc, iu)))
    result['per_class'] = {name: {'iu': float(iu[i]), 'acc': float(acc[i]),
                                  'pixels': int(gt[i]), 'counted': bool(counted[i])}
                           for i, name in enumerate(names)}
    return result


def coarsen(label, factor, num_classes):
    """The best labelling a stride-`factor` output can give: each factor x
    factor cell (from the top left) takes the most frequent non-void class
    of its ground truth, upsampled back by replication to `label`'s size.
    (Ground truth downsampled by `factor` and upsampled back, the paper's
    upper bound; the majority is the cell value that scores best, so the
    bound is a true one. All-void cells give class 0, never scored.)"""
    label = np.asarray(label)
    h, w = label.shape
    ch, cw = -(-h // factor), -(-w // factor)
    padded = np.full((ch * factor, cw * factor), datasets.VOID, dtype=np.int64)
    padded[:h, :w] = label
    cells = padded.reshape(ch, factor, cw, factor).transpose(0, 2, 1, 3).reshape(ch * cw, -1)
    cell_id = np.repeat(np.arange(ch * cw), cells.shape[1])
    values = cells.ravel()
    scored = (values >= 0) & (values < num_classes)
    counts = np.bincount(cell_id[scored] * num_classes + values[scored],
                         minlength=ch * cw * num_classes).reshape(ch * cw, num_classes)
    coarse = counts.argmax(axis=1).reshape(ch, cw)
    return np.repeat(np.repeat(coarse, factor, axis=0), factor, axis=1)[:h, :w]


def class_note(name, entry, excluded):
    """Why a class does not count in the means ('' if it does): `entry` is
    its metrics() per-class entry, `excluded` the excluded class names."""
    if entry['counted']:
        return ''
    return 'excluded' if name in excluded else '(absent: not counted)'
