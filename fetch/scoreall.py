"""Score every downloaded published model with score.py and print the
results next to the published figures.

Depends only on score.py's command line:
    python score.py --model M --weights W --split S --json OUT [--gpu N] [--limit N]
where M may be a model folder's path, and OUT holds {'heads': {score blob:
{'pixel_acc', 'mean_acc', 'mean_iu', 'fw_iu', ...}}} with fractions.
"""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common.catalog import MODELS
from common.metrics import METRICS

from . import REPO

METRIC_KEYS = tuple(key for key, _ in METRICS)
COLUMNS = ('model', 'split', 'pixel acc.', 'mean acc.', 'mean IU', 'f.w. IU',
           'published mean IU')


def _percent(value):
    return '-' if value is None else f'{100 * value:.1f}'


def format_table(rows):
    """rows: (model, split, metrics dict (fractions) or None if scoring
    failed, published mean IU in percent or None). Returns a Markdown table."""
    cells = [COLUMNS]
    for model, split, result, published in rows:
        if result is None:
            scores = ('failed',) + ('-',) * (len(METRIC_KEYS) - 1)
        else:
            scores = tuple(_percent(result.get(k)) for k in METRIC_KEYS)
        cells.append((model, split) + scores + ('-' if published is None else f'{published:.1f}',))
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]

    def line(row):
        # Text columns left-aligned, numbers right-aligned.
        return '| ' + ' | '.join(c.ljust(w) if i < 2 else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(row, widths))) + ' |'
    rule = '|' + '|'.join('-' * (w + 1) + (':' if i >= 2 else '-')
                          for i, w in enumerate(widths)) + '|'
    return '\n'.join([line(cells[0]), rule] + [line(r) for r in cells[1:]])


def report_rows(model, report):
    """Table rows for one published model from score.py's JSON report (None:
    scoring failed), one per head. The published figure belongs to the first
    head (SIFT Flow: semantic; its geometric head is listed after it)."""
    published = model.published and model.published.mean_iu
    if report is None:
        return [(model.folder, model.split, None, published)]
    heads = list(report['heads'].items())
    return [(model.folder if len(heads) == 1 else f'{model.folder} [{head}]',
             report.get('split', model.split), result, published if i == 0 else None)
            for i, (head, result) in enumerate(heads)]


def score_command(scorer, model_dir, weights, split, json_out, gpu=None, limit=None):
    cmd = [sys.executable, str(scorer), '--model', str(model_dir), '--weights', str(weights),
           '--split', split, '--json', str(json_out)]
    if gpu is not None:
        cmd += ['--gpu', str(gpu)]
    if limit:
        cmd += ['--limit', str(limit)]
    return cmd


def score_all(models_root, gpu=None, limit=None, models=None, scorer=REPO / 'score.py'):
    """Score each published model whose caffemodel is under models_root; print
    the table on stdout (score.py's own output goes to stderr). Returns the
    exit status: 0 if every model scored."""
    rows, failed = [], False
    for m in MODELS.values():
        if not m.weights or (models and m.folder not in models):
            continue
        model_dir = Path(models_root) / m.folder
        if not (model_dir / m.weights).exists():
            continue
        with tempfile.TemporaryDirectory() as tmp:
            json_out = Path(tmp) / 'score.json'
            cmd = score_command(scorer, model_dir, model_dir / m.weights, m.split,
                                json_out, gpu, limit)
            print('$ ' + subprocess.list2cmdline(cmd), file=sys.stderr, flush=True)
            status = subprocess.run(cmd, cwd=REPO, stdout=2).returncode  # 2: stderr
            report = json.loads(json_out.read_text()) \
                if status == 0 and json_out.exists() else None
        failed |= report is None
        rows += report_rows(m, report)
    if not rows:
        print(f'no published caffemodel under {models_root}; fetch one with '
              '`python -m fetch weights <model>`', file=sys.stderr)
        return 1
    print(format_table(rows))
    if limit:
        print(f'\n(--limit {limit}: only the first {limit} images of each split were '
              'scored; not comparable with the published figures)')
    return 1 if failed else 0
