"""How the commands (solve.py, score.py, infer.py, fetch) set Caffe up: its
log level and the device, one way for all of them."""
import importlib.util
import json
import os
import subprocess
import sys


def quiet_caffe_log(argv=None):
    """Keep Caffe's own log (every layer of every net it builds) to warnings
    and errors, unless the user set GLOG_minloglevel or passed --verbose.
    Glog reads the variable when Caffe's library loads: call this before the
    first `import caffe`."""
    argv = sys.argv[1:] if argv is None else argv
    # Explicit either way, so the commands' subprocesses (surgery.py under
    # fetch, score.py under score-all) log as their parent does.
    os.environ.setdefault('GLOG_minloglevel', '0' if '--verbose' in argv else '2')


def use_device(gpu=None):
    """Run Caffe on GPU `gpu` (an id), or on the CPU when it is None. Caffe's
    mode is per thread and per process: call it where the nets will run."""
    import caffe
    if gpu is None:
        caffe.set_mode_cpu()
    else:
        caffe.set_device(gpu)
        caffe.set_mode_gpu()


def cuda_available():
    """Whether the installed Caffe was built with CUDA (a CPU-only Caffe
    aborts the process when asked for a GPU, so this must be known first).
    tools/caffe/build.sh records the build's options in build-info.json
    beside pycaffe; a Caffe installed otherwise is asked in a subprocess,
    where an abort costs nothing."""
    spec = importlib.util.find_spec('caffe')  # found, not imported: no Caffe log yet
    if spec is None or not spec.origin:
        return False
    try:
        with open(os.path.join(os.path.dirname(spec.origin), 'build-info.json')) as f:
            return '-DCPU_ONLY=ON' not in json.load(f)['cmake_options']
    except (OSError, ValueError, KeyError, TypeError):
        probe = subprocess.run([sys.executable, '-c', 'import caffe; caffe.set_device(0)'],
                               capture_output=True, env=dict(os.environ, GLOG_minloglevel='3'))
        return probe.returncode == 0
