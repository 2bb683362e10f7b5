"""Float64 model of the L1-BN backward, and the bound on the integer backward's error against it.

The integer backward is the spec (:mod:`l1bn.spec.reference.bn_backward`); this module is the float
side of its agreement test (docs/arith/bn_backward.md, "Agreement with float"). It needs torch
autograd, so it lives in ``sw/``, not in ``spec/``.
"""

from __future__ import annotations

import torch
from l1bn.spec.config import BNBackwardConfig
from l1bn.spec.intmath import C_SQRT_PI_2 as _C
from l1bn.spec.norms import L1
from l1bn.spec.reference.bn_backward import bn_backward

__all__ = ["float_l1bn_dx", "dx_error_bound"]


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
    if b.norm != L1.name:            # this module is L1's float model (the registry entry L1)
        raise ValueError(f"dx_error_bound covers norm={L1.name!r} only")
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
