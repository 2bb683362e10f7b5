"""Design configuration objects: the only way a parameter travels through l1bn.

The CLI builds a config, the Amaranth generator elaborates it, the integer reference computes with
it, the cocotb bench reads it back (``to_json``/``from_json``) and the report keys its cache on
``digest()``. This module imports nothing heavy (no torch, no amaranth).

Every constructor argument is keyword-only and validated in ``__post_init__``; a bad value raises
``ValueError`` naming the parameter, the value and the allowed range.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .norms import backward_spec, norm_names, norm_spec

__all__ = [
    "check_int",
    "check_choice",
    "clog2",
    "BNConfig",
    "MACConfig",
    "BNBackwardConfig",
    "config_from_json",
]


def check_int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    """Return ``value`` if it is an int in ``[lo, hi]``; else raise a ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}={value!r} must be an integer in {lo}..{hi if hi is not None else 'inf'}")
    if value < lo or (hi is not None and value > hi):
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise ValueError(f"{name}={value} is out of range; allowed {rng}")
    return value


def check_choice(name: str, value: Any, choices: tuple) -> Any:
    """Return ``value`` if it is one of ``choices``; else raise a ``ValueError`` naming it."""
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not allowed; choose one of {', '.join(map(repr, choices))}")
    return value


def clog2(n: int) -> int:
    """Bits needed to count ``n`` distinct values: ``ceil(log2(n))``, 0 for n <= 1."""
    return max(0, (n - 1).bit_length())


class ConfigBase:
    """Mixin: JSON round trip and a stable digest for caching."""

    kind: ClassVar[str] = ""

    def to_dict(self) -> dict:
        return {"kind": self.kind, **dataclasses.asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def digest(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, d: dict):
        d = dict(d)
        kind = d.pop("kind", cls.kind)
        if kind != cls.kind:
            raise ValueError(f"config kind={kind!r} does not match {cls.kind!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
        return cls(**d)


# Largest intermediate the int64 reference can hold exactly (sign bit excluded).
MAX_INTERMEDIATE_BITS = 62

# Largest MAC array side: every accepted array generates in seconds and simulates in minutes
# (16 x 16 8-bit: 28.5k lines of Verilog, 10 s to generate, 40 s to simulate on Icarus; 32 x 32
# took 54 s and 17 min: docs/mac_array.md).
MAX_MAC_ARRAY = 16


@dataclass(frozen=True, kw_only=True)
class BNConfig(ConfigBase):
    """A training-mode batch-norm unit (L1 or L2) and its integer arithmetic.

    Data are signed two's complement. Per channel, a batch holds ``n`` elements; ``lanes`` elements
    arrive per cycle. See ``docs/arithmetic.md`` for every stage.

    Parameters
    ----------
    norm : {"l1", "l2", "range"}
        Dispersion operator, a key of the registry :data:`l1bn.spec.norms.NORMS`: mean absolute
        deviation (sign/abs), standard deviation (square/sqrt) or range (max/min, Banner et al.).
    width : int, 2..32
        Bits of the input x (signed integer, no fractional bits).
    out_width : int, 2..32
        Bits of the output y (signed, ``out_frac`` fractional bits), saturated.
    channels : int, 1..4096
        Channels processed one after another.
    n : int, 2..65536
        Elements per channel per batch (N*H*W of the mini-batch).
    lanes : int, 1..64, must divide n
        Elements accepted (and produced) per cycle.
    frac : int, 0..16
        Fractional bits of the mean, the deviations and sigma.
    xhat_frac : int, 1..24
        Fractional bits of the normalized value xhat.
    recip_bits : int, 4..40
        The reciprocal is ``floor(2**recip_bits / sigma)``.
    gamma_width, gamma_frac : int
        gamma is signed ``gamma_width`` bits with ``gamma_frac`` fractional bits.
    beta_width : int
        beta is signed ``beta_width`` bits in output units (``out_frac`` fractional bits).
    out_frac : int, 0..xhat_frac+gamma_frac
        Fractional bits of y.
    eps : int, >= 1
        Added to sigma, in units of 2**-frac; >= 1 keeps the reciprocal defined.
    c_bits : int, 4..24
        L1 and range: fractional bits of the sigma constant, ``round(c * 2**c_bits)`` with
        c = sqrt(pi/2) (L1) or C(n) (range), applied with rounding.
    """

    kind: ClassVar[str] = "bn"
    NORMS: ClassVar[tuple] = norm_names()

    norm: str = "l1"
    width: int = 8
    out_width: int = 8
    channels: int = 1
    n: int = 64
    lanes: int = 1
    frac: int = 4
    xhat_frac: int = 8
    recip_bits: int = 20
    gamma_width: int = 8
    gamma_frac: int = 6
    beta_width: int = 8
    out_frac: int = 4
    eps: int = 1
    c_bits: int = 12

    def __post_init__(self):
        check_choice("norm", self.norm, self.NORMS)
        check_int("width", self.width, 2, 32)
        check_int("out_width", self.out_width, 2, 32)
        check_int("channels", self.channels, 1, 4096)
        check_int("n", self.n, 2, 65536)
        check_int("lanes", self.lanes, 1, 64)
        if self.n % self.lanes:
            raise ValueError(f"lanes={self.lanes} must divide n={self.n}")
        check_int("frac", self.frac, 0, 16)
        check_int("xhat_frac", self.xhat_frac, 1, 24)
        check_int("recip_bits", self.recip_bits, 4, 40)
        check_int("gamma_width", self.gamma_width, 2, 18)
        check_int("gamma_frac", self.gamma_frac, 0, self.gamma_width - 1)
        check_int("beta_width", self.beta_width, 2, 32)
        check_int("out_frac", self.out_frac, 0, self.xhat_frac + self.gamma_frac)
        check_int("eps", self.eps, 1, 2**16)
        check_int("c_bits", self.c_bits, 4, 24)
        widths = self.widths
        name = max(widths, key=widths.get)
        if widths[name] > MAX_INTERMEDIATE_BITS:
            raise ValueError(
                f"norm={self.norm}, width={self.width}, n={self.n}, frac={self.frac}, "
                f"recip_bits={self.recip_bits}, c_bits={self.c_bits} need a {widths[name]}-bit "
                f"intermediate ({name}); at most {MAX_INTERMEDIATE_BITS} signed bits are supported "
                f"(lower width, n, frac, recip_bits or c_bits)")

    # Derived widths (bits, signed unless noted). Generators and the reference both use these.
    @property
    def count_bits(self) -> int:
        return clog2(self.n)

    @property
    def sum_bits(self) -> int:
        """Sum of x over a channel."""
        return self.width + self.count_bits

    @property
    def dev_bits(self) -> int:
        """d = (x << frac) - mu, signed."""
        return self.width + self.frac + 1

    @property
    def sum_abs_bits(self) -> int:
        """Sum of |d| (unsigned)."""
        return self.dev_bits - 1 + self.count_bits

    @property
    def sum_sq_bits(self) -> int:
        """Sum of d*d (unsigned)."""
        return 2 * (self.dev_bits - 1) + self.count_bits

    @property
    def norm_product_bits(self) -> int:
        """d * inv, signed."""
        return self.dev_bits + self.recip_bits + 1

    @property
    def beats(self) -> int:
        """Stream beats per channel: n / lanes."""
        return self.n // self.lanes

    @property
    def mean_bits(self) -> int:
        """mu = div_round(sum << frac, n), signed, ``frac`` fractional bits."""
        return self.dev_bits

    @property
    def norm_spec(self):
        """The registry entry of ``norm`` (:class:`l1bn.spec.norms.NormSpec`)."""
        return norm_spec(self.norm)

    @property
    def disp_sum_bits(self) -> int:
        """The dispersion sum D (unsigned): sum |d| for L1, sum d*d for L2 (the norm's rule)."""
        return self.norm_spec.disp_sum_bits(self)

    @property
    def disp_bits(self) -> int:
        """s = div_round(D, n) (unsigned): mean |d| (L1) or mean d*d (L2)."""
        return self.norm_spec.disp_bits(self)

    @property
    def sigma_bits(self) -> int:
        """sigma (unsigned, ``frac`` fractional bits): ``g(s) + eps`` at the largest ``s``.

        ``bit_length(g(2**disp_bits - 1) + eps)``; g is rnd(s*C, c_bits) (L1) or isqrt(s) (L2).
        """
        return (self.norm_spec.sigma_core_max(self) + self.eps).bit_length()

    @property
    def widths(self) -> dict:
        """Signed bits of every per-element intermediate of the reference (worst case).

        The config is refused when any exceeds ``MAX_INTERMEDIATE_BITS`` (62): int64 then holds
        each value and the rounding add applied to it, so the numpy int64 reference never wraps.
        The per-channel statistics after the sums (``s``, ``s*C``, ``sigma``, ``inv``) are
        computed with exact Python integers and need no limit here. ``div_round(v, n)`` computes
        ``2v + n``: two more bits than ``v``.
        """
        w = {
            "sum_x": self.sum_bits,
            "mean_numerator": self.sum_bits + self.frac + 2,      # 2*(S << frac) + n
            "d": self.dev_bits,
            "disp_sum": self.disp_sum_bits + 1,                   # unsigned D, signed int64
            "disp_numerator": self.disp_sum_bits + 3,             # 2*D + n
            "d_times_inv": self.norm_product_bits,
            "gamma_times_xhat": self.affine_bits,
            "y_before_saturation": max(self.affine_bits - self.affine_shift, self.beta_width) + 1,
        }
        w.update(self.norm_spec.widths(self))
        return w

    @property
    def inv_bits(self) -> int:
        """inv = floor(2**recip_bits / sigma) (unsigned; sigma >= 1 so inv <= 2**recip_bits)."""
        return self.recip_bits + 1

    @property
    def xhat_bits(self) -> int:
        """xhat = rnd(d * inv, recip_bits - xhat_frac), signed, ``xhat_frac`` fractional bits."""
        return self.dev_bits + self.xhat_frac + 1

    @property
    def affine_shift(self) -> int:
        """Right shift (round half up) of gamma * xhat into output units."""
        return self.xhat_frac + self.gamma_frac - self.out_frac

    @property
    def affine_bits(self) -> int:
        """gamma * xhat, signed."""
        return self.xhat_bits + self.gamma_width


@dataclass(frozen=True, kw_only=True)
class MACConfig(ConfigBase):
    """A low-bit fixed-point MAC array and its integer arithmetic.

    Parameters
    ----------
    rows, cols : int, 1..16 (``MAX_MAC_ARRAY``)
        Array shape: ``rows`` output rows (M) by ``cols`` output columns (N) per tile.
    wbits : int, 1..8
        Weight bits.
    abits : int, 1..16
        Activation bits.
    signed_w, signed_a : bool
        Two's complement when True; unsigned otherwise. 1-bit signed weights are binary
        {-1, +1} (encoded 0 -> +1, 1 -> -1); see docs/arithmetic.md.
    bipolar_a : bool
        Bipolar activations {-1, +1} in one bit, code 0 = +1, code 1 = -1 (the binary weights'
        code); needs abits = 1 and signed_a.
    xnor : bool
        XNOR-popcount datapath: each PE counts the K-steps whose weight and activation codes are
        equal (``m``) and the result row is ``2*m - K``, the same exact sum; needs binary weights
        (wbits = 1, signed_w) and bipolar_a.
    k : int, 1..65536
        Largest reduction length the accumulator must hold without overflow.
    requant : bool
        Apply the output requantizer (shift with rounding, saturation, optional ReLU).
    out_bits : int, 2..16
        Requantized output bits (signed, or unsigned when ``relu``).
    shift : int, 0..31
        Arithmetic right shift of the requantizer (round half up).
    relu : bool
        Clamp negative results to 0 before saturation.
    """

    kind: ClassVar[str] = "mac"

    rows: int = 4
    cols: int = 4
    wbits: int = 4
    abits: int = 4
    signed_w: bool = True
    signed_a: bool = True
    k: int = 64
    requant: bool = False
    out_bits: int = 8
    shift: int = 0
    relu: bool = False
    bipolar_a: bool = False
    xnor: bool = False

    def __post_init__(self):
        check_int("rows", self.rows, 1, MAX_MAC_ARRAY)
        check_int("cols", self.cols, 1, MAX_MAC_ARRAY)
        check_int("wbits", self.wbits, 1, 8)
        check_int("abits", self.abits, 1, 16)
        for name in ("signed_w", "signed_a", "requant", "relu", "bipolar_a", "xnor"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} must be True or False")
        if self.bipolar_a and not (self.abits == 1 and self.signed_a):
            raise ValueError(f"bipolar_a needs abits=1 and signed_a (got abits={self.abits}, "
                             f"signed_a={self.signed_a})")
        if self.xnor and not (self.bipolar_a and self.wbits == 1 and self.signed_w):
            raise ValueError("xnor (the XNOR-popcount datapath) needs binary weights (wbits=1, signed_w) "
                             "and bipolar_a")
        check_int("k", self.k, 1, 65536)
        check_int("out_bits", self.out_bits, 2, 16)
        check_int("shift", self.shift, 0, 31)
        if self.acc_bits + 1 > MAX_INTERMEDIATE_BITS:  # +1: the requantizer's rounding add
            raise ValueError(f"k={self.k} with wbits={self.wbits}, abits={self.abits} needs a "
                             f"{self.acc_bits}-bit accumulator; at most {MAX_INTERMEDIATE_BITS - 1} supported")

    # Pure-int arithmetic widths, shared by the generator (no torch) and the reference.
    @property
    def weight_range(self) -> tuple[int, int]:
        """Values a weight may take. 1-bit signed weights are binary: -1 or +1."""
        if self.wbits == 1 and self.signed_w:
            return -1, 1
        return _int_range(self.wbits, self.signed_w)

    @property
    def act_range(self) -> tuple[int, int]:
        """Values an activation may take (1-bit signed activations are -1 or 0; bipolar -1 or +1)."""
        if self.bipolar_a:
            return -1, 1
        return _int_range(self.abits, self.signed_a)

    @property
    def product_extremes(self) -> tuple[int, int]:
        """Smallest and largest product w * a."""
        (wlo, whi), (alo, ahi) = self.weight_range, self.act_range
        ext = [wlo * alo, wlo * ahi, whi * alo, whi * ahi]
        return min(ext), max(ext)

    @property
    def product_bits(self) -> int:
        """Signed bits that hold any product w * a exactly."""
        return signed_bits(*self.product_extremes)

    @property
    def acc_bits(self) -> int:
        """Signed accumulator bits for ``k`` products: it cannot overflow."""
        lo, hi = self.product_extremes
        return signed_bits(self.k * lo, self.k * hi)

    @property
    def result_bits(self) -> int:
        """Bits of one output element: ``out_bits`` with the requantizer, else ``acc_bits``."""
        return self.out_bits if self.requant else self.acc_bits


def _int_range(bits: int, signed: bool) -> tuple[int, int]:
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def signed_bits(lo: int, hi: int) -> int:
    """Fewest two's complement bits that hold every integer in ``[lo, hi]``."""
    b = 1
    while not (-(1 << (b - 1)) <= lo and hi <= (1 << (b - 1)) - 1):
        b += 1
    return b


def config_from_json(text: str):
    """Rebuild any config from its ``to_json()`` text (used by the cocotb benches)."""
    d = json.loads(text)
    kinds = {c.kind: c for c in (BNConfig, MACConfig, BNBackwardConfig)}
    kind = d.get("kind")
    if kind not in kinds:
        raise ValueError(f"config kind={kind!r} is unknown; expected one of {sorted(kinds)}")
    return kinds[kind].from_dict(d)


@dataclass(frozen=True, kw_only=True)
class BNBackwardConfig(ConfigBase):
    """A training-mode BN backward (any norm with a backward rule in the registry): the forward's
    ``BNConfig`` plus gradient widths.

    See ``docs/arith/bn_backward.md`` for every stage. The upstream gradient ``dy`` is a signed
    ``grad_width``-bit integer carrying an arbitrary power-of-two scale S; all gradient outputs share
    S: ``dbeta`` (0 fractional bits), ``dgamma`` (``inner_frac`` fractional bits) and ``dx``
    (``grad_out_frac`` fractional bits, w.r.t. x in its integer LSBs).

    Parameters
    ----------
    bn : BNConfig
        The forward unit this backward belongs to (norm, widths, n, frac, recip_bits, c_bits...).
    grad_width : int, 2..24
        Bits of the upstream gradient dy (signed).
    inner_frac : int, 0..16
        Fractional bits of the per-channel means and of the bracketed term (F in the docs).
    grad_out_width : int, 2..62
        Bits of dx (signed), saturated. At ``widths["dx_product"]`` with the largest
        ``grad_out_frac`` (shift 0) dx is the exact product ``u * gamma * inv``, the value the
        training contract's error quantizer takes (docs/arith/training.md, section 6).
    grad_out_frac : int, 0..inner_frac+gamma_frac+recip_bits-frac
        Fractional bits of dx (at most the product's own: dx is never shifted left).
    div_bits : int, 8..32, >= clog2(n)
        Divisions by n are ``div_const(x, n, div_bits)``.
    """

    kind: ClassVar[str] = "bn_bwd"

    bn: BNConfig = field(default_factory=BNConfig)
    grad_width: int = 8
    inner_frac: int = 4
    grad_out_width: int = 16
    grad_out_frac: int = 4
    div_bits: int = 24

    def __post_init__(self):
        if not isinstance(self.bn, BNConfig):
            raise ValueError(f"bn={self.bn!r} must be a BNConfig")
        backward_spec(self.bn.norm)   # a norm without a backward rule is refused here
        check_int("grad_width", self.grad_width, 2, 24)
        check_int("inner_frac", self.inner_frac, 0, 16)
        check_int("grad_out_width", self.grad_out_width, 2, MAX_INTERMEDIATE_BITS)
        check_int("grad_out_frac", self.grad_out_frac, 0,
                  max(24, self.inner_frac + self.bn.gamma_frac + self.bn.recip_bits - self.bn.frac))
        check_int("div_bits", self.div_bits, max(8, self.bn.count_bits), 32)
        widest = max(self.widths.values())
        if widest > MAX_INTERMEDIATE_BITS:
            name = max(self.widths, key=self.widths.get)
            raise ValueError(
                f"grad_width={self.grad_width} with width={self.bn.width}, n={self.bn.n}, "
                f"frac={self.bn.frac}, recip_bits={self.bn.recip_bits} needs a {widest}-bit {name}; "
                f"at most {MAX_INTERMEDIATE_BITS} bits are supported (lower grad_width, width, n or recip_bits)")

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["bn"] = self.bn.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict):
        d = dict(d)
        if isinstance(d.get("bn"), dict):
            d["bn"] = BNConfig.from_dict(d["bn"])
        return super().from_dict.__func__(cls, d)

    @property
    def h_preshift(self) -> int:
        """Bits dropped (rounding) from sum(dy*d) before the multiply by inv, so it fits 62 bits."""
        b = self.bn
        sdyd = self.grad_width + b.width + b.count_bits + b.frac + 2
        return max(0, sdyd + b.recip_bits + 1 - MAX_INTERMEDIATE_BITS)

    @property
    def widths(self) -> dict:
        """Signed bits of every intermediate (worst case; ``h`` and ``u`` use the sigma bound).

        The shared registers are computed here; ``h``, ``u`` and any register of the norm's own
        rule come from its registry entry (``NormSpec.backward_widths``).
        """
        b, g, cb = self.bn, self.grad_width, self.bn.count_bits
        fr, r, cf = self.inner_frac, self.bn.recip_bits, self.bn.c_bits
        own = backward_spec(b.norm).backward_widths(self)
        sum_dy = g + cb
        sum_dyx = g + b.width + cb
        sdyd = sum_dyx + b.frac + 2
        h = own["h"]
        mh = h + cf + 1              # H * C (L1, range)
        gi = b.gamma_width + r + 1
        w = {
            "sum_dy": sum_dy, "sum_dyx": sum_dyx, "sdyd": sdyd,
            "sdyd_inv": sdyd - self.h_preshift + r + 1, "h": h, "hc": mh, "div": own["div"],
            "k_term": mh - cb + fr + 3, "u": own["u"], "gamma_inv": gi, "dx_product": own["u"] + gi,
            "xhat_product": b.norm_product_bits,
        }
        w.update(own)
        return w
