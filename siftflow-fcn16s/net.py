"""FCN-16s, SIFT Flow, VGG16, two heads: 33 semantic + 3 geometric classes."""
from nets import Model, SIFTFlow

model = Model(SIFTFlow(), trunk='vgg16', stride=16, base_lr=1e-12, init=('siftflow-fcn32s',))

if __name__ == '__main__':
    model.write(__file__)
