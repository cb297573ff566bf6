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
