import pickle

import numpy as np
import pytest
import torch

from pgcore import data as data_mod
from pgcore.config import DataConfig


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.2, 0.5, 1.0])
def test_label_noise_hits_fraction_and_never_keeps_true_label(fraction):
    y = torch.arange(1000) % 10
    noisy_y, is_noisy = data_mod.apply_label_noise(y, fraction, 10, seed=3)
    assert int(is_noisy.sum()) == round(fraction * 1000)
    assert torch.all(noisy_y[is_noisy] != y[is_noisy])
    assert torch.equal(noisy_y[~is_noisy], y[~is_noisy])
    assert noisy_y.min() >= 0 and noisy_y.max() < 10
    again, again_idx = data_mod.apply_label_noise(y, fraction, 10, seed=3)
    assert torch.equal(again, noisy_y) and torch.equal(again_idx, is_noisy)


def test_noisy_labels_spread_over_all_other_classes():
    y = torch.zeros(5000, dtype=torch.long)
    noisy_y, is_noisy = data_mod.apply_label_noise(y, 1.0, 10, seed=0)
    counts = torch.bincount(noisy_y, minlength=10)
    assert counts[0] == 0 and torch.all(counts[1:] > 400)


def test_mnist1d_standard_split_and_split_flags():
    d = data_mod.load(DataConfig(name="mnist1d", val_fraction=0.1, noisy_fraction=0.2), "cpu")
    assert d.input_shape == (40,)
    assert (len(d.y_train), len(d.y_val), len(d.y_test)) == (3600, 400, 1000)
    assert int(d.noisy.sum()) == 720
    assert torch.all(d.y_train[d.noisy] != d.y_train_clean[d.noisy])
    # The generator does not disturb the caller's NumPy RNG.
    np.random.seed(5)
    a = np.random.rand()
    np.random.seed(5)
    data_mod.make_mnist1d(200)
    assert np.random.rand() == a


def _write_tiny_cifar10(root, n_per_batch=4):
    """The real `cifar-10-batches-py` layout: pickled dicts of uint8 rows (R, G, B planes)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n_per_batch).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"data": x, "labels": labels, "batch_label": name}, f)
        batches[name] = (x, labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)
    return batches


def test_cifar10_loader_reads_real_pickle_format(tmp_path, monkeypatch):
    batches = _write_tiny_cifar10(tmp_path)
    # The tiny files cannot match torchvision's md5 sums of the real archive; everything
    # else is torchvision's own reading code.
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda path, md5=None: __import__("os").path.exists(path))
    d = data_mod.load(DataConfig(name="cifar10", data_dir=str(tmp_path)), "cpu")
    assert d.input_shape == (3, 32, 32)
    assert len(d.y_train) == 20 and len(d.y_test) == 4 and d.augment
    x0, labels0 = batches["data_batch_1"]
    assert d.y_train[:4].tolist() == labels0
    mean, std = data_mod._STATS["cifar10"]
    # Pixel (0, 0) of the green plane is byte 1024 of the row.
    expected = (x0[0, 1024] / 255 - mean[1]) / std[1]
    assert d.x_train[0, 1, 0, 0].item() == pytest.approx(expected, abs=1e-5)
    xt, lt = batches["test_batch"]
    assert d.y_test.tolist() == lt


def test_missing_data_dir_names_directory_and_fix(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(data_mod.DataNotFoundError, match="nowhere.*pgcore download cifar10"):
        data_mod.load(DataConfig(name="cifar10", data_dir=str(missing)), "cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(data_mod.DataNotFoundError, match="empty.*pgcore download svhn"):
        data_mod.load(DataConfig(name="svhn", data_dir=str(tmp_path / "empty")), "cpu")


def test_batch_augmentation_is_a_crop_of_the_padded_image():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8) + 1
    dy, dx, flip = data_mod.augmentation_draws(2, 2, g, pad=2)
    out = data_mod.crop_flip(x, dy, dx, flip, pad=2)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        found = any(torch.equal(out[i], cand) or torch.equal(out[i], cand.flip(-1))
                    for dy in range(5) for dx in range(5) for cand in [padded[i, :, dy:dy + 8, dx:dx + 8]])
        assert found


def test_epoch_draws_match_batch_by_batch_augmentation():
    """The training loop draws an epoch's crops and flips at once; the generator must be
    consumed exactly as augmenting batch by batch would, so results do not change."""
    x = torch.randn(37, 3, 8, 8)
    g = torch.Generator().manual_seed(5)
    expected = []
    for i in range(0, 37, 10):
        batch = x[i:i + 10]
        expected.append(data_mod.crop_flip(batch, *data_mod.augmentation_draws(len(batch), len(batch), g)))
    after_batches = torch.rand(1, generator=g)
    g = torch.Generator().manual_seed(5)
    dy, dx, flip = data_mod.augmentation_draws(37, 10, g)
    assert torch.equal(data_mod.crop_flip(x, dy, dx, flip), torch.cat(expected))
    assert torch.equal(torch.rand(1, generator=g), after_batches)
    assert flip.any() and not flip.all() and len(dy.unique()) > 1


def test_mnist1d_cache_is_used_only_with_the_recorded_checksum(tmp_path, monkeypatch):
    """The published MNIST-1D (5,000 samples, seed 42) is cached and read back only while its arrays have the
    sha256 recorded in the code: shifted labels with a recomputed checksum beside them are not used; arguments
    without a recorded checksum are generated at every load and never cached."""
    import numpy as np

    monkeypatch.setenv("PGCORE_CACHE", str(tmp_path))
    first = data_mod.make_mnist1d(5000, 42)
    (cached,) = tmp_path.glob("mnist1d-*-n5000-s42.npz")
    assert data_mod._digest(first) in {d for known in data_mod.MNIST1D_SHA256.values() for d in known}
    with np.load(cached) as f:
        stored = {k: f[k] for k in f.files}
    stored["y"] = (stored["y"] + 1) % 10  # shifted labels, a checksum recomputed for them
    np.savez(cached, sha256=data_mod._digest(stored), **stored)
    again = data_mod.make_mnist1d(5000, 42)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    d = data_mod.load(DataConfig(name="mnist1d", val_fraction=0.1), "cpu")
    assert d.digest == data_mod._digest(first) == data_mod.source_digest(DataConfig(name="mnist1d"))
    other = data_mod.make_mnist1d(600, 8)
    assert not list(tmp_path.glob("mnist1d-*-n600-*")) and len(other["y"]) == 480


def test_a_fifo_in_the_cache_is_not_read(tmp_path, monkeypatch):
    import os

    monkeypatch.setenv("PGCORE_CACHE", str(tmp_path))
    key = next(iter(data_mod.MNIST1D_SHA256))
    os.mkfifo(tmp_path / f"mnist1d-{key[0]}-n5000-s42.npz")
    assert len(data_mod.make_mnist1d(5000, 42)["y"]) == 4000  # a read would block forever