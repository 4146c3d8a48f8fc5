"""FCN net definitions: building blocks, trunks, data sources, and the
model folders at the repository root (<model>/net.py), each saying only
what differs.

    python -m nets            regenerate every model folder's prototxts
    python -m nets voc-fcn8s  regenerate one
"""
import glob
import importlib.util
import os

from common import locations
from nets.model import Model, solver_text, stale, write_net_py
from nets.sources import LMDB, NYUD, SEED, VOC, Context, Head, SIFTFlow, Source

__all__ = ['Model', 'Source', 'Head', 'VOC', 'NYUD', 'SIFTFlow', 'Context', 'LMDB', 'SEED',
           'model_names', 'load', 'solver_text', 'stale', 'write_net_py']


def model_names():
    """Every model folder: a folder of the models directory with a net.py."""
    return sorted(os.path.basename(os.path.dirname(p))
                  for p in glob.glob(os.path.join(locations.MODELS_DIR, '*', 'net.py')))


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
