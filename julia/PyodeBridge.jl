"""
The Julia side of pyode's julia engine.

Python decides everything (algorithm, options, sensitivity method, batching) and hands over
arrays; this module builds the `ODEProblem`s, solves them with OrdinaryDiffEq, differentiates
them with SciMLSensitivity through Zygote, and hands arrays back. It holds no state between calls
except what Python keeps alive (compiled right-hand sides, pullbacks of a forward solve).

Layout conventions (all arrays Float64, column-major, as they arrive from numpy without copying):
- states of a batch: `n × B` (a C-ordered `(B, n)` numpy array seen transposed);
- saved states: `n × T × B`, NaN where a member stopped before a save time;
- parameters: one flat vector `θ` shared by the batch.
"""
module PyodeBridge

using LinearAlgebra
using SciMLBase: SciMLBase, ODEFunction, ODEProblem, remake, solve
using SciMLSensitivity
using Zygote
using ChainRulesCore
using SpecialFunctions: erf
using PythonCall
using ADTypes: AutoFiniteDiff, AutoForwardDiff
import OrdinaryDiffEqCore     # constructors qualified in pyode's tables: AutoAlgSwitch, controllers
using OrdinaryDiffEqCore: AutoSwitch, IController, PIController, PredictiveController
using OrdinaryDiffEqTsit5: Tsit5, AutoTsit5
using OrdinaryDiffEqVerner: Vern7, AutoVern7
using OrdinaryDiffEqLowOrderRK: BS3, DP5, Euler, Midpoint, RK4
using OrdinaryDiffEqHighOrderRK: DP8
using OrdinaryDiffEqRosenbrock: Rosenbrock23, Rodas4, Rodas5P
using OrdinaryDiffEqSDIRK: KenCarp4, Kvaerno5
using OrdinaryDiffEqFIRK: RadauIIA5
using OrdinaryDiffEqBDF: FBDF, QNDF

"""
    evaluate(source)

Evaluate Julia source in this module: algorithm and sensitivity constructors from pyode's tables,
and right-hand sides (user source, translated networks). Returns the value of the last expression.
"""
evaluate(source::AbstractString) = include_string(@__MODULE__, source, "pyode")

"""
    options(; kwargs...)

Solver keywords from Python as a `NamedTuple`; arrays (`saveat`, `tstops`, vector tolerances)
are copied into `Vector{Float64}` so that no solver keeps a view of Python memory.
"""
options(; kwargs...) = NamedTuple(k => (v isa AbstractArray ? collect(Float64, v) : v) for (k, v) in kwargs)

"""
    Seminorm(n)

The error norm over the first `n` components only (pyode's `seminorm=True`; Kidger, Chen & Lyons,
"Hey, that's not an ODE", 2021): passed as `internalnorm`, it reaches the adjoint solve, whose
state starts with the `n` components of λ; on the forward solve's `n` components it is the
default RMS norm.
"""
struct Seminorm
    n::Int
end
(s::Seminorm)(u::AbstractArray, t) = rms(length(u) > s.n ? view(u, 1:s.n) : u)
(s::Seminorm)(u::Number, t) = abs(u)
rms(x) = sqrt(sum(abs2, x) / max(length(x), 1))

# ---------------------------------------------------------------------------------------------
# Right-hand sides

"""
    julia_function(g)

An out-of-place `ODEFunction` for `g(u, θ, t)` written in Julia (user source or a translated
network): every derivative (Jacobians for stiff methods, vector-Jacobian products for adjoints)
comes from Julia's AD.
"""
julia_function(g) = ODEFunction{false}(g)

"""
A right-hand side written in Python, called back with plain `Float64` arrays. Its derivatives come
from torch: `vjp(u, t, λ) -> (λᵀ ∂f/∂u, λᵀ ∂f/∂θ)`, `jac(u, t) -> ∂f/∂u`, `tgrad(u, t) -> ∂f/∂t`.
The parameter values live on the Python side (they are the `θ` the solve was started with), so
`θ` only carries the gradient's shape here.
"""
struct PythonRHS
    f::Py
    vjp::Py
    jac::Py
    tgrad::Py
end

call_python(r::PythonRHS, u, θ, t) = pyconvert(Vector{Float64}, r.f(Vector{Float64}(u), Float64(t)))

# Zygote (ZygoteVJP inside the adjoints) meets the Python call here and asks torch for the product.
function ChainRulesCore.rrule(::typeof(call_python), r::PythonRHS, u, θ, t)
    y = call_python(r, u, θ, t)
    function call_python_pullback(ȳ)
        λ = unthunk(ȳ)
        λ isa ChainRulesCore.AbstractZero && return NoTangent(), NoTangent(), zero(u), zero(θ), NoTangent()
        g = r.vjp(Vector{Float64}(u), Float64(t), Vector{Float64}(λ))
        gu = pyconvert(Vector{Float64}, g[0])
        gθ = pyconvert(Vector{Float64}, g[1])
        return NoTangent(), NoTangent(), gu, gθ, NoTangent()
    end
    return y, call_python_pullback
end

"""
    python_function(f, vjp, jac, tgrad)

An `ODEFunction` calling back into Python, with the Jacobian and time derivative from torch so
that stiff methods never push dual numbers through Python.
"""
function python_function(f, vjp, jac, tgrad)
    r = PythonRHS(f, vjp, jac, tgrad)
    ODEFunction{false}((u, θ, t) -> call_python(r, u, θ, t);
        jac = (u, θ, t) -> pyconvert(Matrix{Float64}, r.jac(Vector{Float64}(u), Float64(t))),
        tgrad = (u, θ, t) -> pyconvert(Vector{Float64}, r.tgrad(Vector{Float64}(u), Float64(t))))
end

# ---------------------------------------------------------------------------------------------
# Solving and differentiating a batch

"""
    solve_batch(fun, u0s, θ, t0, t1, alg, opts, sensealg, differentiate)

Solve every column of `u0s` (`n × B`) as its own problem (own steps, own return code) with the
shared parameters `θ`. With `differentiate`, each member's solve runs under `Zygote.pullback`
with `sensealg`, and the pullbacks are kept for [`backward`](@ref).

Returns a NamedTuple: `t` (`Tmax × B` saved times, NaN-padded), `u` (`n × Tmax × B`), `retcode`
(names of `SciMLBase.ReturnCode`), `t_final`, `dt_final`, `stats` (`7 × B`: nf, njacs, nw,
nsolve, naccept, nreject, nswitch), `lengths` (saved points per member), `pullbacks` and the `solutions` themselves (for dense output).
"""
function solve_batch(fun, u0s::AbstractMatrix, θ::AbstractVector, t0::Real, t1::Real, alg, opts::NamedTuple,
                     sensealg, differentiate::Bool)
    n, B = size(u0s)
    p = collect(Float64, θ)
    span = (Float64(t0), Float64(t1))
    prob = ODEProblem(fun, collect(Float64, u0s[:, 1]), span, p)
    sols = Vector{Any}(undef, B)
    pullbacks = Vector{Any}(nothing, B)
    for b in 1:B
        u0 = collect(Float64, u0s[:, b])
        if differentiate
            kept = Ref{Any}(nothing)
            _, back = Zygote.pullback(u0, p) do u0_, p_
                sol = solve(remake(prob; u0 = u0_, p = p_), alg; sensealg = sensealg, opts...)
                ChainRulesCore.ignore_derivatives(() -> (kept[] = sol))
                Array(sol)
            end
            sols[b] = kept[]
            pullbacks[b] = back
        else
            sols[b] = solve(remake(prob; u0 = u0), alg; opts...)
        end
    end
    lengths = [length(s.t) for s in sols]
    Tmax = maximum(lengths)
    ts = fill(NaN, Tmax, B)
    us = fill(NaN, n, Tmax, B)
    stats = zeros(Int, 7, B)
    t_final = zeros(B)
    dt_final = fill(NaN, B)
    for (b, s) in enumerate(sols)
        k = lengths[b]
        ts[1:k, b] .= s.t
        for j in 1:k
            us[:, j, b] .= s.u[j]
        end
        t_final[b] = s.t[end]
        k >= 2 && (dt_final[b] = s.t[end] - s.t[end - 1])
        stats[:, b] .= solve_stats(s)
    end
    retcodes = [String(Symbol(s.retcode)) for s in sols]
    return (t = ts, u = us, retcode = retcodes, t_final = t_final, dt_final = dt_final, stats = stats,
            lengths = lengths, pullbacks = pullbacks, solutions = sols)
end

function solve_stats(sol)
    st = sol.stats
    nswitch = 0
    choice = hasproperty(sol, :alg_choice) ? sol.alg_choice : nothing
    if choice !== nothing && length(choice) > 1
        nswitch = count(i -> choice[i] != choice[i - 1], 2:length(choice))
    end
    st === nothing && return [0, 0, 0, 0, 0, 0, nswitch]
    return [st.nf, st.njacs, st.nw, st.nsolve, st.naccept, st.nreject, nswitch]
end

"""
    backward(result, ū)

Gradients of `Σ ū ⋅ u` for the saved states `u` of a differentiated [`solve_batch`](@ref):
`ū` is `n × Tmax × B`. Returns `(du0 :: n × B, dθ)`, `dθ` summed over the batch (the parameters
are shared).
"""
function backward(result, ū::AbstractArray{<:Real, 3})
    n, _, B = size(ū)
    du0 = zeros(n, B)
    dθ = nothing
    for b in 1:B
        back = result.pullbacks[b]
        back === nothing && error("member $b was solved without a pullback")
        k = result.lengths[b]
        g_u0, g_θ = back(collect(Float64, ū[:, 1:k, b]))
        g_u0 === nothing || (du0[:, b] .= g_u0)
        if g_θ !== nothing
            dθ = dθ === nothing ? collect(Float64, g_θ) : dθ .+ g_θ
        end
    end
    return du0, dθ
end

"""
    interpolate(result, tq)

Dense output of a [`solve_batch`](@ref) result at the times `tq`: `n × Q × B`, NaN where a
member did not reach the time. Uses the solutions' own interpolants (kept alive by Python as long
as the `ODESolution` that asked for dense output).
"""
function interpolate(result, tq::AbstractVector)
    n = size(result.u, 1)
    out = fill(NaN, n, length(tq), length(result.solutions))
    for (b, sol) in enumerate(result.solutions), (j, t) in enumerate(tq)
        if (t - sol.t[1]) * (sol.t[end] - t) >= 0
            out[:, j, b] .= sol(Float64(t))
        end
    end
    return out
end

end # module
