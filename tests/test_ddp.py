"""Two gloo processes on the CPU train a few iterations under DDP and must end with equal weights.

Each rank trains on its own shard, so its local gradients differ; only the all-reduce (first-order
terms and the gradient penalty's double-backward terms alike) can keep the weights equal.
"""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, root: str, port: int, method: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from pathlib import Path

    from amgan_helpers import TinyClassifier, TinyImages, tiny_config
    from amgan_search import checkpoint as ckpt
    from amgan_search.train.amgan import amgan_run

    torch.manual_seed(0)
    cfg = tiny_config(Path(root), method=method, iters=4, n_critic=2, batch_size=4, device="cpu")
    with amgan_run(cfg, dataset=TinyImages(n=32), classifier=TinyClassifier()) as run:
        run.train()
        ckpt.save_weights(Path(root) / f"rank{rank}.safetensors", run.trainer.tensors())


@pytest.mark.slow
@pytest.mark.parametrize("method", ["amgan", "sagan"])
def test_two_gloo_ranks_end_with_identical_weights(tmp_path, method):
    mp.spawn(_worker, args=(2, str(tmp_path), _free_port(), method), nprocs=2, join=True)
    from amgan_search import checkpoint as ckpt

    r0 = ckpt.load_weights(tmp_path / "rank0.safetensors")
    r1 = ckpt.load_weights(tmp_path / "rank1.safetensors")
    assert r0.keys() == r1.keys()
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    # rank 0 alone wrote the run; its final model is the ranks' common generator
    final = ckpt.load_weights(tmp_path / method / "model.safetensors")
    for k, v in final.items():
        assert torch.allclose(v, r0[k].half().float())
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / method))[1]
    assert state["world"] == 2 and len(state["rng"]) == 2
    assert not (tmp_path / method / "rank1").exists()
