"""Is an AMGAN's content image z right where its composite is wrong? Re-compose its edits with
alpha transformed, grade by the truth.
python experiments/alpha_probe.py [N [MODEL [SCENE_ATTRIBUTES [VARIANT...]]]]
(default: the shipped model, its own scenes, every variant; appends to alpha_probe.jsonl. The
first two rows, of the shipped model, are the two variants that ran in 20 minutes on a loaded CPU)"""
import json, sys
import torch
torch.set_num_threads(1)
from amgan_search.registry import load_graders, load_model
from amgan_search.metrics.edits import evaluate_edits

N = int(sys.argv[1]) if len(sys.argv) > 1 else 50
MODEL = sys.argv[2] if len(sys.argv) > 2 else "amgan"  # the shipped model
SCENES = sys.argv[3].split(",") if len(sys.argv) > 3 else None
base = load_model(MODEL, "editor", "cpu")

class Recomposed:
    def __init__(self, inner, fn): self.inner, self.fn = inner, fn; self.schema, self.size, self.config = inner.schema, inner.size, inner.config
    @torch.no_grad()
    def edit_batch(self, x, labels, attribute, target, items=None):
        m = self.inner
        x = x.float()
        trg = torch.as_tensor(labels, dtype=torch.long).clone(); trg[:, attribute] = torch.as_tensor(target, dtype=torch.long)
        c = m.schema.condition(trg, attribute)
        _, alpha, z = m.net(x, c)
        a = self.fn(alpha)
        return (a * z + (1 - a) * x).clamp(0, 1), a

variants = {"alpha as trained": lambda a: a, "alpha x2 clipped": lambda a: (2 * a).clamp(0, 1),
            "alpha > 0.25 -> 1": lambda a: torch.where(a > 0.25, torch.ones_like(a), a),
            "z everywhere (alpha 1)": lambda a: torch.ones_like(a)}
graders = load_graders("eval", "cpu")
for name in sys.argv[4:] or variants:
    r = evaluate_edits(Recomposed(base, variants[name]), graders, n=N, seed=777, progress=False,
                       scene_attributes=SCENES)
    row = {k: {"eval": round(v["accuracy"]["eval"], 3), "truth": round(v["truth_accuracy"], 3),
               "fidelity": round(v["fidelity_reduction"], 3), "preservation": round(v["preservation"], 4)}
           for k, v in r["per_attribute"].items()}
    line = json.dumps({"variant": name, "n": N, "model": MODEL, "scenes": SCENES, **row})
    print(line, flush=True)
    with open("docs/results/experiments/alpha_probe.jsonl", "a") as f:
        f.write(line + "\n")
