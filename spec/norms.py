"""The per-norm registry: everything that differs between batch-norm variants, in one place.

A BN unit, its reference, its report rows and its torch layer share one skeleton; a norm only
chooses how the per-channel *dispersion* is measured and turned into ``sigma``::

    d_i   = (x_i << frac) - mu                        (shared)
    D     = sum_i f(d_i)                              (norm: |d| for L1, d*d for L2)
    s     = div_round(D, n)                           (shared rule)
    sigma = g(s) + eps                                (norm: rnd(s*C, c_bits) for L1, isqrt(s) for L2)
    inv, xhat, y                                      (shared)

Each :class:`NormSpec` holds the integer rules of ``f`` and ``g`` (numpy, exact), their widths, the
analytic operation counts per element, and *names* (``"module:attribute"``) of the backward rule of
the reference (``backward``: how the bracket ``u`` of the BN backward is formed,
docs/arith/bn_backward.md), of the hardware stages and of the torch layers, so this module imports
neither amaranth nor torch (nor the reference, which imports it). Adding a norm means one
entry here plus the hardware stage and the layer it names (docs/extending.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .intmath import C_SQRT_PI_2, c_const, isqrt_int, range_const, rnd_int

__all__ = ["NormSpec", "NORMS", "SIGMA_KINDS", "BASELINE", "FEATURED", "norm_spec", "norm_names",
           "backward_spec", "backward_norms", "isqrt_array", "div_round_array"]

#: How a norm turns the dispersion mean ``s`` into sigma, and so which hardware the reciprocal
#: stage builds: ``"const"`` = ``rnd(s * K, c_bits)``, one constant multiply by a generation-time
#: constant K (L1: sqrt(pi/2), range: C(n)); ``"sqrt"`` = ``isqrt(s)``, a restoring square root.
SIGMA_KINDS = ("const", "sqrt")


def div_round_array(v: np.ndarray, n: int) -> np.ndarray:
    """``round(v / n)`` with ties toward +infinity: ``floor((2v + n) / (2n))``, exact in int64."""
    return (2 * v + n) // (2 * n)


def isqrt_array(v: np.ndarray) -> np.ndarray:
    """``floor(sqrt(v))`` of a non-negative int64 array (< 2**62), exact.

    A float64 square root is within a few units of the answer for these magnitudes; two correction
    steps in each direction make it exact.
    """
    v = np.asarray(v, dtype=np.int64)
    if v.size and int(v.min()) < 0:
        raise ValueError(f"isqrt of a negative value {int(v.min())}")
    r = np.floor(np.sqrt(v.astype(np.float64))).astype(np.int64)
    for _ in range(2):
        r = np.where(r * r > v, r - 1, r)
        r = np.where((r + 1) * (r + 1) <= v, r + 1, r)
    return r


class _NCfg:
    """The one config field the dispersion rules read (``n``), for :meth:`NormSpec.dispersion`."""

    def __init__(self, n: int):
        self.n = n


def _mean_rule(ops, total, cfg):
    """``(D, s)`` with ``s = div_round(D, n)`` (L1 and L2)."""
    return ops.named("disp_sum", total), ops.div_round(total, cfg.n, name="s")


def _h_bits(bwd, xhat_extra: int = 0) -> int:
    """Signed bits of ``H = sum dy * xhat`` (F fractional bits) when ``sum |xhat| <= n * 2**xhat_extra``.

    ``|H| <= 2**(grad_width-1) * n * 2**xhat_extra * 2**F``, one margin bit for the roundings.
    """
    return bwd.grad_width + bwd.bn.count_bits + bwd.inner_frac + 2 + xhat_extra


def _div_bits(bwd, numerator_bits: int) -> int:
    """Signed bits of ``div_const(v, n, div_bits)`` = ``v * round(2**div_bits / n)`` for the widest
    ``v`` divided (``numerator_bits``), or ``mean(dy)``'s ``A << F``."""
    sum_dy = bwd.grad_width + bwd.bn.count_bits
    return max(numerator_bits, sum_dy + bwd.inner_frac) + bwd.div_bits - bwd.bn.count_bits + 1


def _l1l2_backward_widths(bwd, u_extra: int = 0) -> dict:
    """L1 divides ``H * C`` by n (``hc`` bits), L2 divides ``H``; both registers are sized for the
    wider one (the units share them)."""
    h = _h_bits(bwd)
    return {"h": h, "u": _u_bits_l1l2(bwd, u_extra), "div": _div_bits(bwd, h + bwd.bn.c_bits + 1)}


def _u_bits_l1l2(bwd, extra: int = 0) -> int:
    """``u = (dy << F) - mean(dy) - k``: three terms each below ``2**(grad_width-1+F)`` (times
    ``|xhat| <= sqrt(n)`` for L2, ``extra`` bits), two margin bits."""
    return bwd.grad_width + bwd.inner_frac + 4 + extra


@dataclass(frozen=True)
class NormSpec:
    """One batch-norm variant.

    Attributes
    ----------
    name : str
        Registry key (``BNConfig.norm``), e.g. ``"l1"``.
    title : str
        Human name for tables.
    disp_sum_bits, disp_bits : callable(cfg) -> int
        Unsigned bits of the dispersion sum ``D`` and of its mean ``s``.
    sigma_core_max : callable(cfg) -> int
        Largest ``g(s)`` (sigma before ``+ eps``) for any ``s`` that fits ``disp_bits``.
    disp_rule : callable(ops, d, cfg) -> (D, s)
        The dispersion statistic ``D`` of a channel's deviations ``d`` and its normalized value
        ``s``, written over an operations backend ``ops`` (:mod:`l1bn.spec.reference.program`):
        the numpy reference and the formal model both run this one rule.
    sigma_rule : callable(ops, s, cfg) -> value
        ``g(s)`` (sigma before ``+ eps``), over the same backend.
    widths : callable(cfg) -> dict
        Signed bits of this norm's own intermediates (the shared ones are in ``BNConfig.widths``).
    sigma_kind : str
        One of :data:`SIGMA_KINDS`: ``"const"`` when ``g(s)`` is a constant multiply (L1, range),
        ``"sqrt"`` when it is a square root (L2). The forward unit's ``RecipStage`` and the
        report's energy model choose their datapath by it.
    sigma_const : callable(cfg) -> int, or None
        For a ``"const"`` sigma_kind, the constant K of ``g(s) = rnd(s * K, c_bits)`` (L1:
        ``c_const(c_bits)``, range: ``range_const(n, c_bits)``); None for ``"sqrt"``.
    float_sigma : callable(disp, eps) -> ndarray
        Inference sigma (float64) from the running dispersion the torch layer keeps: the mean
        absolute deviation for L1 (``sqrt(pi/2) * disp + eps``), the variance for L2
        (``sqrt(disp + eps)``).
    label : str
        Short name in titles and command help: ``"L1"`` in "L1-BN backward unit".
    ops : tuple of (name, kind, bits-callable[, times])
        Per-element operations of the dispersion/sigma datapath for the analytic energy estimate:
        ``kind`` is ``"add"``, ``"mul"`` or ``"cmp"``; ``bits(cfg)`` their width (a multiply of
        two widths: ``(a, b)``; one width: a square); ``times`` how many (default 1; an int or
        ``times(cfg)``).
    backward : str
        ``"module:attribute"`` of the reference backward rule
        ``rule(p: BackwardPass1, cfg: BNBackwardConfig) -> u`` (``l1bn.spec.reference.bn_backward``),
        or ``""``: a norm without one is refused by every backward and training config
        (:func:`backward_spec`).
    backward_widths : callable(bwd_cfg) -> dict
        Signed bits of the backward's norm-specific intermediates (``h`` and ``u`` always; the
        shared ones are in ``BNBackwardConfig.widths``).
    backward_ops, backward_channel_ops : tuple of (name, kind, bits-callable[, times])
        The backward unit's own operations, as :attr:`ops` with ``bits(bwd_cfg)``: per element
        (besides the shared pass 1, ``u = dy - ...`` and ``u * gamma*inv``) and per channel
        (besides the shared ``mu*sum_dy``, ``H``, the divisions by n and ``gamma*inv``), for the
        analytic energy of the backward rows.
    backward_help : str
        One line of help for the backward unit's commands (``l1bn verilog <name>bn-bwd``).
    backward_sign_in : bool
        The backward unit can take sign(d_i) as a 1-bit input instead of reading x in pass 2
        (``sign_in=True``, ``--sign-in``); the unit's term says the same
        (``BackwardTerm.takes_sign``, checked by a test). Here so that the CLI builds its
        options without importing the hardware.
    hw_unit, hw_backward, layer1d, layer2d : str
        ``"module:attribute"`` of the Amaranth forward unit, backward unit (or ``""``: none built
        yet), and the torch layers.
    """

    name: str
    title: str
    disp_sum_bits: Callable
    disp_bits: Callable
    sigma_core_max: Callable
    disp_rule: Callable
    sigma_rule: Callable
    widths: Callable
    sigma_kind: str
    sigma_const: Callable = None
    float_sigma: Callable = None
    label: str = ""
    ops: tuple = field(default=())
    backward: str = ""
    backward_widths: Callable = None
    backward_ops: tuple = field(default=())
    backward_channel_ops: tuple = field(default=())
    backward_help: str = ""
    backward_sign_in: bool = False
    hw_unit: str = ""
    hw_backward: str = ""
    layer1d: str = ""
    layer2d: str = ""

    def dispersion(self, d, n: int):
        """Per channel: ``D`` and ``s`` of the int64 deviations ``d`` (channels, n), both int64 of
        shape (channels,): :attr:`disp_rule` run by the numpy backend."""
        from .reference.program import NUMPY

        d = np.asarray(d, dtype=np.int64)
        total, s = self.disp_rule(NUMPY, d, _NCfg(n))
        return total.reshape(d.shape[:-1]), s.reshape(d.shape[:-1])

    def sigma_core(self, s, cfg):
        """``g(s)`` on an array of per-channel means, in exact Python integers (object array):
        :attr:`sigma_rule` run by the numpy backend."""
        from .reference.program import NUMPY

        return np.asarray(self.sigma_rule(NUMPY, np.asarray(s), cfg), dtype=object).reshape(np.shape(s))

    def __post_init__(self):
        if self.sigma_kind not in SIGMA_KINDS:
            raise ValueError(f"sigma_kind={self.sigma_kind!r} of norm {self.name!r} is not allowed; "
                             f"choose one of {', '.join(map(repr, SIGMA_KINDS))}")
        if self.sigma_kind == "const" and self.sigma_const is None:
            raise ValueError(f"norm {self.name!r}: sigma_kind='const' needs sigma_const")


# --- L1: mean absolute deviation, sigma = sqrt(pi/2) * s ------------------------------------------

def _l1_sigma_rule(ops, s, cfg):
    # s * C needs disp_bits + c_bits + 1 bits (up to 65): exact integers, per channel
    return ops.rnd(ops.exact(s) * c_const(cfg.c_bits), cfg.c_bits)


def _l1_widths(cfg):
    # |d| needs no more bits than d; s * C is per channel, in exact Python integers
    return {}


L1 = NormSpec(
    name="l1", title="L1 (sign/abs)",
    disp_sum_bits=lambda cfg: cfg.dev_bits - 1 + cfg.count_bits,
    disp_bits=lambda cfg: cfg.dev_bits - 1,
    sigma_core_max=lambda cfg: rnd_int(((1 << cfg.disp_bits) - 1) * c_const(cfg.c_bits), cfg.c_bits),
    disp_rule=lambda ops, d, cfg: _mean_rule(ops, ops.sum(ops.abs(d)), cfg),
    sigma_rule=_l1_sigma_rule,
    widths=_l1_widths,
    sigma_kind="const",
    sigma_const=lambda cfg: c_const(cfg.c_bits),
    float_sigma=lambda disp, eps: C_SQRT_PI_2 * disp + eps,
    label="L1",
    ops=(("|d|", "add", lambda cfg: cfg.dev_bits),
         ("sum |d|", "add", lambda cfg: cfg.disp_sum_bits)),
    # sum |xhat| = n * s / sigma < n / c: H needs no extra bit
    backward="l1bn.spec.reference.bn_backward:l1_bracket",
    backward_widths=_l1l2_backward_widths,
    # pass 2 selects k+ or k- by the sign; per channel two mh * (+-1 - mean(sgn))
    backward_ops=(("mux k+/k-", "add", lambda bwd: bwd.widths["u"]),),
    backward_channel_ops=(("mh*(+-1 - msgn)", "mul", lambda bwd: (bwd.widths["h"], bwd.inner_frac + 3), 2),),
    backward_help="L1-BN backward unit (sign-based gradient).",
    backward_sign_in=True,
    hw_unit="l1bn.hw.bn_unit:L1BNUnit", hw_backward="l1bn.hw.bn_backward:L1BNBackwardUnit",
    layer1d="l1bn.sw.layers:L1BatchNorm1d", layer2d="l1bn.sw.layers:L1BatchNorm2d",
)


# --- L2: standard deviation, sigma = isqrt(s) ------------------------------------------------------

def _l2_widths(cfg):
    return {"d_squared": 2 * (cfg.dev_bits - 1) + 1}


L2 = NormSpec(
    name="l2", title="L2 (square/sqrt)",
    disp_sum_bits=lambda cfg: 2 * (cfg.dev_bits - 1) + cfg.count_bits,
    disp_bits=lambda cfg: 2 * (cfg.dev_bits - 1),
    sigma_core_max=lambda cfg: isqrt_int((1 << cfg.disp_bits) - 1),
    disp_rule=lambda ops, d, cfg: _mean_rule(ops, ops.sum(d * d), cfg),
    sigma_rule=lambda ops, s, cfg: ops.isqrt(s, name="sigma_core"),
    widths=_l2_widths,
    sigma_kind="sqrt",
    float_sigma=lambda disp, eps: np.sqrt(disp + eps),
    label="L2",
    ops=(("d*d", "mul", lambda cfg: cfg.dev_bits),
         ("sum d*d", "add", lambda cfg: cfg.disp_sum_bits)),
    # sum |xhat| <= sqrt(n * sum xhat**2) = n (Cauchy-Schwarz); |xhat_i| <= sqrt(n) in u
    backward="l1bn.spec.reference.bn_backward:l2_bracket",
    backward_widths=lambda bwd: _l1l2_backward_widths(bwd, (bwd.bn.count_bits + 1) // 2 + 1),
    # pass 2 rebuilds xhat_i (a multiply) and multiplies it by mean(dy*xhat)
    backward_ops=(("xhat = d*inv", "mul", lambda bwd: (bwd.bn.dev_bits, bwd.bn.inv_bits)),
                  ("xhat*mean(dy*xhat)", "mul",
                   lambda bwd: (bwd.bn.xhat_bits, bwd.widths["hc"] - bwd.bn.count_bits + 2)),
                  ("- mean(dy)", "add", lambda bwd: bwd.widths["u"])),
    backward_help="L2-BN backward baseline unit.",
    hw_unit="l1bn.hw.bn_unit:L2BNUnit", hw_backward="l1bn.hw.bn_backward:L2BNBackwardUnit",
    layer1d="torch.nn:BatchNorm1d", layer2d="torch.nn:BatchNorm2d",
)


# --- range: sigma = C(n) * (max d - min d) -------------------------------------------------------
# Banner et al., NeurIPS 2018, as in the public RangeBN (quantized.pytorch, one chunk per channel):
# C(n) = 0.5 * 0.35 * (1 + sqrt(pi * ln 4)) / sqrt(2 ln n). docs/arith/range_bn.md.

def _range_sigma_rule(ops, s, cfg):
    return ops.rnd(ops.exact(s) * range_const(cfg.n, cfg.c_bits), cfg.c_bits)


def _range_disp_rule(ops, d, cfg):
    r = ops.named("disp_sum", ops.max(d) - ops.min(d))
    return r, ops.named("s", r)


def _range_xhat_extra(cfg) -> int:
    """Bits of ``ceil(2**c_bits / Cr)`` (about ``1 / C(n)``): ``sigma >= range * Cr / 2**c_bits + 1/2``."""
    cr = range_const(cfg.n, cfg.c_bits)
    return (-(-(1 << cfg.c_bits) // cr)).bit_length()


def _range_backward_widths(bwd) -> dict:
    """Range's bounds (docs/arith/bn_backward.md, "Range"): the mean absolute deviation is at most
    half the range, so ``sum |xhat| <= n * 2**c_bits / (2 Cr) < n * 2**(xe - 1)`` and ``|H|`` needs
    ``xe`` more bits than L1's, with ``xe`` the bits of ``ceil(2**c_bits / Cr)``. The extremes'
    term ``K = Cr * H / (count << c_bits) <= 2**(grad_width-2+F) * n``, so ``u`` has about ``clog2(n)``
    bits more than ``dy << F``."""
    b, g, fr, cb = bwd.bn, bwd.grad_width, bwd.inner_frac, bwd.bn.count_bits
    h = g + cb + fr + 1 + _range_xhat_extra(b)
    hc = h + b.c_bits + 1                                     # H * Cr
    return {"h": h, "u": g + fr + cb + 2,
            "div": _div_bits(bwd, 0),                         # only mean(dy) is divided by n
            "k_numerator": hc + 2,                            # 2 * H * Cr + (count << c_bits)
            "k_divisor": cb + b.c_bits + 3,                   # 2 * (count << c_bits), unsigned
            "k_quotient": _range_k_quotient_bits(bwd, h)}


def _range_k_quotient_bits(bwd, h: int) -> int:
    """Unsigned bits of ``|a|``, ``a = (2 * H * Cr + (count << c_bits)) >> (c_bits + 1)``, over
    ``|H| < 2**(h-1)`` and ``1 <= count <= n``: ``Kmax = div_round(H * Cr, count << c_bits) =
    floor(a / count)``, so the hardware divides ``a`` by the count one quotient bit per cycle
    (its largest magnitude at ``count = 1``)."""
    b = bwd.bn
    cr, top = range_const(b.n, b.c_bits), (1 << (h - 1)) - 1
    hi = (2 * top * cr + (b.n << b.c_bits)) >> (b.c_bits + 1)
    lo = (-2 * top * cr + (1 << b.c_bits)) >> (b.c_bits + 1)
    return max(hi, -lo).bit_length()


RANGE = NormSpec(
    name="range", title="range (max/min)",
    disp_sum_bits=lambda cfg: cfg.dev_bits - 1,     # max - min of d = (max x - min x) << frac
    disp_bits=lambda cfg: cfg.dev_bits - 1,
    sigma_core_max=lambda cfg: rnd_int(((1 << (cfg.dev_bits - 1)) - 1) * range_const(cfg.n, cfg.c_bits),
                                       cfg.c_bits),
    disp_rule=_range_disp_rule,
    sigma_rule=_range_sigma_rule,
    widths=lambda cfg: {},
    sigma_kind="const",
    sigma_const=lambda cfg: range_const(cfg.n, cfg.c_bits),
    float_sigma=lambda disp, eps: disp + eps,       # the layer keeps C(n) * range as its statistic
    label="Range",
    ops=(("max(d)", "cmp", lambda cfg: cfg.dev_bits),
         ("min(d)", "cmp", lambda cfg: cfg.dev_bits)),
    backward="l1bn.spec.reference.bn_backward:range_bracket",
    backward_widths=_range_backward_widths,
    # pass 1 keeps a running max and min of x and their tie counts; pass 2 compares x with both
    # and selects one of three constants; per channel H*Cr and two serial divisions by the counts
    backward_ops=(("max/min x, tie counts (pass 1)", "cmp", lambda bwd: bwd.bn.width, 4),
                  ("x = max, x = min", "cmp", lambda bwd: bwd.bn.width, 2),
                  ("mux kp/kn/mean(dy)", "add", lambda bwd: bwd.widths["u"])),
    backward_channel_ops=(("H*Cr", "mul", lambda bwd: (bwd.widths["h"], bwd.bn.c_bits)),
                          ("Kmax, Kmin: serial division by the counts", "add",
                           lambda bwd: bwd.bn.count_bits + 2, lambda bwd: 2 * bwd.widths["k_quotient"]),
                          ("kp, kn = mean(dy) +- K", "add", lambda bwd: bwd.widths["u"], 2)),
    backward_help="Range-BN backward unit (gradient through the max and min).",
    hw_unit="l1bn.hw.bn_unit:RangeBNUnit", hw_backward="l1bn.hw.bn_backward:RangeBNBackwardUnit",
    layer1d="l1bn.sw.range_bn:RangeBatchNorm1d", layer2d="l1bn.sw.range_bn:RangeBatchNorm2d",
)


#: The registry, in report order.
NORMS: dict[str, NormSpec] = {spec.name: spec for spec in (L1, L2, RANGE)}

#: The norm every other one is compared with (the reports' ``<norm>_over_<BASELINE>`` ratios).
BASELINE = L2.name

#: The toolkit's own norm: the one ``l1bn demo`` builds and compares with :data:`BASELINE`.
FEATURED = L1.name


def norm_names() -> tuple[str, ...]:
    """Registered norm names, in report order."""
    return tuple(NORMS)


def backward_norms() -> tuple[str, ...]:
    """The norms with a hardware backward unit (``hw_backward`` set), in report order."""
    return tuple(name for name, spec in NORMS.items() if spec.hw_backward)


def norm_spec(name: str) -> NormSpec:
    """The :class:`NormSpec` of ``name``; ``ValueError`` listing the registered ones otherwise."""
    if name not in NORMS:
        raise ValueError(f"norm={name!r} is not allowed; choose one of {', '.join(map(repr, NORMS))}")
    return NORMS[name]


def backward_spec(name: str) -> NormSpec:
    """The :class:`NormSpec` of ``name`` when it has a backward rule; the one refusal otherwise.

    Every backward and training config calls this, so a norm registered without a backward rule
    is refused everywhere with the same message.
    """
    spec = norm_spec(name)
    if not spec.backward or spec.backward_widths is None:
        have = [n for n, s in NORMS.items() if s.backward and s.backward_widths is not None]
        raise ValueError(f"norm={name!r} has no backward rule in the registry (l1bn.spec.norms); "
                         f"backward and training are defined for {', '.join(map(repr, have))}")
    return spec


def resolve(path: str):
    """Import ``"module:attribute"`` (a registry's hardware or layer name) and return the object."""
    import importlib

    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)
