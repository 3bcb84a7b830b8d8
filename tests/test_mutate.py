"""scripts/mutate.py still applies to the code: a refactor that moves what a mutant breaks fails here, not silently."""

import importlib.util
import sys

import pytest

from conftest import REPO

spec = importlib.util.spec_from_file_location("mutate", REPO / "scripts" / "mutate.py")
mutate = sys.modules["mutate"] = importlib.util.module_from_spec(spec)  # dataclasses look their module up
spec.loader.exec_module(mutate)


def test_every_named_mutant_still_applies():
    """Mutant: a named mutant whose text no longer occurs (after a refactor) counted as killed, or never run."""
    assert mutate.stale(list(mutate.NAMED)) == []
    assert mutate.stale([mutate.Named("gone", "src/droptune/data/splits.py", "no such text", "", ())]) == [
        "gone: its text occurs 0 times in src/droptune/data/splits.py (expected once)"]
    assert mutate.stale([mutate.Named("moved", "src/droptune/data/splits.py", "def split_domain(", "",
                                      ("tests/test_scoring.py::test_gone",))]) == [
        "moved: its test tests/test_scoring.py::test_gone does not exist"]


@pytest.mark.parametrize("module", sorted(mutate.TARGETS))
def test_every_core_module_still_has_its_functions(module):
    """Mutant: a renamed core function silently dropped from mutation testing (generate must refuse instead)."""
    assert mutate.generate(module, mutate.TARGETS[module])


class Recording:
    """A sandbox whose test stages fail on the unmutated code, as an import error in a test file makes them."""

    def __init__(self):
        self.sources = []

    def run(self, path, source, stages, timeout):
        self.sources.append(source)
        return "killed", " ".join(stages[0])


def test_tests_that_fail_without_a_mutant_stop_the_run(capsys):
    """Mutant: stages that fail on the unmutated code (a test importing what the script's runs cannot) count every
    mutant as killed. Found so: run_inputs' tests once imported tests.conftest, and its 4 mutants all read killed."""
    sandbox = Recording()
    mutants = mutate.generate("run_inputs", mutate.TARGETS["run_inputs"])
    assert mutate.run_generated(sandbox, mutants, 10, None) == 2
    assert sandbox.sources == [(REPO / mutate.TARGETS["run_inputs"].path).read_text()], "no mutant was run"
    assert "run_inputs's tests tests/test_run_inputs.py" in capsys.readouterr().err
    named = [m for m in mutate.NAMED][:1]
    assert mutate.run_named(Recording(), named, 10) == 2
