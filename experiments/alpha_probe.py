"""Is an AMGAN's content image z right where its composite is wrong? Re-compose its edits with
alpha transformed, grade by the truth.
python experiments/alpha_probe.py [N [MODEL [SCENE_ATTRIBUTES [VARIANT...]]]]
(default: the shipped model, its own scenes, every variant; appends to alpha_probe.jsonl. The
first two rows, of the shipped model, are the two variants that ran in 20 minutes on a loaded CPU)"""
import torch

from amgan_search.metrics.edits import evaluate_edits
from amgan_search.registry import load_graders, load_model
from experiment import append_row, arguments

VARIANTS = {"alpha as trained": lambda a: a, "alpha x2 clipped": lambda a: (2 * a).clamp(0, 1),
            "alpha > 0.25 -> 1": lambda a: torch.where(a > 0.25, torch.ones_like(a), a),
            "z everywhere (alpha 1)": lambda a: torch.ones_like(a)}


class Recomposed:
    """The model's edits composed again with `fn(alpha)` in place of alpha."""

    def __init__(self, inner, fn):
        self.inner, self.fn = inner, fn
        self.schema, self.size, self.config = inner.schema, inner.size, inner.config

    @torch.no_grad()
    def edit_batch(self, x, labels, attribute, target, items=None):
        m = self.inner
        x = x.float()
        trg = torch.as_tensor(labels, dtype=torch.long).clone()
        trg[:, attribute] = torch.as_tensor(target, dtype=torch.long)
        _, alpha, z = m.net(x, m.schema.condition(trg, attribute))
        a = self.fn(alpha)
        return (a * z + (1 - a) * x).clamp(0, 1), a


def main(n: int, model: str, scenes: list[str] | None, variants: list[str]) -> None:
    base = load_model(model, "editor", "cpu")
    graders = load_graders("eval", "cpu")
    for name in variants or VARIANTS:
        r = evaluate_edits(Recomposed(base, VARIANTS[name]), graders, n=n, seed=777,
                           progress=False, scene_attributes=scenes)
        row = {k: {"eval": round(v["accuracy"]["eval"], 3), "truth": round(v["truth_accuracy"], 3),
                   "fidelity": round(v["fidelity_reduction"], 3),
                   "preservation": round(v["preservation"], 4)}
               for k, v in r["per_attribute"].items()}
        append_row("alpha_probe.jsonl", {"variant": name, "n": n, "model": model,
                                         "scenes": scenes, **row})


if __name__ == "__main__":
    args = arguments(__doc__, 0)
    torch.set_num_threads(1)
    main(int(args[0]) if args else 50, args[1] if len(args) > 1 else "amgan",  # the shipped model
         args[2].split(",") if len(args) > 2 else None, args[3:])
