"""What a report measures: the norms (every one of the registry, :mod:`l1bn.spec.norms`, each
compared with the baseline L2), the BN configurations at each width, and their stimuli from real
data of the trained digits CNN (:mod:`l1bn.sw.capture`). Shared by the FPGA and ASIC reports and
by ``l1bn sweep``."""

from __future__ import annotations

from l1bn.spec.norms import BASELINE, backward_norms, norm_names

__all__ = ["NORMS", "BASELINE", "BACKWARD_NORMS", "STAGES", "STAGE_TITLES", "norms_for", "ratio_key", "compared",
           "ratio_label", "forward_config", "backward_config", "forward_beats", "backward_beats"]

#: every registered norm, in report order (l1bn.spec.norms); the ratios are to the registry's
#: BASELINE
NORMS = norm_names()

#: the norms with a backward unit (registry ``hw_backward`` not empty)
BACKWARD_NORMS = backward_norms()

STAGES = ("stats", "disp", "recip", "normalize")

STAGE_TITLES = {"stats": "statistics", "disp": "dispersion", "recip": "reciprocal/sqrt",
                "normalize": "normalize", "top": "buffers + control"}


def norms_for(kind: str) -> tuple[str, ...]:
    """The norms that have a unit of ``kind`` ("forward" or "backward")."""
    return NORMS if kind == "forward" else BACKWARD_NORMS


def ratio_key(norm: str) -> str:
    """The report key of ``norm``'s ratios to the baseline: ``"l1_over_l2"``, ``"range_over_l2"``."""
    return f"{norm}_over_{BASELINE}"


def compared(norms) -> tuple[str, ...]:
    """The norms of ``norms`` that get a ratio row (all but the baseline)."""
    return tuple(nm for nm in norms if nm != BASELINE)


def ratio_label(norm: str) -> str:
    """The bold label of a ratio row in report.md: ``**L1/L2**``, ``**RANGE/L2**``."""
    return f"**{norm.upper()}/{BASELINE.upper()}**"


def forward_config(norm: str, width: int, *, n: int, lanes: int, channels: int):
    """The forward ``BNConfig`` measured at ``width``: out_width = width (at least 4), the
    defaults of ``BNConfig`` (frac = 4, xhat_frac = 8, 8-bit gamma and beta), and
    recip_bits = width + 12, so that inv = 2**recip_bits / sigma keeps the same relative precision
    at every width (20 at width 8, the default; 28 at width 16)."""
    from l1bn.spec.config import BNConfig

    return BNConfig(norm=norm, width=width, out_width=max(width, 4), n=n, lanes=lanes, channels=channels,
                    recip_bits=width + 12)


def backward_config(norm: str, width: int, *, n: int, channels: int):
    """The backward config at ``width`` (lanes = 1; 8-bit gradients, as the tests)."""
    from l1bn.spec.config import BNBackwardConfig

    b = forward_config(norm, width, n=n, lanes=1, channels=channels)
    if width > 12:
        return BNBackwardConfig(bn=b, grad_width=8, inner_frac=6, grad_out_width=24, grad_out_frac=18)
    return BNBackwardConfig(bn=b, grad_width=8, inner_frac=6, grad_out_width=20, grad_out_frac=10)


def _gamma_beta(cfg):
    import torch

    # gamma = 1.0 and 0.75 alternately, beta small: the trained network's scale of values
    g = [(1 << cfg.gamma_frac) if c % 2 == 0 else (3 << cfg.gamma_frac) // 4 for c in range(cfg.channels)]
    b = [(-1) ** c * min(3, (1 << (cfg.beta_width - 1)) - 1) for c in range(cfg.channels)]
    return torch.tensor(g, dtype=torch.int64), torch.tensor(b, dtype=torch.int64)


def forward_beats(cfg, seed: int = 0):
    """Input beats of one batch of real activations (:func:`l1bn.sw.capture.bn_inputs`)."""
    import numpy as np
    from l1bn.spec.words import pack
    from l1bn.sw.capture import bn_inputs

    x = bn_inputs(width=cfg.width, n=cfg.n, channels=cfg.channels, seed=seed)
    gamma, beta = _gamma_beta(cfg)
    # one beat = lanes consecutive elements of a channel (the unit's ArrayLayout(signed(width), lanes))
    payloads = pack(np.asarray(x).reshape(cfg.channels * cfg.beats, cfg.lanes), cfg.width)
    beats = [{"i__payload": payloads[c * cfg.beats + j], "gamma": int(gamma[c]), "beta": int(beta[c])}
             for c in range(cfg.channels) for j in range(cfg.beats)]
    return beats, cfg.channels * cfg.beats


def backward_beats(cfg, seed: int = 0):
    """Beats (pass 1 then pass 2 per channel) of real (x, dy) from one training step; mu and inv
    from the integer forward reference."""
    import numpy as np
    from l1bn.spec.reference.bn import bn_forward
    from l1bn.spec.words import pack
    from l1bn.sw.capture import bn_grads

    b = cfg.bn
    x, _ = bn_grads(width=b.width, n=b.n, channels=b.channels, seed=seed)
    _, dy = bn_grads(width=cfg.grad_width, n=b.n, channels=b.channels, seed=seed)
    gamma, beta = _gamma_beta(b)
    f = bn_forward(x, gamma, beta, b)
    # one beat = StructLayout({"x": signed(width), "dy": signed(grad_width)}) (x in the low bits)
    payloads = pack(np.stack([np.asarray(x).reshape(-1), np.asarray(dy).reshape(-1)], axis=1),
                    [b.width, cfg.grad_width])
    beats = [{"i__payload": payloads[c * b.n + j], "mu": int(f.mu[c]), "inv": int(f.inv[c]),
              "gamma": int(gamma[c])}
             for c in range(b.channels) for _pass in range(2) for j in range(b.n)]
    return beats, b.channels * b.n
