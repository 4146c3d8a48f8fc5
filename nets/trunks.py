"""The ILSVRC classifier trunks FCN is built on: VGG16, CaffeNet (AlexNet)
and GoogLeNet, each defined once.

A trunk function adds its layers to a NetSpec `n` (layer names get `suffix`
appended, for the two streams of late fusion) and returns the features the
FCN heads read: {'fc7': ..., 'pool4': ..., 'pool3': ...} (what exists).

fully_conv=True recasts the fully connected layers as convolutions (the
FCN); False keeps them fully connected (the ILSVRC classifier that surgery
converts from).
"""
from nets import blocks
from nets.blocks import LEARNED, conv_relu, dropout, fc_relu, lrn, max_pool

from caffe import layers as L

# conv1 pads the input by 100 pixels so the output can always be cropped back
# into alignment with the input, whatever its size.
FCN_PAD = 100


VGG16_WIDTHS = (64, 128, 256, 512, 512)
VGG16_FC_WIDTH = 4096


def vgg16(n, data, suffix='', train=True, param=LEARNED, fully_conv=True, first_conv='conv1_1',
          width=1.0, filler=None):
    """VGG16 (Simonyan & Zisserman, configuration D). `first_conv` renames
    conv1_1 where its input differs from RGB (early fusion: conv1_1_bgrd).
    `width` scales every layer's channels (1.0: the published net; the
    offline mini-reproduction uses a narrow one) and `filler` initialises
    weights for training from scratch."""
    def name(base):
        return base + suffix

    def channels(c):
        return max(1, int(round(c * width)))

    top = data
    for block, (convs, block_width) in enumerate(zip((2, 2, 3, 3, 3), VGG16_WIDTHS), start=1):
        for i in range(1, convs + 1):
            conv = f'conv{block}_{i}'
            if conv == 'conv1_1':
                conv = first_conv
            pad = FCN_PAD if (block, i) == (1, 1) and fully_conv else 1
            n[name(conv)], n[name(f'relu{block}_{i}')] = conv_relu(
                top, channels(block_width), pad=pad, param=param, filler=filler)
            top = n[name(f'relu{block}_{i}')]
        n[name(f'pool{block}')] = top = max_pool(top)
    features = {'pool3': n[name('pool3')], 'pool4': n[name('pool4')]}

    # fc6 is a 7x7 convolution over pool5, fc7 a 1x1 one.
    features['fc7'] = classifier_layers(n, top, name, channels(VGG16_FC_WIDTH), 7, train, param,
                                        fully_conv, filler)
    return features


def caffenet(n, data, suffix='', train=True, param=LEARNED, fully_conv=True):
    """BVLC's CaffeNet (AlexNet with pooling before normalization), as
    FCN-AlexNet uses it: conv1 11x11 stride 4, grouped conv2/4/5, fc6 as a
    6x6 convolution."""
    def name(base):
        return base + suffix

    n[name('conv1')], n[name('relu1')] = conv_relu(
        data, 96, ks=11, stride=4, pad=FCN_PAD if fully_conv else 0, param=param)
    n[name('pool1')] = max_pool(n[name('relu1')], ks=3, stride=2)
    n[name('norm1')] = lrn(n[name('pool1')])
    n[name('conv2')], n[name('relu2')] = conv_relu(n[name('norm1')], 256, ks=5, pad=2, group=2, param=param)
    n[name('pool2')] = max_pool(n[name('relu2')], ks=3, stride=2)
    n[name('norm2')] = lrn(n[name('pool2')])
    n[name('conv3')], n[name('relu3')] = conv_relu(n[name('norm2')], 384, param=param)
    n[name('conv4')], n[name('relu4')] = conv_relu(n[name('relu3')], 384, group=2, param=param)
    n[name('conv5')], n[name('relu5')] = conv_relu(n[name('relu4')], 256, group=2, param=param)
    n[name('pool5')] = top = max_pool(n[name('relu5')], ks=3, stride=2)
    return {'fc7': classifier_layers(n, top, name, 4096, 6, train, param, fully_conv)}


def classifier_layers(n, top, name, width, fc6_kernel, train, param, fully_conv, filler=None):
    """fc6 and fc7 with ReLU (and dropout 0.5 in training nets): fully
    connected as in the classifier, or recast as convolutions (fc6 covers
    the whole pool5 window, fc7 is 1x1) in the FCN. Returns fc7's top."""
    for fc, relu, drop, ks in (('fc6', 'relu6', 'drop6', fc6_kernel), ('fc7', 'relu7', 'drop7', 1)):
        if fully_conv:
            n[name(fc)], n[name(relu)] = conv_relu(top, width, ks=ks, pad=0, param=param, filler=filler)
        else:
            n[name(fc)], n[name(relu)] = fc_relu(top, width, param=param, filler=filler)
        top = n[name(relu)]
        if train:
            n[name(drop)] = top = dropout(top)
    return top


# GoogLeNet inception widths: 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj.
INCEPTION = {
    '3a': (64, 96, 128, 16, 32, 32), '3b': (128, 128, 192, 32, 96, 64),
    '4a': (192, 96, 208, 16, 48, 64), '4b': (160, 112, 224, 24, 64, 64),
    '4c': (128, 128, 256, 24, 64, 64), '4d': (112, 144, 288, 32, 64, 64),
    '4e': (256, 160, 320, 32, 128, 128), '5a': (256, 160, 320, 32, 128, 128),
    '5b': (384, 192, 384, 48, 128, 128),
}


def inception(n, bottom, module, param=LEARNED):
    w1, w3r, w3, w5r, w5, wp = INCEPTION[module]
    p = f'inception_{module}/'
    n[p + '1x1'], n[p + 'relu_1x1'] = conv_relu(bottom, w1, ks=1, pad=0, param=param)
    n[p + '3x3_reduce'], n[p + 'relu_3x3_reduce'] = conv_relu(bottom, w3r, ks=1, pad=0, param=param)
    n[p + '3x3'], n[p + 'relu_3x3'] = conv_relu(n[p + 'relu_3x3_reduce'], w3, ks=3, pad=1, param=param)
    n[p + '5x5_reduce'], n[p + 'relu_5x5_reduce'] = conv_relu(bottom, w5r, ks=1, pad=0, param=param)
    n[p + '5x5'], n[p + 'relu_5x5'] = conv_relu(n[p + 'relu_5x5_reduce'], w5, ks=5, pad=2, param=param)
    n[p + 'pool'] = max_pool(bottom, ks=3, stride=1, pad=1)
    n[p + 'pool_proj'], n[p + 'relu_pool_proj'] = conv_relu(n[p + 'pool'], wp, ks=1, pad=0, param=param)
    n[p + 'output'] = L.Concat(n[p + 'relu_1x1'], n[p + 'relu_3x3'], n[p + 'relu_5x5'],
                               n[p + 'relu_pool_proj'])
    return n[p + 'output']


def googlenet(n, data, suffix='', train=True, param=LEARNED, fully_conv=True):
    """GoogLeNet (bvlc_googlenet layer names) as the CVPR paper's Table 1
    uses it: final loss only (no auxiliary classifiers) and no final average
    pooling, so inception_5b is scored directly at stride 32."""
    assert not suffix and fully_conv, 'GoogLeNet is used only as a single-stream FCN'
    n['conv1/7x7_s2'], n['conv1/relu_7x7'] = conv_relu(data, 64, ks=7, stride=2, pad=FCN_PAD, param=param)
    n['pool1/3x3_s2'] = max_pool(n['conv1/relu_7x7'], ks=3, stride=2)
    n['pool1/norm1'] = lrn(n['pool1/3x3_s2'])
    n['conv2/3x3_reduce'], n['conv2/relu_3x3_reduce'] = conv_relu(n['pool1/norm1'], 64, ks=1, pad=0, param=param)
    n['conv2/3x3'], n['conv2/relu_3x3'] = conv_relu(n['conv2/relu_3x3_reduce'], 192, param=param)
    n['conv2/norm2'] = lrn(n['conv2/relu_3x3'])
    top = n['pool2/3x3_s2'] = max_pool(n['conv2/norm2'], ks=3, stride=2)
    for module in ('3a', '3b', 'pool3', '4a', '4b', '4c', '4d', '4e', 'pool4', '5a', '5b'):
        if module.startswith('pool'):
            top = n[module + '/3x3_s2'] = max_pool(top, ks=3, stride=2)
        else:
            top = inception(n, top, module, param)
    if train:  # the classifier's dropout before its (removed) loss
        n['pool5/drop_7x7_s1'] = top = dropout(top, ratio=0.4)
    return {'fc7': top}


TRUNKS = {'vgg16': vgg16, 'caffenet': caffenet, 'googlenet': googlenet}
# The papers' other name of a trunk.
TRUNK_ALIASES = {'alexnet': 'caffenet'}
# The pooled features each trunk returns besides fc7: the skips it can
# take (fcn.SKIPS), so the output strides it supports.
SKIP_FEATURES = {'vgg16': ('pool3', 'pool4'), 'caffenet': (), 'googlenet': ()}
# The trunks whose channels scale (width) and that train from scratch (filler).
SCALABLE_TRUNKS = ('vgg16',)
# The learning-rate and decay multipliers of a trunk's convolutions where they
# are not blocks.LEARNED: the reference FCN-AlexNet leaves Caffe's defaults
# there (its score layers still get blocks.LEARNED).
TRUNK_PARAM = {'caffenet': blocks.CAFFE_DEFAULT}

# The final stride-32 upsampling kernel where it is not 2 x 32. Trunks that
# pool with 3x3 windows have integral coordinate offsets, so their upscore
# kernel must be odd for the crop to be integral: FCN-AlexNet's 63.
UPSCORE_KERNEL = {'caffenet': 63, 'googlenet': 63}
