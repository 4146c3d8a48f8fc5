"""Assemble a fully convolutional network: inputs -> trunk -> skip head(s).

The skip architecture ("deep jet"): score the stride-32 features; for each
finer skip (pool4, then pool3) upsample the running scores by 2, score the
pool features with a zero-initialised 1x1 layer, crop them into alignment and
sum; finally upsample to the input resolution and crop. Stride 32 has no
skips, 16 adds pool4, 8 adds pool4 and pool3.
"""
import functools

import caffe
from nets import blocks
from nets.blocks import crop
from nets.sources import SEED
from nets.trunks import TRUNK_PARAM, TRUNKS, UPSCORE_KERNEL

SKIPS = {32: (), 16: ('pool4',), 8: ('pool4', 'pool3')}
# All-at-once training scales the skip features so the finer scores start
# small (PAMI sec. 4.3); fixed constants, not learned. The published ones,
# the default of Model.at_once_scales.
AT_ONCE_SCALE = {'pool4': 0.01, 'pool3': 0.0001}
# Late fusion averages the streams' scores.
LATE_FUSION_COEFF = (0.5, 0.5)


def score_streams(n, bottoms, name, num_classes, param, fused_name=None):
    """A class score layer on each stream's bottom ({stream: top}); with two
    streams (late fusion) one score layer per stream, named by stream, and
    their average under `fused_name`."""
    if len(bottoms) == 1:
        (bottom,) = bottoms.values()
        n[name] = blocks.score(bottom, num_classes, param)
        return n[name]
    for stream, bottom in bottoms.items():
        n[name + stream] = blocks.score(bottom, num_classes, param)
    n[fused_name] = blocks.eltwise_sum(*[n[name + s] for s in bottoms], coeff=LATE_FUSION_COEFF)
    return n[fused_name]


def skip_head(n, features, head, stride, crop_to, at_once_scales=None, learned_upsampling=False,
              final_kernel=None):
    """Scores at the input's resolution for one head; returns the score top.
    `features` maps each stream ('' for a single one) to its trunk features;
    `at_once_scales` ({pool: constant}) scales the skips (all-at-once). The
    score layers learn (blocks.LEARNED) in every net, FCN-AlexNet's and
    FCN-32s-fixed's included."""
    s, k = head.suffix, head.num_classes
    # 'score_fused' is the reference name of the late-fusion average.
    top = score_streams(n, {m: f['fc7'] for m, f in features.items()}, 'score_fr' + s, k,
                        blocks.LEARNED, fused_name='score_fused' + s)
    skips = SKIPS[stride]
    for i, pool in enumerate(skips):
        up = 'upscore2' + s if i == 0 else f'upscore_{skips[i - 1]}{s}'
        n[up] = blocks.upsample(top, k, 2, learned=learned_upsampling)
        bottoms = {m: f[pool] for m, f in features.items()}
        if at_once_scales:
            assert len(bottoms) == 1, 'all-at-once scaling is defined for a single stream'
            n[f'scale_{pool}{s}'] = blocks.fixed_scale(bottoms[''], at_once_scales[pool])
            bottoms = {'': n[f'scale_{pool}{s}']}
        scored = score_streams(n, bottoms, f'score_{pool}{s}', k, blocks.LEARNED,
                               fused_name=f'score_{pool}{s}_fused')
        n[f'score_{pool}{s}c'] = crop(scored, n[up])
        n[f'fuse_{pool}{s}'] = top = blocks.eltwise_sum(n[up], n[f'score_{pool}{s}c'])
    final = f'upscore{stride}{s}' if skips else 'upscore' + s
    n[final] = blocks.upsample(top, k, stride, kernel_size=final_kernel, learned=learned_upsampling)
    n[head.score] = crop(n[final], crop_to)
    return n[head.score]


def fcn(model, phase):
    """The NetSpec of `model` for phase 'train', 'val' or 'deploy'."""
    source = model.source
    n = caffe.NetSpec()
    train = phase != 'deploy'
    if train:
        split = source.train_split if phase == 'train' else source.val_split
        tops, layer = source.data_layer(split)
        outputs = layer if len(tops) > 1 else (layer,)
    else:
        tops, layer = source.deploy_input()
        outputs = layer if len(tops) > 1 else (layer,)
    for name, top in zip(tops, outputs):
        n[name] = top

    trunk = TRUNKS[model.trunk]
    trunk_param = blocks.FROZEN if model.fixed_trunk else TRUNK_PARAM.get(model.trunk, blocks.LEARNED)
    if model.trunk_width != 1.0 or model.trunk_filler:  # only the VGG16 trunk scales
        trunk = functools.partial(trunk, width=model.trunk_width, filler=model.trunk_filler)
    if source.fusion == 'late':
        features = {m: trunk(n, n[m], suffix=m, train=train, param=trunk_param) for m in source.inputs}
        crop_to = n[source.inputs[0]]
    else:
        extra = {}
        if source.fusion == 'early':
            if train:  # colour and depth are separate tops of the data layer
                n['data'] = caffe.layers.Concat(*[n[t] for t in source.inputs])
            extra['first_conv'] = 'conv1_1_bgrd'  # a new layer: 4 input channels
        features = {'': trunk(n, n['data'], train=train, param=trunk_param, **extra)}
        crop_to = n['data']

    final_kernel = UPSCORE_KERNEL.get(model.trunk)
    at_once_scales = dict(zip(('pool4', 'pool3'), model.at_once_scales)) if model.at_once else None
    for head in source.heads:
        score = skip_head(n, features, head, model.stride, crop_to, at_once_scales=at_once_scales,
                          learned_upsampling=model.learned_upsampling, final_kernel=final_kernel)
        if train:
            n[head.loss] = loss(n, model, head, score, sample=phase == 'train')
    return n


def loss(n, model, head, score, sample):
    """The head's loss: per-pixel softmax (published), or the PAMI
    ablations: sigmoid cross-entropy, and loss sampling while training
    (the label's stride x stride cells kept with probability
    model.loss_sampling)."""
    label = n[head.label]
    if sample and model.loss_sampling < 1:
        n[head.label + '_sampled'] = label = blocks.sampled_label(
            label, model.loss_sampling, model.stride, SEED)
    if model.loss == 'sigmoid':
        n[head.label + '_onehot'] = onehot = blocks.onehot_label(label, head.num_classes)
        return blocks.sigmoid_loss(score, onehot, normalize=model.normalize_loss)
    return blocks.softmax_loss(score, label, normalize=model.normalize_loss)
