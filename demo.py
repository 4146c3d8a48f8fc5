"""Smoke demo: segment a synthetic image with the FCN-8s deploy net (random
weights; the offline mini-reproduction replaces this)."""
import os

import numpy as np

import caffe
import nets
import surgery

caffe.set_mode_cpu()
model = nets.load('voc-fcn8s')
net = caffe.Net(os.path.join(model.folder, 'deploy.prototxt'), caffe.TEST)
surgery.interp(net, [k for k in net.params if k.startswith('upscore')])
image = np.random.RandomState(0).uniform(-50, 50, (1, 3, 150, 201)).astype(np.float32)
net.blobs['data'].reshape(*image.shape)
net.blobs['data'].data[...] = image
net.forward()
print(f'voc-fcn8s: input {image.shape[2:]} -> score {net.blobs["score"].data.shape}')
