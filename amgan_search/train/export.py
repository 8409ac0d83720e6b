"""A training run -> a small fp16 model directory, whichever kind of run it is."""

from __future__ import annotations

from pathlib import Path

from amgan_search.checkpoint import CONFIG
from amgan_search.io import read_json


def export_run(run_dir: str | Path, out: str | Path, step: int | None = None) -> dict:
    """Export a run as a model directory; returns its config.json (`kind` says which).

    A classifier run exports its best model; an AMGAN run exports a checkpoint (the latest, or
    `step`), so a run still in progress can ship a snapshot that records the iterations done.
    """
    run_dir = Path(run_dir)
    if (run_dir / CONFIG).is_file() and read_json(run_dir / CONFIG).get("kind") == "classifier":
        from amgan_search.train.classifier import export_classifier

        return export_classifier(run_dir, out)
    from amgan_search.train.amgan import export_model

    return export_model(run_dir, out, step)
