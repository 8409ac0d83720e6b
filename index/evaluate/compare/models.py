"""The comparison's models (`amgan-search compare`, steps 1-3 of `compare.run`): its
settings, the iteration every method is evaluated at, and the runs trained (resumed) and exported
to it. Training and exports follow runs/compare/drive.sh (TRAIN, CAM_TRAIN), so every method
trains alike and a run the background driver started is resumed, not restarted.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from amgan_search.errors import UserError

# The paper's baselines, then AMGAN and its ablations (train.config.PRESETS).
COMPARED = ("stargan", "ganimation", "sagan", "amgan", "no-dc", "no-perceptual",
            "no-attention-loss", "cam-as-mask")
CAM_RUN, CAM_MODEL, MODELS = "cls-cam", "classifier-cam", "models"
BENCHMARK, EDITS, SETTINGS = "benchmark", "edits", "compare.json"
OWN_NAMES = (BENCHMARK, EDITS, SETTINGS, "comparison.json", "comparison.md", "comparison.png")
KS = (1, 5, 10, 30)
# Which checkpoint of each run is evaluated: the one at the common iteration (the paper's protocol,
# one budget), or the best by the truth's validation at or before it (`train.validation`; our
# choice: a GAN's grades swing from one checkpoint to the next, and a user ships the checkpoint the
# truth picks, never the one a network it trained against would).
PICKS = ("step", "best")
EDIT_ATTRIBUTES = ("color", "sleeve")  # what the generators of the harder setting edit
EDIT_SIZE = 64
# The settings runs/compare/drive.sh trains with: the same widths, seed, data and schedule for all;
# every checkpoint graded by the truth on 32 validation scenes of the evaluation's kind
# (`train.validation`), so each run keeps the checkpoint the truth picks as RUN/best.
TRAIN = {"size": 64, "sample_every": 1000, "ckpt_every": 500, "seed": 0, "workers": 0,
         "threads": 1, "bf16": False, "val_scenes": 32}
CAM_TRAIN = {"role": "cam", "arch": "resnet18", "size": 64, "epochs": 3, "seed": 0, "workers": 0,
             "checkpoint_every": 100}
# What a run's train_config.json records that is this invocation's, not the run's.
NOT_CARRIED = ("out", "db", "resume", "progress", "stop_at", "device", "channels_last",
               "classifier", "iters")


@dataclass
class CompareConfig:
    train_db: str                     # the catalog DB every method and the CAM network train on
    db: str                           # the evaluation catalog DB (its test split gives queries)
    index: str                        # the index of the gallery
    runs: str = "runs/compare"
    out: str = "docs/results/comparison"
    methods: Sequence[str] = COMPARED
    iters: int = 10000
    step: int | None = None           # None: the largest step every method has
    train: bool = True                # False: evaluate only what exists
    pick: str = "step"                # PICKS: the checkpoint at `step`, or the best up to it
    graders: str = ""                 # CNN graders beside cam=RUNS/classifier-cam
    sample: int = 500
    sample_seed: int = 0
    edit_scenes: int = 100
    edit_seed: int = 777
    scene_attributes: Sequence[str] = ("color", "sleeve", "pattern", "neckline")
    workers: int = 0
    device: str | None = None
    progress: bool = True
    # Methods benchmarked beside the trained ones, as they are (no training, no edit grading):
    # a --methods spec of `index.methods` (prototype, adde, a hybrid, ...).
    also: str = ""

    def check(self) -> None:
        if self.also:
            from amgan_search.index.methods import parse_methods

            names = [m.name for m in parse_methods(self.also)]
            clash = next((n for n in names if n in ("real", "oracle", *self.methods)), None)
            if clash:
                raise UserError(f"--also: {clash!r} is already compared; name it otherwise")
        unknown = [m for m in self.methods if m not in COMPARED]
        if unknown or not self.methods:
            raise UserError(f"unknown method {unknown[0]!r}; valid: {', '.join(COMPARED)}"
                            if unknown else "no method to compare")
        dup = next((m for m in self.methods if list(self.methods).count(m) > 1), None)
        if dup:
            raise UserError(f"method {dup!r} appears twice")
        if self.pick not in PICKS:
            raise UserError(f"unknown checkpoint pick {self.pick!r}; valid: {', '.join(PICKS)}")
        if self.step is not None and not 1 <= self.step <= self.iters:
            raise UserError(f"step {self.step} must be between 1 and iters ({self.iters})")


# -- where things are ----------------------------------------------------------------------------

def run_dir(config: CompareConfig, method: str) -> Path:
    return Path(config.runs) / method


def cam_dir(config: CompareConfig) -> Path:
    return Path(config.runs) / CAM_MODEL


def model_dir(config: CompareConfig, method: str, step: int) -> Path:
    return Path(config.runs) / MODELS / f"{method}-{step}"


def needs_cam(method: str) -> bool:
    """Whether the method trains against the CNN+CAM classifier (its config's needs_classifier)."""
    from amgan_search.train.config import AmganConfig

    return AmganConfig(method=method).needs_classifier


# -- which iteration ------------------------------------------------------------------------------

def checkpoint_steps(run: Path) -> set[int]:
    """The iterations of the run's complete checkpoints (`checkpoints/step-N`)."""
    from amgan_search.checkpoint import STATE, WEIGHTS, checkpoint_steps as steps

    return {s for s, p in steps(run / "checkpoints")
            if (p / WEIGHTS).is_file() and (p / STATE).is_file()}


def latest_step(run: Path) -> int:
    """The iteration of the run's latest checkpoint (0: none)."""
    from amgan_search.checkpoint import latest_checkpoint

    path = latest_checkpoint(run)
    return int(path.name[5:]) if path is not None else 0


def exported_step(folder: Path, method: str) -> int | None:
    """The iterations an exported model of `method` in `folder` was trained for, else None."""
    from amgan_search.checkpoint import CONFIG, WEIGHTS

    if not ((folder / CONFIG).is_file() and (folder / WEIGHTS).is_file()):
        return None
    try:
        config = json.loads((folder / CONFIG).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or config.get("method") != method:
        return None
    return config.get("iterations") if isinstance(config.get("iterations"), int) else None


def evaluable_steps(config: CompareConfig, method: str) -> set[int]:
    """Iterations the method can be evaluated at now: a checkpoint or an exported model."""
    steps = checkpoint_steps(run_dir(config, method))
    models = Path(config.runs) / MODELS
    for folder in models.glob(f"{method}-*") if models.is_dir() else ():
        tail = folder.name[len(method) + 1:]
        if tail.isdigit() and exported_step(folder, method) == int(tail):
            steps.add(int(tail))
    return steps


def choose_step(config: CompareConfig, have: dict[str, set[int]], latest: dict[str, int]) -> int:
    """The given step; else the largest every method has; else the smallest one every method has
    or can still train to (latest checkpoint before it); else the planned iterations."""
    if config.step is not None:
        return config.step
    common = set.intersection(*have.values())
    if common:
        return max(common)
    reachable = sorted(s for s in set().union(*have.values()) | {config.iters}
                       if s <= config.iters and all(s in have[m] or latest[m] < s for m in have))
    if not reachable:
        raise UserError(f"{config.runs}: no iteration up to {config.iters} that every method has "
                        "or can still train to")
    return reachable[0]


def lacking(step: int, have: dict[str, set[int]], latest: dict[str, int]) -> tuple[list, list]:
    """(methods that must train to `step`, methods past it whose checkpoint there is gone)."""
    behind = [m for m in have if step not in have[m] and latest[m] < step]
    gone = [m for m in have if step not in have[m] and latest[m] >= step]
    return behind, gone


def plan(config: CompareConfig) -> tuple[int, list[str]]:
    """(the step, the methods to train to it); refuses a step some method cannot reach."""
    have = {m: evaluable_steps(config, m) for m in config.methods}
    latest = {m: latest_step(run_dir(config, m)) for m in config.methods}
    step = choose_step(config, have, latest)
    behind, gone = lacking(step, have, latest)
    if gone:
        raise UserError(f"iteration {step}: " + ", ".join(f"{m} (at {latest[m]})" for m in gone)
                        + f" trained past it and hold no checkpoint or exported model of it "
                        f"under {config.runs} (runs keep their last checkpoints only); compare "
                        "at another iteration")
    if behind and not config.train:
        raise UserError(f"iteration {step}: no checkpoint or exported model for "
                        f"{', '.join(behind)} under {config.runs} (nothing is trained when only "
                        "evaluating what exists)")
    return step, behind


def best_step(config: CompareConfig, method: str, step: int) -> int:
    """The iteration, at or before `step`, of the method's checkpoint the truth's validation scores
    highest (the later on a tie), among those still evaluable."""
    from amgan_search.train.validation import run_validation

    have = evaluable_steps(config, method)
    records, _ = run_validation(run_dir(config, method))
    scored = [(r["score"], r["iter"]) for r in records if r["iter"] <= step and r["iter"] in have]
    if not scored:
        raise UserError(f"{run_dir(config, method)}: no checkpoint up to iteration {step} with a "
                        "validation record and a checkpoint or exported model to evaluate")
    return max(scored)[1]


# -- training and exporting ---------------------------------------------------------------------

def saved_settings(run: Path, config_class) -> dict:
    """The fields of `config_class` a run's train_config.json records, less NOT_CARRIED ({}
    for a new run): a resumed run goes on with the values it began with."""
    import dataclasses

    from amgan_search.io import read_json

    path = run / "train_config.json"
    saved = read_json(path) if path.is_file() else {}
    if not isinstance(saved, dict):
        raise UserError(f"{path}: not a JSON object")
    fields = {f.name for f in dataclasses.fields(config_class)} - set(NOT_CARRIED)
    return {k: v for k, v in saved.items() if k in fields}


def _check_same_run(config: CompareConfig, run: Path) -> None:
    """A run planned for other iterations or trained on another catalog is another comparison's."""
    from amgan_search.io import read_json

    path = run / "train_config.json"
    saved = read_json(path) if path.is_file() else {}
    if "iters" in saved and saved["iters"] != config.iters:
        raise UserError(f"{path}: the run is planned for {saved['iters']} iterations, not "
                        f"{config.iters}")
    if saved.get("db") and Path(saved["db"]).resolve() != Path(config.train_db).resolve():
        raise UserError(f"{path}: the run trains on {saved['db']}, not {config.train_db}")


def ensure_cam(config: CompareConfig, log: Callable[[str], None]) -> Path:
    """The CNN+CAM classifier of the comparison; trained and exported first when missing."""
    from amgan_search.checkpoint import CONFIG, WEIGHTS, latest_checkpoint

    out = cam_dir(config)
    if (out / CONFIG).is_file() and (out / WEIGHTS).is_file():
        return out
    if not config.train:
        raise UserError(f"{out}: no CNN+CAM classifier (nothing is trained when only evaluating "
                        "what exists)")
    from amgan_search.train.classifier import ClassifierConfig, train_classifier
    from amgan_search.train.export import export_run

    run = Path(config.runs) / CAM_RUN
    log(f"compare: training the CNN+CAM classifier in {run}")
    # The run's own db is checked by the trainer on resume (the same string).
    train_classifier(ClassifierConfig(**{
        **CAM_TRAIN, **saved_settings(run, ClassifierConfig), "db": config.train_db,
        "out": str(run), "progress": config.progress,
        "resume": latest_checkpoint(run) is not None}))
    export_run(run, out)
    return out


def train_method(config: CompareConfig, method: str, step: int) -> None:
    """Train (resume) the method's run to `step`, the schedule planned for `iters`."""
    from amgan_search.checkpoint import latest_checkpoint
    from amgan_search.train.amgan import train_amgan
    from amgan_search.train.config import AmganConfig

    run = run_dir(config, method)
    _check_same_run(config, run)
    train_amgan(AmganConfig(**{
        **TRAIN, **saved_settings(run, AmganConfig), "db": config.train_db, "out": str(run),
        "method": method, "iters": config.iters, "stop_at": step,
        "val_scene_attributes": tuple(config.scene_attributes),
        "classifier": str(cam_dir(config)) if needs_cam(method) else None,
        "resume": latest_checkpoint(run) is not None, "progress": config.progress}))


def export_method(config: CompareConfig, method: str, step: int) -> Path:
    """The method's model at `step` (exported from its run's checkpoint unless already there)."""
    from amgan_search.outputs import OutputExists
    from amgan_search.train.export import export_run

    out = model_dir(config, method, step)
    if exported_step(out, method) == step:
        return out
    try:
        export_run(run_dir(config, method), out, step)
    except OutputExists:
        raise UserError(f"{out}: holds a model that is not {method} at iteration {step}; "
                        "move it away") from None
    return out


def prepare_models(config: CompareConfig, step: int, behind: Sequence[str],
                   log: Callable[[str], None]) -> dict[str, int]:
    """The iteration each method is evaluated at (`step`, or its best up to it), its model
    exported there: those there first (a run training on elsewhere removes old checkpoints), then
    the others trained to `step` and exported."""
    picked = {}
    for method in [m for m in config.methods if m not in behind] + list(behind):
        if method in behind:
            log(f"compare: training {method} to iteration {step}")
            train_method(config, method, step)
        picked[method] = step if config.pick == "step" else best_step(config, method, step)
        export_method(config, method, picked[method])
    where = Path(config.runs) / MODELS
    log(f"compare: models at iteration {step} in {where}" if config.pick == "step" else
        f"compare: the truth's best up to iteration {step} in {where}: "
        + ", ".join(f"{m} {s}" for m, s in picked.items()))
    return picked
