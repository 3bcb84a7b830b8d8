"""Training reads the decoded-image cache through the same dataset API, to the same numbers."""

from safetensors.torch import load_file

from conftest import make_image_folder
from droptune.training.config import TrainConfig
from droptune.runs.folder import RunDir
from droptune.training.trainer import train
from test_training import numbers


def test_a_cached_run_is_the_uncached_run(tmp_path):
    """Mutants: the cache hands out another image than the one asked for (e.g. indices offset in a later domain,
    domains swapped), or other pixels than the file's.

    The images are stored at the training size, so the cache's resize is exact and both runs see the same pixels.
    """
    folder = make_image_folder(tmp_path / "toy", size=16)
    runs = {}
    for name, cache_dir in (("plain", None), ("cached", str(tmp_path / "cache"))):
        config = TrainConfig(dataset=str(folder), test_domain="b", backbone="resnet10t", weights="none",
                             image_size=16, batch_size=3, steps=4, eval_every=2, lr=0.05, dropout=0.5, workers=0,
                             progress=False, cache_dir=cache_dir, output_dir=str(tmp_path / name))
        train(config)
        runs[name] = RunDir(config.run_dir())
    assert list((tmp_path / "cache").glob("*.npy")), "the cached run built the cache"
    assert numbers(runs["cached"].read_metrics()) == numbers(runs["plain"].read_metrics())
    plain, cached = load_file(str(runs["plain"].best)), load_file(str(runs["cached"].best))
    assert plain.keys() == cached.keys() and all((plain[k] == cached[k]).all() for k in plain)
