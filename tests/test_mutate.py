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
