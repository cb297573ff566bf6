"""The project uses Lightning through its public API only and never edits ``sys.path``."""

from __future__ import annotations

import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = (
    "benchmarks",
    "callbacks",
    "datamodules",
    "experiments",
    "geometry",
    "lightning_modules",
    "pipeline",
    "scripts",
)

#: reads of Lightning internals that earlier versions of this project made
PRIVATE = re.compile(
    r"\.(fit_loop|epoch_loop|_logger_connector|_data_fetcher|_combined_loader|_results|"
    r"_trainer|_generate_state_key|_current_fx_name)\b"
    r"|from (pytorch_lightning|lightning_fabric)[\w.]*\._\w+ import"
)


def _sources(folders: tuple[str, ...]) -> list[str]:
    out = []
    for folder in folders:
        for root, _, files in os.walk(os.path.join(REPO, folder)):
            out += [os.path.join(root, f) for f in files if f.endswith(".py")]
    return sorted(out)


@pytest.mark.parametrize("path", _sources(PACKAGES), ids=lambda p: os.path.relpath(p, REPO))
def test_no_private_lightning_reads(path):
    with open(path) as fh:
        hits = [f"{i}: {line.strip()}" for i, line in enumerate(fh, 1) if PRIVATE.search(line)]
    assert not hits, hits


def test_nothing_edits_sys_path():
    offenders = []
    for path in _sources((*PACKAGES, "tests")):
        with open(path) as fh:
            if re.search(r"sys\.path\.(insert|append)|sys\.path\s*=", fh.read()):
                offenders.append(os.path.relpath(path, REPO))
    assert offenders == []
