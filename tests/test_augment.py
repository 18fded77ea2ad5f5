import numpy as np
import pytest

from cnnnative import data


def _batch(n=6, c=2, h=9, w=11, seed=0):
    return np.random.default_rng(seed).random((n, c, h, w), dtype=np.float32)


ALL = [data.RandomFlip(1.0), data.RandomTranslate(2), data.RandomRotation(15), data.GaussianNoise(0.1),
       data.BrightnessContrast(0.3, 0.3), data.GaussianBlur((0.5, 1.5), 5), data.default_augment(flip=True)]


@pytest.mark.parametrize("t", ALL, ids=lambda t: type(t).__name__)
def test_shapes_dtype_seeded_and_changes(t):
    x = _batch()
    a = t(x, np.random.default_rng(1))
    b = t(x, np.random.default_rng(1))
    assert a.shape == x.shape and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, x)
    np.testing.assert_array_equal(x, _batch())  # input untouched


def test_flip_is_exact_mirror():
    x = _batch()
    np.testing.assert_array_equal(data.RandomFlip(1.0)(x, np.random.default_rng(0)), x[..., ::-1])
    np.testing.assert_array_equal(data.RandomFlip(0.0)(x, np.random.default_rng(0)), x)
    np.testing.assert_array_equal(data.RandomFlip(1.0, vertical=True)(x, np.random.default_rng(0)), x[:, :, ::-1])


def test_translate_moves_pixels_and_zero_fills():
    x = np.zeros((50, 1, 7, 7), np.float32)
    x[:, 0, 3, 3] = 1
    y = data.RandomTranslate(2)(x, np.random.default_rng(0))
    assert np.all(y.sum(axis=(1, 2, 3)) == 1)  # the dot moves, never falls off within 2 px
    pos = np.argwhere(y[:, 0] == 1)[:, 1:]
    assert np.abs(pos - 3).max() <= 2 and len({tuple(p) for p in pos}) > 5
    z = data.RandomTranslate(3)(np.ones((20, 1, 5, 5), np.float32), np.random.default_rng(1))
    assert (z == 0).any()  # shifted-in border is zero


def test_rotation_exact_angles():
    x = _batch(h=9, w=9)
    np.testing.assert_allclose(data.RandomRotation(0)(x, np.random.default_rng(0)), x, atol=1e-6)
    r90 = data.RandomRotation((90, 90))(x, np.random.default_rng(0))
    np.testing.assert_allclose(r90, np.rot90(x, k=-1, axes=(2, 3)), atol=1e-5)
    r180 = data.RandomRotation((180, 180))(x, np.random.default_rng(0))
    np.testing.assert_allclose(r180, x[:, :, ::-1, ::-1], atol=1e-5)


def test_noise_statistics():
    x = np.zeros((200, 1, 16, 16), np.float32)
    y = data.GaussianNoise(0.5)(x, np.random.default_rng(0))
    assert abs(float(y.std()) - 0.5) < 0.01 and abs(float(y.mean())) < 0.01


def test_brightness_contrast_is_affine_per_sample():
    x = _batch(n=4)
    y = data.BrightnessContrast(0.5, 0.5)(x, np.random.default_rng(0))
    for i in range(4):
        a, b = np.polyfit(x[i].ravel(), y[i].ravel(), 1)
        np.testing.assert_allclose(np.polyval([a, b], x[i].ravel()), y[i].ravel(), atol=1e-5)
        assert 0.5 <= a <= 1.5


def test_blur_preserves_constant_interior_and_smooths():
    x = np.ones((3, 1, 12, 12), np.float32)
    y = data.GaussianBlur((1.0, 1.0), 5)(x, np.random.default_rng(0))
    np.testing.assert_allclose(y[:, :, 2:-2, 2:-2], 1, rtol=1e-6)
    z = _batch(n=3, c=1, h=12, w=12)
    assert data.GaussianBlur((1.0, 1.0), 5)(z, np.random.default_rng(0))[:, :, 2:-2, 2:-2].std() < z.std()


def test_loader_applies_transform_per_batch_seeded():
    x = _batch(n=10)
    y = np.arange(10)
    mk = lambda: data.DataLoader(x, y, 5, seed=3, transform=data.GaussianNoise(0.1))
    a = [b[0] for b in mk()]
    b = [b[0] for b in mk()]
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    flat = np.concatenate([xb for xb, _ in data.DataLoader(x, y, 5, shuffle=False)])
    np.testing.assert_array_equal(flat, x)


def test_bad_batch_rank():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        data.RandomFlip()(np.zeros((3, 4), np.float32), np.random.default_rng(0))
