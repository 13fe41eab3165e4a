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

Solver keywords from Python as a `NamedTuple` (never `saveat` or `dense`: see
[`solve_batch`](@ref)); arrays (`tstops`, vector tolerances) are copied into `Vector{Float64}` so
that no solver keeps a view of Python memory.
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
    GradientSafe(g)

`g(u, θ, t)` with a reverse rule that never answers `nothing`. Zygote gives `nothing` for an
argument the function does not use (a right-hand side that ignores `θ`, or `u`), and
SciMLSensitivity's `ZygoteVJP()` throws `ZygoteVJPNothingError` on it (derivative_wrappers.jl,
`allow_nothing = false`); `allow_nothing = true` would skip the copy into the adjoint's buffer
and leave whatever it held. Here such a gradient is zeros of the argument's shape, which is what
it is.
"""
struct GradientSafe{G}
    g::G
end

(s::GradientSafe)(u, θ, t) = s.g(u, θ, t)

function ChainRulesCore.rrule(s::GradientSafe, u, θ, t)
    y, back = Zygote.pullback(s.g, u, θ, t)
    function gradient_safe_pullback(ȳ)
        λ = unthunk(ȳ)
        λ isa ChainRulesCore.AbstractZero && return NoTangent(), zero(u), zero(θ), NoTangent()
        gu, gθ, _ = back(λ)
        return NoTangent(), zero_if_nothing(gu, u), zero_if_nothing(gθ, θ), NoTangent()
    end
    return y, gradient_safe_pullback
end

zero_if_nothing(g, x) = g === nothing ? zero(x) : g

"""
    julia_function(g)

An out-of-place `ODEFunction` for `g(u, θ, t)` written in Julia (user source or a translated
network): every derivative (Jacobians for stiff methods, vector-Jacobian products for adjoints)
comes from Julia's AD, through [`GradientSafe`](@ref).
"""
julia_function(g) = ODEFunction{false}(GradientSafe(g))

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
#
# What reaches `solve` (upstream: OrdinaryDiffEq v7, SciMLSensitivity v7):
# - `dense` never does. SciMLSensitivity's continuous adjoints solve the forward problem without
#   `saveat` and read the saved values as `sol(ts)` (concrete_solve.jl): with `dense = false` that
#   is linear interpolation, wrong values and wrong gradients; with `saveat` and `dense = true`
#   OrdinaryDiffEq stores stages only at saves that fall on a step (integrator_utils.jl,
#   `_savevalues!`), so `sol(t)` would pair a point with another step's stages.
# - A solve that is not differentiated keeps every step (OrdinaryDiffEq's default without
#   `saveat`): values at the requested times come from its interpolant, `sol(t)` is exact dense
#   output, `alg_choice` holds every step (the switch count) and `t[end]` is where a failed solve
#   stopped.
# - A differentiated solve gets `saveat` (SciMLSensitivity needs it to place the saved values);
#   its rows are matched to the requested times by value, since BacksolveAdjoint adds `t0`/`t1`
#   and the other adjoints sort `saveat`.

"""
    reached(t, t0, t_end)

Whether time `t` lies between `t0` and `t_end` (either direction of time).
"""
reached(t, t0, t_end) = (t - t0) * (t_end - t) >= 0

"""
    columns(saved, wanted)

For each requested time, the index of the equal time in `saved` (0 where there is none).
"""
columns(saved::AbstractVector, wanted::AbstractVector) = [something(findfirst(==(t), saved), 0) for t in wanted]

function switches(sol)
    choice = hasproperty(sol, :alg_choice) ? sol.alg_choice : nothing
    (choice === nothing || length(choice) < 2) && return 0
    return count(i -> choice[i] != choice[i - 1], 2:length(choice))
end

function solve_stats(sol, nswitch)
    st = sol.stats
    st === nothing && return [0, 0, 0, 0, 0, 0, nswitch]
    return [st.nf, st.njacs, st.nw, st.nsolve, st.naccept, st.nreject, nswitch]
end

"""
    plain_member(prob, alg, opts, wanted)

One member solved without differentiation, every step kept. Rows: the requested times `wanted`
(NaN past the point where the solve stopped), or every step when `wanted === nothing`.
"""
function plain_member(prob, alg, opts::NamedTuple, wanted)
    sol = solve(prob, alg; opts...)
    n = length(prob.u0)
    t_start, t_end = sol.t[1], sol.t[end]
    if wanted === nothing
        ts = collect(Float64, sol.t)
        us = Array(sol)
    else
        ts = fill(NaN, length(wanted))
        us = fill(NaN, n, length(wanted))
        for (j, t) in enumerate(wanted)
            if reached(t, t_start, t_end)
                ts[j] = t
                us[:, j] .= sol(t)
            end
        end
    end
    k = length(sol.t)
    dt_final = k >= 2 ? sol.t[end] - sol.t[end - 1] : NaN
    return (t = ts, u = us, retcode = sol.retcode, t_final = Float64(t_end), dt_final = Float64(dt_final),
            stats = solve_stats(sol, switches(sol)), pullback = nothing, columns = Int[], width = 0,
            solution = sol)
end

"""
    differentiated_member(prob, alg, opts, sensealg, wanted, count_switches)

One member solved under `Zygote.pullback` with `sensealg`. A member that fails is solved again
by [`plain_member`](@ref) (no pullback: its gradient is undefined), so that its values stop where
the solve stopped instead of SciMLSensitivity's interpolant extrapolating past it. With
`count_switches` (a composite algorithm whose forward solve keeps only the `saveat` points) the
switch count comes from a plain solve too.
"""
function differentiated_member(prob, alg, opts::NamedTuple, sensealg, wanted, count_switches::Bool)
    kept = Ref{Any}(nothing)
    saving = wanted === nothing ? NamedTuple() : (; saveat = wanted)
    out, back = Zygote.pullback(prob.u0, prob.p) do u0_, p_
        sol = solve(remake(prob; u0 = u0_, p = p_), alg; sensealg = sensealg, saving..., opts...)
        ChainRulesCore.ignore_derivatives(() -> (kept[] = sol))
        Array(sol)
    end
    sol = kept[]
    SciMLBase.successful_retcode(sol.retcode) || return plain_member(prob, alg, opts, wanted)
    n = length(prob.u0)
    cols = wanted === nothing ? collect(1:size(out, 2)) : columns(sol.t, wanted)
    ts = fill(NaN, length(cols))
    us = fill(NaN, n, length(cols))
    for (j, c) in enumerate(cols)
        if c > 0
            ts[j] = sol.t[c]
            us[:, j] .= out[:, c]
        end
    end
    nswitch = count_switches ? switches(solve(prob, alg; opts...)) : switches(sol)
    return (t = ts, u = us, retcode = sol.retcode, t_final = Float64(prob.tspan[2]), dt_final = NaN,
            stats = solve_stats(sol, nswitch), pullback = back, columns = cols, width = size(out, 2),
            solution = nothing)
end

"""
    solve_batch(fun, u0s, θ, t0, t1, alg, opts, sensealg, differentiate, saveat, keep_dense, count_switches)

Solve every column of `u0s` (`n × B`) as its own problem (own steps, own return code) with the
shared parameters `θ`. `opts` holds solver keywords only (never `saveat` or `dense`); `saveat` is
the vector of requested times, or `nothing` for every step. With `differentiate`, each member's
solve runs under `Zygote.pullback` with `sensealg`, and the pullbacks are kept for
[`backward`](@ref). With `keep_dense`, the undifferentiated solutions are kept for
[`interpolate`](@ref).

Returns a NamedTuple: `t` (`Tmax × B` saved times, NaN where a member did not reach a requested
time, NaN-padded), `u` (`n × Tmax × B`), `retcode` (names of `SciMLBase.ReturnCode`), `t_final`
(where each member stopped), `dt_final`, `stats` (`7 × B`: nf, njacs, nw, nsolve, naccept,
nreject, nswitch), `lengths` (rows per member), and what `backward` and `interpolate` need.
"""
function solve_batch(fun, u0s::AbstractMatrix, θ::AbstractVector, t0::Real, t1::Real, alg, opts::NamedTuple,
                     sensealg, differentiate::Bool, saveat, keep_dense::Bool, count_switches::Bool)
    n, B = size(u0s)
    p = collect(Float64, θ)
    span = (Float64(t0), Float64(t1))
    wanted = saveat === nothing ? nothing : collect(Float64, saveat)
    prob = ODEProblem(fun, collect(Float64, u0s[:, 1]), span, p)
    members = Vector{Any}(undef, B)
    for b in 1:B
        member_prob = remake(prob; u0 = collect(Float64, u0s[:, b]))
        members[b] = differentiate ?
            differentiated_member(member_prob, alg, opts, sensealg, wanted, count_switches) :
            plain_member(member_prob, alg, opts, wanted)
    end
    lengths = [length(m.t) for m in members]
    Tmax = maximum(lengths)
    ts = fill(NaN, Tmax, B)
    us = fill(NaN, n, Tmax, B)
    stats = zeros(Int, 7, B)
    for (b, m) in enumerate(members)
        k = lengths[b]
        ts[1:k, b] .= m.t
        us[:, 1:k, b] .= m.u
        stats[:, b] .= m.stats
    end
    retcodes = [String(Symbol(m.retcode)) for m in members]
    return (t = ts, u = us, retcode = retcodes, t_final = [m.t_final for m in members],
            dt_final = [m.dt_final for m in members], stats = stats, lengths = lengths,
            differentiated = differentiate, pullbacks = [m.pullback for m in members],
            columns = [m.columns for m in members], widths = [m.width for m in members],
            solutions = [keep_dense ? m.solution : nothing for m in members])
end

"""
    backward(result, ū)

Gradients of `Σ ū ⋅ u` for the saved states `u` of a differentiated [`solve_batch`](@ref):
`ū` is `n × Tmax × B`. Each member's rows are scattered back onto the columns its solve
returned. Returns `(du0 :: n × B, dθ)`, `dθ` summed over the batch (the parameters are shared).
"""
function backward(result, ū::AbstractArray{<:Real, 3})
    n, _, B = size(ū)
    du0 = zeros(n, B)
    dθ = nothing
    for b in 1:B
        back = result.pullbacks[b]
        back === nothing && error("member $b has no pullback (it failed, or the solve was not differentiated)")
        full = zeros(n, result.widths[b])
        for (j, c) in enumerate(result.columns[b])
            c > 0 && (full[:, c] .+= ū[:, j, b])
        end
        g_u0, g_θ = back(full)
        g_u0 === nothing || (du0[:, b] .= g_u0)
        if g_θ !== nothing
            dθ = dθ === nothing ? collect(Float64, g_θ) : dθ .+ g_θ
        end
    end
    return du0, dθ
end

"""
    interpolate(result, tq)

Dense output of an undifferentiated [`solve_batch`](@ref) result kept with `keep_dense`, at the
times `tq`: `n × Q × B`, NaN where a member did not reach the time. (A differentiated solve
returns SciMLSensitivity's solution, which refuses interpolation: Python solves again instead.)
"""
function interpolate(result, tq::AbstractVector)
    result.differentiated && error("dense output of a differentiated solve is not kept; solve again with saveat")
    n = size(result.u, 1)
    out = fill(NaN, n, length(tq), length(result.solutions))
    for (b, sol) in enumerate(result.solutions)
        sol === nothing && error("dense output was not kept (keep_dense = false)")
        for (j, t) in enumerate(tq)
            reached(t, sol.t[1], sol.t[end]) && (out[:, j, b] .= sol(Float64(t)))
        end
    end
    return out
end

end # module
