"""`amgan-search compare`: the paper's whole comparison, from training runs to one report.

1. the CAM classifier the AMGAN family trains against (`RUNS/cls-cam`, exported to
   `RUNS/classifier-cam`), when missing;
2. every method's run `RUNS/<method>` trained (resumed) to the common iteration `step`: a run
   that exists goes on with the settings its train_config.json records, a new one starts with
   those of runs/compare/drive.sh (TRAIN, CAM_TRAIN), so every method trains alike;
3. each run's checkpoint at `step` (`--checkpoint best`: the one the truth's validation scores
   best up to it) exported to `RUNS/models/<method>-<iteration>` (runs keep only their last
   checkpoints, so an exported model is what keeps an iteration evaluable);
4. the benchmark (`evaluate.benchmark`, resumable) of real, every method and oracle into
   OUT/benchmark;
5. each generator's edits against the renderer's truth into OUT/edits/<method>.jsonl (kept when
   its OUT/edits/<method>.json says the same settings);
6. the report (`evaluate.table`): OUT/comparison.json, .md and .png.
OUT/compare.json records the step, the data and the models, so a rerun never mixes the benchmark
records of one iteration with another's.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from amgan_search.errors import UserError
from amgan_search.io import as_named

from amgan_search.index.evaluate.compare.models import (BENCHMARK, CAM_MODEL, CAM_RUN, CAM_TRAIN,
                                               EDIT_ATTRIBUTES, EDIT_SIZE, EDITS, KS, SETTINGS,
                                               TRAIN, CompareConfig, cam_dir, ensure_cam,
                                               model_dir, needs_cam, plan, prepare_models)

# -- evaluating -----------------------------------------------------------------------------------

def grader_spec(config: CompareConfig) -> str:
    """cam=RUNS/classifier-cam and the graders the user adds (a `cam` of theirs replaces it)."""
    from amgan_search.registry import parse_graders

    extra = parse_graders(config.graders)
    pairs = ([] if any(n == "cam" for n, _ in extra) else [("cam", str(cam_dir(config)))]) + extra
    return ",".join(path if name == path else f"{name}={path}" for name, path in pairs)


def settings(config: CompareConfig, step: int, spec: str, picked: dict[str, int]) -> dict:
    """What OUT/compare.json records: the step, the pick, the data, the graders and the models
    (`picked`: each method's iteration; {} before they are known), paths as the user gave them."""
    return {"step": step, "pick": config.pick, "db": str(config.db), "index": str(config.index),
            **({"also": config.also} if config.also else {}),
            "sample": config.sample, "sample_seed": config.sample_seed, "graders": spec,
            "models": {m: str(model_dir(config, m, s)) for m, s in picked.items()}}


def check_settings(config: CompareConfig, now: dict) -> dict:
    """OUT/compare.json merged with `now`: the same step, data and graders as before, or refuse
    (the benchmark records there would mix two runs); methods may be added."""
    from amgan_search.io import read_json

    path = Path(config.out) / SETTINGS
    old = read_json(path) if path.is_file() else {}
    for key, value in now.items():
        if key != "models" and key in old and _named(key, old[key]) != _named(key, value):
            raise UserError(f"{path}: holds a comparison with another {key} ({old[key]!r}, now "
                            f"{value!r}); choose another output folder")
    changed = [m for m, p in now["models"].items()
               if as_named(old.get("models", {}).get(m, p)) != as_named(p)]
    if changed:
        raise UserError(f"{path}: holds a comparison with other models of {', '.join(changed)}; "
                        "choose another output folder")
    return {**now, "models": {**old.get("models", {}), **now["models"]}}


def _named(key: str, value):
    """A compare.json value as what it names (`io.as_named`; a graders spec grader by grader)."""
    from amgan_search.registry import parse_graders

    return as_named(parse_graders(value) if key == "graders" else value)


def _same(old: dict, now: dict) -> bool:
    """Whether two records of settings name the same things (`_named`, key by key)."""
    return old.keys() == now.keys() and all(_named(k, old[k]) == _named(k, now[k]) for k in now)


def benchmark(config: CompareConfig, models: dict[str, Path], spec: str) -> Path:
    """real, every method and oracle over the sampled test queries (resumes OUT/benchmark)."""
    from amgan_search.index.evaluate.benchmark import QUERIES, BenchmarkConfig, run_benchmark
    from amgan_search.index.methods import parse_methods

    out = Path(config.out) / BENCHMARK
    also = parse_methods(config.also) if config.also else []
    methods = parse_methods(["real", *(f"{m}={p}" for m, p in models.items()), "oracle"]) + also
    run_benchmark(BenchmarkConfig(
        db=config.db, index=config.index, out=str(out), methods=methods, ks=list(KS),
        sample=config.sample, sample_seed=config.sample_seed, graders=spec,
        edit_attributes=list(EDIT_ATTRIBUTES), workers=config.workers, device=config.device,
        progress=config.progress))
    return out / QUERIES


def edit_settings(config: CompareConfig, model: Path, spec: str) -> dict:
    return {"model": str(model), "n": config.edit_scenes, "seed": config.edit_seed,
            "size": EDIT_SIZE, "scene_attributes": list(config.scene_attributes), "graders": spec}


def edits(config: CompareConfig, models: dict[str, Path], spec: str,
          log: Callable[[str], None]) -> dict[str, list[dict]]:
    """Each generator's edit records, computed unless OUT/edits holds them for these settings."""
    from amgan_search.io import jsonl_exists, read_json, read_jsonl, write_json, write_jsonl

    folder, out, graders = Path(config.out) / EDITS, {}, None
    for method, model in models.items():
        records, meta = folder / f"{method}.jsonl", folder / f"{method}.json"
        wanted = edit_settings(config, model, spec)
        if jsonl_exists(records) and meta.is_file() and _same(read_json(meta), wanted):
            out[method] = read_jsonl(records)
            continue
        log(f"compare: edits of {method} on {config.edit_scenes} scenes")
        graders = graders if graders is not None else _load_graders(spec, config.device)
        out[method] = _evaluate_edits(config, model, graders)
        write_jsonl(records, out[method])
        write_json(meta, wanted)  # last: records without it are computed again
    return out


def _load_graders(spec: str, device: str | None) -> dict:
    from amgan_search.device import pick_device
    from amgan_search.registry import load_graders

    return load_graders(spec, pick_device(device))


def _evaluate_edits(config: CompareConfig, model: Path, graders: dict) -> list[dict]:
    from amgan_search.device import pick_device
    from amgan_search.metrics.edits import evaluate_edits
    from amgan_search.registry import load_model

    manipulator = load_model(model, "editor", pick_device(config.device))
    return evaluate_edits(manipulator, graders, n=config.edit_scenes, seed=config.edit_seed,
                          size=EDIT_SIZE, scene_attributes=list(config.scene_attributes),
                          progress=config.progress)["records"]


# -- the report -----------------------------------------------------------------------------------

def commands(config: CompareConfig, step: int, picked: dict[str, int]) -> list[str]:
    """This comparison's command line, and the training and export commands it stands for."""
    runs, q = Path(config.runs), shlex.quote
    lines = [compare_command(config, step)]
    lines.append(f"amgan-search train classifier --db {q(config.train_db)} --out {runs / CAM_RUN} "
                 + _flags(CAM_TRAIN))
    lines.append(f"amgan-search train export {runs / CAM_RUN} --out {runs / CAM_MODEL}")
    for m in config.methods:
        cam = f" --classifier {runs / CAM_MODEL}" if needs_cam(m) else ""
        lines.append(f"amgan-search train amgan --db {q(config.train_db)} --out {runs / m} "
                     f"--method {m} --iters {config.iters} --stop-at {step} {_flags(TRAIN)}"
                     f" --val-scene-attributes {','.join(config.scene_attributes)}{cam} [--resume]")
        lines.append(f"amgan-search train export {runs / m} --out "
                     f"{model_dir(config, m, picked[m])} --step {picked[m]}")
    return lines


def _flags(values: dict) -> str:
    """{"ckpt_every": 500, "bf16": False} -> "--ckpt-every 500 --no-bf16"."""
    def flag(key, value):
        name = key.replace("_", "-")
        if isinstance(value, bool):
            return f"--{name}" if value else f"--no-{name}"
        return f"--{name} {value}"

    return " ".join(flag(k, v) for k, v in values.items())


def compare_command(config: CompareConfig, step: int) -> str:
    """The command line that repeats this comparison (at its step, whatever chose it)."""
    options = {"--train-db": config.train_db, "--db": config.db, "--index": config.index,
               "--runs": config.runs, "--out": config.out, "--methods": ",".join(config.methods),
               "--iters": config.iters, "--step": step, "--checkpoint": config.pick,
               "--graders": config.graders, "--also": config.also,
               "--sample": config.sample, "--sample-seed": config.sample_seed,
               "--edit-scenes": config.edit_scenes, "--edit-seed": config.edit_seed,
               "--scene-attributes": ",".join(config.scene_attributes)}
    return "amgan-search compare " + " ".join(f"{k} {shlex.quote(str(v))}"
                                              for k, v in options.items() if v != "")


def report(config: CompareConfig, step: int, picked: dict[str, int], queries: Path,
           edit_records: dict, spec: str) -> dict:
    """comparison.json, .md and .png from the records."""
    from amgan_search.index.evaluate.table import comparison_table, write_comparison
    from amgan_search.index.search import Searcher
    from amgan_search.io import read_jsonl
    from amgan_search.registry import parse_graders

    names = ["real", *config.methods, *also_names(config), "oracle"]
    searcher = Searcher(config.index)
    records = [r for r in read_jsonl(queries) if r.get("method") in names]
    run = {"step": step, "pick": config.pick, "picked": picked, "iters": config.iters,
           "sample": config.sample,
           "sample_seed": config.sample_seed, "edit_scenes": config.edit_scenes,
           "edit_seed": config.edit_seed, "scene_attributes": list(config.scene_attributes),
           "train_db": config.train_db, "db": config.db, "index": config.index, "graders": spec,
           "commands": commands(config, step, picked)}
    table = comparison_table(records, edit_records, searcher.schema, KS,
                             [n for n, _ in parse_graders(spec)], gallery_ids=searcher.ids,
                             gallery_labels=searcher.labels, methods=names, run=run)
    write_comparison(config.out, table)
    return table


def also_names(config: CompareConfig) -> list[str]:
    from amgan_search.index.methods import parse_methods

    return [m.name for m in parse_methods(config.also)] if config.also else []


def run_comparison(config: CompareConfig, log: Callable[[str], None] | None = None) -> dict:
    """Every step above; returns the table written to OUT/comparison.json."""
    from amgan_search.io import write_json

    log = log or (lambda message: print(message, file=sys.stderr))
    config.check()
    step, behind = plan(config)
    spec = grader_spec(config)
    check_settings(config, settings(config, step, spec, {}))  # before hours of training
    log(f"compare: iteration {step}" + (f"; to train: {', '.join(behind)}" if behind else ""))
    ensure_cam(config, log)
    picked = prepare_models(config, step, behind, log)
    models = {m: model_dir(config, m, s) for m, s in picked.items()}
    write_json(Path(config.out) / SETTINGS,
               check_settings(config, settings(config, step, spec, picked)))
    log(f"compare: benchmark into {Path(config.out) / BENCHMARK}")
    queries = benchmark(config, models, spec)
    edit_records = edits(config, models, spec, log)
    table = report(config, step, picked, queries, edit_records, spec)
    log(f"compare: wrote {Path(config.out)}/comparison.md, comparison.json, comparison.png")
    return table
