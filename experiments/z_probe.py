"""Where does an attention model's shortened sleeve get lost: in alpha (the mask does not open over
the fabric to remove) or in z (the content image under it still draws the sleeve)?
python experiments/z_probe.py N MODEL [SCENE_ATTRIBUTES] grades every sleeve edit of N
test scenes (seed 777, as evaluate-edits) twice by the truth: composed as trained, and composed
with alpha replaced by the truly changed region (the pixels where the input and its true edit
differ, inside garment | arms: z there, the photo elsewhere). Per direction (fabric taken away or
added) it prints how often the truth reads the target, and the mean alpha over the truly changed
pixels; appends the rows to z_probe.jsonl.
python experiments/z_probe.py sheet MODEL OUT.png [SCENE_ATTRIBUTES] draws the first
test scenes with a sleeve edited to sleeveless: the photo, its true edit, the model's edit, z,
z through the true change, and alpha."""
import sys
from collections import defaultdict

import numpy as np
import torch

from amgan_search.images import to_tensor, to_uint8
from amgan_search.metrics.edits import CHANGE_THRESHOLD, evaluate_edits, scene_schema, test_seeds
from amgan_search.registry import load_model
from amgan_search.synthetic import render, sample_scene
from experiment import append_row, arguments  # this folder's scripts, beside this one
from sleeve_directions import shortens

SEED = 777


class Probe:
    """An editor that composes the model's z with alpha as trained or with the true change region,
    and notes the mean alpha over that region for every edit."""

    def __init__(self, model, scenes, renders, true_region: bool):
        self.model, self.scenes, self.renders, self.true_region = model, scenes, renders, true_region
        self.schema, self.size, self.config = model.schema, model.size, model.config
        self.row_of = {r[0].tobytes(): i for i, r in enumerate(renders)}
        self.alpha_on_change = {}  # (scene, attribute, target) -> mean alpha over the change

    def true_edits(self, x, attribute: int, target) -> tuple[list, list]:
        """Each row's true edit, rendered (image, masks), and its (scene, attribute, target value)
        key. The scene is found by its render, as the editor interface passes only pixels."""
        attr = self.schema.attributes[attribute]
        truths, keys = [], []
        for k, photo in enumerate(to_uint8(x)):
            i = self.row_of[photo.tobytes()]
            value = attr.values[int(target[k])]
            truths.append(render(self.scenes[i].with_attributes(**{attr.name: value}), x.shape[-1]))
            keys.append((i, attr.name, value))
        return truths, keys

    def true_change(self, x, attribute: int, target) -> tuple[torch.Tensor, list]:
        """[B,1,S,S]: the pixels, inside garment | arms, where each input and its true edit differ;
        and each row's key (`true_edits`)."""
        truths, keys = self.true_edits(x, attribute, target)
        region = torch.zeros_like(x[:, :1])
        for k, ((truth, masks), (i, _, _)) in enumerate(zip(truths, keys)):
            own = self.renders[i][1]
            inside = torch.as_tensor(masks["garment"] | masks["arms"] | own["garment"] | own["arms"])
            region[k, 0] = ((x[k] - to_tensor([truth])[0]).abs().amax(0) > CHANGE_THRESHOLD) & inside
        return region, keys

    @torch.no_grad()
    def edit_batch(self, x, labels, attribute, target, items=None):
        x = x.float()
        trg = torch.as_tensor(labels, dtype=torch.long).clone()
        trg[:, attribute] = torch.as_tensor(target, dtype=torch.long)
        _, alpha, z = self.model.net(x, self.schema.condition(trg, attribute))
        region, keys = self.true_change(x, attribute, target)
        shares = (alpha * region).sum((1, 2, 3)) / region.sum((1, 2, 3)).clamp_min(1)
        self.alpha_on_change.update(zip(keys, shares.tolist()))
        a = region if self.true_region else alpha
        return (a * z + (1 - a) * x).clamp(0, 1), a


def main(n: int, model_dir: str, scene_attributes: list[str] | None) -> None:
    model = load_model(model_dir, "editor", "cpu")
    drawn = scene_schema(model.schema, scene_attributes)
    scenes = [sample_scene(s, drawn) for s in test_seeds(n, SEED)]
    renders = [render(sc, model.size) for sc in scenes]
    for true_region in (False, True):
        probe = Probe(model, scenes, renders, true_region)
        result = evaluate_edits(probe, {}, n=n, seed=SEED, size=model.size, progress=False,
                                scene_attributes=scene_attributes)
        parts = defaultdict(list)
        for r in result["records"]:
            if r["attribute"] == "sleeve":
                key = "shorter" if shortens(r) else "longer"
                alpha = probe.alpha_on_change[(r["scene"], "sleeve", r["target"])]
                parts[key].append((r["truth"] == r["target"], r["truth"] == r["source"], alpha))
        row = {"model": model_dir, "n": n, "scenes": scene_attributes,
               "alpha": "the true change region" if true_region else "as trained"}
        for key, values in parts.items():
            hit, kept, alpha = (np.mean(v) for v in zip(*values))
            row[key] = {"edits": len(values), "target": round(float(hit), 3),
                        "source": round(float(kept), 3), "alpha_on_change": round(float(alpha), 3)}
        append_row("z_probe.jsonl", row)


@torch.no_grad()
def sheet(model_dir: str, out: str, scene_attributes: list[str] | None, columns: int = 6) -> None:
    from PIL import Image

    from amgan_search.images import picture_grid, save_image
    model = load_model(model_dir, "editor", "cpu")
    drawn = scene_schema(model.schema, scene_attributes)
    j = model.schema.names.index("sleeve")
    bare = model.schema.attributes[j].values.index("sleeveless")
    scenes = [sc for sc in (sample_scene(s, drawn) for s in test_seeds(200, SEED))
              if sc.attributes["sleeve"] == "long"][:columns]
    renders = [render(sc, model.size) for sc in scenes]
    x = to_tensor([r[0] for r in renders])
    trg = torch.as_tensor(np.stack([model.schema.encode({a: sc.attributes[a]
                                                         for a in model.schema.names})
                                    for sc in scenes]))
    trg[:, j] = bare
    x_star, alpha, z = model.net(x, model.schema.condition(trg, j))
    region, _ = Probe(model, scenes, renders, true_region=True).true_change(x, j, trg[:, j])
    truth = to_tensor([render(sc.with_attributes(sleeve="sleeveless"), model.size)[0]
                       for sc in scenes])
    rows = [x, truth, x_star, z, region * z + (1 - region) * x, alpha.expand(-1, 3, -1, -1)]
    tile = 2 * model.size
    save_image(out, picture_grid(
        [[(np.asarray(Image.fromarray(p).resize((tile, tile), Image.NEAREST)), None)
          for p in to_uint8(r)] for r in rows], tile,
        labels=["photo (long)", "true edit", "edit", "z", "z in the true change", "alpha"],
        label_px=12))
    print(f"wrote {out}")


if __name__ == "__main__":
    args = arguments(__doc__, 2, 4)
    torch.set_num_threads(1)
    if args[0] == "sheet":
        if len(args) < 3:
            sys.exit(__doc__)
        sheet(args[1], args[2], args[3].split(",") if len(args) > 3 else None)
    else:
        main(int(args[0]), args[1], args[2].split(",") if len(args) > 2 else None)
