"""The reproduction kit: fetch datasets and weights, write class lists and
splits, and score the published models (`python -m fetch --help`).

Layout it produces (repository root; locations.py defines it):
    data/<dataset>/...                 what the data layers read (../data from
                                       a model folder)
    data/downloads/<archive>           downloaded archives (resumable .part files)
    nets/ilsvrc-nets/                  ILSVRC classifiers and their FCN conversions
    <model>/<published weights>        the FCN authors' trained models
"""
from pathlib import Path

from common import locations

REPO = Path(locations.REPO_DIR)
DATA_ROOT = Path(locations.DATA_DIR)
MODELS_ROOT = Path(locations.MODELS_DIR)


class FetchError(RuntimeError):
    """A failure the command reports in one line (no traceback)."""
