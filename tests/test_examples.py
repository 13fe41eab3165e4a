"""Every script in examples/ runs as plain Python (short settings) and is valid percent-cell format."""
import ast
import os
import pathlib
import runpy

import pytest

import pyode
from _julia_syntax import assert_parses

EXAMPLES = sorted((pathlib.Path(__file__).parent.parent / "examples").glob("*.py"))


def test_there_are_examples():
    assert EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(path, tmp_path, monkeypatch):
    if "# requires: julia" in path.read_text() and not pyode.julia.available():
        pytest.skip("Julia and pyode's Julia packages are not installed here without a download "
                    "(pyode.julia.available() is false); its Julia source is parsed by "
                    "test_example_julia_source_parses")
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


def _julia_constants(path):
    """Module-level string constants named *_JL: the Julia source an example hands to Julia."""
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id.endswith("_JL"):
                    yield target.id, node.value.value


JULIA_EXAMPLES = [p for p in EXAMPLES if "# requires: julia" in p.read_text()]


def test_there_is_a_julia_example():
    assert JULIA_EXAMPLES


@pytest.mark.parametrize("path", JULIA_EXAMPLES, ids=lambda p: p.name)
def test_example_julia_source_parses(path):
    found = list(_julia_constants(path))
    assert found, "a Julia example keeps its Julia source in *_JL constants"
    net = pyode.nn.mlp(2, 2, width=4)
    for name, source in found:
        assert_parses(source, f"{path.name}:{name}")
        # and as the julia engine composes it, with a translated network called nn
        composed = pyode.julia.ode_function(source, nn=net).julia_source(2)
        assert_parses(composed, f"{path.name}:{name} composed")
