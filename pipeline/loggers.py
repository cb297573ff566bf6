"""The run's logger (W&B, CSV or none), shared by both stages' Trainers, and the W&B mode."""

from __future__ import annotations

import json
import netrc
import os
import shutil
from collections.abc import Mapping
from typing import Any

__all__ = [
    "RunHistory",
    "finish_logger",
    "has_wandb_credentials",
    "make_logger",
    "resolve_wandb_mode",
]

HISTORY_FILE = "history.jsonl"
#: images logged to W&B, as PNG files (under the run folder)
MEDIA_DIR = "media"


def has_wandb_credentials() -> bool:
    """True when W&B can log online: ``WANDB_API_KEY`` or a netrc entry for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    path = os.environ.get("NETRC", os.path.join(os.path.expanduser("~"), ".netrc"))
    try:
        return netrc.netrc(path).authenticators(host.split(":")[0]) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_wandb_mode(requested: str) -> str:
    """``auto`` -> ``WANDB_MODE`` if set, else ``online`` with credentials, ``offline`` without."""
    if requested != "auto":
        return requested
    env_mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if env_mode in ("online", "offline", "disabled"):
        return env_mode
    if env_mode == "dryrun":
        return "offline"
    return "online" if has_wandb_credentials() else "offline"


class RunHistory:
    """The run's scalar W&B history as JSON lines (``<run folder>/history.jsonl``), written as
    it is logged, so that a resumed run can give W&B its whole history again.

    Each line is one call that logs to W&B (one row of the W&B run):
    ``{"step": s, "stage": t, "epoch": e, "online": o, "metrics": {...}}``, ``s`` on the run's
    step axis (stage 1's steps, then stage 2's plus stage 1's last global step,
    :attr:`step_offset`), ``t`` and ``e`` the stage and 0-based epoch the record belongs to (set
    by ``callbacks.HistoryPosition``), ``o`` whether an online run logged it (:attr:`online`).
    ``metrics`` holds the scalars; images are kept as PNG files (``"images": {key: {"paths":
    [...], "caption": [...]}}``, see ``ResumableWandbLogger.log_image``), ``wandb.Table`` and
    ``wandb.Histogram`` values as JSON files (``"media": {key: {"type": "table" | "histogram",
    "path": ...}}``, see :func:`_media_file`); other values only by name (``"other": [keys]``):
    they cannot be logged again.
    A line is written (and flushed) before the record goes to W&B, so a kill loses at most a
    line being written, which :meth:`read` skips.

    Args:
        path: the JSON-lines file.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.step_offset = 0
        self.stage = 0
        self.epoch = -1
        self.online = False

    def read(self) -> list[dict[str, Any]]:
        """The records in the file (a torn last line is dropped)."""
        if not os.path.isfile(self.path):
            return []
        out = []
        with open(self.path) as fh:
            for line in fh:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict) and "step" in record and "metrics" in record:
                    out.append(record)
        return out

    def rewind(self, stage: int, epoch: float) -> list[dict[str, Any]]:
        """Keep the records up to epoch ``epoch`` of stage ``stage`` (what the checkpoint a run
        resumes from covers; later records are logged again by the resumed training) and
        return them."""
        kept = [r for r in self.read() if (r.get("stage", 0), r.get("epoch", -1)) <= (stage, epoch)]
        self._write_all(kept)
        return kept

    def _write_all(self, records: list[dict[str, Any]]) -> None:
        tmp = f"{self.path}.rewrite.tmp"
        with open(tmp, "w") as fh:
            for record in records:
                fh.write(json.dumps(record) + "\n")
        os.replace(tmp, self.path)

    def complete_epoch(
        self,
        records: list[dict[str, Any]],
        stage: int,
        epoch: int,
        step: int,
        metrics: Mapping[str, float],
    ) -> list[dict[str, Any]]:
        """Add the epoch-end record of ``epoch`` when a kill came between the epoch's checkpoint
        and that record (Lightning logs an epoch's training means after the epoch-end
        callbacks, the checkpoint among them).

        The record is rebuilt from ``metrics``, the epoch's metrics that the checkpoint holds
        (``callbacks.RunInfo``): every key except those of the epoch's other records (the
        per-step and validation records). The epoch-end record is the one that carries
        ``stage`` (``TwoStageVAE`` logs it with its training means).
        """
        own = [r for r in records if (r.get("stage"), r.get("epoch")) == (stage, epoch)]
        if any("stage" in r["metrics"] for r in own) or not metrics:
            return records
        others = {k for r in own for k in r["metrics"]}
        rebuilt = {k: v for k, v in metrics.items() if k not in others}
        rebuilt["epoch"] = float(epoch)
        self.stage, self.epoch = stage, epoch
        return [*records, self.append(step, rebuilt)]

    def append(
        self,
        step: int,
        metrics: Mapping[str, Any],
        images: Mapping[str, Mapping[str, list[Any]]] | None = None,
        media: Mapping[str, Mapping[str, str]] | None = None,
    ) -> dict[str, Any]:
        """Add the record of one logging call and return it: its numbers, its ``images``
        (key -> ``{"paths": [...], <per-image argument>: [...]}``), its tables and histograms
        (``media``: key -> ``{"type": "table" | "histogram", "path": json_file}``) and the
        names of its other values."""
        scalars = {
            k: float(v)
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        record: dict[str, Any] = {
            "step": int(step),
            "stage": self.stage,
            "epoch": self.epoch,
            "online": self.online,
            "metrics": scalars,
        }
        if images:
            record["images"] = {k: dict(v) for k, v in images.items()}
        if media:
            record["media"] = {k: dict(v) for k, v in media.items()}
        kept = {**(images or {}), **(media or {})}
        other = sorted(k for k in metrics if k not in scalars and k not in kept)
        if other:
            record["other"] = other
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
        return record

    def mark_online(self, count: int) -> None:
        """Tag the first ``count`` records ``online`` (they were logged again into an online
        run)."""
        records = self.read()
        for record in records[:count]:
            record["online"] = True
        self._write_all(records)


def _image_file(image: Any, folder: str, name: str) -> str | None:
    """``image`` as a PNG file (a path as is; an ``(H, W[, C])`` uint8 array or a PIL image
    written to ``<folder>/<name>.png``); None for other types."""
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    import numpy as np
    from PIL import Image

    if isinstance(image, np.ndarray) and image.dtype == np.uint8:
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        return None
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{name}.png")
    image.save(path)
    return path


def _json_value(value: Any) -> Any:
    """A NumPy scalar as the Python number it holds (for ``json.dump``); raises ``TypeError``
    for values JSON cannot hold."""
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _media_file(value: Any, folder: str, name: str) -> dict[str, str] | None:
    """A ``wandb.Table`` (its ``columns`` and ``data``) or a ``wandb.Histogram`` (its
    ``histogram`` counts and ``bins`` edges) written to ``<folder>/<name>.<type>.json``, as
    ``{"type": "table" | "histogram", "path": file}``; None for other values and for tables
    whose cells JSON cannot hold (images, ...)."""
    import wandb

    if isinstance(value, wandb.Table):
        kind, content = "table", {"columns": list(value.columns), "data": value.data}
    elif isinstance(value, wandb.Histogram):
        kind, content = "histogram", {"histogram": value.histogram, "bins": value.bins}
    else:
        return None
    try:
        text = json.dumps(content, default=_json_value)
    except (TypeError, ValueError):
        return None
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{name}.{kind}.json")
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)
    return {"type": kind, "path": path}


def _load_media(spec: Mapping[str, str]) -> Any:
    """The ``wandb.Table`` or ``wandb.Histogram`` that :func:`_media_file` wrote; None when its
    file is missing or unreadable."""
    import wandb

    try:
        with open(spec["path"]) as fh:
            content = json.load(fh)
    except (OSError, KeyError, json.JSONDecodeError):
        return None
    if spec.get("type") == "table":
        return wandb.Table(columns=content["columns"], data=content["data"])
    if spec.get("type") == "histogram":
        return wandb.Histogram(np_histogram=(content["histogram"], content["bins"]))
    return None


def _resumable_wandb_logger_class() -> type:
    from pytorch_lightning.loggers import WandbLogger
    from pytorch_lightning.utilities import rank_zero_only

    class ResumableWandbLogger(WandbLogger):
        """``WandbLogger`` on the run's step axis whose every logging call is also a record of a
        :class:`RunHistory`; :meth:`replay` logs records again (into a new offline run file, or
        after W&B's rewind of an online run).

        Images are logged from PNG files: arrays and PIL images are first written to
        ``<media_dir>/<key>/step<s>_<i>.png``, so that a replay can log them again. Tables and
        histograms are kept as ``<media_dir>/<key>/step<s>.<table|histogram>.json``.

        Args:
            history: the run's history file.
            media_dir: the folder for image files.
            **kwargs: ``WandbLogger`` arguments.
        """

        def __init__(self, history: RunHistory, media_dir: str, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.history = history
            self.media_dir = media_dir
            self._images: dict[str, dict[str, list[Any]]] | None = None

        @rank_zero_only
        def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
            if step is not None:
                step = step + self.history.step_offset
                media = {}
                for key, value in metrics.items():
                    folder = os.path.join(self.media_dir, *key.split("/"))
                    spec = _media_file(value, folder, f"step{step}")
                    if spec is not None:
                        media[key] = spec
                self.history.append(step, metrics, self._images, media)
            super().log_metrics(metrics, step)

        @rank_zero_only
        def log_image(
            self, key: str, images: list[Any], step: int | None = None, **kwargs: Any
        ) -> None:
            at = (step or 0) + self.history.step_offset
            folder = os.path.join(self.media_dir, *key.split("/"))
            files = [_image_file(im, folder, f"step{at}_{i}") for i, im in enumerate(images)]
            run_dir = os.path.dirname(os.path.abspath(self.media_dir))
            for i, path in enumerate(files):  # a file outside the run folder may not last
                if path is not None and not os.path.abspath(path).startswith(run_dir + os.sep):
                    files[i] = os.path.join(folder, f"step{at}_{i}.png")
                    os.makedirs(folder, exist_ok=True)
                    shutil.copyfile(path, files[i])
            if any(f is None for f in files):  # a type kept only by name (not replayable)
                super().log_image(key, images, step, **kwargs)
                return
            self._images = {key: {"paths": files, **{k: list(v) for k, v in kwargs.items()}}}
            try:
                super().log_image(key, files, step, **kwargs)
            finally:
                self._images = None

        @rank_zero_only
        def replay(self, records: list[dict[str, Any]]) -> None:
            """Log ``records`` (from :meth:`RunHistory.rewind`) in order, as they were logged:
            their numbers, their images whose files exist and their tables and histograms
            rebuilt from their JSON files (other values cannot be)."""
            import wandb

            for record in records:
                metrics: dict[str, Any] = dict(record["metrics"])
                for key, spec in record.get("images", {}).items():
                    paths = spec.get("paths", [])
                    if paths and all(os.path.isfile(p) for p in paths):
                        extra = [
                            {k: v[i] for k, v in spec.items() if k != "paths"}
                            for i in range(len(paths))
                        ]
                        metrics[key] = [wandb.Image(p, **e) for p, e in zip(paths, extra)]
                for key, spec in record.get("media", {}).items():
                    value = _load_media(spec)
                    if value is not None:
                        metrics[key] = value
                if metrics:
                    WandbLogger.log_metrics(self, metrics, record["step"])

    return ResumableWandbLogger


def make_logger(
    kind: str,
    run_dir: str,
    run_name: str,
    wandb_id: str,
    wandb_mode: str,
    project: str,
    entity: str | None,
    start: Mapping[str, Any] | None = None,
) -> Any:
    """The run's logger, shared by both stages' Trainers (``None`` for no logger).

    W&B: a ``WandbLogger`` under ``<run_dir>/wandb``, online or offline as resolved by
    :func:`resolve_wandb_mode`, that also keeps the run's history in ``<run_dir>/history.jsonl``
    (:class:`RunHistory`) and its images under ``<run_dir>/media``. ``start``: the
    ``wandb.init`` identity arguments (``pipeline.wandb_resume.wandb_start``; default
    ``id=wandb_id, resume="allow"``).
    """
    if kind == "none":
        return None
    if kind == "csv":
        from pytorch_lightning.loggers import CSVLogger

        return CSVLogger(save_dir=run_dir, name="csv", version="")
    if wandb_mode == "disabled":
        os.environ["WANDB_MODE"] = "disabled"
    history = RunHistory(os.path.join(run_dir, HISTORY_FILE))
    history.online = wandb_mode == "online"
    identity = dict(start) if start is not None else {"id": wandb_id, "resume": "allow"}
    return _resumable_wandb_logger_class()(
        history,
        os.path.join(run_dir, MEDIA_DIR),
        name=run_name,
        **identity,
        save_dir=run_dir,
        project=project,
        entity=entity,
        offline=wandb_mode == "offline",
        log_model=False,
    )


def finish_logger(logger: Any, rank_zero: bool) -> None:
    """Close the W&B run of ``logger`` (rank 0), so the next run in this process starts anew."""
    from pytorch_lightning.loggers import WandbLogger

    if isinstance(logger, WandbLogger) and rank_zero:
        import wandb

        if wandb.run is not None:
            wandb.finish()
