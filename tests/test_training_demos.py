"""Issue demonstrations: the zoo trains. CIFAR-style ResNet-18 and VGG-11-BN on a synthetic 10-class
task (loss falls), U-Net segmentation of synthetic shapes (IoU >= 0.9), the conv autoencoder denoising
the bundled digits (test MSE >= 3x below the noisy input's)."""
import numpy as np
import pytest

import cnnnative as cn
from cnnnative.train import fit_dense, iou, noisy_digits


@pytest.mark.parametrize("name", ["resnet18", "vgg11_bn"])
def test_cifar_style_classifiers_loss_falls(name):
    x, y, _, _ = cn.data.synthetic_images(n=320, size=32, channels=3, seed=0)
    m = cn.models.get_model(name, num_classes=10, cifar=True, seed=0)
    sess = m.compile((32, 3, 32, 32), mode="train", optimizer=cn.optim.SGD(lr=0.01, momentum=0.9))
    losses = []
    for epoch in range(3):
        for xb, yb in cn.data.DataLoader(x, y, 32, seed=epoch, drop_last=True):
            losses.append(sess.step(xb, yb))
    first, last = np.mean(losses[:3]), np.mean(losses[-3:])
    assert np.isfinite(losses).all()
    assert last < 0.8 * first, (first, last)


@pytest.mark.slow
def test_unet_segments_shapes():
    x, m = cn.data.synthetic_shapes(n=480, size=32, seed=0)
    model = cn.models.unet(in_channels=1, num_classes=1, depth=2, base=16, seed=0)
    opt = cn.optim.AdamW(lr=3e-3, weight_decay=0.0)
    hist, _ = fit_dense(model, x[96:], m[96:], x[:96], m[:96], epochs=8, batch_size=16, optimizer=opt,
                        loss="bce_with_logits", progress=False, log=lambda s: None, metric=iou, metric_name="IoU")
    assert hist[-1]["IoU"] >= 0.9, hist


def test_autoencoder_denoises_digits():
    xn_tr, xc_tr, xn_te, xc_te = noisy_digits(size=28, seed=0)
    noisy = float(np.mean((xn_te - xc_te) ** 2))
    model = cn.models.conv_autoencoder(in_channels=1, base=16, seed=0)
    opt = cn.optim.AdamW(lr=2e-3, weight_decay=0.0)
    hist, _ = fit_dense(model, xn_tr, xc_tr, xn_te, xc_te, epochs=6, batch_size=32, optimizer=opt, loss="mse",
                        progress=False, log=lambda s: None,
                        metric=lambda p, t: float(np.mean((p - t) ** 2)), metric_name="MSE")
    assert hist[-1]["MSE"] * 3 <= noisy, (hist[-1], noisy)
