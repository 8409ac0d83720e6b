"""A training run -> a small fp16 model directory, whichever kind of run it is."""

from __future__ import annotations

from pathlib import Path

from amgan_search.checkpoint import CONFIG
from amgan_search.errors import UserError
from amgan_search.io import read_json, writer_lock
from amgan_search.outputs import claim_dir
from amgan_search.train.loop import RUN_CONFIG


def export_run(run_dir: str | Path, out: str | Path, step: int | None = None,
               force: bool = False, best: bool = False) -> dict:
    """Export a run as a model directory; returns its config.json (`kind` says which).

    A classifier run exports its best model; an AMGAN run exports a checkpoint (the latest,
    `step`, or with `best` the one its validation scored best: `train.validation`), so a run
    still in progress can ship a snapshot that records the iterations done; an ADDE run its model
    or the checkpoint of epoch `step`.
    `out` must be new, empty, or (with `force`) a model folder, which is replaced whole except for
    files a model folder does not hold (its MODEL_CARD.md stays); never the run or a folder
    holding it.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run folder")
    where = claim_dir(out, "model", force=force, inputs=[run_dir])
    with writer_lock(where):
        claim_dir(out, "model", force=force, inputs=[run_dir])  # again, now that no one else writes
        config = read_json(run_dir / CONFIG) if (run_dir / CONFIG).is_file() else {}
        trained = read_json(run_dir / RUN_CONFIG) if (run_dir / RUN_CONFIG).is_file() else {}
        if isinstance(trained, dict) and trained.get("trainer") == "adde":
            from amgan_search.train.adde import export_adde

            return export_adde(run_dir, out, step)
        if isinstance(config, dict) and config.get("kind") == "classifier":
            from amgan_search.train.classifier import export_classifier

            return export_classifier(run_dir, out)
        from amgan_search.train.amgan import export_best, export_model

        return export_best(run_dir, out) if best else export_model(run_dir, out, step)
