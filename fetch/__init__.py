"""The reproduction kit: fetch datasets and weights, write class lists and
splits, and score the published models (`python -m fetch --help`).

Layout it produces (repository root):
    data/<dataset>/...                 what the data layers read (datasets.DATA_DIR
                                       is ../data from a model folder; nets/data
                                       links here)
    data/downloads/<archive>           downloaded archives (resumable .part files)
    nets/ilsvrc-nets/                  ILSVRC classifiers and their FCN conversions
    nets/<model>/<published weights>   the FCN authors' trained models
"""
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA_ROOT = REPO / 'data'
NETS_ROOT = REPO / 'nets'


class FetchError(RuntimeError):
    """A failure the command reports in one line (no traceback)."""
