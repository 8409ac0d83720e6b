import os

import pytest

from builders import tiny_world

# Two cores are shared by the suite: keep torch from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _torch_threads():
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny catalog, classifier, manipulator and index (`builders.tiny_world`), one per test
    module, so a module may change it; a module that needs another world defines its own."""
    return tiny_world(tmp_path_factory.mktemp("world"))
