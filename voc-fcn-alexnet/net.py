"""FCN-AlexNet, PASCAL VOC, CaffeNet trunk, 32s, 21 classes; normalized loss,
momentum 0.9 with 20 images accumulated per update."""
from nets import VOC, Model

model = Model(VOC(), trunk='caffenet', stride=32, base_lr=1e-4, init=('caffenet',),
              normalize_loss=True, momentum=0.9, iter_size=20)

if __name__ == '__main__':
    model.write(__file__)
