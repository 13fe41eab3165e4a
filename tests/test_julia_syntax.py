"""Every Julia file of the project parses (tree-sitter's Julia grammar; Julia itself is not needed).

The files are found by glob, so new ones are checked as they are added; the helper that does the
checking is itself tested on sources known to be broken and known to be good.
"""
from pathlib import Path

import pytest

from _julia_syntax import assert_parses, first_syntax_error, parse_julia

ROOT = Path(__file__).resolve().parent.parent
JULIA_FILES = sorted({path for folder in ("julia", "pyode") for path in (ROOT / folder).glob("**/*.jl")})


def test_every_julia_file_parses():
    failures = []
    for path in JULIA_FILES:
        try:
            assert_parses(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
        except AssertionError as error:
            failures.append(str(error))
    assert not failures, "\n".join(failures)


GOOD = [
    "function (x, θ)\n    # Linear(2→2)\n    W1 = transpose(reshape(θ[1:4], 2, 2))\n    h1 = (W1 * x) .+ θ[5:6]\n"
    "    return tanh.(h1)\nend",
    "module M\nusing SpecialFunctions\nconst f = function (x, θ)\n    return erf.(x)\nend\nend\n",
    "f(u, p, t) = -p[1] .* u\n",
    "",
]


@pytest.mark.parametrize("source", GOOD, ids=["network", "module", "one-line-function", "empty"])
def test_helper_accepts_good_julia(source):
    assert first_syntax_error(source) is None
    assert_parses(source, "good source")
    assert not parse_julia(source).root_node.has_error


BROKEN = [
    # (source, what the message must say)
    ("function (x, θ)\n    h = (x .+ 1\n    return h\nend", "line 1"),
    ("function (x, θ)\n    return x\n", "ERROR"),                          # no `end`
    ("a = 1\nb = 2\nc = 3 4 5\n", "ERROR at line 3, column 5"),
    ("x = [1, 2", "MISSING ']' at line 1, column 10"),
    ("θθ = 1 +* 2", "ERROR at line 1, column 9"),                          # columns in characters, not bytes
    ("y = \"abc", "ERROR"),
]


@pytest.mark.parametrize("source, expected", BROKEN, ids=["unclosed-paren", "no-end", "line-3", "missing-bracket",
                                                          "unicode-column", "unclosed-string"])
def test_helper_catches_broken_julia(source, expected):
    with pytest.raises(AssertionError, match="broken snippet is not valid Julia") as info:
        assert_parses(source, "broken snippet")
    assert expected in str(info.value), str(info.value)
