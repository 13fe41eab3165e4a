"""The torch-to-Julia network translator, checked without Julia.

The generated source is parsed with tree-sitter's Julia grammar and evaluated by a small reference
interpreter (``_julia_interpreter``, numpy float64) that follows Julia's semantics (1-based ranges,
column-major reshape, broadcasting from the first dimension) and refuses anything else; its values
are compared with the torch module's forward pass.
"""
import copy
import re

import numpy as np
import pytest
import torch
from torch import nn

import pyode.nn
from pyode.julia._translate import NetworkTranslation, SUPPORTED_LAYERS, _julia_float, translate

from _julia_interpreter import JuliaSubsetError, evaluate, julia_function
from _julia_syntax import assert_parses

RTOL = 1e-12

# Every supported activation, with non-default arguments where it has some.
ACTIVATIONS = {
    "Identity": nn.Identity,
    "Tanh": nn.Tanh,
    "ReLU": nn.ReLU,
    "Sigmoid": nn.Sigmoid,
    "SiLU": nn.SiLU,
    "GELU": nn.GELU,
    "GELU-tanh": lambda: nn.GELU(approximate="tanh"),
    "Softplus": nn.Softplus,
    "Softplus-beta2-threshold5": lambda: nn.Softplus(beta=2.0, threshold=5.0),
    "Softplus-threshold1e-05": lambda: nn.Softplus(beta=0.5, threshold=1e-05),
    "ELU": nn.ELU,
    "ELU-alpha0.3": lambda: nn.ELU(alpha=0.3),
    "CELU-alpha1.7": lambda: nn.CELU(alpha=1.7),
    "LeakyReLU": nn.LeakyReLU,
    "LeakyReLU-0.2": lambda: nn.LeakyReLU(0.2),
    "Softsign": nn.Softsign,
    "Mish": nn.Mish,
    "Hardtanh": nn.Hardtanh,
    "Hardtanh-(-0.25,1.5)": lambda: nn.Hardtanh(-0.25, 1.5),
    "ReLU6": nn.ReLU6,
    "Tanhshrink": nn.Tanhshrink,
}


def architectures():
    """Networks of depth 0 to 3, widths 1 to 50, with and without bias, nested Sequentials (float64)."""
    return {
        "linear": lambda: nn.Linear(3, 2),
        "linear-1x1-nobias": lambda: nn.Linear(1, 1, bias=False),
        "depth1-width50": lambda: nn.Sequential(nn.Linear(2, 50), nn.Tanh(), nn.Linear(50, 2)),
        "depth1-width1": lambda: nn.Sequential(nn.Linear(1, 1), nn.Tanh(), nn.Linear(1, 1)),
        "depth2-mixed-bias": lambda: nn.Sequential(nn.Linear(4, 7, bias=False), nn.ReLU(), nn.Linear(7, 7), nn.SiLU(),
                                                   nn.Linear(7, 1, bias=False)),
        "depth3-nested": lambda: nn.Sequential(
            nn.Linear(1, 5), nn.Sequential(nn.GELU(), nn.Linear(5, 5)),
            nn.Sequential(nn.Sequential(nn.Softplus(), nn.Linear(5, 3)), nn.Tanh()), nn.Identity(), nn.Linear(3, 2)),
    }


ARCHITECTURES = architectures()


def _build(factory, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return factory().to(dtype)


def _random_flat(translation: NetworkTranslation, factory, dtype, seed: int) -> torch.Tensor:
    """Parameters of a differently initialised copy of the network, as a flat vector."""
    other = _build(factory, dtype, seed)
    with torch.no_grad():
        for p in other.parameters():      # wider than the default init, so activations see large inputs
            p.normal_(0.0, 1.5)
    return translate(other).flatten().detach()


def _torch_forward(module: nn.Module, x: np.ndarray) -> np.ndarray:
    """The module on a Julia-shaped input: (n_in,) or (n_in, B), whose torch batch is the transpose."""
    p = next(module.parameters())
    with torch.no_grad():
        y = module(torch.as_tensor(x.T, dtype=p.dtype))
    return y.double().numpy().T


def _assert_close(actual, expected, what: str, rtol: float = RTOL) -> None:
    """Relative agreement, measured against the output's scale (sums make single entries cancel)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


def _check_against_torch(module: nn.Module, translation: NetworkTranslation, theta: np.ndarray, seed: int = 1):
    """The interpreted Julia network equals the module (whose parameters are theta) on a vector and a batch."""
    f = julia_function(translation.source)
    rng = np.random.default_rng(seed)
    for x in (rng.normal(size=translation.n_in) * 2.0, rng.normal(size=(translation.n_in, 5)) * 2.0):
        _assert_close(f(x, theta), _torch_forward(module, x), f"x of shape {x.shape}")


# ----------------------------------------------------------------------------------------------
# Structure of the translation

def test_translation_fields_and_source_layout():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 50), nn.Tanh(), nn.Linear(50, 2)).double()
    t = translate(net, name="rhs")
    assert (t.name, t.n_in, t.n_out, t.n_params) == ("rhs", 2, 2, 2 * 50 + 50 + 50 * 2 + 2)
    assert all(a is b for a, b in zip(t.parameters, net.parameters())) and len(t.parameters) == 4
    assert t.slices == (("0.weight", (50, 2), 0, 100), ("0.bias", (50,), 100, 150),
                        ("2.weight", (2, 50), 150, 250), ("2.bias", (2,), 250, 252))
    lines = t.source.splitlines()
    assert lines[0] == "function (x, θ)" and lines[-1] == "end"
    assert lines[1].strip() == "# Linear(2→50) → Tanh → Linear(50→2)"
    assert "    W1 = transpose(reshape(θ[1:100], 2, 50))" in lines
    assert "    b3 = θ[251:252]" in lines
    assert lines[-2].strip().startswith("return ")


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_slices_tile_the_flat_vector_in_parameter_order(arch):
    net = _build(ARCHITECTURES[arch])
    t = translate(net)
    assert [name for name, *_ in t.slices] == [name for name, _ in net.named_parameters()]
    stops = [0] + [stop for *_, stop in t.slices]
    assert [start for _, _, start, _ in t.slices] == stops[:-1]
    assert stops[-1] == t.n_params == sum(p.numel() for p in net.parameters())
    assert all(shape == tuple(p.shape) for (_, shape, _, _), p in zip(t.slices, net.parameters()))


def test_generated_code_is_generic_and_never_mutates():
    """No type annotations, constructors of typed arrays, in-place operations or macros."""
    for factory in list(ARCHITECTURES.values()) + [lambda f=f: nn.Sequential(nn.Linear(2, 3), f())
                                                   for f in ACTIVATIONS.values()]:
        source = translate(_build(factory)).source
        code = "\n".join(line for line in source.splitlines() if not line.strip().startswith("#"))
        for forbidden in ("Float", "::", "zeros", "similar", "Array", ".=", "!", "@", "[:", "push"):
            assert forbidden not in code, f"{forbidden!r} in\n{source}"
        julia_function(source)           # the interpreter's subset has no mutation either


# ----------------------------------------------------------------------------------------------
# Flat parameter vector: flatten / unflatten / load

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_flatten_unflatten_round_trip(arch, dtype):
    net = _build(ARCHITECTURES[arch], dtype)
    t = translate(net)
    flat = t.flatten()
    assert flat.shape == (t.n_params,) and flat.dtype == dtype
    pieces = t.unflatten(flat)
    assert list(pieces) == [name for name, _ in net.named_parameters()]
    for name, p in net.named_parameters():
        assert pieces[name].shape == p.shape and torch.equal(pieces[name], p), name
        assert pieces[name].data_ptr() >= flat.data_ptr()          # a view of flat, not a copy
    pieces[next(iter(pieces))].view(-1)[0] += 1.0
    assert flat[0] == t.flatten()[0] + 1.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_load_then_flatten_returns_the_vector(arch, dtype):
    net = _build(ARCHITECTURES[arch], dtype)
    t = translate(net)
    flat = torch.randn(t.n_params, dtype=dtype, generator=torch.Generator().manual_seed(3))
    t.load(flat)
    assert torch.equal(t.flatten(), flat)
    for name, shape, start, stop in t.slices:
        assert torch.equal(dict(net.named_parameters())[name], flat[start:stop].reshape(shape)), name
    t.load(flat.double().numpy())                     # numpy and other dtypes are accepted too
    assert torch.equal(t.flatten(), flat)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_gradient_on_the_flat_vector_reaches_each_parameter(arch, dtype):
    net = _build(ARCHITECTURES[arch], dtype)
    t = translate(net)
    w = torch.randn(t.n_params, dtype=dtype, generator=torch.Generator().manual_seed(4))
    (t.flatten() * w).sum().backward()
    for (name, shape, start, stop), p in zip(t.slices, net.parameters()):
        assert torch.equal(p.grad, w[start:stop].reshape(shape)), name


def test_flat_vector_of_the_wrong_size_is_refused():
    t = translate(nn.Linear(2, 3))
    for bad in (torch.zeros(t.n_params + 1), torch.zeros(1, t.n_params)):
        with pytest.raises(ValueError, match=r"shape \(9,\)"):
            t.unflatten(bad)
        with pytest.raises(ValueError, match=r"shape \(9,\)"):
            t.load(bad)


def test_shared_layer_has_one_slice_and_is_translated_twice():
    torch.manual_seed(0)
    shared = nn.Linear(3, 3)
    net = nn.Sequential(shared, nn.Tanh(), shared).double()
    t = translate(net)
    assert t.n_params == 12 and [name for name, *_ in t.slices] == ["0.weight", "0.bias"]
    assert t.source.count("θ[1:9]") == 2
    _check_against_torch(net, t, t.flatten().detach().numpy())


# ----------------------------------------------------------------------------------------------
# Numerical equivalence with torch

@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_architectures_match_torch(arch):
    net = _build(ARCHITECTURES[arch])
    t = translate(net)
    theta = _random_flat(t, ARCHITECTURES[arch], torch.float64, seed=7)
    t.load(theta)
    _check_against_torch(net, t, theta.numpy())


def _activation_net(activation):
    return nn.Sequential(nn.Linear(3, 8), activation(), nn.Linear(8, 8), activation(), nn.Linear(8, 2))


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activations_match_torch_in_a_network(name):
    """Random parameters loaded with load(); and the same through unflatten() with functional_call."""
    factory = lambda: _activation_net(ACTIVATIONS[name])    # noqa: E731
    net = _build(factory)
    t = translate(net)
    theta = _random_flat(t, factory, torch.float64, seed=11)
    t.load(theta)
    _check_against_torch(net, t, theta.numpy())

    fresh = _build(factory, seed=5)                  # parameters of its own, replaced by unflatten
    x = np.random.default_rng(2).normal(size=(3, 4))
    with torch.no_grad():
        y = torch.func.functional_call(fresh, translate(fresh).unflatten(theta), (torch.as_tensor(x.T),))
    _assert_close(evaluate(t.source, x, theta.numpy()), y.numpy().T, "functional_call with unflatten")


def _special_inputs(layer: nn.Module) -> np.ndarray:
    """Inputs at the kinks, thresholds, bounds and overflow points of an activation."""
    values = [-2000.0, -800.0, -50.0, -20.5, -5.0, -1.0, -0.3, -1e-8, -1e-300, 0.0, 1e-300, 1e-8, 0.3, 1.0, 5.0,
              19.999999, 20.0, 20.000001, 39.0, 40.0, 41.0, 50.0, 800.0, 2000.0]
    if isinstance(layer, nn.Softplus):               # torch switches to x where x * beta > threshold
        edge = float(layer.threshold) / float(layer.beta)
        values += [edge, np.nextafter(edge, -np.inf), np.nextafter(edge, np.inf), edge * (1 - 1e-9), edge * (1 + 1e-9)]
    if isinstance(layer, nn.Hardtanh):
        for bound in (float(layer.min_val), float(layer.max_val)):
            values += [bound, np.nextafter(bound, -np.inf), np.nextafter(bound, np.inf)]
    return np.array(values)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activations_match_torch_at_special_points(name):
    """Linear(1→1) with weight 1 and bias 0, then the activation: the activation of each input, entry by entry."""
    net = nn.Sequential(nn.Linear(1, 1), ACTIVATIONS[name]()).double()
    t = translate(net)
    theta = np.array([1.0, 0.0])
    t.load(theta)
    x = _special_inputs(net[1])[None, :]
    actual, expected = evaluate(t.source, x, theta), _torch_forward(net, x)
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=1e-300, err_msg=f"{name} at {x}")
    # Where torch passes the input through unchanged (large inputs, thresholds), so must Julia, to the bit;
    # this pins down the caps put on exp's argument, which must not change any value.
    same = expected == x
    assert np.array_equal(actual[same], x[same]), f"{name} at {x[same]}"


# Activations whose translation caps exp's argument so that no intermediate overflows.
CAPPED = ["Softplus", "Softplus-beta2-threshold5", "Softplus-threshold1e-05", "ELU", "ELU-alpha0.3",
          "CELU-alpha1.7", "Mish"]


@pytest.mark.parametrize("name", CAPPED)
def test_no_intermediate_overflows(name):
    """Inf in a branch that is not taken would give 0 * Inf = NaN derivatives under automatic differentiation."""
    net = nn.Sequential(nn.Linear(1, 1), ACTIVATIONS[name]()).double()
    t = translate(net)
    x = _special_inputs(net[1])[None, :]
    steps = []
    julia_function(t.source)(x, np.array([1.0, 0.0]), record=steps)
    assert steps and all(np.all(np.isfinite(value)) for _, value in steps), \
        [text for text, value in steps if not np.all(np.isfinite(value))]


def test_sigmoid_overflow_is_the_documented_limit():
    """Sigmoid's exp(-x) overflows below about -709 (documented); the value is still torch's."""
    net = nn.Sequential(nn.Linear(1, 1), nn.Sigmoid()).double()
    t = translate(net)
    t.load(np.array([1.0, 0.0]))
    steps = []
    y = julia_function(t.source)(np.array([[-800.0, -700.0]]), np.array([1.0, 0.0]), record=steps)
    assert np.array_equal(y, _torch_forward(net, np.array([[-800.0, -700.0]])))
    assert any(text == "exp.(.-h1)" and np.isinf(value[0, 0]) for text, value in steps)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_float32_module_is_evaluated_in_float64(arch):
    """Julia computes in Float64: equal to the float64 copy of a float32 module, close to the module."""
    net = _build(ARCHITECTURES[arch], torch.float32)
    t = translate(net)
    theta = t.flatten().detach().double().numpy()
    _check_against_torch(copy.deepcopy(net).double(), t, theta)
    x = np.random.default_rng(0).normal(size=(t.n_in, 3))
    _assert_close(evaluate(t.source, x, theta), _torch_forward(net, x), "float32 module", rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# The comparison can fail

def _small_tanh_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2)).double()


def test_every_parameter_changes_the_output():
    net = _small_tanh_net()
    t = translate(net)
    f = julia_function(t.source)
    theta = t.flatten().detach().numpy()
    x = np.random.default_rng(0).normal(size=(2, 4))
    y = f(x, theta)
    for i in range(t.n_params):
        perturbed = theta.copy()
        perturbed[i] += 1e-3
        assert np.max(np.abs(f(x, perturbed) - y)) > 1e-9, f"θ[{i + 1}] has no effect"


def test_perturbed_theta_is_detected():
    net = _small_tanh_net()
    t = translate(net)
    theta = t.flatten().detach().numpy()
    _check_against_torch(net, t, theta)
    perturbed = theta.copy()
    perturbed[3] += 1e-9                                  # the interpreter's input only
    with pytest.raises(AssertionError):
        _check_against_torch(net, t, perturbed)


def _drop_transposes(source: str, swap: bool) -> str:
    """The source with each weight read without its transpose (as (out, in) if swap, else (in, out))."""
    def replace(m):
        rng, n_in, n_out = m.groups()
        return f"reshape(θ[{rng}], {n_out}, {n_in})" if swap else f"reshape(θ[{rng}], {n_in}, {n_out})"
    wrong = re.sub(r"transpose\(reshape\(θ\[(\d+:\d+)\], (\d+), (\d+)\)\)", replace, source)
    assert wrong != source
    return wrong


def test_missing_transpose_is_detected():
    torch.manual_seed(0)
    square = nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 3)).double()
    t = translate(square)
    theta = t.flatten().detach().numpy()
    wrong = NetworkTranslation(**{**t.__dict__, "source": _drop_transposes(t.source, swap=False)})
    with pytest.raises(AssertionError):
        _check_against_torch(square, wrong, theta)
    swapped = NetworkTranslation(**{**t.__dict__, "source": _drop_transposes(t.source, swap=True)})
    with pytest.raises(AssertionError):                   # right shape, row-major read as column-major
        _check_against_torch(square, swapped, theta)

    rectangular = _small_tanh_net()
    t = translate(rectangular)
    with pytest.raises(JuliaSubsetError, match="DimensionMismatch"):
        evaluate(_drop_transposes(t.source, swap=False), np.ones(2), t.flatten().detach().numpy())


def test_wrong_activation_formula_is_detected():
    """Softplus without its threshold branch differs from torch above the threshold."""
    net = nn.Sequential(nn.Linear(1, 1), nn.Softplus(beta=2.0, threshold=1.0)).double()
    t = translate(net)
    theta = np.array([1.0, 0.0])
    t.load(theta)
    wrong = re.sub(r"ifelse\.\(\(h1 \.\* 2\.0\) \.> 1\.0, h1, (.*)\)$", r"\1", t.source, flags=re.M)
    assert wrong != t.source
    x = np.array([[0.2, 0.8]])
    np.testing.assert_allclose(evaluate(wrong, x, theta)[:, :1], _torch_forward(net, x)[:, :1], rtol=RTOL)
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(evaluate(wrong, x, theta), _torch_forward(net, x), rtol=RTOL)


# ----------------------------------------------------------------------------------------------
# Syntax

@pytest.mark.parametrize("name", ACTIVATIONS)
def test_source_parses_for_each_activation(name):
    source = translate(_build(lambda: _activation_net(ACTIVATIONS[name]))).source
    assert_parses(source, f"the translation of a {name} network")


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_source_parses_for_each_architecture(arch):
    assert_parses(translate(_build(ARCHITECTURES[arch])).source, f"the translation of {arch}")


@pytest.mark.parametrize("value", [0.1, 1e-05, 1e16, 5e-324, 1.7976931348622157e308, 20.0, 1.0 / 3.0, -2.5, -0.0,
                                   float("inf"), float("-inf"), float("nan")])
def test_float_literals_read_back_exactly(value):
    literal = _julia_float(value)
    source = f"function (x)\n    return {literal}\nend"
    assert_parses(source, f"literal {literal}")
    back = float(evaluate(source, np.zeros(1)))
    assert (np.isnan(back) and np.isnan(value)) or (back == value and np.signbit(back) == np.signbit(value))


# ----------------------------------------------------------------------------------------------
# pyode.nn.mlp networks

MLP_ACTIVATIONS = ["gelu", "tanh", "relu", "softplus", "silu", "elu", "sigmoid"]


def test_mlp_activation_list_is_complete():
    assert sorted(MLP_ACTIVATIONS) == sorted(pyode.nn._ACTIVATIONS)


@pytest.mark.parametrize("activation", MLP_ACTIVATIONS)
def test_mlp_networks_translate(activation):
    torch.manual_seed(0)
    net = pyode.nn.mlp(3, 2, width=16, depth=3, activation=activation)
    t = translate(net, name="mlp_" + activation)
    assert (t.n_in, t.n_out) == (3, 2)
    assert_parses(t.source, f"mlp with {activation}")
    _check_against_torch(net, t, t.flatten().detach().numpy())


def test_mlp_depth0_and_zero_last():
    torch.manual_seed(0)
    net = pyode.nn.mlp(2, 2, depth=0)
    _check_against_torch(net, translate(net), translate(net).flatten().detach().numpy())
    net = pyode.nn.mlp(2, 2, width=4, zero_last=True)
    y = evaluate(translate(net).source, np.ones((2, 3)), translate(net).flatten().detach().numpy())
    assert np.array_equal(y, np.zeros((2, 3)))


# ----------------------------------------------------------------------------------------------
# Errors

def _assert_alternatives(message: str):
    assert "f(u, p, t)" in message and "pyode.julia.ode_function" in message, message


class _Custom(nn.Module):
    def forward(self, x):
        return x * 2


class _DoubledTanh(nn.Tanh):
    def forward(self, x):
        return 2 * torch.tanh(x)


@pytest.mark.parametrize("net, path, cls", [
    (nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1), nn.Linear(2, 2)), "1", "Dropout"),
    (nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.Sequential(nn.BatchNorm1d(2), nn.Linear(2, 2))), "2.0",
     "BatchNorm1d"),
    (nn.Sequential(nn.Linear(2, 2), _Custom()), "1", "_Custom"),
    (nn.Sequential(nn.Linear(2, 2), _DoubledTanh()), "1", "_DoubledTanh"),
    (nn.Sequential(nn.Linear(2, 2), nn.Softmax(dim=-1)), "1", "Softmax"),
], ids=["Dropout", "nested-BatchNorm1d", "custom-module", "subclass-overriding-forward", "Softmax"])
def test_unsupported_layer_is_named(net, path, cls):
    with pytest.raises(TypeError) as info:
        translate(net)
    message = str(info.value)
    assert f"layer {path} ({cls})" in message, message
    assert "Linear" in message and "Tanh" in message and "Softplus" in message
    _assert_alternatives(message)


def test_subclass_keeping_forward_is_accepted():
    class Named(nn.Tanh):
        pass
    t = translate(nn.Sequential(nn.Linear(2, 2), Named(), nn.ReLU6()))
    assert "Named" in t.source.splitlines()[1] and "ReLU6" in t.source.splitlines()[1]


def test_hooks_and_parametrizations_are_refused():
    net = nn.Sequential(nn.Linear(2, 2), nn.Tanh())
    net[1].register_forward_hook(lambda module, args, out: out * 2)
    with pytest.raises(TypeError, match=r"layer 1 \(Tanh\) has forward hooks") as info:
        translate(net)
    _assert_alternatives(str(info.value))
    net = nn.Sequential(nn.utils.parametrizations.weight_norm(nn.Linear(2, 2)), nn.Tanh())
    with pytest.raises(TypeError, match=r"layer 0 \(.*Linear\) has parametrized"):
        translate(net)
    linear = nn.Linear(2, 2)
    linear.register_forward_pre_hook(lambda module, args: (2 * args[0],))
    with pytest.raises(TypeError, match=r"the module \(Linear\) has forward hooks"):
        translate(linear)


def test_weight_that_is_not_a_parameter_is_refused():
    linear = nn.Linear(2, 2)
    del linear.weight
    linear.weight = torch.ones(2, 2)
    with pytest.raises(TypeError, match="not one of the module's parameters"):
        translate(nn.Sequential(linear))


@pytest.mark.parametrize("module, type_name", [(nn.Tanh(), "Tanh"), (nn.ModuleList([nn.Linear(2, 2)]), "ModuleList"),
                                               (_Custom(), "_Custom"), (lambda x: x, "function")])
def test_non_sequential_argument_is_refused(module, type_name):
    with pytest.raises(TypeError, match=f"got {type_name}") as info:
        translate(module)
    _assert_alternatives(str(info.value))


def test_sequential_subclass_with_own_forward_is_refused():
    class Residual(nn.Sequential):
        def forward(self, x):
            return x + super().forward(x)
    with pytest.raises(TypeError, match="Residual"):
        translate(Residual(nn.Linear(2, 2)))
    with pytest.raises(TypeError, match=r"layer 1 \(Residual\)"):
        translate(nn.Sequential(nn.Linear(2, 2), Residual(nn.Linear(2, 2))))


def test_size_mismatch():
    with pytest.raises(ValueError, match=r"layer 2 \(Linear\) takes 4 inputs but layer 0 \(Linear\) produces 3"):
        translate(nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(4, 1)))
    with pytest.raises(ValueError, match=r"layer 1\.0 \(Linear\) takes 5"):
        translate(nn.Sequential(nn.Linear(2, 3), nn.Sequential(nn.Linear(5, 1))))


@pytest.mark.parametrize("net", [nn.Sequential(), nn.Sequential(nn.Tanh())], ids=["empty", "activation-only"])
def test_network_without_linear_layer(net):
    with pytest.raises(ValueError, match="no Linear layer"):
        translate(net)


def test_celu_alpha_zero():
    with pytest.raises(ValueError, match="alpha=0"):
        translate(nn.Sequential(nn.Linear(1, 1), nn.CELU(alpha=0.0)))


@pytest.mark.parametrize("name", ["", "1net", "my-net", "my net", "end", "function", "_", "tanh", "erf", "a.b", 3])
def test_bad_name(name):
    with pytest.raises(ValueError, match="Julia identifier"):
        translate(nn.Linear(1, 1), name=name)


@pytest.mark.parametrize("name", ["network", "f!", "θnet", "_net2", "rhs_1", "x", "θ"])
def test_good_name(name):
    assert translate(nn.Linear(1, 1), name=name).name == name


def test_supported_layers_listed():
    assert {c.__name__ for c in SUPPORTED_LAYERS} == {
        "Linear", "Identity", "Tanh", "ReLU", "Sigmoid", "SiLU", "GELU", "Softplus", "ELU", "CELU", "LeakyReLU",
        "Softsign", "Mish", "Hardtanh", "Tanhshrink"}


# ----------------------------------------------------------------------------------------------
# The reference interpreter follows Julia, not numpy, and refuses what it does not know

def _fn(body: str, args: str = "x, θ") -> str:
    return "function (" + args + ")\n" + "\n".join("    " + line for line in body.splitlines()) + "\nend"


def test_interpreter_julia_semantics():
    v = np.arange(1.0, 7.0)
    assert np.array_equal(evaluate(_fn("return θ[2:4]"), v, v), [2.0, 3.0, 4.0])          # 1-based, inclusive
    assert evaluate(_fn("return θ[6]"), v, v) == 6.0
    assert np.array_equal(evaluate(_fn("return reshape(θ[1:6], 2, 3)"), v, v),
                          [[1.0, 3.0, 5.0], [2.0, 4.0, 6.0]])                                 # column-major
    m = np.arange(9.0).reshape(3, 3)
    b = np.array([10.0, 20.0, 30.0])
    # (n, B) .+ (n,) adds b to every column (numpy's rule would add it to every row)
    assert np.array_equal(evaluate(_fn("return x .+ θ"), m, b), m + b[:, None])
    assert np.array_equal(evaluate(_fn("return ifelse.(x .> 4, x, (-1.0))"), m, b), np.where(m > 4, m, -1.0))
    assert evaluate(_fn("return 1 ./ 2"), v, v) == 0.5


REFUSED = {
    # id: (function body, what the error says)
    "indexed-assignment": ("h = x\nh[1] = 2.0\nreturn h", "assignment"),
    "in-place-broadcast": ("h = x\nh .= 2.0\nreturn h", "assignment"),
    "precedence": ("h = x .+ θ .* 2.0\nreturn h", "precedence"),
    "unary-minus-of-power": ("h = -x .^ 2\nreturn h", "unary minus"),
    "matrix-function": ("return tanh(x)", "dot call"),
    "unknown-function": ("return sinh.(x)", "sinh"),
    "allocation": ("return zeros(3)", "zeros"),
    "type-annotation": ("return x::Float64", "unsupported"),
    "index-0": ("return θ[0:2]", "BoundsError"),
    "index-past-end": ("return θ[1:99]", "BoundsError"),
    "vector-times-vector": ("return x * θ", "matrix product"),
    "non-Bool-condition": ("return ifelse.(x, x, x)", "Bool"),
    "reshape-size": ("return reshape(θ, 4, 4)", "DimensionMismatch"),
    "undefined-name": ("return y", "UndefVarError"),
    "rebinding": ("h = x\nh = θ\nreturn h", "bound twice"),
    "Float32-literal": ("h = x .+ 1f0\nreturn h", "Float64 literals"),
    "no-return": ("h = x", "return"),
    "syntax-error": ("return x .+ ", "syntax error"),
}


@pytest.mark.parametrize("body, message", REFUSED.values(), ids=REFUSED)
def test_interpreter_refuses_what_it_does_not_know(body, message):
    with pytest.raises(JuliaSubsetError, match=message):
        evaluate(_fn(body), np.ones(3), np.ones(3))


def test_interpreter_refuses_named_functions_and_other_programs():
    with pytest.raises(JuliaSubsetError, match="anonymous"):
        evaluate("function f(x)\n    return x\nend", np.ones(1))
    with pytest.raises(JuliaSubsetError, match="exactly one"):
        evaluate("x = 1\n", np.ones(1))
    with pytest.raises(JuliaSubsetError, match="float64"):
        evaluate(_fn("return x", "x"), np.ones(1, dtype=np.float32))
    with pytest.raises(JuliaSubsetError, match="arguments"):
        evaluate(_fn("return x", "x"), np.ones(1), np.ones(1))
