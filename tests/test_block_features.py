"""The paper's linear fine-tuning model (`linear_blocks`): which blocks it reads, where it starts, what trains."""

import copy

import pytest
import torch
from safetensors.torch import load_file

import droptune
from droptune.analysis.linearity import linearity
from droptune.analysis.subject import Subject
from droptune.combining.runs import read_run
from droptune.errors import DroptuneError
from droptune.inference.export import export
from droptune.models import build_model
from droptune.models.block_features import BlockFeaturesClassifier, residual_blocks
from droptune.training.config import TrainConfig
from droptune.training.optim import make_optimizer
from droptune.training.run_inputs import initial_model
from conftest import make_image_folder


def test_residual_blocks_are_those_with_a_shortcut():
    lite = build_model("efficientnet_lite0", 3, weights="none")
    names = [name for name, _ in residual_blocks(lite.backbone)]
    # blocks.5.0 and blocks.6.0 change the width, so they add nothing back
    assert names[-3:] == ["blocks.5.1", "blocks.5.2", "blocks.5.3"]
    assert "blocks.6.0" not in names and "blocks.5.0" not in names
    resnet = build_model("resnet18", 3, weights="none")
    assert [name for name, _ in residual_blocks(resnet.backbone)][-3:] == ["layer3.1", "layer4.0", "layer4.1"]


def test_it_starts_at_the_networks_features():
    torch.manual_seed(0)
    network = build_model("resnet18", 3, weights="none").eval()
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    expected = network.features(images)
    model = BlockFeaturesClassifier(network, 2, 32).eval()
    assert model.block_names == ["layer4.0", "layer4.1"] and model.num_features == 512
    # v = (0, 1): layer4.1 pooled, which is what the ResNet's own head reads
    torch.testing.assert_close(model.features(images), expected)
    with torch.no_grad():
        model.block_weights.copy_(torch.tensor([[2.0], [0.0]]).expand(2, 512))
    first = torch.nn.functional.adaptive_avg_pool2d(model.backbone.layer4[0](model.backbone.layer3(
        model.backbone.layer2(model.backbone.layer1(model.backbone.maxpool(model.backbone.relu(model.backbone.bn1(
            model.backbone.conv1(model.normalize(images))))))))), 1).flatten(1)
    torch.testing.assert_close(model.features(images), 2 * first)


def test_a_fixed_size_backbone_is_rebuilt_identically():
    """timm_input_size builds a probe model once per process; its draws must not shift the run's initial weights."""
    from droptune.models.backbones import timm_input_size

    timm_input_size.cache_clear()
    config = TrainConfig(backbone="vit_tiny_patch16_224", weights="none", image_size=32, linear_blocks=1)
    first, second = initial_model(config, 2).state_dict(), initial_model(config, 2).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_blocks_of_different_widths_are_refused_by_name():
    network = build_model("resnet18", 3, weights="none")
    with pytest.raises(DroptuneError, match=r"layer3\.1 \(256\), layer4\.0 \(512\), layer4\.1 \(512\).*fewer blocks"):
        BlockFeaturesClassifier(network, 3, 32)
    with pytest.raises(DroptuneError, match="has 8 residual blocks"):
        BlockFeaturesClassifier(network, 9, 32)


@pytest.mark.parametrize("backbone", ["vit_tiny_patch16_224", "vit_base_patch16_gap_224", "convnext_atto"])
def test_a_vit_or_convnext_block_goes_through_the_backbones_final_norm_and_pooling(backbone):
    """Class token or token mean, LayerNorm before or after pooling: v = (0, ..., 1) is the network's features."""
    torch.manual_seed(0)
    network = build_model(backbone, 3, weights="none", image_size=32).eval()
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    expected = network.features(images)
    model = BlockFeaturesClassifier(copy.deepcopy(network), 1, 32).eval()
    torch.testing.assert_close(model.features(images), expected)
    if backbone.startswith("vit_tiny"):
        assert BlockFeaturesClassifier(network, 3, 32).block_names == ["blocks.9", "blocks.10", "blocks.11"]


def test_the_backbone_is_frozen_and_copies_carry_no_hooks():
    model = BlockFeaturesClassifier(build_model("resnet18", 3, weights="none"), 2, 32).train()
    assert not any(m.training for m in model.backbone.modules()) and model.head.training
    assert not any(p.requires_grad for p in model.backbone.parameters())
    groups = make_optimizer(model, TrainConfig(backbone="resnet18", linear_blocks=2))
    assert [[p is model.block_weights for p in g["params"]] for g in groups.param_groups] == [[True], [False, False]]
    copied = copy.deepcopy(model)
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    model.eval(), copied.eval()
    torch.testing.assert_close(copied(images), model(images))
    assert not any(block._forward_hooks for block in model.blocks + copied.blocks)


def test_config_checks_the_field():
    with pytest.raises(DroptuneError, match="invalid linear_blocks = 0"):
        TrainConfig(linear_blocks=0)
    with pytest.raises(DroptuneError, match="linear_blocks.*unset when linearized"):
        TrainConfig(linear_blocks=3, linearized=True)
    # the backbone's statistics never move, so averages and soups must not re-estimate them either
    with pytest.raises(DroptuneError, match="linear_blocks.*unset when freeze_bn is false"):
        TrainConfig(linear_blocks=3, freeze_bn=False)
    assert TrainConfig().identity() == TrainConfig(linear_blocks=None).identity()
    assert TrainConfig(linear_blocks=3).identity() != TrainConfig().identity()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = make_image_folder(tmp_path_factory.mktemp("toy") / "toy", size=32)
    config = TrainConfig(dataset=str(root), test_domain="c", backbone="resnet18", weights="none", image_size=32,
                         steps=4, eval_every=2, batch_size=4, workers=0, linear_blocks=2, dropout=0.5, lr=0.05,
                         output_dir=str(tmp_path_factory.mktemp("runs") / "blocks"), progress=False)
    droptune.train(config)
    return config


def test_training_moves_the_vectors_and_the_head_only(run):
    start = initial_model(run, 2).state_dict()
    trained = load_file(f"{run.output_dir}/best.safetensors")
    moved = sorted(k for k in trained if not torch.equal(trained[k], start[k]))
    assert moved == ["block_weights", "head.fc.bias", "head.fc.weight"]


def test_the_run_loads_and_scores_as_trained_but_neither_exports_nor_linearizes(run, tmp_path):
    loaded = droptune.load_model(run.output_dir)
    assert isinstance(loaded.model, BlockFeaturesClassifier)
    weights = load_file(f"{run.output_dir}/best.safetensors")
    torch.testing.assert_close(loaded.model.block_weights.detach(), weights["block_weights"])
    with pytest.raises(DroptuneError, match="linear fine-tuning model .* droptune.load_model"):
        export(loaded, tmp_path / "export")
    assert not (tmp_path / "export").exists()
    with pytest.raises(DroptuneError, match="linear fine-tuning model"):
        linearity(Subject(read_run(run.output_dir), torch.device("cpu"), max_images=4))


def test_a_probe_of_one_model_does_not_start_the_other(run, tmp_path):
    """The probe of the linear fine-tuning model saw its mixed features; the network's probe saw the network's."""
    droptune.train(run.replace(head_init="probe", output_dir=str(tmp_path / "probed"), steps=2))
    probe = str(tmp_path / "probed" / "head_start.safetensors")
    with pytest.raises(DroptuneError, match="probed with linear_blocks 2, this run has None"):
        droptune.train(run.replace(linear_blocks=None, head_init=probe, output_dir=str(tmp_path / "plain"), steps=2))
    with pytest.raises(DroptuneError, match="probed with linear_blocks 2, this run has 1"):
        droptune.train(run.replace(linear_blocks=1, head_init=probe, output_dir=str(tmp_path / "one"), steps=2))
