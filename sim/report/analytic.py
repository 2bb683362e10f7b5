"""The analytic cross-check of the reports' energy: the datapath's operations per element, priced
with Horowitz's 45 nm energies (ISSCC 2014): add 0.03 pJ (8 bit) / 0.1 pJ (32 bit), linear in
between and beyond; multiply 0.2 pJ (8x8) / 3.1 pJ (32x32), scaled as (a*b/64)**0.989 (the power
through both points); an abs, compare or mux is priced as an add of its width.
"""

from __future__ import annotations

import math

from l1bn.spec.norms import norm_spec

__all__ = ["horowitz_add", "horowitz_mul", "analytic_energy"]


def horowitz_add(bits: int) -> float:
    """pJ of a ``bits``-bit integer add: 0.03 pJ at 8 bits, 0.1 pJ at 32, linear."""
    return max(0.005, 0.03 + (bits - 8) * (0.1 - 0.03) / 24)


def horowitz_mul(a: int, b: int) -> float:
    """pJ of an ``a`` x ``b``-bit integer multiply: 0.2 pJ at 8x8, 3.1 pJ at 32x32,
    proportional to (a*b)**0.989 (the power law through both points)."""
    p = math.log(3.1 / 0.2) / math.log(16)
    return 0.2 * (a * b / 64) ** p


def _op_pj(kind: str, bits) -> float:
    """Horowitz pJ of one registry operation (``NormSpec.ops``, ``backward_ops``...): a compare
    is priced as an add; a multiply's ``bits`` is one width (a square) or ``(a, b)``."""
    if kind == "mul":
        a, b = bits if isinstance(bits, tuple) else (bits, bits)
        return horowitz_mul(a, b)
    if kind in ("add", "cmp"):
        return horowitz_add(bits)
    raise ValueError(f"op kind={kind!r} is unknown; allowed add, mul, cmp")


def _ops(spec_ops, cfg) -> list:
    """``[(name, pJ)]`` of registry operations ``(name, kind, bits[, times])`` at ``cfg``."""
    out = []
    for op in spec_ops:
        name, kind, bits = op[:3]
        times = op[3] if len(op) > 3 else 1
        times = times(cfg) if callable(times) else times
        pj = _op_pj(kind, bits(cfg))
        out.append((name, times * pj if times != 1 else pj))
    return out


def analytic_energy(kind: str, cfg) -> dict:
    """Operations per element of the datapath and their Horowitz energy (pJ per element).

    The norm-specific operations are the registry's (``l1bn.spec.norms``): ``ops`` for the forward
    unit, ``backward_ops`` and ``backward_channel_ops`` for the backward unit.
    Per-channel work (mean, reciprocal, square root, divider, the backward's per-channel steps)
    is divided by n. Returns ``{"pj": total, "ops": [(name, pJ per element), ...]}``.
    """
    ops = []
    if kind == "forward":
        b = cfg
        n = b.n
        ops.append(("sum x", horowitz_add(b.sum_bits)))
        ops.append(("d = x - mu", horowitz_add(b.dev_bits)))
        spec = norm_spec(b.norm)
        ops += _ops(spec.ops, b)
        ops.append(("d = x - mu (pass 2)", horowitz_add(b.dev_bits)))
        ops.append(("d*inv", horowitz_mul(b.dev_bits, b.inv_bits)))
        ops.append(("round xhat", horowitz_add(b.xhat_bits)))
        ops.append(("gamma*xhat", horowitz_mul(b.gamma_width, b.xhat_bits)))
        ops.append(("round, +beta, saturate", 3 * horowitz_add(b.out_width + b.affine_shift)))
        per_ch = horowitz_mul(b.sum_bits + b.frac, 24)                      # mean = sum / n
        if spec.disp_sum_bits(b) != spec.disp_bits(b):                       # s = D / n (range: s = D)
            per_ch += horowitz_mul(b.disp_sum_bits, 24)
        if spec.sigma_kind == "sqrt":       # the registry's sigma rule, as RecipStage builds it
            per_ch += ((b.disp_bits + 1) // 2) * 2 * horowitz_add(b.disp_bits)   # restoring sqrt
        else:
            per_ch += horowitz_mul(b.disp_bits, b.c_bits) + horowitz_add(b.sigma_bits)   # s * C, + eps
        per_ch += (b.recip_bits + 1) * 2 * horowitz_add(b.sigma_bits + 1)          # restoring divider
        ops.append(("per channel (/n): mean, s, sigma, inv", per_ch / n))
    else:
        b = cfg.bn
        n, g = b.n, cfg.grad_width
        w = cfg.widths
        ops.append(("sum dy", horowitz_add(w["sum_dy"])))
        ops.append(("dy*x", horowitz_mul(g, b.width)))
        ops.append(("sum dy*x", horowitz_add(w["sum_dyx"])))
        ops.append(("d = x - mu (sign)", 2 * horowitz_add(b.dev_bits)))   # pass 1 and pass 2
        ops.append(("count d<0", horowitz_add(b.count_bits)))
        spec = norm_spec(b.norm)
        ops += _ops(spec.backward_ops, cfg)        # the norm's own pass-2 work (the registry's)
        ops.append(("u = dy - ...", horowitz_add(w["u"])))
        ops.append(("u*gamma*inv", horowitz_mul(w["u"], w["gamma_inv"])))
        ops.append(("round, saturate", 2 * horowitz_add(cfg.grad_out_width)))
        per_ch = (horowitz_mul(w["sum_dy"], b.dev_bits) + horowitz_mul(w["h"], b.inv_bits)
                  + 3 * horowitz_mul(w["h"], cfg.div_bits) + horowitz_mul(b.gamma_width, b.inv_bits))
        for _, pj in _ops(spec.backward_channel_ops, cfg):      # the norm's own constants
            per_ch += pj
        ops.append(("per channel (/n)", per_ch / n))
    return {"pj": sum(e for _, e in ops), "ops": [(k, round(v, 5)) for k, v in ops]}
