"""Is L_cls paid for by edits the truth rejects, and does D_I's critic see them as fake?
D_I of a run's checkpoint reads the edits of N unseen test scenes (seed 777) and their true
edits: its classification head (what L_cls trains G to satisfy) and its critic (what L_adv
does). python experiments/d_probe.py CHECKPOINT MODEL [N] (CHECKPOINT: a run's
checkpoints/step-N folder, copied aside before the run moves on: a run keeps its last two;
MODEL: that step exported with `train export --step N`); one JSON line per attribute, appended to
docs/results/experiments/d_probe.jsonl (its checkpoint field names the run's step)."""
from pathlib import Path

import numpy as np
import torch

from amgan_search import checkpoint as ckpt
from amgan_search.images import to_tensor
from amgan_search.io import read_json
from amgan_search.metrics.edits import evaluate_edits, scene_schema, test_seeds
from amgan_search.nets.amgan import Discriminator
from amgan_search.registry import load_model
from amgan_search.synthetic import render, sample_scene
from experiment import append_row, arguments

SCENES = ["color", "sleeve", "pattern", "neckline"]


def load_critic(checkpoint: Path, model_dir: str, schema, size: int, which: str = "D"):
    """D_I ("D") or D_C ("DC", 2 fewer layers on half-size crops) of a run's checkpoint,
    conditional where its run's was (`--conditional-critic`)."""
    cfg = read_json(Path(model_dir) / "config.json")
    tensors, _ = ckpt.load_checkpoint(checkpoint)
    weights = {k[len(which) + 1:]: v.float() for k, v in tensors.items()
               if k.startswith(which + ".")}
    crops = which == "DC"
    critic = Discriminator(size // 2 if crops else size, schema.n_values, cfg["d_conv_dim"],
                           cfg["d_repeat_num"] - (2 if crops else 0),
                           [len(a.values) for a in schema.attributes],
                           conditional="embed" in weights)
    critic.load_state_dict(weights)
    return critic.eval()


class DHead(torch.nn.Module):
    """D_I as an `evaluate_edits` grader: its head's reading; its critic score kept in order."""
    def __init__(self, D, schema):
        super().__init__()
        self.D, self.schema, self.config, self.critic = D, schema, {}, []

    def predict(self, x):
        with torch.no_grad():
            src, logits = self.D(x.float())
        self.critic += src.mean((1, 2, 3)).tolist()
        return torch.stack([lg.argmax(1) for lg in logits], 1), None


def auc(pos, neg):
    """P(a true edit's critic score is above an edit's): 0.5 = the critic cannot tell them apart."""
    pos, neg = np.asarray(pos), np.asarray(neg)
    if not len(pos) or not len(neg):
        return None
    return float(((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None])).mean())


def main(checkpoint: Path, model_dir: str, n: int) -> None:
    editor = load_model(model_dir, "editor", "cpu")
    schema = editor.schema
    D = load_critic(checkpoint, model_dir, schema, editor.size)
    head = DHead(D, schema)
    results = evaluate_edits(editor, {"D": head}, n=n, seed=777, progress=False,
                             scene_attributes=SCENES)
    records = results["records"]
    scenes = [sample_scene(s, scene_schema(schema, SCENES)) for s in test_seeds(n, 777)]
    true_read, true_critic = [], []
    for start in range(0, len(records), 50):  # the same edits drawn true, read by D_I
        chunk = records[start:start + 50]
        x = to_tensor([render(scenes[r["scene"]].with_attributes(**{r["attribute"]: r["target"]}),
                              editor.size)[0] for r in chunk])
        with torch.no_grad():
            src, logits = D(x.float())
        true_critic += src.mean((1, 2, 3)).tolist()
        for r, idx in zip(chunk, torch.stack([lg.argmax(1) for lg in logits], 1).tolist()):
            j = schema.names.index(r["attribute"])
            true_read.append(schema.attributes[j].values[idx[j]])

    def hit(i: int) -> bool:
        return records[i]["predicted"]["D"] == records[i]["target"]

    for name in schema.names:
        idx = [i for i, r in enumerate(records) if r["attribute"] == name]
        rejected = [i for i in idx if records[i]["truth"] != records[i]["target"]]
        accepted = [i for i in idx if records[i]["truth"] == records[i]["target"]]
        true_scores = [true_critic[i] for i in idx]

        def critic_auc(edits: list[int]):
            return round(auc(true_scores, [head.critic[i] for i in edits]), 3) if edits else None

        append_row("d_probe.jsonl", {
            "checkpoint": str(checkpoint), "model": model_dir, "n_scenes": n, "attribute": name,
            "edits": len(idx), "truth_accuracy": round(len(accepted) / len(idx), 3),
            "head_reads_true_edit": round(np.mean([true_read[i] == records[i]["target"]
                                                   for i in idx]), 3),
            "head_reads_edit": round(np.mean([hit(i) for i in idx]), 3),
            "head_accepts_truth_rejected": (round(np.mean([hit(i) for i in rejected]), 3)
                                            if rejected else None),
            "critic_auc_true_vs_edit": critic_auc(idx),
            "critic_auc_true_vs_truth_rejected": critic_auc(rejected),
            "critic_auc_true_vs_truth_accepted": critic_auc(accepted)})


if __name__ == "__main__":
    args = arguments(__doc__, 2, 3)
    torch.set_num_threads(1)
    main(Path(args[0]), args[1], int(args[2]) if len(args) > 2 else 50)
