"""Training reads the decoded-image cache through the same dataset API."""

from droptune.training.config import TrainConfig
from droptune.training.trainer import Trainer, train


def test_training_reads_the_cache(image_folder, tmp_path):
    config = TrainConfig(dataset=str(image_folder), test_domain="c", backbone="resnet10t", weights="none",
                         image_size=16, batch_size=3, steps=4, eval_every=2, lr=0.05, dropout=0.5,
                         progress=False, cache_dir=str(tmp_path / "cache"), output_dir=str(tmp_path / "run"))
    trainer = Trainer(config)
    assert type(trainer.dataset).__name__ == "CachedDomains" and trainer.workers == 0
    assert list((tmp_path / "cache").glob("*.npy"))
    results = train(config)
    assert results["status"] == "completed" and results["steps_done"] == 4
