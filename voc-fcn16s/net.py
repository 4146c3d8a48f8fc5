"""FCN-16s, PASCAL VOC, VGG16, 21 classes; staged from FCN-32s."""
from nets import VOC, Model

model = Model(VOC(), trunk='vgg16', stride=16, base_lr=1e-12, init=('voc-fcn32s',))

if __name__ == '__main__':
    model.write(__file__)
