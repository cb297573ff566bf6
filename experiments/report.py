"""The report folder of one experiment and its W&B run.

``<out_dir>/<experiment>/`` holds ``report.md`` (tables side by side with the paper's numbers),
``results.json`` (the same numbers and the settings) and PNG figures. Each experiment also logs
one W&B run (``job_type`` = the experiment, grouped by ``ReproduceSettings.wandb_group``) with
the summary numbers, the tables and the figures.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from experiments.common import ReproduceSettings, write_json
from pipeline.loggers import resolve_wandb_mode

__all__ = ["ExperimentReport", "markdown_table"]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; floats are written with two decimals."""

    def cell(v: Any) -> str:
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


class ExperimentReport:
    """Collects the sections, numbers and figures of one experiment, then writes them.

    Args:
        name: the experiment's name (folder and W&B run name).
        settings: the shared settings.
    """

    def __init__(self, name: str, settings: ReproduceSettings) -> None:
        self.name = name
        self.settings = settings
        self.dir = os.path.abspath(os.path.join(settings.out_dir, name))
        os.makedirs(self.dir, exist_ok=True)
        self.sections: list[str] = []
        self.figures: dict[str, str] = {}
        self.tables: dict[str, tuple[list[str], list[list[Any]]]] = {}

    def figure_path(self, stem: str) -> str:
        """Where figure ``stem`` goes (``<dir>/<stem>.png``); registers it for the report."""
        path = os.path.join(self.dir, f"{stem}.png")
        self.figures[stem] = path
        return path

    def add_text(self, text: str) -> None:
        """A Markdown paragraph."""
        self.sections.append(text.strip())

    def add_table(self, key: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """A Markdown table (also logged to W&B as ``<key>``)."""
        self.tables[key] = (list(header), [list(r) for r in rows])
        self.sections.append(markdown_table(header, rows))

    def write(self, results: dict[str, Any], summary: dict[str, float]) -> dict[str, Any]:
        """Write ``report.md``, ``results.json`` and the W&B run; return the results.

        Args:
            results: everything measured (JSON-serializable).
            summary: the headline scalars (W&B summary, ``/``-namespaced keys).
        """
        results = {
            "experiment": self.name,
            "settings": self.settings.record(),
            "summary": summary,
            **results,
            "figures": {k: os.path.basename(v) for k, v in self.figures.items()},
            "report_dir": self.dir,
        }
        write_json(os.path.join(self.dir, "results.json"), results)
        lines = [f"# {self.name}", "", *[s + "\n" for s in self.sections]]
        lines += [f"![{k}]({os.path.basename(v)})\n" for k, v in self.figures.items()]
        with open(os.path.join(self.dir, "report.md"), "w") as f:
            f.write("\n".join(lines))
        results["wandb"] = self._log_wandb(results, summary)
        write_json(os.path.join(self.dir, "results.json"), results)
        return results

    def _log_wandb(self, results: dict[str, Any], summary: dict[str, float]) -> dict[str, Any]:
        mode = resolve_wandb_mode(self.settings.wandb_mode)
        if mode == "disabled":
            return {"mode": "disabled"}
        import wandb

        run = wandb.init(
            project=self.settings.wandb_project,
            name=self.name,
            group=self.settings.wandb_group,
            job_type=self.name,
            dir=self.dir,
            mode=mode,  # type: ignore[arg-type]
            config=results["settings"],
            reinit="finish_previous",
        )
        try:
            log: dict[str, Any] = dict(summary)
            for key, (header, rows) in self.tables.items():
                log[f"table/{key}"] = wandb.Table(
                    columns=header, data=[list(map(str, r)) for r in rows]
                )
            for key, path in self.figures.items():
                if os.path.isfile(path):
                    log[f"figure/{key}"] = wandb.Image(path)
            run.log(log)
            for k, v in summary.items():
                run.summary[k] = v
            return {"mode": mode, "id": run.id, "dir": run.dir, "group": self.settings.wandb_group}
        finally:
            run.finish()
