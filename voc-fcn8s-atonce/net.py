"""FCN-8s all-at-once, PASCAL VOC, VGG16, 21 classes; from ILSVRC VGG16 in one go
(pool4 and pool3 scaled by 0.01 and 0.0001), for 75 x 4,000 iterations."""
from nets import VOC, Model

model = Model(VOC(), trunk='vgg16', stride=8, base_lr=1e-10, init=('vgg16',), at_once=True,
              max_iter=75 * 4000)

if __name__ == '__main__':
    model.write(__file__)
