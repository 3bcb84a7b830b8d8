import logging
import re
import socket
from urllib.error import URLError

import pytest
import torch
import torchvision
from huggingface_hub.errors import LocalEntryNotFoundError
from safetensors.torch import load_file
from torch import nn

from droptune.cli.main import main
from droptune.errors import DroptuneError
from droptune.models import DropoutClassifier, build_model, create_backbone, lite_imagenet_classifier
from droptune.models.loading import load_strict
from droptune.training.checkpoint import save_weights
from droptune.training.config import TrainConfig
from droptune.training.optim import make_optimizer, make_scheduler

TINY_RUN = ["--image-size", "16", "--batch-size", "2", "--steps", "2", "--eval-every", "2", "--workers", "0",
            "--no-progress"]


def tiny_backbone() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def test_dropout_is_the_only_thing_between_features_and_linear():
    model = DropoutClassifier(tiny_backbone(), 8, 5, dropout=0.9)
    assert [type(m) for m in model.head] == [nn.Dropout, nn.Linear]
    assert model.head.dropout.p == 0.9 and model.head.fc.in_features == 8 and model.head.fc.out_features == 5
    x = torch.randn(4, 3, 12, 12)
    model.eval()
    assert torch.allclose(model(x), model.head.fc(model.features(x)))
    default = DropoutClassifier(tiny_backbone(), 8, 5)
    assert default.dropout == 0.9 and default.freeze_bn  # the paper's rate and frozen BatchNorm statistics


def test_training_drops_the_pooled_features_at_rate_p_and_scoring_keeps_them_all():
    """Mutants: dropout on another tensor than the pooled features (the input, the logits); a rate other than p;
    dropout off in training (e.g. frozen BatchNorm's `train()` putting the whole model in eval mode) or on in eval."""
    x = torch.randn(6, 3, 12, 12)
    for freeze_bn in (True, False):
        model = DropoutClassifier(tiny_backbone(), 8, 3, dropout=0.75, freeze_bn=freeze_bn).train()
        torch.manual_seed(1)
        trained = model(x)
        features = model.features(x)
        torch.manual_seed(1)
        mask = torch.nn.functional.dropout(torch.ones_like(features), 0.75)
        assert torch.allclose(trained, model.head.fc(features * mask), atol=1e-6)
        assert set(mask.unique().tolist()) == {0.0, 4.0}
        model.eval()
        assert torch.allclose(model(x), model.head.fc(model.features(x)), atol=1e-6)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_dropout_rate_is_validated(p):
    """Mutant: p = 0, plain fine-tuning (the baseline of every comparison), is refused."""
    with pytest.raises(DroptuneError, match="dropout must be a number with 0 <= p < 1"):
        DropoutClassifier(tiny_backbone(), 8, 3, dropout=p)
    with pytest.raises(DroptuneError, match="invalid dropout"):
        TrainConfig(dropout=p)
    assert DropoutClassifier(tiny_backbone(), 8, 3, dropout=0.0).dropout == TrainConfig(dropout=0.0).dropout == 0.0


@pytest.mark.parametrize("p", ["0.9", True, None])
def test_a_dropout_rate_that_is_not_a_number_is_one_line(p):
    with pytest.raises(DroptuneError, match=f"dropout must be a number with 0 <= p < 1, got {p!r}"):
        build_model("resnet10t", 3, dropout=p, weights="none")


def test_frozen_batchnorm_stays_frozen_but_its_affine_weights_train():
    """Mutant: a model fresh from its constructor keeps its BatchNorm in training mode until `.train()`."""
    model = DropoutClassifier(tiny_backbone(), 8, 3, dropout=0.5, freeze_bn=True)
    bn = model.backbone[1]
    mean_before = bn.running_mean.clone()
    assert model.training and not bn.training and model.head.dropout.training
    model.train()
    assert model.training and not bn.training and model.head.dropout.training
    loss = model(torch.randn(6, 3, 10, 10) * 5 + 3).sum()
    loss.backward()
    assert torch.equal(bn.running_mean, mean_before)
    assert bn.weight.grad is not None and bn.weight.grad.abs().sum() > 0
    unfrozen = DropoutClassifier(tiny_backbone(), 8, 3, dropout=0.5, freeze_bn=False).train()
    assert unfrozen.backbone[1].training


def test_head_lr_multiplier_and_paper_schedule():
    model = DropoutClassifier(tiny_backbone(), 8, 3)
    config = TrainConfig(lr=1e-3, head_lr_mult=10, weight_decay=5e-5, steps=10)
    optimizer = make_optimizer(model, config)
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert groups["backbone"]["lr"] == pytest.approx(1e-3) and groups["head"]["lr"] == pytest.approx(1e-2)
    assert all(g["momentum"] == 0.9 and g["weight_decay"] == 5e-5 for g in optimizer.param_groups)
    n_params = sum(len(g["params"]) for g in optimizer.param_groups)
    assert n_params == len(list(model.parameters()))
    scheduler = make_scheduler(optimizer, config)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:5] == [pytest.approx(1e-3)] * 5 and lrs[5:] == [pytest.approx(1e-4)] * 5


def test_strict_loading_lists_missing_and_unexpected_keys():
    model = nn.Linear(3, 2)
    with pytest.raises(DroptuneError, match=r"missing keys: bias; unexpected keys: extra\.weight"):
        load_strict(model, {"weight": torch.zeros(2, 3), "extra.weight": torch.zeros(1)}, "test.pth")
    with pytest.raises(DroptuneError, match=r"wrong shapes: weight \(3, 3\)≠\(2, 3\)"):
        load_strict(model, {"weight": torch.zeros(3, 3), "bias": torch.zeros(2)}, "test.pth")


def test_torchvision_resnet_from_a_local_file_and_the_hub_cache(tmp_path, monkeypatch):
    reference = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    backbone = create_backbone("resnet18", str(path))
    assert backbone.num_features == 512
    assert torch.equal(backbone.module.conv1.weight, reference.conv1.weight)
    assert isinstance(backbone.module.fc, nn.Identity)

    # torchvision's own download mechanism finds the file in its cache (no network needed).
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    filename = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[1]
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(reference.state_dict(), tmp_path / "torch" / "hub" / "checkpoints" / filename)
    cached = create_backbone("resnet18", "IMAGENET1K_V1")
    assert torch.equal(cached.module.conv1.weight, reference.conv1.weight)

    with pytest.raises(DroptuneError, match="unknown weights 'IMAGENET9K' for resnet18"):
        create_backbone("resnet18", "IMAGENET9K")

    broken = reference.state_dict()
    del broken["layer1.0.conv1.weight"]
    torch.save(broken, path)
    with pytest.raises(DroptuneError, match=r"missing keys: layer1\.0\.conv1\.weight"):
        create_backbone("resnet18", str(path))


def test_timm_model_from_a_local_file(tmp_path):
    import timm

    reference = timm.create_model("resnet10t", pretrained=False)
    path = tmp_path / "r10t.safetensors"
    from safetensors.torch import save_file

    save_file(reference.state_dict(), str(path))
    model = build_model("resnet10t", num_classes=4, dropout=0.9, weights=str(path))
    assert model.num_features == reference.num_features
    assert torch.equal(model.backbone.conv1[0].weight, reference.conv1[0].weight)
    x = torch.randn(2, 3, 64, 64)
    assert model.eval()(x).shape == (2, 4)
    with pytest.raises(DroptuneError, match="unknown backbone 'no_such_net'"):
        create_backbone("no_such_net", "none")


def test_offline_lite0_classifies_a_real_photo_as_a_cat():
    from skimage import data
    from PIL import Image
    from droptune.data.transforms import eval_transform

    model = lite_imagenet_classifier("efficientnet_lite0").eval()
    image = Image.fromarray(data.chelsea())
    mean, std = (torch.tensor(model.pretrained_cfg[k]).view(3, 1, 1) for k in ("mean", "std"))
    x = (eval_transform(224)(image) / 255 - mean) / std
    with torch.inference_mode():
        top = model(x[None]).argmax(1).item()
    assert 281 <= top <= 285, f"chelsea classified as ImageNet class {top}, not a cat"


def test_lite0_backbone_gives_pooled_features():
    model = build_model("efficientnet_lite0", num_classes=7)
    assert model.num_features == 1280 and model.mean == (0.5, 0.5, 0.5)
    assert model.eval().features(torch.randn(2, 3, 64, 64)).shape == (2, 1280)


def test_no_other_dropout_in_the_backbone():
    model = build_model("efficientnet_lite0", num_classes=7).train()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.features(x), model.features(x)), "features must be deterministic in training"


def test_uint8_images_are_normalized_by_the_model_like_float_input():
    model = build_model("efficientnet_lite0", num_classes=3).eval()
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (model.mean, model.std))
    with torch.inference_mode():
        expected = model((x / 255 - mean) / std)
        assert torch.allclose(model(x), expected, atol=1e-5)
        channels_last = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(channels_last, expected, atol=1e-4)
    assert not any("input_" in k for k in model.state_dict()), "the normalization is not saved with the weights"


def test_a_half_precision_model_takes_uint8_images_and_other_images_are_refused_in_one_line():
    model = DropoutClassifier(tiny_backbone(), 8, 3).eval()
    x = torch.randint(0, 256, (2, 3, 12, 12), dtype=torch.uint8)
    with torch.no_grad():
        expected = model(x)
        half = model.to(torch.bfloat16)(x)
    assert half.dtype == torch.bfloat16 and torch.allclose(half.float(), expected, atol=0.05 * expected.abs().max())
    for bad, says in ((x[:, :1], r"N×3×H×W, got \(2, 1, 12, 12\)"), (x.permute(0, 2, 3, 1), r"got \(2, 12, 12, 3\)"),
                      (x.long(), "got torch.int64")):
        with pytest.raises(DroptuneError, match=says):
            model(bad)


def no_name_resolution(*args, **kwargs):
    """What timm's Hub download raises offline (after its retries), cause included."""
    raise LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub and we cannot find "
                                  "the requested files in the local cache.") from socket.gaierror(
        -2, "Name or service not known")


def unreachable_url(*args, **kwargs):
    """What torch.hub's urllib download (torchvision's weights) raises offline."""
    raise URLError(socket.gaierror(-2, "Name or service not known"))


@pytest.mark.parametrize("backbone, source", [("resnet10t", "timm"), ("resnet18", "torchvision")])
def test_offline_pretrained_weights_are_one_error_line_with_what_to_do_instead(
        backbone, source, image_folder, tmp_path, monkeypatch, capsys):
    """Mutants: the Hub's LocalEntryNotFoundError or urllib's URLError left as a traceback; a message without the
    backbone, source, reason or the offline alternatives; `except Exception` (a bug in the download code hidden)."""
    import timm.models._hub

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no cached torchvision weights
    monkeypatch.setattr(timm.models._hub, "hf_hub_download", no_name_resolution)
    monkeypatch.setattr(torch.hub, "download_url_to_file", unreachable_url)
    code = main(["train", "--dataset", str(image_folder), "--test-domain", "c", "--backbone", backbone, *TINY_RUN,
                 "--output-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0] == (f"droptune: error: cannot download {source}'s pre-trained weights for {backbone} ([Errno -2] "
                      "Name or service not known); instead pass --weights none (random initialization), "
                      "--weights PATH (a local weights file), or use --backbone efficientnet_lite0 with --weights "
                      "default (its weights are installed, not downloaded)")

    def bug(*args, **kwargs):
        raise ValueError("a bug, not the network")

    monkeypatch.setattr(timm.models._hub, "hf_hub_download", bug)
    monkeypatch.setattr(torch.hub, "download_url_to_file", bug)
    with pytest.raises(ValueError, match="a bug"):
        create_backbone(backbone, "default")


def test_num_classes_must_be_an_integer():
    with pytest.raises(DroptuneError, match="num_classes must be an integer of at least 2, got 2.0"):
        build_model("resnet10t", 2.0, weights="none")


def test_timm_weights_are_default_none_a_file_or_one_of_the_models_pretrained_tags(monkeypatch):
    """Mutant: any other name taken for timm's default weights (a torchvision enum given to a timm model downloaded
    and trained the default ones, silently)."""
    from droptune.models.backbones import _timm_name

    assert _timm_name("resnet18", "a1_in1k") == "resnet18.a1_in1k"
    assert _timm_name("resnet18.a1_in1k", "default") == "resnet18.a1_in1k"
    with pytest.raises(DroptuneError, match="unknown weights 'IMAGENET1K_V2' for convnext_atto: expected 'default', "
                                            "'none', a weights file, or one of timm's pretrained tags for "
                                            "convnext_atto: d2_in1k"):
        create_backbone("convnext_atto", "IMAGENET1K_V2")
    with pytest.raises(DroptuneError, match="unknown weights 'tv_in1k' for resnet18.a1_in1k: expected 'default' "
                                            r"\(its tag\), 'none', a weights file$"):
        create_backbone("timm/resnet18.a1_in1k", "tv_in1k")

    import timm.models._hub

    monkeypatch.setattr(timm.models._hub, "hf_hub_download", no_name_resolution)
    with pytest.raises(DroptuneError, match=r"for tf_efficientnet_lite0 \(\[Errno -2\] Name or service not known\); "
                                            r"instead pass --weights none \(random initialization\) or --weights "
                                            r"PATH \(a local weights file\)$"):
        create_backbone("efficientnet_lite0", "in1k")  # timm's copy of the installed weights: not suggested again


def test_cli_prefixes_droptunes_warnings_once_and_leaves_other_loggers_alone(tmp_path, monkeypatch, capsys):
    """Mutant: `logging.basicConfig(format="droptune: ...")` on the root logger, which re-prints every library's
    warning (the Hub's retries, already printed by its own handler) with droptune's prefix."""
    monkeypatch.setattr(logging.root, "handlers", [])  # as in a terminal: pytest's capture handlers are not there
    assert main(["train", "--dataset", "NoSuchSet", "--output-dir", str(tmp_path / "run")]) == 2
    capsys.readouterr()
    logging.getLogger("droptune.data.domains").warning("ours")
    logging.getLogger("timm.models._builder").warning("theirs")
    assert capsys.readouterr().err.splitlines() == ["droptune: ours", "theirs"]


@pytest.mark.parametrize("backbone", ["resnet10t", "resnet18"])
def test_a_droptune_model_file_gives_its_backbone_and_a_fresh_head(backbone, tmp_path):
    """Mutants: a `backbone.`-prefixed file refused as not fitting, or its backbone tensors dropped (left random);
    the new head's shape taken from the file's head."""
    trained = build_model(backbone, num_classes=3, weights="none")
    with torch.no_grad():
        for parameter in trained.parameters():
            parameter.add_(1.0)
    path = tmp_path / "best.safetensors"
    save_weights(trained.state_dict(), path)
    model = build_model(backbone, num_classes=5, weights=str(path))
    assert model.head.fc.out_features == 5
    assert all(torch.equal(value, trained.backbone.state_dict()[key]) for key, value in
               model.backbone.state_dict().items())


def test_fine_tuning_from_a_runs_best_weights(image_folder, pretrained_file, tmp_path, capsys):
    """The user's walkthrough: `--weights runs/X/best.safetensors`. Mutant: that file refused as not fitting."""
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["train", "--dataset", str(image_folder), "--test-domain", "c", "--backbone", "resnet10t",
                 "--weights", str(pretrained_file), *TINY_RUN, "--output-dir", str(first)]) == 0
    best = load_file(str(first / "best.safetensors"))
    assert main(["train", "--dataset", str(image_folder), "--test-domain", "a", "--backbone", "resnet10t",
                 "--weights", str(first / "best.safetensors"), *TINY_RUN, "--output-dir", str(second)]) == 0, \
        capsys.readouterr().err
    model = build_model("resnet10t", num_classes=2, weights=str(first / "best.safetensors"))
    assert all(torch.equal(value, best[f"backbone.{key}"]) for key, value in model.backbone.state_dict().items())


def test_a_timm_head_with_a_pre_logits_layer_is_sized_by_the_features_the_backbone_returns():
    """Mutant: the head sized by timm's `num_features`, the channels before the pre-logits layer (MobileNetV3's 1×1
    head conv gives 1024 features from 576 channels): the first forward fails."""
    from droptune.models.linearized import LinearizedClassifier

    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    for name in ("mobilenetv3_small_100", "ghostnet_100", "mobilenetv4_conv_small", "efficientvit_b0", "hgnetv2_b0"):
        model = build_model(name, 3, 0.9, "none").eval()
        with torch.no_grad():
            assert model.features(x).shape == (2, model.num_features) and model(x).shape == (2, 3), name
    assert model.num_features == 2048 and model.backbone.num_features == 1024  # hgnetv2_b0
    linearized = LinearizedClassifier(model).eval()
    assert torch.allclose(linearized(x), model(x), atol=1e-5)


def shapes(model: nn.Module) -> dict:
    return {key: value.shape for key, value in model.state_dict().items()}


def test_a_fixed_size_timm_model_is_built_for_the_image_size_and_the_others_as_before():
    """Mutants: `image_size` not passed to timm (a ViT built for 160 px fails on 32 px images at the first step);
    passed to a model that takes that size already (a dynamic-size ViT: its runs' weights would no longer load) or
    pools any size (another model, or timm's TypeError)."""
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    model = build_model("test_vit3", 3, weights="none", image_size=32).eval()
    assert model.backbone.pos_embed.shape == (1, 1 + 2 * 2, 96) and model(x).shape == (2, 3)
    assert build_model("test_vit3", 3, weights="none", image_size=160).backbone.pos_embed.shape == (1, 1 + 10 * 10, 96)
    for name in ("test_vit", "resnet10t", "resnet18", "timm/tf_efficientnet_lite0"):
        built = build_model(name, 3, weights="none", image_size=32)
        assert shapes(built) == shapes(build_model(name, 3, weights="none")), name


@pytest.mark.parametrize("name, size, native, reason", [
    ("test_vit", 24, 160, "AssertionError: Input height (24) should be divisible by patch size (16)."),  # forward
    ("test_coatnet", 48, 160, "RuntimeError: output with shape [1, 3, 1, 1] doesn't match the broadcast shape "
                              "[1, 3, 4, 4]"),
])
def test_a_size_a_fixed_size_model_cannot_take_is_refused_when_it_is_built(name, size, native, reason):
    """Mutant: the model built, and its assertion left to the first training step (after config.yaml is written)."""
    with pytest.raises(DroptuneError) as refused:
        build_model(name, 3, weights="none", image_size=size)
    assert str(refused.value) == (f"backbone {name} takes {native}×{native} images and cannot be built for "
                                  f"--image-size {size} ({reason}); use --image-size {native} or another size it takes")


def test_pretrained_position_embeddings_are_resampled_to_the_image_size_from_the_hub_and_from_a_file(
        tmp_path, monkeypatch):
    """Mutants: a weights file loaded without timm's resampling (wrong shapes: pos_embed); the hub's weights built at
    the native size; a run's own file (already at its size) resampled again; weights timm cannot resample left as
    torch's many-line error."""
    import timm
    import timm.models._hub
    from safetensors.torch import save_file
    from timm.layers import resample_abs_pos_embed

    reference = timm.create_model("test_vit3")
    path = tmp_path / "test_vit3.safetensors"
    save_file(reference.state_dict(), str(path))
    monkeypatch.setattr(timm.models._hub, "hf_hub_download", lambda *args, **kwargs: str(path))
    expected = resample_abs_pos_embed(reference.pos_embed.detach(), (2, 2), num_prefix_tokens=1)
    for weights in ("default", str(path)):
        model = build_model("test_vit3", 3, weights=weights, image_size=32)
        assert torch.allclose(model.backbone.pos_embed, expected), weights
        assert torch.equal(model.backbone.blocks[0].attn.qkv.weight, reference.blocks[0].attn.qkv.weight)
    best = tmp_path / "best.safetensors"
    save_weights(model.state_dict(), best)
    assert torch.equal(build_model("test_vit3", 5, weights=str(best), image_size=32).backbone.pos_embed, expected)
    assert build_model("test_vit3", 5, weights=str(best), image_size=64).backbone.pos_embed.shape == (1, 17, 96)

    save_file(timm.create_model("levit_128s").state_dict(), str(path))  # timm does not resample LeViT's biases
    with pytest.raises(DroptuneError) as refused:
        build_model("levit_128s", 3, weights="default", image_size=32)
    assert re.fullmatch(r"backbone levit_128s takes 224×224 images and cannot be built for --image-size 32 "
                        r"\(RuntimeError: Error\(s\) in loading state_dict for LevitDistilled: size mismatch for "
                        r"stages\.0\.blocks\.0\.attn\.attention_biases: [^\n]*\); use --image-size 224 or another "
                        r"size it takes", str(refused.value))


def test_a_distilled_timm_model_fine_tunes_from_a_weights_file_and_exports_with_both_classifiers(image_folder, tmp_path,
                                                                                                   capsys):
    """DeiT's two classifiers (`head`, `head_dist`): both left out of the backbone a weights file gives, both holding
    droptune's head in the export, whose logits (timm's average of the two) are droptune's. Mutants: one classifier
    name taken for a string; the export's second classifier left out."""
    import json

    import timm
    from safetensors.torch import save_file

    import droptune

    name, run, exported = "deit_tiny_distilled_patch16_224", tmp_path / "run", tmp_path / "exported"
    reference = timm.create_model(name, img_size=32)
    path = tmp_path / "deit.safetensors"
    save_file(reference.state_dict(), str(path))
    model = build_model(name, 3, weights=str(path), image_size=32)
    assert torch.equal(model.backbone.dist_token, reference.dist_token)
    assert main(["train", "--dataset", str(image_folder), "--test-domain", "a", "--backbone", name, "--weights",
                 str(path), *TINY_RUN, "--image-size", "32", "--output-dir", str(run)]) == 0, capsys.readouterr().err
    assert main(["export", str(run), "--output", str(exported)]) == 0, capsys.readouterr().err
    assert json.loads((exported / "config.json").read_text())["pretrained_cfg"]["classifier"] == ["head", "head_dist"]
    loaded = droptune.load_model(run)
    x = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    timm_model = timm.create_model(f"local-dir:{exported}", pretrained=True).eval()
    with torch.inference_mode():
        logits = loaded.model(x)
        assert torch.allclose(droptune.load_model(exported).model(x), logits, atol=1e-5)
        assert torch.allclose(timm_model(loaded.model.normalize(x)), logits, atol=1e-5)


def test_a_vit_run_at_another_size_trains_loads_back_and_exports(image_folder, tmp_path, capsys):
    """The image size of every model built again comes from the run's config. Mutants: `load_model`, `export`'s timm
    model or the training model built at the backbone's own size."""
    import json

    import timm

    import droptune

    run, exported = tmp_path / "run", tmp_path / "exported"
    assert main(["train", "--dataset", str(image_folder), "--test-domain", "a", "--backbone", "test_vit3", "--weights",
                 "none", *TINY_RUN, "--image-size", "32", "--output-dir", str(run)]) == 0, capsys.readouterr().err
    loaded = droptune.load_model(run)
    x = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    with torch.inference_mode():
        logits = loaded.model(x)
    assert main(["export", str(run), "--output", str(exported)]) == 0, capsys.readouterr().err
    assert json.loads((exported / "config.json").read_text())["pretrained_cfg"]["input_size"] == [3, 32, 32]
    timm_model = timm.create_model(f"local-dir:{exported}", pretrained=True).eval()
    with torch.inference_mode():
        assert torch.allclose(droptune.load_model(exported).model(x), logits, atol=1e-5)
        assert torch.allclose(timm_model(loaded.model.normalize(x)), logits, atol=1e-5)
