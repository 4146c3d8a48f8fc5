"""Layer-level building blocks of every FCN, in pycaffe's NetSpec language.

Each function returns NetSpec tops; the caller names them by assigning into
the NetSpec (n['conv1_1'] = ...), which is how the published layer names
(and so the published caffemodels) come out.
"""
from common import datasets
from caffe import coord_map, layers as L, params as P

# Weights learn at the base rate with weight decay, biases at twice the rate
# without (reference release, FCN-FACTS section 4).
LEARNED = [dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)]
# Used for "FCN-32s-fixed" (only the score layer learns).
FROZEN = [dict(lr_mult=0, decay_mult=0), dict(lr_mult=0, decay_mult=0)]
# No `param` entries at all: Caffe's defaults (lr_mult 1, decay_mult 1 for
# weights and biases), as the reference FCN-AlexNet declares its layers.
CAFFE_DEFAULT = None


def _param(param):
    """The layer's `param` keyword, none for CAFFE_DEFAULT."""
    return {} if param is CAFFE_DEFAULT else dict(param=param)

# GoogLeNet's inception modules join branches with Concat along channels;
# every branch keeps the same spatial coordinates, so for coordinate mapping a
# channel Concat is a pass-through like Eltwise (pycaffe's table lacks it).
if 'Concat' not in coord_map.PASS_THROUGH_LAYERS:
    coord_map.PASS_THROUGH_LAYERS.append('Concat')

crop = coord_map.crop  # offsets derived from the net's coordinate mapping


def conv_relu(bottom, nout, ks=3, stride=1, pad=1, group=1, param=LEARNED, filler=None):
    """Convolution + in-place ReLU. The published nets name no filler: their
    weights always come from a trained net; `filler` is for training a
    trunk from scratch (the offline mini-reproduction)."""
    extra = dict(group=group) if group > 1 else {}  # CaffeNet's two-GPU groups
    if filler:
        extra['weight_filler'] = dict(type=filler)
    conv = L.Convolution(bottom, kernel_size=ks, stride=stride, num_output=nout,
                         pad=pad, **_param(param), **extra)
    return conv, L.ReLU(conv, in_place=True)


def fc_relu(bottom, nout, param=LEARNED, filler=None):
    """A fully connected layer as the ILSVRC classifiers have it."""
    extra = dict(weight_filler=dict(type=filler)) if filler else {}
    fc = L.InnerProduct(bottom, num_output=nout, param=param, **extra)
    return fc, L.ReLU(fc, in_place=True)


def max_pool(bottom, ks=2, stride=2, pad=0):
    return L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=ks, stride=stride, pad=pad)


def lrn(bottom):
    return L.LRN(bottom, local_size=5, alpha=1e-4, beta=0.75)


def dropout(bottom, ratio=0.5):
    return L.Dropout(bottom, dropout_ratio=ratio, in_place=True)


def score(bottom, num_classes, param=LEARNED):
    """1x1 class score convolution. Caffe fills it with zeros by default, so a
    new score layer (and a new skip) starts from no contribution."""
    return L.Convolution(bottom, num_output=num_classes, kernel_size=1, pad=0, **_param(param))


def upsample(bottom, num_classes, factor, kernel_size=None, learned=False):
    """In-network upsampling by a backwards-strided convolution, one kernel
    per class (surgery.interp fills it with bilinear weights). Fixed by
    default as in the reference release; the paper learned it (no
    significant difference)."""
    return L.Deconvolution(
        bottom,
        convolution_param=dict(num_output=num_classes, kernel_size=kernel_size or 2 * factor,
                               stride=factor, bias_term=False),
        param=[dict(lr_mult=1 if learned else 0)])


def fixed_scale(bottom, value):
    """Multiply by a constant (all-at-once FCN-8s scales pool4 and pool3
    features so their scores start small relative to the coarser ones)."""
    return L.Scale(bottom, filler=dict(type='constant', value=value), param=[dict(lr_mult=0)])


def eltwise_sum(*bottoms, coeff=None):
    if coeff is None:
        return L.Eltwise(*bottoms, operation=P.Eltwise.SUM)
    return L.Eltwise(*bottoms, operation=P.Eltwise.SUM, coeff=list(coeff))


def softmax_loss(score_top, label, normalize=False):
    """Per-pixel softmax loss; void (255) ignored. The reference release sums
    over pixels (normalize False), hence its tiny learning rates."""
    return L.SoftmaxWithLoss(score_top, label, loss_param=dict(normalize=normalize, ignore_label=datasets.VOID))


def pixel_accuracy(score_top, label):
    """The share of non-void pixels whose highest score is the label (for
    scoring with the caffe tool alone, `caffe test`)."""
    return L.Accuracy(score_top, label, accuracy_param=dict(ignore_label=datasets.VOID))


def sigmoid_loss(score_top, onehot, normalize=False):
    """Per-class sigmoid cross-entropy instead of the softmax (PAMI
    ablation), on one-hot targets; void (255) ignored."""
    return L.SigmoidCrossEntropyLoss(score_top, onehot,
                                     loss_param=dict(normalize=normalize, ignore_label=datasets.VOID))


def onehot_label(label, num_classes):
    """layers.OneHotLabelLayer: the label as one-hot targets (void stays 255)."""
    return L.Python(label, module='layers', layer='OneHotLabelLayer',
                    param_str=str(dict(num_classes=num_classes)))


def sampled_label(label, keep, cell, seed):
    """layers.LossSamplingLayer: the label with each cell x cell patch voided
    with probability 1 - keep (loss sampling, PAMI ablation)."""
    return L.Python(label, module='layers', layer='LossSamplingLayer',
                    param_str=str(dict(keep=keep, cell=cell, seed=seed)))
