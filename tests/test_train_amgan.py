import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from amgan_helpers import SCHEMA, TinyClassifier, TinyImages, tiny_config
from amgan_search import checkpoint as ckpt
from amgan_search.errors import UserError
from amgan_search.io import read_json, write_json
from amgan_search.train.amgan import train_amgan
from amgan_search.train.config import PRESETS, AmganConfig
from amgan_search.train.trainer import AmganTrainer, lr_at


def _train(tmp_path, method="amgan", **kw):
    cfg = tiny_config(tmp_path, method=method, **kw)
    torch.manual_seed(0)  # the same frozen classifier in every run
    return train_amgan(cfg, dataset=TinyImages(), classifier=TinyClassifier()), cfg


@pytest.mark.parametrize("method", list(PRESETS))
def test_every_method_and_ablation_trains_a_few_iterations(tmp_path, method):
    out, cfg = _train(tmp_path, method, sample_every=4)
    config = read_json(out / "config.json")
    assert config["kind"] == "amgan" and config["method"] == method
    assert config["schema"] == SCHEMA.to_dict() and config["iterations"] == 4
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in log] == [1, 2, 3, 4]
    last = log[-1]
    assert all(np.isfinite(v) for v in last.values())
    assert ("DC/gp" in last) == cfg.use_dc
    assert ("G/att" in last) == (cfg.attention_loss == "cam")
    assert ("G/mask" in last) == (cfg.attention_loss == "mask")
    assert ("G/per" in last) == cfg.use_perceptual
    assert (out / "samples" / "iter-0000004.png").is_file()
    weights = ckpt.load_weights(out / "model.safetensors")
    assert all(k.startswith("net.") for k in weights)
    assert any(k.startswith("net.A.") for k in weights) == (method == "sagan")
    assert any("att_head" in k for k in weights) == (cfg.attention == "generator")


def test_bf16_autocast_trains_and_stays_close_to_fp32(tmp_path):
    fp32, _ = _train(tmp_path / "fp32", "amgan", bf16=False)
    bf16, _ = _train(tmp_path / "bf16", "amgan", bf16=True)
    a = json.loads((fp32 / "log.jsonl").read_text().splitlines()[-1])
    b = json.loads((bf16 / "log.jsonl").read_text().splitlines()[-1])
    for key in ("D/loss", "G/loss", "G/cyc", "G/att", "G/per"):
        assert np.isfinite(b[key]) and b[key] == pytest.approx(a[key], rel=0.05, abs=0.02), key


def _tiny_batch():
    data = TinyImages()
    return (torch.stack([data[i][0] for i in range(4)]),
            torch.stack([data[i][1] for i in range(4)]))


def _first_d_step(tmp_path, x, y, **kw):
    """A fresh trainer of tiny_config(**kw) and its first D update's logs, with the same initial
    weights, edits and gradient-penalty draws whatever kw says."""
    torch.manual_seed(0)
    trainer = AmganTrainer(tiny_config(tmp_path, **kw), SCHEMA, TinyClassifier())
    torch.manual_seed(1)
    return trainer, trainer.d_step(x, y, 0)


def test_training_changes_the_generator_and_the_critics(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config(tmp_path, iters=2)
    trainer = AmganTrainer(cfg, SCHEMA, TinyClassifier())
    before = {k: v.clone() for k, v in trainer.tensors().items()}
    x, y = _tiny_batch()
    trainer.d_step(x, y, 0)
    after_d = {k: v.clone() for k, v in trainer.tensors().items()}
    assert not torch.equal(before["D.main.0.weight"], after_d["D.main.0.weight"])
    assert not torch.equal(before["DC.main.0.weight"], after_d["DC.main.0.weight"])
    assert torch.equal(before["net.G.img_head.weight"], after_d["net.G.img_head.weight"])
    trainer.g_step(x, y, 1, reference=lambda trg, a: (x, torch.ones(4)))
    after_g = trainer.tensors()
    assert not torch.equal(after_d["net.G.img_head.weight"], after_g["net.G.img_head.weight"])
    assert torch.equal(after_d["D.main.0.weight"], after_g["D.main.0.weight"])
    assert all(p.requires_grad for p in trainer.D.parameters())


def test_lambda_cls_fake_adds_the_heads_reading_of_each_edit_as_its_source(tmp_path):
    """Off (the paper): no term. On: D's loss grows by lambda times L_cls of the edits toward
    the labels of the photos they came from, for D_I and D_C alike."""
    x, y = _tiny_batch()
    _, paper = _first_d_step(tmp_path, x, y, lambda_cls_fake=0.0)
    _, fake = _first_d_step(tmp_path, x, y, lambda_cls_fake=2.0)
    assert "D/cls_fake" not in paper and "DC/cls_fake" not in paper
    assert fake["D/cls_fake"] > 0 and fake["DC/cls_fake"] > 0
    extra = 2.0 * (fake["D/cls_fake"] + fake["DC/cls_fake"])
    assert fake["D/loss"] == pytest.approx(paper["D/loss"] + extra, rel=1e-5)


def test_a_conditional_critic_starts_as_the_papers_and_learns_what_it_is_told(tmp_path):
    """Its embedding starts at zero, so the first update's losses are the paper's on the same
    random draws; the update then moves the embedding of the critics told."""
    x, y = _tiny_batch()
    _, paper = _first_d_step(tmp_path, x, y)
    for told in ("dc", "all"):
        trainer, logs = _first_d_step(tmp_path, x, y, conditional_critic=told)
        assert logs == pytest.approx(paper, rel=1e-6), told
        assert trainer.DC.embed.abs().sum() > 0
        assert (trainer.D.embed is not None) == (told == "all")
        if told == "all":
            assert trainer.D.embed.abs().sum() > 0
        g = trainer.g_step(x, y, 1, reference=lambda trg, a: (x, torch.ones(4)))
        assert np.isfinite(g["G/loss"])


def _first_g_step(tmp_path, x, y, **kw):
    """A fresh trainer of tiny_config(**kw) and its first G update's logs, with the same initial
    weights and targets whatever kw says."""
    torch.manual_seed(0)
    trainer = AmganTrainer(tiny_config(tmp_path, **kw), SCHEMA, TinyClassifier())
    torch.manual_seed(1)
    return trainer.g_step(x, y, 1, reference=lambda trg, a: (x, torch.ones(4)))


def test_the_kept_cycle_asks_back_only_what_alpha_left_alone(tmp_path):
    """cycle_region "kept" weighs the paper's L_cyc by 1 - alpha: smaller, same everything else."""
    x, y = _tiny_batch()
    paper = _first_g_step(tmp_path, x, y)
    kept = _first_g_step(tmp_path, x, y, cycle_region="kept")
    assert 0 < kept["G/cyc"] < paper["G/cyc"]
    assert kept["G/adv"] == pytest.approx(paper["G/adv"], rel=1e-6)
    assert kept["G/loss"] == pytest.approx(
        paper["G/loss"] - 10.0 * (paper["G/cyc"] - kept["G/cyc"]), rel=1e-5)


def test_the_alpha_binary_term_adds_its_weight_times_the_half_open_share(tmp_path):
    x, y = _tiny_batch()
    paper = _first_g_step(tmp_path, x, y)
    sharp = _first_g_step(tmp_path, x, y, lambda_alpha_binary=3.0)
    assert "G/alpha_bin" not in paper and 0 < sharp["G/alpha_bin"] <= 1
    assert sharp["G/loss"] == pytest.approx(paper["G/loss"] + 3.0 * sharp["G/alpha_bin"],
                                            rel=1e-5)


def test_cycle_and_alpha_options_need_a_mask():
    for bad in (dict(cycle_region="kept"), dict(lambda_alpha_binary=1.0)):
        with pytest.raises(UserError, match="need an attention mask"):
            AmganConfig(method="stargan", **bad)
    with pytest.raises(UserError, match="unknown cycle_region"):
        AmganConfig(cycle_region="inside")


def test_a_conditional_critic_run_keeps_its_critics_in_the_checkpoint_only(tmp_path):
    out, _ = _train(tmp_path, conditional_critic="all", ckpt_every=2)
    tensors, _ = ckpt.load_checkpoint(ckpt.latest_checkpoint(out))
    assert {"D.embed", "DC.embed"} <= set(tensors)
    assert all(k.startswith("net.") for k in ckpt.load_weights(out / "model.safetensors"))


def test_resume_continues_exactly_where_a_killed_run_stopped(tmp_path, monkeypatch):
    straight, _ = _train(tmp_path / "a", ckpt_every=2)

    calls = {"n": 0}
    real_d_step = AmganTrainer.d_step

    def dying_d_step(self, *args, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # killed after the step-2 checkpoint
        return real_d_step(self, *args, **kw)

    monkeypatch.setattr(AmganTrainer, "d_step", dying_d_step)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "b", ckpt_every=2)
    monkeypatch.setattr(AmganTrainer, "d_step", real_d_step)
    assert ckpt.latest_checkpoint(tmp_path / "b" / "amgan").name == "step-0000002"
    resumed, _ = _train(tmp_path / "b", ckpt_every=2, resume=True)

    a, state_a = ckpt.load_checkpoint(ckpt.latest_checkpoint(straight))
    b, state_b = ckpt.load_checkpoint(ckpt.latest_checkpoint(resumed))
    assert state_a["step"] == state_b["step"] == 4
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    for k, v in state_a["opt_g"]["state"].items():
        assert torch.equal(v["exp_avg"], state_b["opt_g"]["state"][k]["exp_avg"])
    log = [json.loads(x)["iter"] for x in (resumed / "log.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3, 4]


def test_stop_at_leaves_a_model_and_resume_goes_on_to_the_same_weights(tmp_path):
    straight, _ = _train(tmp_path / "a", ckpt_every=10)
    stopped, _ = _train(tmp_path / "b", ckpt_every=10, stop_at=3)
    assert read_json(stopped / "config.json")["iterations"] == 3
    assert ckpt.latest_checkpoint(stopped).name == "step-0000003"
    with pytest.raises(UserError, match="already at iteration 3"):
        _train(tmp_path / "b", ckpt_every=10, stop_at=3, resume=True)
    resumed, _ = _train(tmp_path / "b", ckpt_every=10, resume=True)
    a, b = ckpt.load_weights(straight / "model.safetensors"), ckpt.load_weights(resumed / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(UserError, match="stop_at 99 must be between 1 and iters"):
        tiny_config(tmp_path, stop_at=99)


def test_resume_without_a_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no checkpoint"):
        _train(tmp_path, resume=True)


def test_resume_with_another_architecture_is_a_user_error(tmp_path):
    _train(tmp_path, ckpt_every=2, stop_at=2, g_upsample="deconv")
    with pytest.raises(UserError, match="train_config.json"):
        _train(tmp_path, ckpt_every=2, resume=True, g_upsample="resize")


def test_learning_rate_is_constant_then_decays_linearly_to_zero():
    cfg = AmganConfig(iters=100, lr=1e-4)
    assert lr_at(cfg, 0) == lr_at(cfg, 49) == 1e-4
    assert lr_at(cfg, 75) == pytest.approx(0.5e-4)
    assert lr_at(cfg, 100) == 0.0


def _tiny_catalog(root, n=12, size=32):
    """A CSV catalog of synthetic renders, imported into a catalog DB."""
    from amgan_search.catalog import import_catalog
    from amgan_search.images import save_image
    from amgan_search.schema import DEFAULT_SCHEMA
    from amgan_search.synthetic import render, sample_scene

    root.mkdir(parents=True)
    rows = ["id,path,color,sleeve,split"]
    for i in range(n):
        scene = sample_scene(i, DEFAULT_SCHEMA)
        save_image(root / f"{i}.png", render(scene, size)[0])
        a = scene.attributes
        rows.append(f"item{i},{i}.png,{a['color']},{a['sleeve']},train")
    (root / "catalog.csv").write_text("\n".join(rows) + "\n")
    write_json(root / "schema.json", DEFAULT_SCHEMA.to_dict())
    import_catalog("csv", root, root / "catalog.db", progress=False)
    return root / "catalog.db"


def test_train_amgan_command_from_a_catalog_db_with_a_real_classifier(tmp_path):
    from amgan_search.cli.main import cli
    from amgan_search.nets.classifier import AttributeClassifier
    from amgan_search.schema import DEFAULT_SCHEMA
    from amgan_search.synthetic import render, sample_scene

    db = _tiny_catalog(tmp_path / "cat")
    clf = AttributeClassifier(DEFAULT_SCHEMA, arch="resnet18", size=32)
    ckpt.save_model_dir(tmp_path / "clf", clf.config, clf.state_dict())
    out = tmp_path / "run"
    args = ["train", "amgan", "--db", str(db), "--classifier", str(tmp_path / "clf"),
            "--out", str(out), "--size", "32", "--iters", "2", "--batch-size", "4",
            "--n-critic", "2", "--g-conv-dim", "8", "--g-repeat-num", "1", "--d-conv-dim", "8",
            "--d-repeat-num", "3"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    config = read_json(out / "config.json")
    assert config["classifier"]["path"] == str(tmp_path / "clf")  # as given
    assert len(config["classifier"]["sha256"]) == 64
    assert config["train_config"]["db"] == str(db)
    assert "G/per" in (out / "log.jsonl").read_text()

    # A snapshot of the run exports as a model the manipulator loads, with the steps done.
    exported = CliRunner().invoke(cli, ["train", "export", str(out), "--out", str(tmp_path / "snap")])
    assert exported.exit_code == 0, exported.output
    snap = read_json(tmp_path / "snap" / "config.json")
    assert snap["iterations"] == 2 and snap["exported_from"]["checkpoint"] == "step-0000002"
    from amgan_search.registry import load_model

    m = load_model(tmp_path / "snap", "editor")
    assert m.edit(render(sample_scene(5, DEFAULT_SCHEMA), 48)[0], color="red")[0].shape == (48, 48, 3)

    bad = CliRunner().invoke(cli, args[:-2] + ["--d-repeat-num", "6"])
    assert bad.exit_code == 2 and bad.output.count("\n") == 1 and "error:" in bad.output
    missing = CliRunner().invoke(cli, ["train", "amgan", "--db", str(tmp_path / "nope.db"),
                                       "--out", str(tmp_path / "r2"), "--method", "stargan"])
    assert missing.exit_code == 2 and "Traceback" not in missing.output


def test_perceptual_loss_compares_conv5_on_the_papers_coarse_grid():
    from amgan_search.losses import perceptual_loss

    torch.manual_seed(0)
    clf = TinyClassifier()  # 8x8 conv maps at 32 px
    x, ref = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)
    reference = lambda trg, a: (ref, torch.ones(4))  # noqa: E731
    losses = {}
    for grid in (0, 8, 2):
        trainer = AmganTrainer(tiny_config(Path("/nonexistent"), perceptual_grid=grid), SCHEMA, clf)
        losses[grid] = trainer._perceptual(x, None, 0, reference)
    (fx, px, _), (fr, pr, _) = clf.forward_all(x), clf.forward_all(ref)
    pool = torch.nn.functional.adaptive_avg_pool2d
    assert torch.allclose(losses[0], losses[8])
    assert torch.allclose(losses[2], perceptual_loss(pool(fx, 2), pool(fr, 2), px, pr))
    assert not torch.allclose(losses[0], losses[2])
