"""How the commands (solve.py, score.py, infer.py, surgery.py, fetch) set
Caffe up: its log level and the device, one way for all of them."""
import ctypes
import os
import sys

# A function only a CUDA build of Caffe defines (math_functions.cu): a
# CPU-only build (CPU_ONLY) compiles stubs for the layers' GPU methods but
# not this, so its presence tells the builds apart without set_mode_gpu,
# which aborts the process on a CPU-only build.
CUDA_ONLY_SYMBOL = '_ZN5caffe21caffe_gpu_rng_uniformEiPj'  # caffe::caffe_gpu_rng_uniform(int, unsigned*)


class DeviceError(ValueError):
    """A device Caffe cannot use; the message says why."""


def quiet_caffe_log(argv=None):
    """Keep Caffe's own log (every layer of every net it builds) to warnings
    and errors, unless the user set GLOG_minloglevel or passed --verbose.
    Glog reads the variable when Caffe's library loads: call this before the
    first `import caffe`."""
    argv = sys.argv[1:] if argv is None else argv
    # Explicit either way, so the commands' subprocesses (surgery.py under
    # fetch, score.py under score-all) log as their parent does.
    os.environ.setdefault('GLOG_minloglevel', '0' if '--verbose' in argv else '2')


def cuda_available():
    """Whether the installed pycaffe was built with CUDA (so that --gpu can
    work), found without calling into Caffe: its library is searched for a
    function only CUDA builds define (dlsym searches _caffe.so and the
    libcaffe it loads)."""
    import caffe._caffe  # deferred: loading Caffe takes a second, and only GPU users ask
    return hasattr(ctypes.CDLL(caffe._caffe.__file__), CUDA_ONLY_SYMBOL)


def check_device(gpu=None):
    """A DeviceError if Caffe cannot run on GPU `gpu` (None: the CPU, always
    fine) because the build has no CUDA."""
    if gpu is not None and not cuda_available():
        raise DeviceError(f'GPU {gpu}: this Caffe is built for the CPU only (no CUDA); '
                          'leave out --gpu to run on the CPU')


def use_device(gpu=None):
    """Run Caffe on GPU `gpu` (an id), or on the CPU when it is None. Caffe's
    mode is per thread and per process: call it where the nets will run.
    A GPU on a CPU-only build is a DeviceError, not Caffe's abort."""
    import caffe  # deferred: the commands set the log level before Caffe loads
    check_device(gpu)
    if gpu is None:
        caffe.set_mode_cpu()
    else:
        caffe.set_device(gpu)
        caffe.set_mode_gpu()
