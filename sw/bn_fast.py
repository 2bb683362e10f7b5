"""Fused CPU kernels of the L1BN training step: a small C++/OpenMP library called through ctypes.

The source is ``csrc/l1bn_cpu.cpp`` (no torch headers: it compiles in seconds with the system C++
compiler). ``make install`` builds it once (``python -m l1bn.sw.bn_fast``); the first use in a
process loads the cached library, and builds it first if the source changed or nothing is cached.
Without a working compiler the layers fall back to the eager PyTorch math (same results, 3-6x
slower) and say so once with a ``RuntimeWarning``; :func:`status` gives the reason.

Passes over memory (per channel, so a channel slice that fits the L2 cache is read from memory
once):

* forward: ``sum(x)`` -> ``mu``; ``sum(|x - mu|)`` -> ``s``; ``y = (x - mu) * w / sigma + b``
  (``sigma = sqrt(pi/2) * s + eps``); saved for the backward: ``x``, ``mu``, ``s`` (no ``xhat``);
* backward: one pass for ``sum(dy)``, ``sum(dy * (x - mu))``, ``sum(sign(x - mu))``; one pass for
  ``dx = a * dy + k * sign(x - mu) + b0`` (the exact gradient, the ``mean(sign)`` term included).

The kernels are generic over the dispersion: ``norm="l1"`` (mean absolute deviation) and
``norm="l2"`` (variance, ``sigma = sqrt(var + eps)``, classic BN) share every pass. Range BN
(:func:`range_forward` / :func:`range_backward`, ``sigma = C(n) * (max - min) + eps``) has its own
entry points: forward one pass for the sum, max and min, one for ``y``; backward one pass for
``sum(dy)``, ``sum(dy * (x - mu))`` and the counts of values equal to the max and to the min, one
for ``dx`` (the max/min gradient split evenly among tied values, as autograd's ``amax``/``amin``).

Supported inputs: CPU, float32 / float64 / bfloat16 (float16 runs the float32 kernel on a float32
copy), ``(N, C)``, ``(N, C, L)`` and ``(N, C, H, W)``, contiguous or channels-last (other strides are
made contiguous). Statistics and arithmetic are float32 for bfloat16/float16 (partial sums of <= 1024
values added in float64), float64 for float64.

Cache folder: ``$L1BN_EXT_CACHE``, else ``<sys.prefix>/l1bn-ext`` (the virtual environment) when
writable, else ``~/.cache/l1bn-ext``. ``L1BN_NO_EXT=1`` disables the library. ``$CXX`` names the
compiler (default ``c++``).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from l1bn.spec.intmath import C_SQRT_PI_2

__all__ = ["SOURCE", "FLAGS", "NORMS", "ExtensionError", "cache_dir", "library_path", "build", "load",
           "available", "status", "usable", "forward", "backward", "range_forward", "range_backward"]

SOURCE = Path(__file__).with_name("csrc") / "l1bn_cpu.cpp"
# sqrt(pi/2) comes from the spec (one definition; repr gives the shortest exact float64 literal)
FLAGS = ("-O3", "-std=c++17", "-fopenmp", "-shared", "-fPIC", f"-DL1BN_C_SQRT_PI_2={C_SQRT_PI_2!r}")
# The kernels are compute-bound without wide vectors (SSE2-only code is 2-4x slower than AVX2 or
# AVX-512 here), so the library is built for this CPU; the cache key names the CPU's features, so
# a cache folder shared by different machines gets one library per CPU type.
NATIVE = ("-march=native",)
# the norms the generic kernel computes, in the order of its norm code (0: mean absolute
# deviation, 1: variance; l1bn_cpu.cpp); range BN has its own entry points
NORMS = ("l1", "l2")
_ABI = 3
_DTYPES = {torch.float32: 0, torch.float64: 1, torch.bfloat16: 2}


class ExtensionError(RuntimeError):
    """The C++ library could not be built or loaded (the message says why and what to do)."""


def _compiler() -> str:
    return os.environ.get("CXX") or "c++"


def cache_dir() -> Path:
    """Folder of the built libraries (see the module docstring)."""
    env = os.environ.get("L1BN_EXT_CACHE")
    if env:
        return Path(env)
    if os.access(sys.prefix, os.W_OK):
        return Path(sys.prefix) / "l1bn-ext"
    return Path.home() / ".cache" / "l1bn-ext"


def _cpu_id() -> str:
    """The CPU's feature list (Linux /proc/cpuinfo), else the processor name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":")[0].strip() in ("flags", "Features"):
                return line
    except OSError:
        pass
    return platform.processor()


def library_path(cache: Path | None = None) -> Path:
    """Path of the library for the current source, flags, compiler name and CPU."""
    h = hashlib.sha256(SOURCE.read_bytes())
    h.update(repr((FLAGS, NATIVE, _compiler(), platform.machine(), _cpu_id(), _ABI)).encode())
    return (cache or cache_dir()) / f"l1bn_cpu-{h.hexdigest()[:16]}.so"


def build(*, cache: Path | None = None, force: bool = False) -> Path:
    """Compile the library into ``cache`` (default :func:`cache_dir`) unless it is there; its path.

    Concurrent builds (test workers) are safe: each compiles to a temporary file and renames it.
    Raises :class:`ExtensionError` when the compiler is missing or fails.
    """
    out = library_path(cache)
    if out.exists() and not force:
        return out
    cxx = _compiler()
    if shutil.which(cxx) is None:
        raise ExtensionError(f"C++ compiler {cxx!r} not found (set $CXX or install g++ with OpenMP, "
                             f"e.g. `apt-get install g++`, then run `make install`)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExtensionError(f"cannot create the cache folder {out.parent}: {e}") from None
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    # without -march=native: portable (slower) code; without OpenMP: one thread
    tries = [[*FLAGS, *NATIVE], list(FLAGS), [f for f in FLAGS if f != "-fopenmp"]]
    first = None
    try:
        for flags in tries:
            cmd = [cxx, *flags, str(SOURCE), "-o", tmp]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            if r.returncode == 0:
                break
            first = first or (cmd, r)
        if r.returncode != 0:  # report the first (fullest) attempt
            cmd, r = first
            tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-5:])
            raise ExtensionError(f"`{' '.join(cmd)}` failed (exit {r.returncode}):\n{tail}")
        os.replace(tmp, out)
    except (OSError, subprocess.SubprocessError) as e:
        raise ExtensionError(f"`{' '.join(cmd)}` could not run: {e}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


_STATE: dict = {}


def _open(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    if lib.l1bn_abi_version() != _ABI:
        raise ExtensionError(f"{path} has ABI {lib.l1bn_abi_version()}, expected {_ABI}")
    lib.l1bn_c_sqrt_pi_2.restype = ctypes.c_double
    if lib.l1bn_c_sqrt_pi_2() != C_SQRT_PI_2:
        raise ExtensionError(f"{path} uses sqrt(pi/2) = {lib.l1bn_c_sqrt_pi_2()!r}, the spec {C_SQRT_PI_2!r}")
    vp, i32, i64, f64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_double
    lib.l1bn_forward.argtypes = [i32, i32, i32, vp, vp, vp, vp, vp, vp, vp, vp, f64, i64, i64, i64, f64, i32]
    lib.l1bn_forward.restype = i32
    lib.l1bn_backward.argtypes = [i32, i32, i32, vp, vp, vp, vp, vp, vp, vp, vp, i64, i64, i64, f64, i32]
    lib.l1bn_backward.restype = i32
    lib.l1bn_range_forward.argtypes = [i32, i32, *[vp] * 10, f64, i64, i64, i64, f64, f64, i32]
    lib.l1bn_range_forward.restype = i32
    lib.l1bn_range_backward.argtypes = [i32, i32, *[vp] * 10, i64, i64, i64, f64, f64, i32]
    lib.l1bn_range_backward.restype = i32
    return lib


def load() -> ctypes.CDLL | None:
    """The loaded library (built first if needed), or None with the reason in :func:`status`."""
    if "lib" in _STATE:
        return _STATE["lib"]
    lib, why = None, None
    if os.environ.get("L1BN_NO_EXT", "") not in ("", "0"):
        why = "disabled by L1BN_NO_EXT"
    elif platform.system() != "Linux" and "CXX" not in os.environ:
        why = f"not built on {platform.system()} (Linux with g++/clang++ and OpenMP only)"
    else:
        try:
            lib = _open(build())
        except (ExtensionError, OSError, AttributeError) as e:
            why = str(e)
    _STATE["lib"], _STATE["why"] = lib, why
    return lib


def available() -> bool:
    """True when the C++ kernels are loaded (building them first if needed)."""
    return load() is not None


def status() -> str:
    """One line: where the library is, or why the fast path is off."""
    if load() is not None:
        path = library_path()
        try:  # relative to the working directory when inside it (the repository)
            path = path.relative_to(Path.cwd())
        except ValueError:
            pass
        return f"C++ L1BN kernels loaded from {path}"
    return f"C++ L1BN kernels unavailable ({_STATE['why']}); the eager PyTorch path is used"


def _warn_once() -> None:
    if not _STATE.get("warned"):
        _STATE["warned"] = True
        warnings.warn(f"l1bn: {status()} (3-6x slower on CPU)", RuntimeWarning, stacklevel=4)


def usable(x: torch.Tensor, *, warn: bool = True) -> bool:
    """True when ``x`` (CPU, float32/float64/bfloat16/float16) can take the C++ path."""
    if x.device.type != "cpu" or x.dtype not in (*_DTYPES, torch.float16):
        return False
    if load() is None:
        if warn:
            _warn_once()
        return False
    return True


def _geometry(x: torch.Tensor) -> tuple[torch.Tensor, int, int, int, int]:
    """(tensor to use, layout 0 NCS / 1 MC, N, C, spatial size) without copying when possible."""
    n, c = x.shape[0], x.shape[1]
    hw = 1
    for v in x.shape[2:]:
        hw *= v
    if x.is_contiguous():
        return x, (1 if hw == 1 else 0), n, c, hw
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return x, 1, n, c, hw
    if x.dim() == 3 and x.transpose(1, 2).is_contiguous():  # (N, L, C) in memory
        return x, 1, n, c, hw
    return x.contiguous(), (1 if hw == 1 else 0), n, c, hw


def _param(p: torch.Tensor | None, ct: torch.dtype) -> torch.Tensor | None:
    if p is None or (p.dtype == ct and p.is_contiguous()):
        return p
    return p.detach().to(ct).contiguous()


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _run_forward(entry: str, x: torch.Tensor, weight, bias, eps: float, running, nstats: int,
                 head: tuple = (), tail: tuple = (), what: str = "") -> tuple:
    """The shared driver of the training-forward entry points (``l1bn_forward``,
    ``l1bn_range_forward``), whose C signature is ``(dtype, layout, *head, x, y, w, b, *stats,
    run_mean, run_disp, factor, N, C, HW, *tail, eps, threads)``.

    Returns ``(y, stats, x_saved, finite)``: ``stats`` the ``nstats`` (C,) outputs in the compute
    dtype; ``running = (running_mean, running_disp, factor)`` moves towards ``stats[0]`` and
    ``stats[1]`` (in the kernel when their dtype is the compute dtype and they are contiguous, else
    here), only when the batch was finite.
    """
    lib = load()
    src = x.float() if x.dtype == torch.float16 else x
    xs, layout, n, c, hw = _geometry(src)
    ct = torch.float64 if xs.dtype == torch.float64 else torch.float32
    y = torch.empty_like(xs)
    stats = tuple(torch.empty(c, dtype=ct) for _ in range(nstats))
    w, b = _param(weight, ct), _param(bias, ct)
    rm = rd = None
    factor = 0.0
    if running is not None:
        rm, rd, factor = running
        in_kernel = all(r.dtype == ct and r.is_contiguous() for r in (rm, rd))
        if not in_kernel:
            factor = 0.0
    rc = getattr(lib, entry)(_DTYPES[xs.dtype], layout, *head, xs.data_ptr(), y.data_ptr(), _ptr(w), _ptr(b),
                             *(t.data_ptr() for t in stats), _ptr(rm), _ptr(rd), float(factor), n, c, hw,
                             *tail, float(eps), torch.get_num_threads())
    if rc < 0:
        raise ExtensionError(f"{entry} refused dtype {xs.dtype}{what}")
    if running is not None and not in_kernel and rc == 0:
        with torch.no_grad():
            rm.lerp_(stats[0].to(rm.dtype), running[2])
            rd.lerp_(stats[1].to(rd.dtype), running[2])
    if x.dtype == torch.float16:
        return y.to(torch.float16), stats, x, rc == 0
    return y, stats, xs, rc == 0


def _run_backward(entry: str, dy: torch.Tensor, x: torch.Tensor, weight, stats: tuple, eps: float,
                  head: tuple = (), tail: tuple = (), what: str = "") -> tuple:
    """The shared driver of the training-backward entry points (``l1bn_backward``,
    ``l1bn_range_backward``): C signature ``(dtype, layout, *head, dy, x, w, *stats, dx, dw, db, N, C,
    HW, *tail, eps, threads)``; ``stats`` are the forward's, their dtype the compute dtype.
    Returns ``(dx, dweight, dbias)``."""
    lib = load()
    half = x.dtype == torch.float16
    if half:
        x = x.float()
    xs, layout, n, c, hw = _geometry(x)
    if dy.dtype != xs.dtype or dy.stride() != xs.stride():
        dy = torch.empty_like(xs).copy_(dy)  # dy in the dtype and memory layout of x
    ct = stats[0].dtype
    dx = torch.empty_like(xs)
    dw = torch.empty(c, dtype=ct)
    db = torch.empty(c, dtype=ct)
    w = _param(weight, ct)
    rc = getattr(lib, entry)(_DTYPES[xs.dtype], layout, *head, dy.data_ptr(), xs.data_ptr(), _ptr(w),
                             *(t.data_ptr() for t in stats), dx.data_ptr(), dw.data_ptr(), db.data_ptr(),
                             n, c, hw, *tail, float(eps), torch.get_num_threads())
    if rc < 0:
        raise ExtensionError(f"{entry} refused dtype {xs.dtype}{what}")
    return (dx.to(torch.float16) if half else dx), dw, db


def _norm_code(norm: str) -> int:
    """The kernel's code of ``norm`` (its index in :data:`NORMS`); ValueError for another norm."""
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r} has no generic C++ kernel; allowed {', '.join(map(repr, NORMS))}")
    return NORMS.index(norm)


def forward(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float,
            norm: str = "l1", running: tuple | None = None
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, bool]:
    """Training forward on (N, C, *): ``(y, mu, s, x_saved, finite)``.

    ``y`` has the dtype and memory format of ``x``; ``mu``/``s`` (C,) are float32 (float64 for
    float64 input); ``x_saved`` is the tensor the backward reads (``x`` itself unless ``x`` had to
    be copied); ``finite`` is False when a channel sum was NaN/Inf (a NaN/Inf input). ``running``:
    ``(running_mean, running_s, factor)`` moved by ``factor`` towards ``mu``/``s`` (in the kernel
    when their dtype is the compute dtype), and left alone when not ``finite``. Needs
    :func:`usable` (x) to be True.
    """
    y, (mu, s), xs, ok = _run_forward("l1bn_forward", x, weight, bias, eps, running, 2, head=(_norm_code(norm),),
                                      what=f" / norm {norm!r}")
    return y, mu, s, xs, ok


def backward(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None, mu: torch.Tensor,
             s: torch.Tensor, eps: float, norm: str = "l1"
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training backward: ``(dx, dweight, dbias)``; dx like ``x``, the others (C,) like ``mu``.

    ``x`` is the ``x_saved`` of :func:`forward`; ``mu``/``s`` its statistics.
    """
    return _run_backward("l1bn_backward", dy, x, weight, (mu, s), eps, head=(_norm_code(norm),),
                         what=f" / norm {norm!r}")


def range_forward(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float,
                  cn: float, running: tuple | None = None) -> tuple:
    """Range-BN training forward on (N, C, *): ``(y, mu, rs, mx, mn, x_saved, finite)``.

    ``sigma = cn * (max - min) + eps`` per channel; ``rs = cn * (max - min)`` (the running
    statistic), ``mx``/``mn`` the channel's max and min, all (C,) float32 (float64 for float64
    input). ``running``: ``(running_mean, running_sigma, factor)``, as in :func:`forward`. Passes:
    one for the sum, max and min together, one for ``y``.
    """
    y, (mu, rs, mx, mn), xs, ok = _run_forward("l1bn_range_forward", x, weight, bias, eps, running, 4,
                                               tail=(float(cn),))
    return y, mu, rs, mx, mn, xs, ok


def range_backward(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None, mu: torch.Tensor,
                   rs: torch.Tensor, mx: torch.Tensor, mn: torch.Tensor, eps: float, cn: float
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Range-BN training backward: ``(dx, dweight, dbias)`` from :func:`range_forward`'s outputs.

    The gradient of the max (of the min) is split evenly among the values equal to it (torch
    autograd's rule for ``amax``/``amin``). Passes: one for ``sum(dy)``, ``sum(dy * (x - mu))`` and
    the tie counts, one for ``dx``.
    """
    return _run_backward("l1bn_range_backward", dy, x, weight, (mu, rs, mx, mn), eps, tail=(float(cn),))


def main() -> int:
    """``python -m l1bn.sw.bn_fast``: build (or find) the library and print :func:`status`.

    Exit status 0 also when the build fails: the package works without it (eager fallback).
    """
    ok = available()
    print(f"l1bn: {status()}")
    if not ok:
        print("l1bn: L1BatchNorm layers will run the eager PyTorch math on CPU", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
