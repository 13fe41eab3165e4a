"""Starting Julia: finding it, importing juliacall safely after torch, loading the Julia side.

Nothing here runs at ``import pyode``: the first ``solve(..., backend="julia")`` (or
:func:`pyode.julia.bridge`) calls :func:`bridge`, which imports juliacall. On a machine without
Julia, juliacall (through juliapkg) downloads Julia and installs the packages listed in
``pyode/juliapkg.json`` into a project of its own; that first start takes minutes, later ones
seconds.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, Optional

__all__ = ["JuliaNotAvailableError", "JuliaImportOrderError", "bridge", "julia_executable", "bridge_source"]

INSTALL_HINT = (
    "The julia engine needs juliacall (pip install 'pyode[julia]', or pip install juliacall), which "
    "installs Julia and DifferentialEquations.jl/SciMLSensitivity.jl by itself on first use (network "
    "access to julialang.org and the Julia General registry needed; the first start compiles for several "
    "minutes). To use a Julia you already have, set PYTHON_JULIACALL_EXE=/path/to/julia and "
    "PYTHON_JULIACALL_PROJECT=<a project with the packages of pyode's Project.toml>. "
    "Without Julia, use the native engine: backend=\"native\" (the default) has the same algorithms "
    "and sensitivity methods.")


class JuliaNotAvailableError(RuntimeError):
    """The julia engine cannot start: juliacall is missing, or Julia or its packages could not be installed."""


class JuliaImportOrderError(JuliaNotAvailableError):
    """Julia crashes when started after torch in this Python environment."""


# The Julia side ships with the package (see pyproject.toml); in a source checkout it is julia/.
_BRIDGE_FILE = "PyodeBridge.jl"


def bridge_source() -> Path:
    """Path of the Julia side (``PyodeBridge.jl``)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "jl" / _BRIDGE_FILE, here.parent.parent / "julia" / _BRIDGE_FILE):
        if candidate.is_file():
            return candidate
    raise JuliaNotAvailableError(f"{_BRIDGE_FILE} is missing from the installation (looked in {here / 'jl'}); "
                                 "reinstall pyode")


def julia_executable() -> Optional[str]:
    """A Julia executable this process could use without downloading one, or None.

    Checked in order: ``PYTHON_JULIACALL_EXE``, ``PYTHON_JULIAPKG_EXE``, ``julia`` on ``PATH``, and the
    Julia that juliapkg installed for this environment earlier. Starts nothing.
    """
    for var in ("PYTHON_JULIACALL_EXE", "PYTHON_JULIAPKG_EXE"):
        exe = os.environ.get(var)
        if exe and Path(exe).is_file():
            return exe
    exe = shutil.which("julia")
    if exe:
        return exe
    return _juliapkg_installed_executable()


def _juliapkg_installed_executable() -> Optional[str]:
    if importlib.util.find_spec("juliapkg") is None:
        return None
    try:
        from juliapkg.deps import load_meta        # reads a JSON file; starts nothing
        exe = (load_meta() or {}).get("executable")
    except Exception:                               # an unreadable or older state file: no Julia known
        return None
    return exe if exe and Path(exe).is_file() else None


_BRIDGE: Any = None


def bridge() -> Any:
    """The loaded Julia module ``PyodeBridge`` (starting Julia on the first call)."""
    global _BRIDGE
    if _BRIDGE is None:
        jl = _import_juliacall()
        path = bridge_source()
        try:
            _BRIDGE = jl.seval(f"Base.include(Main, raw\"{path}\")")
        except Exception as err:
            raise JuliaNotAvailableError(
                f"Julia started but loading pyode's Julia side ({path}) failed: {err}\n"
                "The packages of pyode/juliapkg.json may be missing from the Julia project in use "
                "(PYTHON_JULIACALL_PROJECT), or incompatible: install them from pyode's Project.toml "
                "(julia --project=<that project> -e 'using Pkg; Pkg.add([...])').") from err
    return _BRIDGE


def _import_juliacall():
    if "juliacall" in sys.modules:
        return sys.modules["juliacall"].Main
    if importlib.util.find_spec("juliacall") is None:
        raise JuliaNotAvailableError("backend='julia' needs juliacall, which is not installed.\n" + INSTALL_HINT)
    if "torch" in sys.modules:
        _check_import_order()
    print("pyode: starting Julia for backend='julia'. The first start in an environment installs Julia and "
          "its packages and compiles them (several minutes, once); later starts take seconds.",
          file=sys.stderr, flush=True)
    try:
        with warnings.catch_warnings():
            # Its warning about torch is answered by _check_import_order.
            warnings.filterwarnings("ignore", message="torch was imported before juliacall")
            import juliacall
    except Exception as err:
        raise JuliaNotAvailableError(f"juliacall could not start Julia: {type(err).__name__}: {err}\n"
                                     + INSTALL_HINT) from err
    return juliacall.Main


def _check_import_order() -> None:
    """Refuse to start Julia after torch where that is known to crash the process.

    On some systems (PyTorch's bundled OpenMP/LLVM against Julia's; pytorch/pytorch#78829,
    PythonCall.jl#215) starting Julia in a process that already loaded torch corrupts the heap and
    kills Python. A crash cannot be caught, so the combination is tried once in a child process
    (which also performs juliapkg's first installation, with its output shown) and the verdict is
    cached per Python, torch and juliacall version. Importing juliacall before torch avoids the
    check altogether.
    """
    if os.environ.get("PYODE_JULIA_IMPORT_CHECK", "1") == "0":
        return
    cache = _probe_cache_file()
    if cache.is_file():
        try:
            if json.loads(cache.read_text()).get("ok"):
                return
        except (OSError, ValueError):
            pass
    code = ("import torch, juliacall; juliacall.Main.seval('1 + 1')")
    # The child's output (juliapkg's installation log on a first start) is shown as it comes.
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list = []
    for line in proc.stdout:
        sys.stderr.write(line)
        tail = (tail + [line.rstrip()])[-8:]
    proc.wait()
    if proc.returncode < 0 or proc.returncode in (134, 139):        # killed by a signal: the known crash
        raise JuliaImportOrderError(
            "starting Julia after torch crashes on this system (torch's and Julia's native libraries clash; "
            "see pytorch/pytorch#78829). Import juliacall before torch: make `import juliacall` the first "
            "line of your script or notebook (before `import torch` and `import pyode`) and restart Python "
            "or the kernel. pyode then starts Julia without this check.")
    if proc.returncode != 0:
        raise JuliaNotAvailableError("juliacall could not start Julia:\n" + "\n".join(tail) + "\n" + INSTALL_HINT)
    _write_atomic(cache, json.dumps({"ok": True}))


def _probe_cache_file() -> Path:
    from importlib.metadata import PackageNotFoundError, version

    import torch

    try:
        jc = version("juliacall")
    except PackageNotFoundError:
        jc = "?"
    key = "|".join([sys.executable, sys.version, torch.__version__, jc, os.environ.get("PYTHON_JULIACALL_EXE", "")])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pyode"
    return root / f"julia-after-torch-{digest}.json"


def _write_atomic(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError:             # a read-only home: the check simply runs again next time
        pass
