"""How the commands (solve.py, score.py, infer.py) set Caffe up: one device
choice for all of them."""


def use_device(gpu=None):
    """Run Caffe on GPU `gpu` (an id), or on the CPU when it is None. Caffe's
    mode is per thread and per process: call it where the nets will run."""
    import caffe
    if gpu is None:
        caffe.set_mode_cpu()
    else:
        caffe.set_device(gpu)
        caffe.set_mode_gpu()
