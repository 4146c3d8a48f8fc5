"""FCN-GoogLeNet, PASCAL VOC, 32s, 21 classes (CVPR Table 1; never released:
final loss only, no final average pooling). Solver: the VGG16 32s settings."""
from nets import VOC, Model

model = Model(VOC(), trunk='googlenet', stride=32, base_lr=1e-10, init=('googlenet',))

if __name__ == '__main__':
    model.write(__file__)
