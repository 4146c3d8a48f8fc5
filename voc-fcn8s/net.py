"""FCN-8s, PASCAL VOC, VGG16, 21 classes; staged from FCN-16s."""
from nets import VOC, Model

model = Model(VOC(), trunk='vgg16', stride=8, base_lr=1e-14, init=('voc-fcn16s',))

if __name__ == '__main__':
    model.write(__file__)
