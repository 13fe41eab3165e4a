"""Every script in examples/ runs as plain Python (short settings) and is valid percent-cell format."""
import os
import pathlib
import runpy

import pytest

EXAMPLES = sorted((pathlib.Path(__file__).parent.parent / "examples").glob("*.py"))


def test_there_are_examples():
    assert EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)             # examples write their figures to the working directory
    monkeypatch.setenv("PYODE_EXAMPLE_EPOCHS", "2")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    runpy.run_path(str(path), run_name="__main__")
    assert list(tmp_path.glob("*.png")), "an example should leave its figure behind"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_percent_format(path):
    text = path.read_text()
    assert text.startswith("# %%"), "notebook tools need a cell marker on the first line"
    assert text.count("# %%") >= 3
