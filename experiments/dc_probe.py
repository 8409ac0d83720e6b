"""Does D_C's critic single out the edits the truth rejects, told the target or not?
python experiments/dc_probe.py CHECKPOINT MODEL [N] (CHECKPOINT: a run's
checkpoints/step-N folder, copied aside before the run moves on; MODEL: that step exported with
`train export --step N`). Every edit of N unseen test scenes (seed 777, as evaluate-edits) is cropped
the way training crops it for D_C (the box of alpha's largest region above half its maximum), and
so is its true edit with the same box; D_C's critic scores both, told the target values where the
run's D_C is conditional (`--conditional-critic`). Per attribute, and for the sleeve edits that
shorten, the AUC of true crop against edit crop, over the edits the truth rejects and over those it
accepts: a critic that singles out the rejected edits has the first well above the second. One
JSON line per part, appended to dc_probe.jsonl."""
from pathlib import Path

import torch

from amgan_search.images import to_tensor
from amgan_search.metrics.edits import evaluate_edits, scene_schema, test_seeds
from amgan_search.nets.amgan import attention_crop
from amgan_search.registry import load_model
from amgan_search.synthetic import render, sample_scene
# this folder's scripts, beside this one
from d_probe import auc, load_critic
from experiment import append_row, arguments
from sleeve_directions import shortens
from z_probe import SEED, Probe

SCENES = ["color", "sleeve", "pattern", "neckline"]


class CropProbe(Probe):
    """An editor that passes the model's edits through and scores each edit's D_C crop and its
    true edit's crop (same box) with D_C's critic, keyed by (scene, attribute, target)."""

    def __init__(self, model, dc, scenes, renders):
        super().__init__(model, scenes, renders, true_region=False)
        self.dc, self.scores = dc, {}  # key -> (true crop's critic score, edit crop's)

    @torch.no_grad()
    def edit_batch(self, x, labels, attribute, target, items=None):
        x = x.float()
        target = torch.as_tensor(target, dtype=torch.long).expand(x.size(0))
        trg = torch.as_tensor(labels, dtype=torch.long).clone()
        trg[:, attribute] = target
        x_star, alpha, _ = self.model.net(x, self.schema.condition(trg, attribute))
        truths, keys = self.true_edits(x, attribute, target)
        true_c, edit_c, _ = attention_crop(alpha, to_tensor([t[0] for t in truths]),
                                           x_star.clamp(0, 1), self.size // 2)
        told = self.schema.onehot(trg) if self.dc.embed is not None else None
        true_s, edit_s = (self.dc.critic(c, told).mean((1, 2, 3)).tolist() for c in (true_c, edit_c))
        self.scores.update(zip(keys, zip(true_s, edit_s)))
        return x_star.clamp(0, 1), alpha


def rounded(value):
    return None if value is None else round(value, 3)


def main(checkpoint: Path, model_dir: str, n: int) -> None:
    model = load_model(model_dir, "editor", "cpu")
    dc = load_critic(checkpoint, model_dir, model.schema, model.size, "DC")
    scenes = [sample_scene(s, scene_schema(model.schema, SCENES)) for s in test_seeds(n, SEED)]
    probe = CropProbe(model, dc, scenes, [render(sc, model.size) for sc in scenes])
    records = evaluate_edits(probe, {}, n=n, seed=SEED, size=model.size, progress=False,
                             scene_attributes=SCENES)["records"]
    parts = {"color": lambda r: r["attribute"] == "color",
             "sleeve": lambda r: r["attribute"] == "sleeve", "sleeve, shorter": shortens}
    for part, keep in parts.items():
        rows = [r for r in records if keep(r)]
        pairs = [probe.scores[(r["scene"], r["attribute"], r["target"])] for r in rows]
        true = [p[0] for p in pairs]
        rejected = [p[1] for p, r in zip(pairs, rows) if r["truth"] != r["target"]]
        accepted = [p[1] for p, r in zip(pairs, rows) if r["truth"] == r["target"]]
        row = {"checkpoint": str(checkpoint), "model": model_dir, "n_scenes": n, "part": part,
               "conditional": dc.embed is not None, "edits": len(rows),
               "truth_accuracy": round(len(accepted) / len(rows), 3),
               "critic_auc_true_vs_edit": rounded(auc(true, [p[1] for p in pairs])),
               "critic_auc_true_vs_truth_rejected": rounded(auc(true, rejected)),
               "critic_auc_true_vs_truth_accepted": rounded(auc(true, accepted))}
        append_row("dc_probe.jsonl", row)


if __name__ == "__main__":
    args = arguments(__doc__, 2, 3)
    torch.set_num_threads(1)
    main(Path(args[0]), args[1], int(args[2]) if len(args) > 2 else 50)
