import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from droptune.cli.main import main
from droptune.data import open_dataset, split_domain
from droptune.data.digits import RotatedDigits
from droptune.data.domains import IMAGE_EXTENSIONS, ImageFolderDomains, scan
from droptune.data.loaders import DomainBalancedBatches, DomainImages, eval_batches, EvalSplit
from droptune.data import registry
from droptune.data.registry import DATASETS, get_spec
from droptune.data.verify import info, verify
from droptune.errors import DroptuneError
from droptune.inference.predict import image_files

from conftest import PACS, make_image_folder


def test_registry_holds_domainbed_datasets():
    assert {"PACS", "VLCS", "OfficeHome", "TerraIncognita", "DomainNet", "RotatedDigits"} <= set(DATASETS)
    assert get_spec("office_home").name == "OfficeHome"
    assert get_spec("pacs").total == 9991
    assert DATASETS["DomainNet"].total == 586575
    assert DATASETS["VLCS"].total == 10729
    assert DATASETS["OfficeHome"].total == 15588


def test_a_dataset_is_registered_under_a_name_and_folder_of_its_own(monkeypatch):
    """Mutants: a second PACS replaces the first; a spec whose name or folder is another's, in other case, is
    registered and then shadowed by it (`get_spec` finds either, ignoring case)."""
    monkeypatch.setattr(registry, "DATASETS", dict(DATASETS))
    for name, folder, taken in (("PACS", "PACS2", "pacs"), ("MyHome", "OFFICE_HOME", "office_home"),
                                ("office_home", "mine", "office_home")):
        with pytest.raises(DroptuneError, match=f"cannot register dataset {name}: '{taken}' already names dataset "):
            registry.register(registry.DatasetSpec(name, folder, ("a", "b"), 2))
    assert registry.DATASETS == DATASETS


def test_a_dataset_counts_the_images_of_each_of_its_domains_and_no_other():
    """Mutant: a misspelt domain in `counts` accepted, so that domain's count is never checked."""
    with pytest.raises(DroptuneError, match=r"dataset Mine: .* \(a, b\) .*: 'B', 'b'$"):
        registry.DatasetSpec("Mine", "mine", ("a", "b"), 2, {"a": 10, "B": 5})
    assert registry.DatasetSpec("Mine", "mine", ("a", "b"), 2).total == 0


def test_reader_shares_one_class_index(image_folder):
    data = ImageFolderDomains(image_folder)
    assert data.domains == ["a", "b", "c"]
    assert data.classes == ["cat", "dog"]
    for d in range(3):
        assert list(data.labels(d)) == [0] * 6 + [1] * 6
    image = data.read(1, 7)
    assert image.mode == "RGB" and image.size == (20, 20)
    assert len(data) == 36


def test_class_folders_that_differ_are_an_error(image_folder):
    (image_folder / "b" / "cat").rename(image_folder / "b" / "kitten")
    with pytest.raises(DroptuneError, match=r"class folders differ.*: b lacks \['cat'\] that a, c have; "
                                            r"a, c lack \['kitten'\] that b has$"):
        ImageFolderDomains(image_folder)


def test_a_class_missing_from_the_first_domain_is_blamed_on_that_domain(image_folder):
    """Mutant: each domain compared with the first one, so that the first one's missing class is reported as an
    extra class of the others ("b lacks [] and has extra ['dog'] compared with a")."""
    shutil.rmtree(image_folder / "a" / "dog")
    with pytest.raises(DroptuneError) as error:
        ImageFolderDomains(image_folder)
    assert str(error.value) == f"class folders differ across domains in {image_folder}: a lacks ['dog'] that b, c have"


def test_missing_directory_and_unknown_dataset(tmp_path):
    with pytest.raises(DroptuneError, match="dataset directory not found: .*PACS"):
        open_dataset("PACS", tmp_path)
    with pytest.raises(DroptuneError, match="unknown dataset 'NoSuchSet'"):
        open_dataset("NoSuchSet", tmp_path)
    with pytest.raises(DroptuneError, match="needs a data directory"):
        open_dataset("VLCS", None)


def test_registered_dataset_with_wrong_domains(tmp_path):
    make_image_folder(tmp_path / "PACS", domains=("art_painting", "cartoon", "photo"))
    with pytest.raises(DroptuneError, match=r"missing \['sketch'\]"):
        open_dataset("PACS", tmp_path)


def test_unknown_test_domain(image_folder):
    data = ImageFolderDomains(image_folder)
    assert data.domain_index("b") == 1 and data.domain_index(2) == 2 and data.domain_index("0") == 0
    with pytest.raises(DroptuneError, match="unknown test domain 'zebra' for toy: expected one of a, b, c"):
        data.domain_index("zebra")
    with pytest.raises(DroptuneError, match="unknown test domain"):
        data.domain_index(7)


def test_empty_class_and_empty_domain(image_folder):
    for f in (image_folder / "a" / "dog").iterdir():
        f.unlink()
    with pytest.raises(DroptuneError, match="empty class folder: .*a/dog has no images"):
        ImageFolderDomains(image_folder)
    empty = image_folder.parent / "empty"
    (empty / "x").mkdir(parents=True)
    (empty / "y").mkdir()
    with pytest.raises(DroptuneError, match=r"no class folders in .*empty's domain folders \(x, y\)"):
        ImageFolderDomains(empty)


def test_corrupt_image_is_named(image_folder):
    bad = image_folder / "c" / "dog" / "3.png"
    bad.write_bytes(b"not a png at all")
    data = ImageFolderDomains(image_folder)
    with pytest.raises(DroptuneError, match=f"cannot read image {bad}"):
        data.read(2, 6 + 3)


def test_split_depends_only_on_trial_seed():
    a = split_domain(100, "photo", trial_seed=0)
    b = split_domain(100, "photo", trial_seed=0)
    c = split_domain(100, "photo", trial_seed=1)
    assert np.array_equal(a.train, b.train) and np.array_equal(a.holdout, b.holdout)
    assert not np.array_equal(a.holdout, c.holdout)
    assert len(a.holdout) == 20 and len(a.train) == 80
    assert set(a.train).isdisjoint(a.holdout) and set(a.train) | set(a.holdout) == set(range(100))
    assert not np.array_equal(a.holdout, split_domain(100, "sketch", trial_seed=0).holdout)
    from_numpy = split_domain(100, np.str_("photo"), trial_seed=np.int64(0))  # e.g. values read from a table
    assert np.array_equal(a.holdout, from_numpy.holdout), "a NumPy scalar splits as the Python value it holds"


def test_batches_draw_each_training_domain_and_are_a_function_of_step():
    domains = [(0, np.arange(10)), (2, np.arange(100, 107))]
    full = list(DomainBalancedBatches(domains, batch_size=4, seed=3, start_step=0, end_step=6))
    resumed = list(DomainBalancedBatches(domains, batch_size=4, seed=3, start_step=4, end_step=6))
    assert full[4:] == resumed
    for batch in full:
        assert [k[0] for k in batch] == [0] * 4 + [2] * 4
    drawn = [k[1] for batch in full[:5] for k in batch if k[0] == 0]
    assert sorted(drawn[:10]) == list(range(10)), "each epoch is a permutation of the domain"
    assert full != list(DomainBalancedBatches(domains, batch_size=4, seed=4, start_step=0, end_step=6))


def test_seeded_augmentation_is_reproducible(image_folder):
    data = ImageFolderDomains(image_folder)
    images = DomainImages(data, 16)
    x1, y1 = images[(0, 1, 123)]
    x2, _ = images[(0, 1, 123)]
    x3, _ = images[(0, 1, 124)]
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    images[(0, 1, 5)]
    assert torch.rand(1) == before, "seeded transforms must not disturb the global RNG"
    assert x1.shape == (3, 16, 16) and y1 == 0
    assert torch.equal(x1, x2) and not torch.equal(x1, x3)
    clean_a, _ = images[(0, 1, None)]
    clean_b, _ = images[(0, 1, None)]
    assert torch.equal(clean_a, clean_b)


def test_eval_batches_never_mix_splits():
    splits = [EvalSplit("a", "out", [(0, i, None) for i in range(5)]),
              EvalSplit("b", "in", [(1, i, None) for i in range(3)])]
    batches, owners = eval_batches(splits, batch_size=2)
    assert owners == [0, 0, 0, 1, 1]
    assert [len(b) for b in batches] == [2, 2, 1, 2, 1]


def test_rotated_digits_builtin():
    data = open_dataset("RotatedDigits")
    assert isinstance(data, RotatedDigits)
    assert data.domains == ["0", "15", "30", "45", "60", "75"] and len(data.classes) == 10
    assert len(data) == 1797
    assert all(set(data.labels(d)) == set(range(10)) for d in range(6))
    first, last = np.asarray(data.read(0, 0)), np.asarray(data.read(5, 0))
    assert first.shape == (32, 32, 3) and first.max() > 100
    assert not np.array_equal(first, last)
    assert data.augment_by_default is False


@pytest.mark.skipif(not PACS.is_dir(), reason="real PACS not present (../shared/data/PACS)")
def test_real_pacs_counts():
    data = open_dataset("PACS", PACS.parent)
    counts = {name: len(data.labels(d)) for d, name in enumerate(data.domains)}
    assert counts == get_spec("PACS").counts
    assert data.classes == ["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"]


def test_whole_image_reads_decode_a_jpeg_shrunk_but_never_below_the_size(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (227, 227, 3), dtype=np.uint8)
    for domain in ("a", "b"):
        (tmp_path / "jpegs" / domain / "cat").mkdir(parents=True)
        Image.fromarray(pixels).save(tmp_path / "jpegs" / domain / "cat" / "0.jpg", quality=95)
    data = ImageFolderDomains(tmp_path / "jpegs")
    assert data.read(0, 0).size == (227, 227)
    assert data.read(0, 0, shrink_to=112).size == (114, 114), "JPEG decoded at 1/2 scale, still >= 112"
    assert data.read(0, 0, shrink_to=120).size == (227, 227), "1/2 scale would be smaller than 120"
    x, _ = DomainImages(data, 112)[(0, 0, None)]
    assert x.shape == (3, 112, 112) and x.dtype == torch.uint8


# -- which files are a dataset's images ------------------------------------------------------------

def write_image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (2, 2), (200, 30, 30)).save(path)
    return path


def listed(data: ImageFolderDomains, domain: int) -> list[Path]:
    return [data.path(domain, i) for i in range(len(data.labels(domain)))]


def test_a_folder_without_linked_or_hidden_folders_or_jfif_files_is_listed_as_before(tmp_path):
    """Runs resume only on the image lists they started with (runs in progress on PACS must still resume): the
    content and order (by path components, so sub/ before sub-x/) of such a folder must not change."""
    root = tmp_path / "toy"
    for domain in ("a", "b"):
        for cls in ("cat", "dog"):
            for name in ("10.png", "2.png", "B.jpg", "a.JPG", "a-b.png", "a b.png", "_0.bmp", "sub/1.png",
                         "sub/deeper/0.jpeg", "sub-x/3.png", "Z/9.png"):
                write_image(root / domain / cls / name)
            (root / domain / cls / "notes.txt").write_text("not an image")
            (root / domain / cls / ".hidden.png").write_bytes(b"")
            (root / domain / cls / "link.png").symlink_to("2.png")

    data = ImageFolderDomains(root)

    order = ["10.png", "2.png", "B.jpg", "Z/9.png", "_0.bmp", "a b.png", "a-b.png", "a.JPG", "link.png", "sub/1.png",
             "sub/deeper/0.jpeg", "sub-x/3.png"]  # the listing before linked folders were followed
    for d, domain in enumerate(("a", "b")):
        assert listed(data, d) == [root / domain / cls / name for cls in ("cat", "dog") for name in order]
        assert list(data.labels(d)) == [0] * 12 + [1] * 12
    assert scan(root).all_images() == listed(data, 0) + listed(data, 1)


def test_linked_folders_are_followed_each_real_folder_once(tmp_path):
    """Mutant: Path.rglob (Python 3.11) skipping a linked folder's images without a word, where torchvision's
    ImageFolder (DomainBed) reads them; a link to an ancestor must neither loop nor read other classes' images."""
    root = make_image_folder(tmp_path / "toy", per_class=2, size=4)
    batch = [write_image(tmp_path / "elsewhere" / f"{n}.png") for n in range(3)]
    dog = root / "c" / "dog"
    (dog / "batch1").symlink_to(batch[0].parent)
    (dog / "batch1-again").symlink_to(batch[0].parent)
    (dog / "loop").symlink_to(dog)
    (dog / "up").symlink_to(root / "c")

    data = ImageFolderDomains(root)

    dogs = [dog / "0.png", dog / "1.png", *(dog / "batch1" / p.name for p in batch)]
    assert listed(data, 2) == [root / "c" / "cat" / "0.png", root / "c" / "cat" / "1.png", *dogs]
    assert list(data.labels(2)) == [0, 0, 1, 1, 1, 1, 1]
    assert data.read(2, 6).getpixel((0, 0)) == (200, 30, 30)
    assert [d.images for d in verify(root, decode=False).domains] == [4, 4, 7]
    assert {row.split()[0]: row.split()[1:] for row in info(root).splitlines() if row}["c"] == ["2", "7"]
    assert image_files([dog]) == dogs


def test_hidden_folders_are_skipped_like_hidden_files(tmp_path):
    """Mutant: images in class/.ipynb_checkpoints/ trained on (and predicted) while hidden files were skipped."""
    root = make_image_folder(tmp_path / "toy", per_class=2, size=4)
    cat = root / "a" / "cat"
    write_image(cat / ".ipynb_checkpoints" / "0-checkpoint.png")
    write_image(cat / "sub" / ".cache" / "0.png")
    hidden = write_image(cat / ".1.png")

    assert listed(ImageFolderDomains(root), 0)[:2] == [cat / "0.png", cat / "1.png"]
    assert verify(root, decode=False).domains[0].images == 4
    assert image_files([cat]) == [cat / "0.png", cat / "1.png"]
    assert image_files([cat, hidden]) == [cat / "0.png", cat / "1.png", hidden], "a file named is predicted"


def test_training_names_the_images_outside_class_folders(tmp_path, caplog):
    """Mutant: images directly in a domain folder dropped by training without a word (verify noted them)."""
    root = make_image_folder(tmp_path / "toy", per_class=1, size=4)
    write_image(root / "a" / "stray.png")
    write_image(root / "b" / "stray.jpg")
    write_image(root / "top.png")

    with caplog.at_level(logging.WARNING, logger="droptune"):
        data = ImageFolderDomains(root)

    assert len(data) == 6
    assert caplog.messages == [f"{root}: ignored 3 images outside class folders (expected <domain>/<class>/<image>): "
                               f"2 .png, 1 .jpg; e.g. {root / 'top.png'}"]


def test_jfif_files_are_images_and_other_files_are_counted_by_suffix(tmp_path, caplog):
    """Mutants: .jfif files (JPEGs) ignored; the ignored files summed up by one example only."""
    root = make_image_folder(tmp_path / "toy", per_class=1, size=4)
    jfif = write_image(root / "a" / "cat" / "photo.jfif")
    for name in ("x.xyz", "notes.txt", "Thumbs.db", "README"):
        (root / "b" / "dog" / name).write_text("")

    with caplog.at_level(logging.WARNING, logger="droptune"):
        data = ImageFolderDomains(root)

    assert data.path(0, 1) == jfif and data.read(0, 1).size == (2, 2)
    assert caplog.messages == [f"{root}: ignored 4 non-image files: 1 .db, 1 .txt, 1 .xyz, 1 without a suffix; "
                               f"e.g. {root / 'b' / 'dog' / 'README'}"]


def test_every_image_extension_is_one_pil_reads():
    assert set(IMAGE_EXTENSIONS) <= set(Image.registered_extensions())


def test_training_refuses_a_single_class_naming_the_folder(tmp_path, capsys):
    """Mutant: `num_classes must be an integer of at least 2, got 1`, naming an internal field, not the folder."""
    root = make_image_folder(tmp_path / "toy", classes=("cat",), per_class=5, size=4)
    argv = ["train", "--dataset", str(root), "--test-domain", "a", "--backbone", "resnet10t", "--weights", "none",
            "--steps", "1", "--output-dir", str(tmp_path / "run"), "--no-progress"]

    assert main(argv) == 2

    assert capsys.readouterr().err.splitlines() == [
        f"droptune: error: {root} holds a single class folder (cat): a classifier needs at least 2 classes"]


def test_a_folder_that_cannot_be_listed_is_named(tmp_path, monkeypatch):
    """Mutant: an unreadable folder's images dropped without a word (Path.rglob skips it), or a bare PermissionError."""
    root = make_image_folder(tmp_path / "toy", per_class=1, size=4)
    locked = write_image(root / "b" / "dog" / "locked" / "0.png").parent
    scandir = os.scandir

    def refuse_locked(path):
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuse_locked)
    with pytest.raises(DroptuneError) as error:
        ImageFolderDomains(root)
    assert str(error.value) == f"cannot list the folder {locked}: Permission denied"
