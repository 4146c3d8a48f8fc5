"""FCN net definitions: building blocks, trunks, data sources, and the
model folders at the repository root (<model>/net.py), each saying only
what differs.

    python -m nets            regenerate every model folder's prototxts
    python -m nets voc-fcn8s  regenerate one
"""
import glob
import importlib.util
import os
import traceback

from common import locations
from nets.model import Model, solver_text, stale, write_net_py
from nets.sources import LMDB, NYUD, SEED, VOC, Context, Head, SIFTFlow, Source

__all__ = ['Model', 'Source', 'Head', 'VOC', 'NYUD', 'SIFTFlow', 'Context', 'LMDB', 'SEED',
           'model_names', 'load', 'NetPyError', 'solver_text', 'stale', 'write_net_py']


class NetPyError(ValueError):
    """A model folder's net.py that does not run or define a model; the
    message (one line) names the file and line."""


def model_names():
    """Every model folder: a folder of the models directory with a net.py."""
    return sorted(os.path.basename(os.path.dirname(p))
                  for p in glob.glob(os.path.join(locations.MODELS_DIR, '*', 'net.py')))


def load(name_or_folder):
    """The Model defined by a model folder's net.py (a model's name, or a
    path to any folder holding a net.py). A mistake in net.py is a
    NetPyError naming the file and line; a missing net.py a
    FileNotFoundError."""
    folder = locations.model_folder(name_or_folder)
    folder = os.path.abspath(folder)
    path = os.path.join(folder, 'net.py')
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: no net.py; model folders are {", ".join(model_names())}')
    spec = importlib.util.spec_from_file_location(f'fcn_model_{os.path.basename(folder)}', path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise NetPyError(f'{e.filename}:{e.lineno}:{e.offset}: {e.msg}') from None
    except Exception as e:  # noqa: BLE001 -- whatever net.py raises, named by its line
        lines = [f.lineno for f in traceback.extract_tb(e.__traceback__) if f.filename == path]
        where = f'{path}:{lines[-1]}' if lines else path
        raise NetPyError(f'{where}: {type(e).__name__}: {e}') from None
    model = getattr(module, 'model', None)
    if not isinstance(model, Model):
        raise NetPyError(f'{path} must define `model = Model(...)`')
    object.__setattr__(model, 'folder', folder)
    return model
