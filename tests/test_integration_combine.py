"""Every baseline on a slice of the real PACS: a linear probe, three short runs from it, combined every way.

Skipped without ../shared/data. The runs cover the combinations the paper compares: dropout with
the along-run baselines, dropout with a 10× head lr, and plain fine-tuning (p = 0).
"""

import json

import pytest
import torch
from safetensors.torch import load_file

import droptune
from droptune.cli.main import main
from droptune.data.loaders import DomainImages
from droptune.data.registry import open_dataset
from droptune.data.splits import split_domain
from droptune.training.config import TrainConfig
from droptune.training.trainer import train

pytestmark = pytest.mark.integration
SCHEMA = {"status", "run", "method", "dataset", "test_domain", "train_domains", "selection", "iid", "ood", "ood_out",
          "acc", "members", "runs", "cost"}


def test_pacs_runs_from_one_probe_combine_every_way(pacs_slice, tmp_path, capsys):
    head = tmp_path / "head.safetensors"
    common = ["--dataset", str(pacs_slice), "--test-domain", "photo", "--backbone", "efficientnet_lite0",
              "--image-size", "32", "--workers", "0"]
    assert main(["probe", *common, "--probe-steps", "100", "--output", str(head)]) == 0

    base = dict(dataset=str(pacs_slice), test_domain="photo", backbone="efficientnet_lite0", image_size=32,
                batch_size=8, steps=10, eval_every=5, lr=1e-3, workers=0, progress=False, head_init=str(head))
    variants = dict(ensemble_start=5, average_start=5, ema_decay=0.9, swad=True)
    settings = {"p0.9-baselines": dict(dropout=0.9, seed=0, **variants),
                "p0.9-head10x": dict(dropout=0.9, seed=1, head_lr_mult=10.0),
                "p0": dict(dropout=0.0, seed=2)}
    runs = {}
    for name, changes in settings.items():
        runs[name] = train(TrainConfig(**base, **changes, output_dir=str(tmp_path / name)))
    assert len({r["head_start"] for r in runs.values()}) == 1 and runs["p0"]["head_start"].startswith("probe ")
    along = runs["p0.9-baselines"]["variants"]
    assert set(along) == {"ensemble", "swa", "ema", "swad"}
    assert along["ensemble"]["cost"]["forward_passes"] in (1, 2) and along["swad"]["cost"]["trainings"] == 1

    output = tmp_path / "combined"
    assert main(["combine", *(str(tmp_path / name) for name in settings), "--output", str(output),
                 "--workers", "0"]) == 0
    assert "greedy_soup" in capsys.readouterr().out
    combined = {m: json.loads((output / m / "results.json").read_text())
                for m in ("ensemble", "uniform_soup", "greedy_soup")}
    single = runs["p0"]
    for method, results in combined.items():
        assert SCHEMA <= set(results) and results["method"] == method and results["test_domain"] == "photo"
        assert {d: set(s) for d, s in results["acc"].items()} == {d: set(s) for d, s in single["acc"].items()}
        assert 0 <= results["iid"] <= 1 and 0 <= results["ood"] <= 1
        assert results["cost"]["trainings"] == 3
    assert combined["ensemble"]["cost"]["forward_passes"] == 3
    assert combined["uniform_soup"]["members"] == list(settings)
    assert combined["uniform_soup"]["cost"]["forward_passes"] == 1
    greedy = combined["greedy_soup"]
    best_alone = max(runs, key=lambda name: runs[name]["iid"])
    assert greedy["members"][0] == best_alone and set(greedy["members"]) <= set(settings)
    assert greedy["iid"] >= greedy["greedy"][0]["iid"] - 1e-9
    # Recomputed here: the soup's weights are the members' mean (their BatchNorm statistics are all the frozen
    # pre-trained ones), and the soup and the ensemble score on photo's 80% as the combine step recorded.
    members = [load_file(str(tmp_path / name / "best.safetensors")) for name in settings]
    soup = load_file(str(output / "uniform_soup" / "soup.safetensors"))
    for key, tensor in soup.items():
        if tensor.is_floating_point():
            assert torch.allclose(tensor, sum(m[key] for m in members) / 3, atol=1e-6), key
    dataset = open_dataset(str(pacs_slice))
    photo = dataset.domain_index("photo")
    keep = split_domain(len(dataset.labels(photo)), "photo", 0).train
    images = DomainImages(dataset, 32)
    x = torch.stack([images[(photo, int(i), None)][0] for i in keep])
    labels = torch.as_tensor(dataset.labels(photo)[keep])

    def accuracy(*folders) -> float:
        with torch.no_grad():
            probs = sum(droptune.load_model(folder).model(x).softmax(1) for folder in folders)
        return (probs.argmax(1) == labels).float().mean().item()

    assert accuracy(output / "uniform_soup") == pytest.approx(combined["uniform_soup"]["ood"])
    assert accuracy(*(tmp_path / name for name in settings)) == pytest.approx(combined["ensemble"]["ood"])
