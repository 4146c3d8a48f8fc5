"""FCN-32s, PASCAL VOC (SBD train, seg11valid), VGG16, 21 classes; from ILSVRC VGG16."""
from nets import VOC, Model

model = Model(VOC(), trunk='vgg16', stride=32, base_lr=1e-10, init=('vgg16',))

if __name__ == '__main__':
    model.write(__file__)
