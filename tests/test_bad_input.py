"""Bad input and faults (issue 14): each is answered by one clear line, and nothing finished is touched.

Every refusal runs `droptune` in-process as a user would and asserts a non-zero exit, exactly one
line on stderr ("droptune: error: ...") that names the file, field or value, no traceback, and that
the finished run folder every test shares is byte-for-byte unchanged afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import save_file

from conftest import make_image_folder
from droptune.cli.main import main
from droptune.errors import DroptuneError
from droptune.data import transfer
from droptune.data.images import read_rgb
from droptune.training.config import TrainConfig
from droptune.runs.folder import FolderBusy, RunDir, exclusive, holder
from droptune.training.trainer import is_collapsed, train

TINY = ["--backbone", "resnet10t", "--weights", "none", "--no-freeze-bn", "--image-size", "16", "--batch-size", "2",
        "--steps", "2", "--eval-every", "2", "--workers", "0", "--no-progress"]  # no freeze: its warning, one more line


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One finished tiny RotatedDigits run, shared by every case."""
    folder = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", "--dataset", "RotatedDigits", "--test-domain", "0", *TINY, "--output-dir", str(folder)]) == 0
    return folder


@pytest.fixture(autouse=True)
def finished_stays_unchanged(finished, capsys):
    before = digest(finished)
    capsys.readouterr()
    yield
    assert digest(finished) == before, "a finished run folder was changed"


@pytest.fixture
def toy(tmp_path) -> Path:
    return make_image_folder(tmp_path / "toy")


def refused(capsys, argv: list[str], *names: object) -> str:
    """Run droptune; assert it failed with one line naming every one of `names`; return that line."""
    with warnings.catch_warnings(record=True) as caught:  # on a terminal each would be one more line
        warnings.simplefilter("always")
        code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code != 0, err
    assert not caught, [str(w.message) for w in caught]
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("droptune: error: "), err
    for name in names:
        assert str(name) in lines[0], lines[0]
    return lines[0]


def train_toy(toy: Path, tmp_path: Path, *extra: object) -> list[object]:
    return ["train", "--dataset", toy, "--test-domain", "c", *TINY, "--output-dir", tmp_path / "new", *extra]


# -- configs -------------------------------------------------------------------------------------

@pytest.mark.parametrize("content, names", [
    (b"lrr: 0.1\n", ["unknown config field 'lrr'"]),
    (b"steps: many\n", ["config field 'steps'", "must be int", "'many'"]),
    (b"dropout: 1.5\n", ["invalid dropout = 1.5", "0 <= p < 1"]),
    (b"lr: -1\n", ["invalid lr = -1.0", "positive"]),
    (b"lr_milestones: [0]\n", ["invalid lr_milestones = [0]"]),
    (b"- lr\n- 0.1\n", ["must hold a mapping of config fields, got list"]),
    (b"lr: [\n", ["is not valid YAML"]),
    (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", ["is not a text file"]),  # row 1: a binary --config
], ids=["unknown-key", "wrong-type", "dropout-range", "negative-lr", "milestone-range", "not-a-mapping",
        "malformed-yaml", "binary"])
def test_bad_config_file(capsys, tmp_path, content, names):
    config = tmp_path / "run.yaml"
    config.write_bytes(content)
    refused(capsys, ["train", "--config", config, "--output-dir", tmp_path / "new"], config, *names)
    assert not (tmp_path / "new").exists()


def test_missing_config_file(capsys, tmp_path):
    refused(capsys, ["train", "--config", tmp_path / "nope.yaml"], "config file not found", tmp_path / "nope.yaml")


def test_config_file_that_is_a_folder(capsys, tmp_path):
    refused(capsys, ["train", "--config", tmp_path], "cannot read config file", tmp_path)


def test_unknown_dataset_backbone_and_domain(capsys, toy, tmp_path):
    refused(capsys, ["train", "--dataset", "NoSuchSet", "--output-dir", tmp_path / "x"], "unknown dataset 'NoSuchSet'")
    refused(capsys, train_toy(toy, tmp_path, "--backbone", "nosuchnet"), "unknown backbone 'nosuchnet'")
    refused(capsys, train_toy(toy, tmp_path, "--test-domain", "zebra"), "unknown test domain 'zebra'")
    assert not (tmp_path / "new").exists(), "a run that failed to start leaves no folder behind"


# -- weights and head files ----------------------------------------------------------------------

class RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = Path(os.environ.get("TMPDIR", "/tmp")) / f"droptune-pickle-ran-{os.getpid()}"


def write_pickle(path: Path) -> Path:
    path.write_bytes(pickle.dumps({"conv1.weight": RunsCode()}))
    return path


def test_weights_file_missing(capsys, toy, tmp_path):
    refused(capsys, train_toy(toy, tmp_path, "--weights", tmp_path / "w.pth"), "not found", tmp_path / "w.pth")


def test_weights_file_of_the_wrong_format(capsys, toy, tmp_path):
    path = tmp_path / "w.pth"
    path.write_text("these are not weights")
    refused(capsys, train_toy(toy, tmp_path, "--weights", path), "cannot read weights file", path)


def test_weights_of_another_architecture(capsys, toy, tmp_path):
    import timm

    path = tmp_path / "resnet18.safetensors"
    save_file(timm.create_model("resnet18").state_dict(), str(path))
    refused(capsys, train_toy(toy, tmp_path, "--weights", path), path, "do not fit the model", "wrong shapes")


def test_truncated_weights_file(capsys, toy, tmp_path):
    import timm

    path = tmp_path / "w.safetensors"
    save_file(timm.create_model("resnet10t").state_dict(), str(path))
    path.write_bytes(path.read_bytes()[:1000])
    refused(capsys, train_toy(toy, tmp_path, "--weights", path), "cannot read weights file", path)


@pytest.mark.parametrize("flag", ["--weights", "--head-init"])
def test_pickled_code_is_refused_and_never_runs(capsys, toy, tmp_path, flag):
    MARKER.unlink(missing_ok=True)
    path = write_pickle(tmp_path / ("w.pth" if flag == "--weights" else "head.safetensors"))
    refused(capsys, train_toy(toy, tmp_path, flag, path), "cannot read", path)
    assert not MARKER.exists(), "the pickled code ran"


def test_head_file_missing(capsys, toy, tmp_path):
    refused(capsys, train_toy(toy, tmp_path, "--head-init", tmp_path / "h.safetensors"), "head file not found")


def test_truncated_head_file(capsys, toy, tmp_path):
    path = tmp_path / "h.safetensors"
    save_file({"fc.weight": torch.zeros(2, 512), "fc.bias": torch.zeros(2)}, str(path))
    path.write_bytes(path.read_bytes()[:-100])
    refused(capsys, train_toy(toy, tmp_path, "--head-init", path), "cannot read head file", path)


def test_head_file_without_probe_metadata(capsys, toy, tmp_path):
    path = tmp_path / "h.safetensors"
    save_file({"fc.weight": torch.zeros(2, 512), "fc.bias": torch.zeros(2)}, str(path))
    refused(capsys, train_toy(toy, tmp_path, "--head-init", path), path, "lacks droptune's probe metadata")


def test_head_file_probed_on_another_split(capsys, toy, tmp_path):
    path = tmp_path / "h.safetensors"
    metadata = {"dataset": "toy", "test_domain": "a", "classes": ["cat", "dog"], "backbone": "resnet10t",
                "weights": "none", "trial_seed": 0, "holdout_fraction": 0.2}
    save_file({"fc.weight": torch.zeros(2, 512), "fc.bias": torch.zeros(2)}, str(path),
              {k: json.dumps(v) for k, v in metadata.items()})
    refused(capsys, train_toy(toy, tmp_path, "--head-init", path), path, "test_domain 'a', this run has 'c'")


# -- resume and run folders ----------------------------------------------------------------------

def copy_of(finished: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / "copy"))


def test_resume_of_a_missing_folder(capsys, tmp_path):
    refused(capsys, ["train", "--resume", tmp_path / "gone"], tmp_path / "gone", "no config.yaml")


def test_resume_without_a_checkpoint_says_so(capsys, finished, tmp_path):
    """Row 8: a run stopped before its first checkpoint is not silently restarted."""
    run = copy_of(finished, tmp_path)
    (run / "last.pt").unlink()
    (run / "results.json").unlink()
    before = digest(run)
    refused(capsys, ["train", "--resume", run], run, "holds no checkpoint (last.pt)", "--config")
    assert digest(run) == before


@pytest.mark.parametrize("size", [5000, 0])
def test_resume_of_a_truncated_checkpoint(capsys, finished, tmp_path, size):
    """Mutant (chaos audit 5): an empty last.pt said `cannot read checkpoint ...:` with no reason, and neither
    said what can be done."""
    run = copy_of(finished, tmp_path)
    (run / "results.json").unlink()
    (run / "last.pt").write_bytes((run / "last.pt").read_bytes()[:size])
    line = refused(capsys, ["train", "--resume", run], "cannot read checkpoint", run / "last.pt",
                   f"--config {run / 'config.yaml'} --output-dir {run}")
    assert ("(an empty file)" in line) == (size == 0)


@pytest.mark.parametrize("kept", [0, 200])
def test_resume_with_a_config_yaml_cut_short(capsys, finished, tmp_path, kept):
    """Mutant (chaos audit 4): the fields a cut config.yaml lacks taken at their defaults (for an empty file the
    paper's recipe on RotatedDigits), the dataset and model built, and the checkpoint then blamed."""
    run = copy_of(finished, tmp_path)
    (run / "results.json").unlink()
    (run / "config.yaml").write_text((run / "config.yaml").read_text()[:kept].rsplit("\n", 1)[0])
    refused(capsys, ["train", "--resume", run], run / "config.yaml", "lacks", "steps", "cut short")


def test_resume_with_another_config(capsys, finished, tmp_path):
    run = copy_of(finished, tmp_path)
    (run / "results.json").unlink()
    config = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**config, "lr": 0.5}))
    refused(capsys, ["train", "--resume", run], run / "last.pt", "written by a different config")


def test_resume_changing_a_setting(capsys, finished):
    refused(capsys, ["train", "--resume", finished, "--dropout", "0.1"], "cannot change dropout", finished)


def test_resuming_a_finished_run_says_nothing_was_trained(capsys, finished):
    assert main(["train", "--resume", str(finished)]) == 0
    assert f"{finished}: already finished at step " in capsys.readouterr().out


def test_resume_with_a_binary_config(capsys, finished, tmp_path):
    run = copy_of(finished, tmp_path)
    (run / "config.yaml").write_bytes(b"\xff\xfe\x00garbage")
    refused(capsys, ["train", "--resume", run], run / "config.yaml", "is not a text file")


def test_new_run_into_a_finished_folder(capsys, finished):
    refused(capsys, ["train", "--dataset", "RotatedDigits", *TINY, "--output-dir", finished], "already holds a run",
            finished)


def test_resuming_a_finished_run_changes_nothing(capsys, finished):
    assert main(["train", "--resume", str(finished)]) == 0


HOLD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from droptune.runs.folder import exclusive
    with exclusive(Path(sys.argv[1]), "run folder"):
        print("held", flush=True)
        time.sleep(60)
""")


def hold_lock(folder: Path) -> subprocess.Popen:
    """Another process holding `folder`'s lock, as a running `droptune train` or `droptune sweep` does."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_second_writer_of_a_run_folder_is_refused(capsys, toy, tmp_path):
    """Row 5: a second `droptune train` on a folder in use gets a clear error and writes nothing there."""
    folder = tmp_path / "new"
    holder = hold_lock(folder)
    try:
        line = refused(capsys, train_toy(toy, tmp_path), folder, "in use by another droptune process")
        assert f"pid {holder.pid}" in line
        refused(capsys, ["train", "--resume", folder], folder)  # no checkpoint yet: said before the lock matters
        assert sorted(p.name for p in folder.iterdir()) == [".lock"]
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_holder_releases_the_lock(toy, tmp_path, capsys):
    """kill -9 of the process that holds a run folder leaves no stale lock: a resume can start at once."""
    folder = tmp_path / "new"
    holder = hold_lock(folder)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert main([str(a) for a in train_toy(toy, tmp_path)]) == 0


def test_the_lock_names_its_live_holder_and_forgets_a_dead_one(tmp_path):
    """What `droptune summary`/`report` call a running run: a process killed with -9 leaves its pid in the lock
    file, but no longer holds it; a holder on another host cannot be checked from here."""
    folder = tmp_path / "new"
    process = hold_lock(folder)
    assert holder(folder) == f"pid {process.pid} on {socket.gethostname()}"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (folder / ".lock").read_text().split()[0] == str(process.pid)
    assert holder(folder) is None
    (folder / ".lock").write_text("4242 elsewhere\n")
    assert holder(folder) == "pid 4242 on elsewhere"
    with exclusive(folder, "run folder"):
        assert holder(folder) == f"pid {os.getpid()} on {socket.gethostname()}"
    assert holder(folder) is None


def test_kill_9_of_a_training_run_then_resume_at_once(toy, tmp_path):
    """The lock dies with the training process, even while its loader workers linger for a moment."""
    folder = tmp_path / "new"
    argv = [str(a) for a in train_toy(toy, tmp_path, "--steps", "400", "--eval-every", "2", "--workers", "1")]
    process = subprocess.Popen([sys.executable, "-m", "droptune.cli.main", *argv], stderr=subprocess.DEVNULL)
    try:
        while not (folder / "last.pt").exists():
            assert process.poll() is None, "the run ended before its first checkpoint"
            time.sleep(0.2)
    finally:
        process.kill()
        process.wait()
    step = torch.load(folder / "last.pt", weights_only=True)["step"]
    assert train(TrainConfig.load(folder / "config.yaml"), resume=True, until=step + 2) is None
    assert RunDir(folder).read_metrics()[-1]["step"] == step + 2


def test_the_lock_is_exclusive_within_a_process_and_not_inherited(tmp_path):
    with exclusive(tmp_path, "run folder"):
        with pytest.raises(FolderBusy, match=f"run folder {tmp_path} is in use"):
            with exclusive(tmp_path, "run folder"):
                pass
        ready, started = os.pipe()
        child = os.fork()
        if child == 0:  # a loader worker forked while the lock is held, still alive when its parent ends
            os.write(started, b"1")
            signal.pause()
            os._exit(0)
        assert os.read(ready, 1) == b"1"  # the child runs (a process forked but never scheduled holds all it got)
    try:
        with exclusive(tmp_path, "run folder"):
            pass
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        os.close(ready)
        os.close(started)


def test_second_sweep_on_one_sweep_folder_is_refused(capsys, toy, tmp_path):
    spec = tmp_path / "sweep.yaml"
    spec.write_text(yaml.safe_dump({"datasets": [str(toy)], "test_domains": ["c"],
                                    "base": {"backbone": "resnet10t", "weights": "none", "steps": 2},
                                    "methods": [{"name": "p0", "dropout": 0.0}]}))
    holder = hold_lock(tmp_path / "sweep")
    try:
        refused(capsys, ["sweep", spec, "--output", tmp_path / "sweep"], "sweep folder", tmp_path / "sweep", "in use")
        assert not (tmp_path / "sweep" / "runs").exists(), "no job was prepared, let alone trained twice"
    finally:
        holder.kill()
        holder.wait()


# -- datasets ------------------------------------------------------------------------------------

def test_empty_dataset_folder(capsys, tmp_path):
    (tmp_path / "data").mkdir()
    refused(capsys, ["train", "--dataset", tmp_path / "data", *TINY], "no domain folders", tmp_path / "data")


def test_dataset_with_a_single_domain(capsys, tmp_path):
    """Row 2: leave-one-domain-out needs two domains."""
    data = make_image_folder(tmp_path / "one", domains=("only",))
    refused(capsys, ["train", "--dataset", data, "--test-domain", "only", *TINY], data, "single domain folder (only)",
            "at least 2")


@pytest.mark.parametrize("fraction, split", [("0.2", "2/0"), ("0.9", "0/2")])
def test_a_domain_too_small_for_its_split(capsys, tmp_path, fraction, split):
    """Mutant: a domain of 2 images held out none at 20%, its empty validation part scored as 0% and averaged into
    i.i.d. (25% where the one scored domain had 50%); with every part empty the run died in a bare ValueError."""
    data = make_image_folder(tmp_path / "small", per_class=6)
    for extra in range(1, 6):
        for cls in ("cat", "dog"):
            (data / "b" / cls / f"{extra}.png").unlink()
    refused(capsys, ["train", "--dataset", data, "--test-domain", "a", "--holdout-fraction", fraction, *TINY],
            "domain 'b'", data, "has 2 images", f"splits them {split}", "--holdout-fraction")


def test_class_folders_that_differ_across_domains(capsys, toy, tmp_path):
    (toy / "b" / "dog").rename(toy / "b" / "dogs")
    refused(capsys, train_toy(toy, tmp_path), "class folders differ across domains", "b lacks ['dog']")


def test_a_domain_folder_given_as_the_dataset_is_refused_by_info_as_by_train(capsys, toy, tmp_path):
    """Mutant: `data info` of a folder one level too deep (a domain's, its classes taken for domains), or of an empty
    one, describing "2 domains, 0 classes, 0 images" and exiting 0 where train refuses the folder."""
    expected = (f"droptune: error: no class folders in {toy / 'a'}'s domain folders (cat, dog): expected "
                f"{toy / 'a'}/<domain>/<class>/<image> (is it one domain's folder, or a folder of images without "
                "class folders?)")
    assert refused(capsys, ["data", "info", toy / "a"]) == expected
    (tmp_path / "nothing").mkdir()
    assert refused(capsys, ["data", "info", tmp_path / "nothing"]) == \
        f"droptune: error: no domain folders in {tmp_path / 'nothing'}: expected <domain>/<class>/<image>"
    assert refused(capsys, ["train", "--dataset", toy / "a", *TINY]) == expected


def test_data_dir_help_says_train_has_no_data_folder_default(capsys):
    """Mutant: the data commands' --data-dir help promising a ./data default that train and evaluate lack."""
    with pytest.raises(SystemExit):
        main(["data", "info", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "(default: $DROPTUNE_DATA_DIR, else ./data; train and evaluate have no ./data default: give them " \
           "--data-dir or set $DROPTUNE_DATA_DIR)" in help_text


def test_a_flags_help_gives_its_default_once(capsys):
    """Mutant: a field whose help explains its default given a second one ("(default: $DROPTUNE_DATA_DIR)
    (default: None)")."""
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    options = re.split(r" --(?=[a-z])", help_text)
    assert [option.split()[0] for option in options if option.count("(default") > 1] == []
    assert "(default: $DROPTUNE_DATA_DIR)" in help_text and "(default: 0.9)" in help_text


def test_registered_dataset_with_other_domains(capsys, toy, tmp_path):
    (tmp_path / "data").mkdir()
    toy.rename(tmp_path / "data" / "PACS")
    refused(capsys, ["train", "--dataset", "PACS", "--data-dir", tmp_path / "data", *TINY],
            "does not hold PACS's domains", "missing ['art_painting'")


def bomb_png(path: Path, side: int = 30000) -> Path:
    """A PNG header claiming side × side pixels: what PIL reads before it would decode a bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def float_tiff(path: Path) -> Path:
    Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(path)
    return path


def replaced(content: bytes):
    def make(path: Path) -> Path:
        path.write_bytes(content)
        return path
    return make


def truncated(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[:60])
    return path


@pytest.mark.parametrize("make, names", [
    (replaced(b""), ["cannot read image", "cannot identify image file"]),
    (truncated, ["cannot read image", "truncated"]),
    (replaced(b"not a picture"), ["cannot read image", "cannot identify image file"]),
    (bomb_png, ["too large to decode safely"]),  # row 3
    (lambda path: bomb_png(path, 10000), ["too large to decode safely", "MAX_IMAGE_PIXELS"]),  # PIL only warns
    (lambda path: float_tiff(path.with_suffix(".tif")), ["mode F cannot be read faithfully"]),  # row 6
], ids=["zero-byte", "truncated", "not-an-image", "decompression-bomb", "bomb-below-twice-the-limit", "float-mode"])
def test_bad_image_is_named_by_train_and_by_verify(capsys, toy, tmp_path, make, names):
    original = toy / "a" / "dog" / "1.png"
    bad = make(original)
    if bad != original:
        original.unlink()
    refused(capsys, train_toy(toy, tmp_path, "--batch-size", "12"), bad, *names)
    assert main(["data", "verify", str(toy)]) == 1
    out = capsys.readouterr().out
    assert f"cannot decode {bad}: " in out and names[-1] in out  # the reason, as training gave it


def test_reading_images_leaves_the_callers_pil_warnings_alone():
    """droptune refuses a decompression bomb itself; a process-wide filter would make the user's own Image.open
    raise where PIL only warns."""
    probe = ("import warnings; from PIL import Image; import droptune.data.images; "
             "print([f[0] for f in warnings.filters if f[2] is Image.DecompressionBombWarning])")
    # A new interpreter: pytest restores the warning filters after collecting, hiding what an import set.
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert shown.strip() == "[]"


def test_symlink_loop_is_named(capsys, toy, tmp_path):
    loop = toy / "a" / "cat" / "loop.png"
    loop.symlink_to(loop)
    refused(capsys, train_toy(toy, tmp_path), loop, "broken or looping symbolic link")
    assert main(["data", "verify", str(toy)]) == 1
    assert f"cannot decode {loop}" in capsys.readouterr().out


def test_a_class_folder_that_is_a_broken_link_is_named(capsys, toy, tmp_path):
    """Skipped, the class would only be reported as missing from that domain, with nothing naming the link."""
    cls = sorted(p for p in (toy / "a").iterdir())[0]
    shutil.rmtree(cls)
    cls.symlink_to(tmp_path / "moved-away")
    refused(capsys, train_toy(toy, tmp_path), cls, "broken or looping symbolic link")
    refused(capsys, ["data", "verify", toy], cls, "broken or looping symbolic link")


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    """Row 6: mode I;16 reads as its 8-bit equivalent, not as a white image."""
    values = np.array([[0, 257, 1000, 32768, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "g.png")
    assert Image.open(tmp_path / "g.png").mode == "I;16"
    pixels = np.asarray(read_rgb(tmp_path / "g.png"))
    assert pixels[..., 0].tolist() == [[0, 1, 4, 128, 255]] and (pixels[..., 0] == pixels[..., 2]).all()


def test_collapse_flag_is_not_raised_when_held_out_images_are_one_class():
    """Row 9: with a majority rate of 1 a perfect model and a collapsed one look alike."""
    assert not is_collapsed(best_iid=1.0, final_loss=2.5, majority_rate=1.0, num_classes=10)
    assert not is_collapsed(best_iid=0.99, final_loss=2.5, majority_rate=0.985, num_classes=10)
    assert is_collapsed(best_iid=0.5, final_loss=2.5, majority_rate=0.5, num_classes=10)


# -- combine, sweep, report ----------------------------------------------------------------------

def test_combine_a_folder_that_is_not_a_run(capsys, finished, tmp_path):
    refused(capsys, ["combine", finished, tmp_path, "--output", tmp_path / "out"], "not a droptune run folder",
            tmp_path)


def test_combine_an_unfinished_run(capsys, finished, tmp_path):
    run = copy_of(finished, tmp_path)
    (run / "results.json").unlink()
    refused(capsys, ["combine", finished, run, "--output", tmp_path / "out"], run, "is unfinished")


def test_combine_runs_of_different_splits(capsys, finished, tmp_path):
    run = copy_of(finished, tmp_path)
    results = json.loads((run / "results.json").read_text())
    (run / "results.json").write_text(json.dumps({**results, "test_domain": "15"}))
    refused(capsys, ["combine", finished, run, "--output", tmp_path / "out"], "test domain differs", "'15'")


def test_combine_runs_with_corrupted_results(capsys, finished, tmp_path):
    run = copy_of(finished, tmp_path)
    (run / "results.json").write_bytes(b"\x00\xff{not json")
    refused(capsys, ["combine", finished, run, "--output", tmp_path / "out"], run / "results.json", "not valid JSON")


def test_soup_of_runs_with_different_heads_writes_nothing(capsys, finished, tmp_path):
    run = copy_of(finished, tmp_path)
    results = json.loads((run / "results.json").read_text())
    (run / "results.json").write_text(json.dumps({**results, "head_start": "run seed 7"}))
    refused(capsys, ["combine", finished, run, "--output", tmp_path / "out"], "head initialization", "run seed 7")
    assert not (tmp_path / "out").exists(), "nothing half-written is left as if finished"


@pytest.mark.parametrize("content, names", [
    (b"datasets: [RotatedDigits]\nmethods: [{name: a}]\nsedes: [1]\n", ["unknown sweep key 'sedes'"]),
    (b"\xff\xfe\x00\x01", ["is not a text file"]),
    (b"datasets: [RotatedDigits]\nmethods: [{name: a, dropuot: 0.5}]\n", ["unknown config field 'dropuot'"]),
], ids=["typo-key", "binary", "typo-field"])
def test_bad_sweep_file(capsys, tmp_path, content, names):
    spec = tmp_path / "s.yaml"
    spec.write_bytes(content)
    refused(capsys, ["sweep", spec, "--output", tmp_path / "sweep"], spec, *names)
    assert not (tmp_path / "sweep").exists()


def test_sweep_preset_typo(capsys, tmp_path):
    refused(capsys, ["sweep", "papr", "--output", tmp_path / "sweep"], "sweep file not found: papr", "paper")


def test_failing_job_is_recorded_and_the_sweep_exits_non_zero(capsys, toy, tmp_path):
    (toy / "a" / "cat" / "0.png").write_bytes(b"")
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"datasets": [str(toy)], "test_domains": ["c"],
                                    "base": {"backbone": "resnet10t", "weights": "none", "image_size": 16,
                                             "batch_size": 12, "steps": 2, "eval_every": 2, "workers": 0},
                                    "methods": [{"name": "p0", "dropout": 0.0}]}))
    assert main(["sweep", str(spec), "--output", str(tmp_path / "sweep"), "--max-retries", "0"]) == 1
    out = capsys.readouterr().out
    (job,) = (tmp_path / "sweep" / "runs").iterdir()
    assert f"failed: {job}: " in out and str(toy / "a" / "cat" / "0.png") in out
    assert "cannot read image" in json.loads((job / "error.json").read_text())["message"]


def test_report_of_an_empty_folder(capsys, tmp_path):
    """Row 7."""
    refused(capsys, ["report", tmp_path], tmp_path, "holds no runs")
    assert list(tmp_path.iterdir()) == [], "no empty report is written"


def test_report_of_a_missing_folder(capsys, tmp_path):
    refused(capsys, ["report", tmp_path / "nope"], "sweep folder not found", tmp_path / "nope")


def test_report_lists_a_run_with_corrupted_results_and_goes_on(capsys, finished, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(finished, root / "good")
    shutil.copytree(finished, root / "bad")
    (root / "bad" / "results.json").write_text("{")
    assert main(["report", str(root), "--output", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert f"{root / 'bad'}: results.json is not valid JSON" in out and "1 rows from finished runs" in out


# -- data download -------------------------------------------------------------------------------

def test_download_into_a_read_only_folder(capsys, tmp_path, monkeypatch):
    """Row 4. As root a chmod does not stop writes, so the refusal the file system would give is simulated."""
    target = tmp_path / "ro"
    target.mkdir()
    target.chmod(0o555)
    if os.geteuid() == 0:
        mkdir = Path.mkdir

        def read_only(self, *args, **kwargs):
            if target in self.parents or self == target:
                raise OSError(30, "Read-only file system", str(self))
            return mkdir(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", read_only)
    try:
        refused(capsys, ["data", "download", "PACS", "--data-dir", target], "cannot write into --data-dir", target)
    finally:
        target.chmod(0o755)


def test_download_without_network(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(transfer, "RETRY_WAIT_S", 0)
    url = "http://127.0.0.1:9/PACS.zip"  # the discard port: connection refused
    assert main(["data", "download", "PACS", "--data-dir", str(tmp_path), "--source", f"PACS={url}"]) != 0
    *retries, error = capsys.readouterr().err.strip().splitlines()
    assert error.startswith("droptune: error: could not download PACS.zip") and url in error
    assert len(retries) == 3 and all(line.startswith(f"droptune: download of {url} failed (") and
                                     line.endswith("); trying again") for line in retries), "nothing to resume"


def test_download_of_an_unknown_dataset(capsys, tmp_path):
    refused(capsys, ["data", "download", "PAC", "--data-dir", tmp_path], "no download recipe for 'PAC'")


def test_download_from_a_missing_local_copy(capsys, tmp_path):
    refused(capsys, ["data", "download", "PACS", "--data-dir", tmp_path, "--source", f"PACS={tmp_path / 'x.zip'}"],
            tmp_path / "x.zip")


def test_a_cache_dir_that_is_a_file_and_a_config_that_is_not_one_are_one_line(toy, tmp_path, capsys):
    in_the_way = tmp_path / "cache"
    in_the_way.write_text("")
    refused(capsys, train_toy(toy, tmp_path, "--cache-dir", in_the_way), in_the_way, "cache_dir names a folder")
    with pytest.raises(DroptuneError, match="^train takes a TrainConfig .*, got dict$"):
        train({"dataset": str(toy), "test_domain": "c"})
