"""A W&B history that survives kills: ``scripts/train.py`` in a subprocess, killed with SIGKILL
at a random point of stage 1 and again of stage 2, then resumed to the end. The offline run
file of the last invocation is read back record by record (``tests.helpers.wandb_records``):
every epoch once, in order, ``_step`` continuous, the same scalars, the same images (pixels
included) and the same tables and histograms (``geo/pairs``, ``geo/line_ratio_hist``: columns,
rows, counts and bin edges) as an uninterrupted run, and the same ``summary.json`` metrics and
final weights. A second test kills the job inside checkpoint writes. Marked slow.

``KILL_SEED`` sets the random kill points (default: a new seed, printed); ``KILL_TRIALS`` runs
more killed runs (default 1); ``WRITE_KILL_HITS`` kills inside a write per stage (default 1).
"""

from __future__ import annotations

import glob
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from pipeline import cli
from tests.helpers.wandb_records import history_rows, wait_for_exit_record

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEBUG = os.path.join(REPO, "configs", "debug.yaml")
EPOCHS = {1: 8, 2: 6}
IGNORED = {"_step", "_runtime", "_timestamp"}


def _argv(root) -> list[str]:
    return [
        "--config",
        DEBUG,
        "--run.root",
        str(root),
        "--run.name",
        "k",
        "--run.progress_bar",
        "log",
        "--run.logger",
        "wandb",
        "--run.wandb_mode",
        "offline",
        "--trainer.stage1.max_epochs",
        str(EPOCHS[1]),
        "--trainer.stage2.max_epochs",
        str(EPOCHS[2]),
        "--run.reconstructions_every_n_epochs",
        "2",
        "--curvature_plots.enabled",
        "false",
    ]


def _history(run_dir: str) -> list[dict]:
    files = glob.glob(os.path.join(run_dir, "wandb", "offline-run-*", "run-*.wandb"))
    assert len(files) == 1, files  # the earlier invocations' files are under superseded/
    return history_rows(wait_for_exit_record(files[0]))


def _image_rows(run_dir: str) -> list[tuple]:
    """(trainer step, key, captions, pixels) of every image row of the run's offline file."""
    import numpy as np
    from PIL import Image

    (folder,) = glob.glob(os.path.join(run_dir, "wandb", "offline-run-*"))
    out = []
    for row in _history(run_dir):
        for key in [k[: -len("/_type")] for k, v in row.items() if v == "images/separated"]:
            pixels = [
                np.asarray(Image.open(os.path.join(folder, "files", name))).tobytes()
                for name in row[f"{key}/filenames"]
            ]
            out.append((row["trainer/global_step"], key, row.get(f"{key}/captions"), pixels))
    return out


def _media_rows(run_dir: str) -> list[tuple]:
    """(trainer step, key, type, content) of every table and histogram of the run's offline
    file: a table's columns and rows (read from the table file W&B wrote into the run's files),
    a histogram's counts and bin edges."""
    (folder,) = glob.glob(os.path.join(run_dir, "wandb", "offline-run-*"))
    out = []
    for row in _history(run_dir):
        for key in sorted(k[: -len("/_type")] for k in row if k.endswith("/_type")):
            kind = row[f"{key}/_type"]
            if kind == "table-file":
                with open(os.path.join(folder, "files", row[f"{key}/path"])) as fh:
                    table = json.load(fh)
                content = (table["columns"], table["data"])
            elif kind == "histogram":
                content = (row[f"{key}/values"], row[f"{key}/bins"])
            else:
                continue
            out.append((row["trainer/global_step"], key, kind, content))
    return out


def _scalar_rows(rows: list[dict]) -> list[dict]:
    """The rows without media, without W&B's own counters and timings; numbers as floats."""
    out = []
    for row in rows:
        if any(k.endswith("/_type") for k in row):
            continue
        out.append(
            {
                k: float(v) if k != "trainer/global_step" else v
                for k, v in row.items()
                if k not in IGNORED and not k.endswith("seconds")
            }
        )
    return out


def _kill_during(stage: int, run_dir: str, argv: list[str], rng: random.Random, log) -> str:
    """Start the job, wait for the stage's checkpoint of a random epoch (not its last), SIGKILL
    it after a random delay; return where it was killed (stage and checkpoint epoch)."""
    proc = subprocess.Popen(
        [sys.executable, os.path.join(REPO, "scripts", "train.py"), *argv],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        # its own W&B service, as for a user's job (not this test process's, which the
        # in-process runs started and whose address W&B put into the environment)
        env={k: v for k, v in os.environ.items() if not k.startswith("WANDB_SERVICE")},
    )
    ckpt = os.path.join(run_dir, "checkpoints", f"stage{stage}", "last.ckpt")
    target = rng.randint(0, EPOCHS[stage] - 2)  # 0-based epoch of the checkpoint to wait for
    deadline = time.monotonic() + 300
    seen = -1
    while seen < target and proc.poll() is None:
        assert time.monotonic() < deadline, f"no checkpoint of epoch {target} within 300 s"
        time.sleep(0.02)
        if os.path.isfile(ckpt):  # replaced atomically: a whole file, old or new
            seen = torch.load(ckpt, weights_only=True)["epoch"]
    time.sleep(rng.uniform(0.0, 0.6))
    finished = proc.poll() is not None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not finished, "the job ended before it could be killed"
    with open(os.path.join(run_dir, "run_state.json")) as fh:
        state = json.load(fh)
    running = [s for s in (1, 2) if state.get(f"stage{s}", {}).get("status") == "running"]
    epochs = {
        s: torch.load(
            os.path.join(run_dir, "checkpoints", f"stage{s}", "last.ckpt"), weights_only=True
        )["epoch"]
        for s in (1, 2)
        if os.path.isfile(os.path.join(run_dir, "checkpoints", f"stage{s}", "last.ckpt"))
    }
    return f"killed in stage {running}, checkpoint epochs (0-based) {epochs}"


def test_wandb_history_survives_kills_in_both_stages(tmp_path, wandb_offline_env, capsys):
    seed = int(os.environ.get("KILL_SEED", time.time_ns() % 2**31))
    trials = int(os.environ.get("KILL_TRIALS", "1"))
    rng = random.Random(seed)
    print(f"KILL_SEED={seed}")

    ref_root = tmp_path / "ref"
    assert cli.main(_argv(ref_root)) == 0
    ref_dir = os.path.join(ref_root, "k")
    ref_rows = _scalar_rows(_history(ref_dir))
    ref_image_rows = _image_rows(ref_dir)
    assert ref_image_rows  # reconstructions every 2 epochs, and at each stage's end
    ref_media_rows = _media_rows(ref_dir)
    for kind in ("table-file", "histogram"):  # geodesic statistics at every epoch end
        steps = [m[0] for m in ref_media_rows if m[2] == kind]
        assert len(steps) == len(set(steps)) == EPOCHS[1] + EPOCHS[2], (kind, steps)
    with open(os.path.join(ref_dir, "history.jsonl")) as fh:  # the stage of each record
        kept = [json.loads(line) for line in fh]
    for stage in (1, 2):
        epochs = [
            r["epoch"] for r in kept if r["stage"] == stage and "geo/pairs" in r.get("media", {})
        ]
        assert epochs == list(range(EPOCHS[stage])), (stage, epochs)
    with open(os.path.join(ref_dir, "summary.json")) as fh:
        ref_summary = json.load(fh)
    capsys.readouterr()

    for trial in range(trials):
        root = tmp_path / f"killed{trial}"
        run_dir = os.path.join(root, "k")
        argv = _argv(root)
        with open(tmp_path / f"log{trial}.txt", "w") as log:
            where = [_kill_during(s, run_dir, argv, rng, log) for s in (1, 2)]
        print(f"trial {trial}: " + "; ".join(where))
        assert cli.main(argv) == 0  # the same command resumes and finishes

        rows = _history(run_dir)
        assert [r["_step"] for r in rows] == list(range(len(rows)))  # continuous _step
        scalars = _scalar_rows(rows)
        steps = [r["trainer/global_step"] for r in scalars]
        assert steps == sorted(steps)  # one step axis over both stages
        for stage in (1, 2):
            epochs = [r["epoch"] for r in scalars if r.get("stage") == stage and "train/elbo" in r]
            assert epochs == list(range(EPOCHS[stage])), (stage, epochs)
        val_epochs = [r["epoch"] for r in scalars if "val/elbo" in r]
        assert val_epochs == list(range(EPOCHS[1])) + list(range(EPOCHS[2]))
        diffs = [
            (i, sorted(set(a) ^ set(b)), {k: (a[k], b[k]) for k in set(a) & set(b) if a[k] != b[k]})
            for i, (a, b) in enumerate(zip(scalars, ref_rows))
            if a != b
        ]
        assert len(scalars) == len(ref_rows) and not diffs, diffs[:3]  # the very same records
        images, ref_images = _image_rows(run_dir), ref_image_rows
        assert [i[:3] for i in images] == [i[:3] for i in ref_images]  # the same image rows
        assert images == ref_images  # and the same pixels
        media = _media_rows(run_dir)
        assert [m[:3] for m in media] == [m[:3] for m in ref_media_rows]  # tables, histograms
        assert media == ref_media_rows  # with the same columns, rows, counts and bins

        with open(os.path.join(run_dir, "summary.json")) as fh:
            summary = json.load(fh)
        for stage in ("stage1", "stage2"):
            assert summary[stage]["status"] == "done"
            got, ref_metrics = summary[stage]["metrics"], ref_summary[stage]["metrics"]
            untimed = [k for k in ref_metrics if not k.endswith("seconds")]
            assert got.keys() == ref_metrics.keys() and untimed
            assert all(got[k] == ref_metrics[k] for k in untimed), stage
            ckpt = torch.load(summary["checkpoints"][stage], weights_only=True)["state_dict"]
            ref = torch.load(ref_summary["checkpoints"][stage], weights_only=True)["state_dict"]
            assert all(torch.equal(ckpt[k], ref[k]) for k in ref), stage
        with open(os.path.join(run_dir, "run_state.json")) as fh:
            invocations = json.load(fh)["invocations"]
        assert len(invocations) == 3
        assert summary["wall_seconds"] == pytest.approx(sum(i["wall_seconds"] for i in invocations))
        assert all(i["wall_seconds"] > 0 for i in invocations)  # killed attempts counted
        assert glob.glob(os.path.join(run_dir, "checkpoints", "stage*", ".*.tmp")) == []


# ---------------------------------------------------------------- kills during checkpoint writes
def _temporaries(folder: str) -> list[str]:
    """The atomic save's temporary files (``callbacks.checkpointing.AtomicCheckpointIO``)."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(".last.ckpt.") and n.endswith(".tmp"))


def _kill_in_write(stage: int, write: int, run_dir: str, argv: list[str], log) -> bool:
    """Start the job and SIGKILL it as soon as the temporary file of the stage's ``write``-th
    checkpoint write appears; return whether the kill landed before that write ended (its
    temporary file is still there once the process is dead)."""
    proc = subprocess.Popen(
        [sys.executable, os.path.join(REPO, "scripts", "train.py"), *argv],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if not k.startswith("WANDB_SERVICE")},
    )
    folder = os.path.join(run_dir, "checkpoints", f"stage{stage}")
    seen: set[str] = set()
    deadline = time.monotonic() + 300
    while len(seen) < write:
        assert proc.poll() is None, "the job ended before the write it was to be killed in"
        assert time.monotonic() < deadline, "no such checkpoint write within 300 s"
        seen.update(_temporaries(folder))  # each write has its own temporary name
        if len(seen) < write:
            time.sleep(0.0002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return bool(_temporaries(folder))


def test_kill_during_a_checkpoint_write(tmp_path, wandb_offline_env, capsys):
    """SIGKILL while ``last.ckpt`` is being written (its temporary file exists), in stage 1 and
    in stage 2: the previous checkpoint stays whole, the next start removes the temporary file,
    and the resumed run ends with the weights, metrics and W&B records of an uninterrupted run.

    ``WRITE_KILL_HITS`` (default 1) kills per stage that must land inside a write; kills that
    land after the write finished are counted, resumed and checked too, up to 6 per stage.
    ``KILL_SEED`` picks which write of the stage is hit.
    """
    seed = int(os.environ.get("KILL_SEED", time.time_ns() % 2**31))
    hits_wanted = int(os.environ.get("WRITE_KILL_HITS", "1"))
    rng = random.Random(seed)
    print(f"KILL_SEED={seed}")

    def argv_of(root) -> list[str]:
        return [*_argv(root), "--geodesic_stats.enabled", "false"]

    ref_root = tmp_path / "ref"
    assert cli.main(argv_of(ref_root)) == 0
    ref_dir = os.path.join(ref_root, "k")
    ref_rows = _scalar_rows(_history(ref_dir))
    with open(os.path.join(ref_dir, "summary.json")) as fh:
        ref_summary = json.load(fh)
    capsys.readouterr()

    counts = {1: [0, 0], 2: [0, 0]}  # stage: [kills inside a write, kills]
    lines = []
    for stage in (1, 2):
        while counts[stage][0] < hits_wanted:
            assert counts[stage][1] < 6, f"stage {stage}: no kill landed inside a write: {counts}"
            trial = sum(c[1] for c in counts.values())
            root = tmp_path / f"write{trial}"
            run_dir = os.path.join(root, "k")
            argv = argv_of(root)
            write = rng.randint(1, EPOCHS[stage] - 1)  # one write per epoch end (debug config)
            with open(tmp_path / f"write_log{trial}.txt", "w") as log:
                hit = _kill_in_write(stage, write, run_dir, argv, log)
            counts[stage][0] += hit
            counts[stage][1] += 1
            folder = os.path.join(run_dir, "checkpoints", f"stage{stage}")
            last = os.path.join(folder, "last.ckpt")
            # inside the write: the previous write's checkpoint (none before the first) is whole
            expected_epoch = write - 2 if hit else write - 1
            if expected_epoch < 0:
                assert not os.path.exists(last)
            else:
                assert torch.load(last, weights_only=True)["epoch"] == expected_epoch
            stale = [os.path.join(folder, n) for n in _temporaries(folder)]
            lines.append(f"stage {stage}, write {write}: {'inside' if hit else 'after'} the write")

            assert cli.main(argv) == 0  # the same command resumes and finishes
            out = capsys.readouterr().out
            assert _temporaries(folder) == []
            for path in stale:
                assert f"note: removed {path}" in out
            with open(os.path.join(run_dir, "summary.json")) as fh:
                summary = json.load(fh)
            for s in ("stage1", "stage2"):
                got = torch.load(summary["checkpoints"][s], weights_only=True)["state_dict"]
                ref = torch.load(ref_summary["checkpoints"][s], weights_only=True)["state_dict"]
                assert got.keys() == ref.keys()
                assert all(torch.equal(got[k], ref[k]) for k in ref), s
                untimed = [k for k in ref_summary[s]["metrics"] if not k.endswith("seconds")]
                assert {k: summary[s]["metrics"][k] for k in untimed} == {
                    k: ref_summary[s]["metrics"][k] for k in untimed
                }
            assert _scalar_rows(_history(run_dir)) == ref_rows
    print(*lines, sep="\n")
    print(f"kills inside a checkpoint write / kills: stage 1 {counts[1]}, stage 2 {counts[2]}")
