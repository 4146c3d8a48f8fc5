"""pytest's set-up for the suite: Caffe's own log quiet before any test
module imports caffe, and the fixtures the test modules share. Plain helper
functions live in helpers.py (pytest puts tests/ on the path)."""
import os
import signal
import subprocess
import types

import numpy as np
import pytest

from common import caffe_setup

caffe_setup.quiet_caffe_log([])

# The suite sends real SIGINTs to the commands it starts. Run in the
# background of a script or under nohup, the suite inherits SIGINT ignored,
# and so would every command it starts (an ignored signal stays ignored
# across exec, and the commands rightly keep it so): a handler here is reset
# to the default in each child instead.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import caffe  # noqa: E402

import surgery  # noqa: E402
from common import locations  # noqa: E402

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


TINY_CLASSES = ('background', 'square', 'circle')


@pytest.fixture(scope='module')
def tiny_model(tmp_path_factory):
    """(model folder, caffemodel): a tiny FCN-8s on TINY_CLASSES with a
    random trunk, random score layers (so that every class can come out)
    and bilinear upsampling."""
    folder = tmp_path_factory.mktemp('model') / 'tiny-fcn8s'
    write_model(folder, stride=8, classes=TINY_CLASSES, mean=(100.0, 110.0, 120.0), val_size=1)
    # Caffe's fillers draw the random trunk: seed them, or some draws give
    # one class everywhere on these noise images (seen about 1 run in 6).
    caffe.set_random_seed(0)
    net = caffe.Net(locations.deploy_prototxt(str(folder)), caffe.TEST)
    rng = np.random.RandomState(0)
    # the fine skip dominates, so that classes change within small images
    for name, std in (('score_fr', 0.01), ('score_pool4', 0.1), ('score_pool3', 1.0)):
        net.params[name][0].data[...] = rng.normal(0, std, net.params[name][0].data.shape)
    surgery.interp(net, [k for k in net.params if k.startswith('upscore')])
    weights = str(folder / 'weights.caffemodel')
    net.save(weights)
    return str(folder), weights


@pytest.fixture(scope='module')
def tiny_val_images(tiny_model):
    """The ids of two images written in the VOC layout where tiny_model's
    val net reads its split (../data/voc from the model folder)."""
    folder, _ = tiny_model
    ids = ('val_a', 'val_b')
    write_voc(os.path.join(os.path.dirname(folder), 'data', 'voc'), {'val': ids},
              seed=3, learnable=True)  # scenes of TINY_CLASSES
    return ids


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MB tmpfs (root only): a disk that really fills up."""
    mount = tmp_path / 'disk'
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip('mounting a tmpfs needs root')
    done = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f'cannot mount a tmpfs here: {done.stderr.strip()}')
    yield mount
    subprocess.run(['umount', '-l', str(mount)], check=True)
