"""Integer backward of training-mode L1-BN and L2-BN (docs/arith/bn_backward.md): the spec.

Per channel (row), with d_i = (x_i << frac) - mu, xhat_i = d_i * inv / 2**recip_bits and
sgn_i = +1 if d_i >= 0 else -1 (1 bit: the sign bit of d_i):

    L1: dx_i = (gamma / sigma) * [dy_i - mean(dy) - c * mean(dy * xhat) * (sgn_i - mean(sgn))]
    L2: dx_i = (gamma / sigma) * [dy_i - mean(dy) - xhat_i * mean(dy * xhat)]
    dgamma = sum(dy * xhat),  dbeta = sum(dy)

Everything is torch int64 and vectorized over channels and elements. Rounding is round half up
(``rshift_round``); divisions by n are ``div_const(., n, div_bits)``; only dx is saturated. The
per-element work of L1 after the statistics pass is a sign select and an add; L2 needs a
multiply to rebuild xhat_i and a multiply by mean(dy*xhat).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from l1bn.spec.config import BNBackwardConfig
from l1bn.spec.intmath import C_SQRT_PI_2 as _C
from l1bn.spec.intmath import c_const
from l1bn.spec.reference.core import div_const, int_range, rshift_round, saturate

__all__ = ["BNBackwardResult", "bn_backward", "bn_backward_from_forward", "c_const", "check_inputs",
           "float_l1bn_dx", "dx_error_bound"]





@dataclass(frozen=True)
class BNBackwardResult:
    """All int64. ``dx`` (channels, n): grad_out_frac fractional bits, saturated to grad_out_width.
    ``dgamma`` (channels,): inner_frac fractional bits; ``dbeta`` (channels,): exact sum of dy.
    The per-channel intermediates are kept for tests and docs."""

    dx: torch.Tensor
    dgamma: torch.Tensor
    dbeta: torch.Tensor
    sum_dyx: torch.Tensor
    sdyd: torch.Tensor
    h: torch.Tensor
    mean_dy: torch.Tensor
    u: torch.Tensor
    sign: torch.Tensor


def check_inputs(x, dy, gamma, mu, inv, cfg: BNBackwardConfig):
    """Raise ValueError on a wrong shape, dtype or an operand outside its width."""
    b = cfg.bn
    for name, t in (("x", x), ("dy", dy), ("gamma", gamma), ("mu", mu), ("inv", inv)):
        if not isinstance(t, torch.Tensor) or t.dtype != torch.int64:
            raise ValueError(f"{name} must be a torch.int64 tensor")
    if x.shape != (b.channels, b.n) or dy.shape != x.shape:
        raise ValueError(f"x and dy must have shape (channels={b.channels}, n={b.n}); "
                         f"got {tuple(x.shape)} and {tuple(dy.shape)}")
    for name, t in (("gamma", gamma), ("mu", mu), ("inv", inv)):
        if t.shape != (b.channels,):
            raise ValueError(f"{name} must have shape ({b.channels},); got {tuple(t.shape)}")
    ranges = (("x", x, int_range(b.width)), ("dy", dy, int_range(cfg.grad_width)),
              ("gamma", gamma, int_range(b.gamma_width)),
              ("mu", mu, (int_range(b.width)[0] << b.frac, int_range(b.width)[1] << b.frac)),
              ("inv", inv, (0, 1 << b.recip_bits)))
    for name, t, (lo, hi) in ranges:
        if t.numel() and (int(t.min()) < lo or int(t.max()) > hi):
            raise ValueError(f"{name} has values in {int(t.min())}..{int(t.max())}; allowed {lo}..{hi}")


def bn_backward(x: torch.Tensor, dy: torch.Tensor, gamma: torch.Tensor, mu: torch.Tensor,
                inv: torch.Tensor, cfg: BNBackwardConfig) -> BNBackwardResult:
    """The integer backward. ``x`` (channels, n) is the forward input re-read, ``dy`` the upstream
    gradient, ``gamma`` the forward's gamma, ``mu`` and ``inv`` the forward's statistics
    (mean with ``frac`` fractional bits; ``floor(2**recip_bits / sigma)``)."""
    check_inputs(x, dy, gamma, mu, inv, cfg)
    b = cfg.bn
    n, fr, r, k = b.n, cfg.inner_frac, b.recip_bits, cfg.div_bits
    mu_c, inv_c, gam_c = mu[:, None], inv[:, None], gamma[:, None]

    # pass 1: three accumulators (sum dy, sum dy*x, count of d < 0)
    sum_dy = dy.sum(1)
    sum_dyx = (dy * x).sum(1)
    d = (x << b.frac) - mu_c
    neg = d < 0
    # sum dy*d = (sum dy*x << frac) - mu * sum dy: exact, no per-element d multiply
    sdyd = (sum_dyx << b.frac) - mu * sum_dy
    t = cfg.h_preshift                                        # 0 unless the product is too wide
    h = rshift_round(rshift_round(sdyd, t) * inv, r - fr - t)  # sum dy*xhat, fr frac bits
    hmax = 1 << (cfg.widths["h"] - 1)
    if bool((h.abs() >= hmax).any()):
        raise ValueError("inconsistent forward statistics: |sum dy*xhat| exceeds its bound "
                         f"2**{cfg.widths['h'] - 1} (inv too large for the data?)")
    mean_dy = div_const(sum_dy << fr, n, k)                   # fr frac bits

    if b.norm == "l1":
        cc = c_const(b.c_bits)
        mh = div_const(h * cc, n, k)                          # c*mean(dy*xhat), fr+c_bits frac
        nneg = neg.sum(1)
        msgn = div_const((n - 2 * nneg) << fr, n, k)          # mean(sgn), fr frac bits
        kp = rshift_round(mh * ((1 << fr) - msgn), b.c_bits + fr)
        kn = rshift_round(mh * (-(1 << fr) - msgn), b.c_bits + fr)
        # pass 2, per element: a sign select between two per-channel constants and one subtract
        sub = torch.where(neg, (mean_dy + kn)[:, None], (mean_dy + kp)[:, None])
        u = (dy << fr) - sub
    else:
        m = div_const(h, n, k)                                # mean(dy*xhat), fr frac bits
        xhat = rshift_round(d * inv_c, r - b.xhat_frac)       # xhat_frac frac bits
        u = (dy << fr) - mean_dy[:, None] - rshift_round(xhat * m[:, None], b.xhat_frac)

    gi = gam_c * inv_c                                        # gamma/sigma, per channel
    shift = fr + b.gamma_frac + r - b.frac - cfg.grad_out_frac
    dx = saturate(rshift_round(u * gi, shift), cfg.grad_out_width)
    return BNBackwardResult(dx=dx, dgamma=h, dbeta=sum_dy, sum_dyx=sum_dyx, sdyd=sdyd, h=h,
                            mean_dy=mean_dy, u=u, sign=neg.to(torch.int64))


def bn_backward_from_forward(x, dy, gamma, fwd, cfg: BNBackwardConfig) -> BNBackwardResult:
    """:func:`bn_backward` with the statistics of a forward result (any object with ``mu``, ``inv``)."""
    return bn_backward(x, dy, gamma, fwd.mu, fwd.inv, cfg)


def float_l1bn_dx(x: torch.Tensor, dy: torch.Tensor, gamma: torch.Tensor, cfg: BNBackwardConfig):
    """Float64 autograd of the plain-op L1-BN forward on the dequantized values.

    x in its integer LSBs, gamma real (``gamma / 2**gamma_frac``), eps real (``eps / 2**frac``),
    subgradient of |d| at d = 0 taken as +1 (the convention of the 1-bit sign). Returns
    ``(dx, sigma, xhat)`` as float64 tensors (dx w.r.t. x in dy's units).
    """
    b = cfg.bn
    xf = x.to(torch.float64).clone().requires_grad_(True)
    g = gamma.to(torch.float64)[:, None] / (1 << b.gamma_frac)
    d = xf - xf.mean(1, keepdim=True)
    sgn = torch.where(d >= 0, 1.0, -1.0).to(torch.float64).detach()
    sigma = _C * (d * sgn).mean(1, keepdim=True) + b.eps / (1 << b.frac)
    xhat = d / sigma
    (g * xhat * dy.to(torch.float64)).sum().backward()
    return xf.grad, sigma.detach()[:, 0], xhat.detach()


def dx_error_bound(x, dy, gamma, mu, inv, cfg: BNBackwardConfig) -> torch.Tensor:
    """Per-element bound on ``|dx / 2**grad_out_frac - float_l1bn_dx|`` (L1, before saturation).

    The terms (docs/arith/bn_backward.md, "Agreement with float"): the final rounding; the error of
    the forward's reciprocal ``inv`` against the float 1/sigma times |u|; and 1/sigma times the error
    of the bracket u, made of the mean(dy) rounding, the error of c*mean(dy*xhat) (xhat from the
    integer mu/inv against float xhat, the roundings of H, c, the division) times 2, and the sign
    flips (elements whose integer and float signs of d differ).
    """
    b = cfg.bn
    if b.norm != "l1":
        raise ValueError("dx_error_bound covers norm='l1' only")
    res = bn_backward(x, dy, gamma, mu, inv, cfg)
    dxf, sigma, xhat_f = float_l1bn_dx(x, dy, gamma, cfg)
    n, fr, k = b.n, cfg.inner_frac, cfg.div_bits
    f64 = torch.float64
    gr = gamma.to(f64).abs()[:, None] / (1 << b.gamma_frac)
    inv_eff = inv.to(f64)[:, None] * 2.0 ** (b.frac - b.recip_bits)
    dyf = dy.to(f64)
    ulp = 2.0 ** -fr
    # xhat of the integer statistics vs float xhat
    d_int = ((x << b.frac) - mu[:, None]).to(f64) * 2.0 ** -b.frac
    xh_err = (d_int * inv_eff - xhat_f).abs()
    t = cfg.h_preshift
    h_err = (dyf.abs() * xh_err).sum(1) + ulp + (2.0 ** (t - 1) if t else 0) * inv.to(f64) * 2.0 ** -b.recip_bits  # |H - sum dy*xhat_f|
    div_rel = 2.0 ** -(k + 1)                                  # |recip/2**k - 1/n| <= 2**-(k+1)
    hr = res.h.to(f64) * ulp
    c_err = 2.0 ** -(b.c_bits + 1)
    m_err = (_C * h_err + hr.abs() * c_err) / n + _C * hr.abs() * div_rel + 2 * ulp
    mean_err = ulp + (res.dbeta.to(f64).abs() + 1) * div_rel
    d_true = x.to(f64) - x.to(f64).mean(1, keepdim=True)
    flip = (d_true >= 0) != (res.sign == 0)
    nflip = flip.sum(1).to(f64)
    m_abs = (_C * hr.abs() / n + m_err)[:, None]
    k_err = 2 * m_err[:, None] + m_abs * (2 * flip.to(f64) + 2 * nflip[:, None] / n + 2 * ulp) + ulp
    u_err = mean_err[:, None] + k_err
    u_abs = res.u.to(f64).abs() * ulp
    sig = sigma[:, None]
    return (2.0 ** -(cfg.grad_out_frac + 1) + gr * (inv_eff - 1 / sig).abs() * u_abs
            + gr * (inv_eff * u_err + (inv_eff - 1 / sig).abs() * u_err))
