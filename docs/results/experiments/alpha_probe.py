"""Is the shipped AMGAN's content image z right where its composite is wrong? Re-compose its
edits with alpha transformed, grade by the truth. python docs/results/experiments/alpha_probe.py [N] (two of its four variants ran in 20 minutes on a loaded CPU; alpha_probe.jsonl holds them)"""
import json, sys
import torch
torch.set_num_threads(1)
from amgan_search.registry import load_graders, load_model
from amgan_search.metrics.edits import evaluate_edits

N = int(sys.argv[1]) if len(sys.argv) > 1 else 50
base = load_model("amgan", "editor", "cpu")  # the shipped model

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
for name, fn in variants.items():
    r = evaluate_edits(Recomposed(base, fn), graders, n=N, seed=777, progress=False)
    row = {k: {"eval": round(v["accuracy"]["eval"], 3), "truth": round(v["truth_accuracy"], 3),
               "fidelity": round(v["fidelity_reduction"], 3), "preservation": round(v["preservation"], 4)}
           for k, v in r["per_attribute"].items()}
    print(json.dumps({"variant": name, "n": N, **row}), flush=True)
