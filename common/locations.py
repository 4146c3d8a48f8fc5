"""Where the project's files live, defined once.

    <repo>/<model>/                 one folder per model (net.py, solve.py,
                                    prototxts, published weights)
    <repo>/<model>/snapshot/        its training snapshots, log and curves
    <repo>/data/<dataset>/          datasets, reached from a model folder as
                                    ../data/<dataset> (the reference layout)
    <repo>/nets/ilsvrc-nets/        ILSVRC classifiers and their FCN twins

Everything else (the nets library, training, scoring, inference, the fetch
kit) reads these names; none spells a path of its own. Importing this module
loads nothing heavy (the fetch kit uses it without Caffe).
"""
import contextlib
import os

from common.catalog import DOWNLOADS, ILSVRC_CONVERTED, MODELS

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # common/ is one level down
# Model folders sit at the repository root, beside the library, so that
# `cd voc-fcn8s && python solve.py` works as in the reference release.
MODELS_DIR = REPO_DIR
DATA_DIR = os.path.join(REPO_DIR, 'data')
# The data folder as the generated prototxts name it: relative to a model
# folder, so a model folder works wherever the repository is checked out.
DATA_FROM_MODEL = '../data'
SNAPSHOT_DIR = 'snapshot'  # inside a model folder
SNAPSHOT_PREFIX = 'train'  # snapshot/train_iter_N.caffemodel, as the reference solvers name them
# A model folder's net for inference (Input layer, no loss), and its
# evaluation net: val.prototxt (VOC, PASCAL-Context) or test.prototxt (NYUD,
# SIFT Flow), the reference release's names.
DEPLOY_PROTOTXT = 'deploy.prototxt'
EVAL_PROTOTXTS = ('val.prototxt', 'test.prototxt')
# The ILSVRC nets, relative to the models' root (the fetch kit can install
# into another root, keeping this layout).
ILSVRC_SUBDIR = os.path.join('nets', 'ilsvrc-nets')
ILSVRC_DIR = os.path.join(MODELS_DIR, ILSVRC_SUBDIR)


def model_dir(name):
    """The folder of the model called `name` (e.g. voc-fcn8s)."""
    return os.path.join(MODELS_DIR, name)


def model_folder(name_or_path):
    """What commands take as a model: a folder's path, else a model's name."""
    return name_or_path if os.path.isdir(name_or_path) else model_dir(name_or_path)


def ilsvrc_prototxt(trunk, kind, root=None):
    """nets/ilsvrc-nets/<trunk>-<kind>.prototxt, kind 'classifier' or 'fcn'
    (under the models root `root`, default the repository's)."""
    return os.path.join(root or MODELS_DIR, ILSVRC_SUBDIR, f'{trunk}-{kind}.prototxt')


def ilsvrc_weights(trunk, root=None):
    """The start weights of a first-stage FCN on `trunk`: the classifier
    convolutionalized by `surgery.py convert` (fetch runs it), or the download
    itself where there is nothing to convert (GoogLeNet)."""
    folder = os.path.join(root or MODELS_DIR, ILSVRC_SUBDIR)
    if trunk in ILSVRC_CONVERTED:
        return os.path.join(folder, f'{trunk}-fcn.caffemodel')
    return ilsvrc_download(trunk, root)


def ilsvrc_download(trunk, root=None):
    """Where the fetch kit stores the published ILSVRC caffemodel of `trunk`."""
    return os.path.join(root or MODELS_DIR, ILSVRC_SUBDIR, DOWNLOADS[trunk].filename)


def published_weights(name, root=None):
    """Where the fetch kit stores the FCN authors' trained caffemodel of
    model `name` (under the models root `root`), or None where none was
    published."""
    entry = MODELS.get(name)
    return os.path.join(root or MODELS_DIR, name, entry.weights) if entry and entry.weights else None


def ilsvrc_deploy(trunk):
    """The prototxt matching ilsvrc_weights(trunk)."""
    return ilsvrc_prototxt(trunk, 'fcn')


def deploy_prototxt(folder):
    """A model folder's deploy net."""
    return os.path.join(folder, DEPLOY_PROTOTXT)


def eval_prototxt(folder):
    """A model folder's evaluation net (the first of EVAL_PROTOTXTS it
    holds); FileNotFoundError if it has none."""
    for name in EVAL_PROTOTXTS:
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    raise FileNotFoundError(f'no {" or ".join(EVAL_PROTOTXTS)} in {folder}')


@contextlib.contextmanager
def working_dir(path):
    """Run the block with `path` as the current directory (a model folder's
    prototxts name their files relative to it), restoring it afterwards."""
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)
