"""The reliability cases (tests/reliability.py), one test each: every hostile input file and injected fault
ends as it must. ``python -m tests.reliability`` writes their table into docs/reliability.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.images_corpus import corpus
from tests.reliability import FAULTS, FILE_CASES, Context, fault_outcome, file_outcome


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return corpus(tmp_path_factory.mktemp("corpus"))


@pytest.mark.parametrize("name", list(FILE_CASES))
def test_hostile_file(name: str, files: dict[str, Path], model_path: Path, shared_images: Path, tmp_path: Path) -> None:
    observed = file_outcome(files[name], shared_images / "style_great_wave.jpg", model_path, tmp_path / "out.png")
    assert observed.startswith(FILE_CASES[name]), observed


@pytest.mark.parametrize("name", list(FAULTS))
def test_injected_fault(name: str, model_info, model_path: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    observed = fault_outcome(name, Context(model_info, model_path, tmp_path))
    assert observed.startswith(FAULTS[name][0]), observed
