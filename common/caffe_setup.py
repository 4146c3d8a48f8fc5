"""How the commands (solve.py, score.py, infer.py, fetch) set Caffe up: its
log level and the device, one way for all of them."""
import os
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
