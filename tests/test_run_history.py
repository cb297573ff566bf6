"""RunHistory (``history.jsonl``): what a resumed run keeps, rebuilds and logs again."""

from __future__ import annotations

from pipeline.loggers import RunHistory


def _history(tmp_path) -> RunHistory:
    history = RunHistory(str(tmp_path / "history.jsonl"))
    for stage, epochs in ((1, 3), (2, 2)):
        for epoch in range(epochs):
            history.stage, history.epoch = stage, epoch
            base = 100 * stage + 10 * epoch
            history.append(base, {"train/loss": 1.0, "epoch": epoch})
            history.append(base + 1, {"val/elbo": -2.0, "epoch": epoch})
            history.append(base + 1, {"train/elbo": -3.0, "stage": stage, "epoch": epoch})
    return history


def test_rewind_keeps_the_epochs_a_checkpoint_covers(tmp_path):
    history = _history(tmp_path)
    with open(history.path, "a") as fh:
        fh.write('{"step": 999, "stage": 2, "ep')  # a line torn by a kill
    assert len(history.read()) == 15
    kept = history.rewind(2, 0)
    assert [(r["stage"], r["epoch"]) for r in kept] == [(1, 0)] * 3 + [(1, 1)] * 3 + [
        (1, 2)
    ] * 3 + [(2, 0)] * 3
    assert history.read() == kept  # the file itself is cut back
    assert history.rewind(0, -1) == [] and history.read() == []


def test_a_missing_epoch_end_record_is_rebuilt_from_the_checkpoint_metrics(tmp_path):
    history = _history(tmp_path)
    records = [r for r in history.rewind(1, 2) if not (r["epoch"] == 2 and "stage" in r["metrics"])]
    metrics = {"train/loss": 1.0, "val/elbo": -2.0, "train/elbo": -3.0, "stage": 1.0, "geo/x": 4.0}
    out = history.complete_epoch(records, 1, 2, 121, metrics)
    rebuilt = out[-1]
    assert rebuilt == {
        "step": 121,
        "stage": 1,
        "epoch": 2,
        "online": False,
        "metrics": {"train/elbo": -3.0, "stage": 1.0, "geo/x": 4.0, "epoch": 2.0},
    }
    assert history.read()[-1] == rebuilt
    assert history.complete_epoch(out, 1, 2, 121, metrics) == out  # present: nothing added


def test_every_logging_call_is_a_record_with_its_media(tmp_path):
    """One record per W&B row: media-only calls too (images by file, other media by name), so
    the records count the rows of the W&B run."""
    history = RunHistory(str(tmp_path / "history.jsonl"))
    history.stage, history.epoch, history.online = 1, 0, True
    history.append(5, {"train/elbo": -1.0, "flag": True})
    images = {"reconstructions/stage1": {"paths": ["a.png"], "caption": ["epoch 1"]}}
    history.append(5, {"reconstructions/stage1": object()}, images)
    history.append(5, {"geo/pairs": object(), "geo/line_ratio_median": 0.9})
    records = history.read()
    assert [r["metrics"] for r in records] == [
        {"train/elbo": -1.0},
        {},
        {"geo/line_ratio_median": 0.9},
    ]
    assert records[1]["images"] == images and "other" not in records[1]
    assert records[0]["other"] == ["flag"] and records[2]["other"] == ["geo/pairs"]
    assert all(r["online"] for r in records)
    history.online = False
    history.append(6, {"x": 1.0})
    history.mark_online(2)
    assert [r["online"] for r in history.read()] == [True, True, True, False]
    history.mark_online(4)
    assert all(r["online"] for r in history.read())


def test_tables_and_histograms_are_kept_as_json_and_rebuilt(tmp_path):
    """A ``wandb.Table`` (columns, rows; NumPy scalars as numbers) and a ``wandb.Histogram``
    (counts, bin edges) written by the logger come back equal; a table with cells JSON cannot
    hold is kept by name only."""
    import numpy as np
    import wandb

    from pipeline.loggers import _load_media, _media_file

    rows = [
        [0, np.int64(3), None, True, 0.1 + 0.2, "[1, 2]"],
        [1, 4, 2, False, np.float32(0.5), ""],
    ]
    table = wandb.Table(columns=["k", "a", "b", "same", "ratio", "z"], data=rows)
    spec = _media_file(table, str(tmp_path / "geo" / "pairs"), "step7")
    assert spec == {"type": "table", "path": str(tmp_path / "geo" / "pairs" / "step7.table.json")}
    back = _load_media(spec)
    assert isinstance(back, wandb.Table) and back.columns == table.columns
    assert back.data == [[0, 3, None, True, 0.1 + 0.2, "[1, 2]"], [1, 4, 2, False, 0.5, ""]]

    values = np.random.default_rng(0).normal(size=200)
    hist = wandb.Histogram(values)
    spec = _media_file(hist, str(tmp_path / "h"), "step7")
    assert spec is not None and spec["type"] == "histogram"
    back = _load_media(spec)
    assert isinstance(back, wandb.Histogram)
    assert back.histogram == hist.histogram and back.bins == hist.bins
    assert sum(back.histogram) == values.size and len(back.bins) == 65

    with_image = wandb.Table(columns=["im"], data=[[wandb.Image(np.zeros((2, 2), np.uint8))]])
    assert _media_file(with_image, str(tmp_path / "i"), "step7") is None
    assert _media_file(1.0, str(tmp_path / "x"), "step7") is None
    assert _load_media({"type": "table", "path": str(tmp_path / "missing.json")}) is None

    history = RunHistory(str(tmp_path / "history.jsonl"))
    media = {"geo/pairs": {"type": "table", "path": "p.json"}}
    history.append(3, {"geo/pairs": table, "geo/other": object()}, media=media)
    (record,) = history.read()
    assert record["media"] == media and record["other"] == ["geo/other"]
