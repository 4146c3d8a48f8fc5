"""pytest's set-up for the suite: Caffe's own log quiet before any test
module imports caffe, and the fixtures the test modules share. Plain helper
functions live in helpers.py (pytest puts tests/ on the path)."""
import types

import pytest

from common import caffe_setup

caffe_setup.quiet_caffe_log([])

from helpers import (context_index, random_rgb, save_palette_png, write_context,  # noqa: E402
                     write_model, write_nyud, write_sbdd, write_siftflow, write_voc)


@pytest.fixture
def dataset_writers():
    """The dataset writers: voc, sbdd, nyud, siftflow, context (and
    context_index, random_rgb, save_palette_png)."""
    return types.SimpleNamespace(voc=write_voc, sbdd=write_sbdd, nyud=write_nyud,
                                 siftflow=write_siftflow, context=write_context,
                                 context_index=context_index, random_rgb=random_rgb,
                                 save_palette_png=save_palette_png)


@pytest.fixture(scope='session')
def model_writer():
    """helpers.write_model: a tiny model folder."""
    return write_model


@pytest.fixture(scope='session')
def voc_writer():
    """helpers.write_voc: a PASCAL VOC layout with real JPEGs and palette PNGs."""
    return write_voc
