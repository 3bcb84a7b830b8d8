"""`droptune data verify` and `info`: the real PACS, corrupted copies, and broken layouts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from droptune.cli.main import main
from droptune.data.domains import ImageFolderDomains
from droptune.data.registry import DATASETS
from droptune.data.verify import info, resolve, verify
from droptune.errors import DroptuneError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PACS = SHARED_DATA / "PACS"
PACS_COUNTS = {"art_painting": 2048, "cartoon": 2344, "photo": 1670, "sketch": 3929}  # ../shared/data/README.md
needs_pacs = pytest.mark.skipif(not PACS.is_dir(), reason=f"the real PACS is not at {PACS}")


def make_dataset(root: Path, layout: dict[str, dict[str, int]], suffix: str = ".png") -> Path:
    """`root/<domain>/<class>/<n><suffix>` with `layout[domain][class]` small images."""
    for d, (domain, classes) in enumerate(layout.items()):
        for c, (cls, count) in enumerate(classes.items()):
            (root / domain / cls).mkdir(parents=True, exist_ok=True)
            for n in range(count):
                Image.new("RGB", (5, 4), (40 * d, 40 * c, 40 * n)).save(root / domain / cls / f"{n}{suffix}")
    return root


def table_rows(text: str) -> dict[str, list[str]]:
    """The cells of each printed table row, by its first cell."""
    return {cells[0]: cells[1:] for cells in (line.split() for line in text.splitlines()) if cells}


def corrupt(paths: list[Path]) -> None:
    """Three ways a file goes bad: cut short, emptied, overwritten with something else."""
    truncated, empty, garbage = paths
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    empty.write_bytes(b"")
    garbage.write_bytes(b"<html>403 Forbidden</html>")


@needs_pacs
def test_real_pacs_verifies_with_its_known_counts(capsys):
    assert main(["data", "verify", str(PACS)]) == 0

    out = capsys.readouterr().out
    assert f"PACS at {PACS}: 4 domains, 7 classes, 9,991 images" in out
    rows = table_rows(out)
    for domain, count in PACS_COUNTS.items():
        assert rows[domain] == ["7", f"{count:,}", f"{count:,}", "0"]
    assert rows["total"] == ["7", "9,991", "9,991", "0"]
    assert "OK: layout, class folders and counts check out; every image decodes" in out


@pytest.mark.parametrize("name, classes, counts", [
    ("OfficeCaltech10", 10, {"amazon": 958, "caltech": 1123, "dslr": 157, "webcam": 295}),
    ("Office31", 31, {"amazon": 2817, "dslr": 498, "webcam": 795}),
])  # ../shared/data/README.md
def test_the_office_benchmarks_verify_by_name_with_their_official_counts(name, classes, counts, capsys):
    if not (SHARED_DATA / name).is_dir():
        pytest.skip(f"the real {name} is not at {SHARED_DATA / name}")
    assert main(["data", "verify", name, "--data-dir", str(SHARED_DATA), "--no-decode"]) == 0

    rows = table_rows(capsys.readouterr().out)
    assert {domain: rows[domain][:3] for domain in counts} == {
        domain: [str(classes), f"{count:,}", f"{count:,}"] for domain, count in counts.items()}


@needs_pacs
def test_real_pacs_by_name_and_info():
    root, spec = resolve("PACS", SHARED_DATA)
    report = verify(root, spec, decode=False)

    assert report.ok and spec is DATASETS["PACS"]
    assert {d.name: d.images for d in report.domains} == PACS_COUNTS
    assert report.classes == ["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"]
    described = info(root, spec.name)
    assert "PACS at" in described and "4 domains, 7 classes, 9,991 images" in described
    assert table_rows(described)["sketch"] == ["7", "3,929"]
    assert table_rows(described)["house"] == ["295", "288", "280", "80"]


@needs_pacs
def test_corrupted_copies_of_real_pacs_are_each_named(tmp_path, capsys):
    copy = tmp_path / "pacs_sample"
    for domain in PACS_COUNTS:
        for folder in sorted((PACS / domain).iterdir()):
            (copy / domain / folder.name).mkdir(parents=True)
            for image in sorted(folder.iterdir())[:2]:
                shutil.copy(image, copy / domain / folder.name / image.name)
    bad = [sorted((copy / d / "dog").iterdir())[0] for d in ("art_painting", "sketch", "photo")]
    corrupt(bad)

    assert main(["data", "verify", str(copy)]) == 1

    out = capsys.readouterr().out
    problems = [line.strip() for line in out.splitlines() if line.startswith("  ")]
    assert len(problems) == 3 and "FAILED: 3 problems:" in out
    for path in bad:
        assert any(line.startswith(f"cannot decode {path}: ") for line in problems)
    assert table_rows(out)["art_painting"] == ["7", "14", "-", "1"]


def test_corrupt_images_are_named_with_the_reason(tmp_path):
    root = make_dataset(tmp_path / "mine", {d: {"a": 3, "b": 3} for d in ("x", "y")}, ".jpg")
    bad = [root / "x" / "a" / "0.jpg", root / "y" / "b" / "2.jpg", root / "y" / "a" / "1.jpg"]
    corrupt(bad)

    report = verify(root, workers=2)

    assert not report.ok and sorted(p for p, _ in report.bad_files) == sorted(bad)
    reasons = dict(report.bad_files)
    assert "truncated" in reasons[bad[0]].lower() and "cannot identify image file" in reasons[bad[1]]
    assert [d.bad for d in report.domains] == [1, 2]


def test_layout_problems_are_all_reported(tmp_path):
    root = make_dataset(tmp_path / "mine", {"x": {"a": 2, "b": 2}, "y": {"a": 2, "c": 1}, "z": {"a": 1, "b": 1}})
    (root / "z" / "c").mkdir()
    (root / "x" / "a" / "notes.txt").write_text("not an image")

    report = verify(root, decode=False)

    assert report.problems == [
        "class folder 'b' is in x, z but missing from y",
        "class folder 'c' is in y, z but missing from x",
        f"empty class folder: {root / 'z' / 'c'} has no images",
    ]
    assert report.notes == [f"ignored 1 non-image file: 1 .txt; e.g. {root / 'x' / 'a' / 'notes.txt'}"]
    assert f"note: {report.notes[0]}" in report.render()


def test_a_folder_that_training_refuses_fails(tmp_path, capsys):
    """Mutant: OK for a single domain (leave-one-domain-out needs 2) or a single class, which `train` refuses."""
    one_domain = make_dataset(tmp_path / "one_domain", {"only": {"a": 1, "b": 1}})
    one_class = make_dataset(tmp_path / "one_class", {"x": {"cat": 1}, "y": {"cat": 1}})

    assert verify(one_domain, decode=False).problems == [
        f"{one_domain} holds a single domain folder (only): leave-one-domain-out needs at least 2, one to train on "
        "and one held out"]
    assert verify(one_class, decode=False).problems == [
        f"{one_class} holds a single class folder (cat): a classifier needs at least 2 classes"]
    assert main(["data", "verify", str(one_class)]) == 1
    assert "FAILED: 1 problem:" in capsys.readouterr().out


def test_a_registered_dataset_is_checked_against_its_domains_and_counts(tmp_path):
    classes = {c: 1 for c in ("bird", "car", "chair", "dog", "person")}
    root = make_dataset(tmp_path / "VLCS", {d: classes for d in ("Caltech101", "LabelMe", "SUN09")})

    report = verify(*resolve("VLCS", tmp_path), decode=False)

    assert report.spec is DATASETS["VLCS"]
    assert report.problems == [
        f"{root} does not hold VLCS's domains: missing ['VOC2007'], unexpected []",
        f"{root / 'Caltech101'} has 5 images, expected 1,415 (1,410 missing)",
        f"{root / 'LabelMe'} has 5 images, expected 2,656 (2,651 missing)",
        f"{root / 'SUN09'} has 5 images, expected 3,282 (3,277 missing)",
    ]
    assert table_rows(report.table())["Caltech101"] == ["5", "5", "1,415", "not", "checked"]


def test_a_dataset_one_level_too_deep_gets_a_hint(tmp_path):
    make_dataset(tmp_path / "PACS" / "kfold", {d: {"dog": 1} for d in DATASETS["PACS"].domains})

    report = verify(*resolve(str(tmp_path / "PACS")), decode=False)

    assert f"PACS's domains are one level down, in {tmp_path / 'PACS' / 'kfold'}: verify that folder, or move its " \
           f"domain folders up into {tmp_path / 'PACS'}" in report.problems, "not: move it to the folder it is in"
    make_dataset(tmp_path / "copy" / "kfold", {d: {"dog": 1} for d in DATASETS["PACS"].domains})
    report = verify(tmp_path / "copy", DATASETS["PACS"], decode=False)
    assert f"or move it to {tmp_path / 'PACS'}" in "\n".join(report.problems)


def test_a_file_where_a_dataset_folder_belongs_is_named_as_a_file(tmp_path, capsys):
    """Mutant: a file reported as "not found", and a registered dataset's told to download, which then failed."""
    (tmp_path / "afile").write_text("")
    (tmp_path / "PACS").write_text("")
    a_file = f"dataset folder {tmp_path / 'afile'} is a file, not a folder"
    for argv, expected in (
            (["data", "verify", str(tmp_path / "afile")], a_file),
            (["data", "info", str(tmp_path / "afile")], a_file),
            (["data", "verify", "PACS", "--data-dir", str(tmp_path)],
             f"PACS's folder {tmp_path / 'PACS'} is a file, not a folder: move it away"),
            (["data", "download", "PACS", "--data-dir", str(tmp_path)],
             f"{tmp_path / 'PACS'} is a file, not a folder: move it away to download PACS there")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expected in err, argv
    with pytest.raises(DroptuneError, match="dataset directory .*afile is a file, not a folder"):
        ImageFolderDomains(tmp_path / "afile")


def test_archive_metadata_is_not_a_domain_and_an_empty_domain_is_refused(tmp_path):
    """Mutants: macOS's `__MACOSX` folder taken for a domain; a domain without images accepted where domains may
    lack classes (scoring), which then failed in torch.cat."""
    make_dataset(tmp_path / "mine", {"x": {"a": 1, "b": 1}, "y": {"a": 1, "b": 1}, "__MACOSX": {"a": 1}})
    assert ImageFolderDomains(tmp_path / "mine").domains == ["x", "y"]
    (tmp_path / "mine" / "z").mkdir()
    with pytest.raises(DroptuneError, match=f"empty domain folder: {tmp_path / 'mine' / 'z'} holds no class folder"):
        ImageFolderDomains(tmp_path / "mine", same_classes=False)


def test_cli_exit_codes_and_one_line_errors(tmp_path, capsys):
    make_dataset(tmp_path / "mine", {"x": {"a": 1}, "y": {"b": 1}})
    assert main(["data", "verify", str(tmp_path / "mine")]) == 1
    assert main(["data", "verify", str(tmp_path / "absent" / "dir")]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"droptune: error: dataset folder not found: {tmp_path / 'absent' / 'dir'} "
        f"(expected {tmp_path / 'absent' / 'dir'}/<domain>/<class>/<image>)")
    assert main(["data", "verify", "OfficeHome", "--data-dir", str(tmp_path)]) == 2
    assert f"OfficeHome not found at {tmp_path / 'office_home'}: download it with `droptune data download " \
           f"OfficeHome --data-dir {tmp_path}`" in capsys.readouterr().err


def test_names_that_are_not_folders_are_refused(tmp_path):
    with pytest.raises(DroptuneError, match="unknown dataset 'Imagenette'"):
        resolve("Imagenette", tmp_path)
    with pytest.raises(DroptuneError, match="RotatedDigits is built into droptune"):
        resolve("RotatedDigits", tmp_path)


def test_info_describes_a_custom_dataset(tmp_path, capsys):
    make_dataset(tmp_path / "birds", {"field": {"crow": 2, "wren": 1}, "studio": {"crow": 1, "wren": 3}})

    assert main(["data", "info", str(tmp_path / "birds")]) == 0

    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"birds at {tmp_path / 'birds'}: 2 domains, 2 classes, 7 images"
    rows = table_rows(out)
    assert rows["domain"] == ["classes", "images"] and rows["field"] == ["2", "3"] and rows["studio"] == ["2", "4"]
    assert rows["class"] == ["field", "studio"] and rows["crow"] == ["2", "1"] and rows["wren"] == ["1", "3"]


def test_info_counts_in_the_singular_where_there_is_one(tmp_path, capsys):
    """Mutant: "1 domains, 1 classes, 1 images"."""
    make_dataset(tmp_path / "one", {"field": {"crow": 1}})
    assert main(["data", "info", str(tmp_path / "one")]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"one at {tmp_path / 'one'}: 1 domain, 1 class, 1 image"
    assert verify(tmp_path / "one").render().splitlines()[0].startswith(f"one at {tmp_path / 'one'}: 1 domain, 1 "
                                                                        "class, 1 image (")


def test_info_describes_the_built_in_dataset_from_its_labels(capsys):
    """It was refused as having no folder; the counts are the dataset's own, per domain and class."""
    from droptune.data.digits import RotatedDigits

    assert main(["data", "info", "RotatedDigits"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].endswith(": 6 domains, 10 classes, 1,797 images")
    domain_table, class_table = out.split("\n\n")[1:3]  # a domain and a class are both named "0"
    domains, classes, digits = table_rows(domain_table), table_rows(class_table), RotatedDigits(size=8)
    for index, domain in enumerate(digits.domains):
        assert domains[domain] == ["10", str(len(digits.labels(index)))]
    assert classes["7"] == [str(int((digits.labels(i) == 7).sum())) for i in range(6)]


def test_info_names_a_folder_given_by_its_name_once(tmp_path, capsys, monkeypatch):
    """Mutant: the title saying "birds at birds" for a folder typed as its own name."""
    make_dataset(tmp_path / "birds", {"field": {"crow": 2, "wren": 1}, "studio": {"crow": 1, "wren": 3}})
    monkeypatch.chdir(tmp_path)
    assert main(["data", "info", "birds"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "birds: 2 domains, 2 classes, 7 images"
