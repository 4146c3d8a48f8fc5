"""FCN net definitions: building blocks, trunks, data sources, and the
model folders at the repository root (<model>/net.py), each saying only
what differs.

    python -m nets            regenerate the papers' model folders' prototxts
    python -m nets voc-fcn8s  regenerate one (or any model folder: its path)
    python -m nets new ...    a model folder for your own data (--help)
    python -m nets check-data DATA --classes a,b,c
"""
import importlib.util
import os

from common import locations
from common.catalog import MODELS
from nets.model import Model, solver_text, stale, write_net_py
from nets.sources import LMDB, NYUD, SEED, VOC, Context, DataFolder, Head, SIFTFlow, Source

__all__ = ['Model', 'Source', 'Head', 'VOC', 'NYUD', 'SIFTFlow', 'Context', 'LMDB', 'DataFolder',
           'SEED', 'model_names', 'load', 'solver_text', 'stale', 'write_net_py']


def model_names():
    """The papers' model folders (common/catalog.py's MODELS): what `python
    -m nets` regenerates and the tests check. A model folder of a user's
    own, even one beside them at the repository root, is not one of them."""
    return sorted(MODELS)


def load(name_or_folder):
    """The Model defined by a model folder's net.py (a model's name, or a
    path to any folder holding a net.py)."""
    folder = locations.model_folder(name_or_folder)
    folder = os.path.abspath(folder)
    path = os.path.join(folder, 'net.py')
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: no net.py; model folders are {", ".join(model_names())}')
    spec = importlib.util.spec_from_file_location(f'fcn_model_{os.path.basename(folder)}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = getattr(module, 'model', None)
    if not isinstance(model, Model):
        raise TypeError(f'{path} must define `model = Model(...)`')
    object.__setattr__(model, 'folder', folder)
    return model
