"""The ILSVRC classifiers FCN starts from, as surgery needs them: each
classifier as published (fully connected fc6/fc7/fc8, the layout of its
ILSVRC caffemodel) and its fully convolutional twin (same layer names, fc
layers as convolutions). surgery.py convert transplants one into the other.
Written to nets/ilsvrc-nets/<trunk>-{classifier,fcn}.prototxt.
"""
import caffe
from common import locations
from caffe import layers as L
from nets import blocks
from nets.model import GENERATED_HEADER
from nets.sources import DEPLOY_SIZE
from nets.trunks import TRUNKS

ILSVRC_CLASSES = 1000
INPUT_SIZE = {'vgg16': 224, 'caffenet': 227}  # the classifiers' crop sizes


def ilsvrc_net(trunk, fully_conv, num_classes=ILSVRC_CLASSES, **trunk_options):
    """`num_classes` and `trunk_options` (VGG16's width and filler) are for
    the offline mini-reproduction's small classifier; the defaults give the
    published nets."""
    n = caffe.NetSpec()
    size = DEPLOY_SIZE if fully_conv else INPUT_SIZE[trunk]
    n.data = L.Input(name='input', shape=[dict(dim=[1, 3, size, size])])
    fc7 = TRUNKS[trunk](n, n.data, train=False, fully_conv=fully_conv, **trunk_options)['fc7']
    n.fc8 = blocks.score(fc7, num_classes) if fully_conv else \
        L.InnerProduct(fc7, num_output=num_classes, param=blocks.LEARNED)
    n.prob = L.Softmax(n.fc8)
    return n


def prototxts():
    """{path: text} of every ILSVRC net's prototxt."""
    return {locations.ilsvrc_prototxt(trunk, kind):
            GENERATED_HEADER + str(ilsvrc_net(trunk, kind == 'fcn').to_proto())
            for trunk in INPUT_SIZE for kind in ('classifier', 'fcn')}
