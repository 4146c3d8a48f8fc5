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
import traceback

from common import locations
from common.catalog import MODELS
from nets.model import Model, solver_text, stale, write_net_py
from nets.sources import LMDB, NYUD, SEED, VOC, Context, DataFolder, Head, SIFTFlow, Source

__all__ = ['Model', 'Source', 'Head', 'VOC', 'NYUD', 'SIFTFlow', 'Context', 'LMDB', 'DataFolder', 'SEED',
           'model_names', 'load', 'NetPyError', 'solver_text', 'stale', 'write_net_py']


class NetPyError(ValueError):
    """A model folder's net.py that does not run or define a model; the
    message (one line) names the file and line."""


def model_names():
    """The papers' model folders (common/catalog.py's MODELS): what `python
    -m nets` regenerates and the tests check. A model folder of a user's
    own, even one beside them at the repository root, is not one of them."""
    return sorted(MODELS)


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
