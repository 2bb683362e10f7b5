"""Integer-only training of a chain network: one SGD step, an epoch, evaluation (the spec).

Implements docs/arith/training.md with numpy int64 (float64 BLAS for products whose declared width
proves them exact), vectorized over channels, images and pixels; the only Python loops are over
layers, kernel taps, LFSR rows and (in the BN reference) channels. Every intermediate is checked
against ``IntTrainConfig.widths`` as it is computed (:class:`~l1bn.spec.reference.widths.WidthError`
names the first one that does not fit).

* :func:`init_state` -> a seeded :class:`TrainState` (master weights, master gamma and beta,
  running statistics, the LFSR bank);
* :func:`train_step` -> the next state and a :class:`StepResult` (logits, the loss for display,
  and with ``trace=True`` every forward and backward tensor with its exponent);
* :func:`train_epoch` -> one pass over a data set in the specified shuffled order;
* :func:`fold_network` / :func:`evaluate` -> the inference network (running statistics folded into
  ``infer_bn.FoldedBN``) and its integer logits, which the export reproduces bit for bit.

Exponents: a gradient tensor ``g`` with exponent ``e`` stands for ``g * 2**-e`` = dL/d(real value)
of the summed cross-entropy ``L`` (``trace`` reports them; the update itself is scale-free).
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from dataclasses import dataclass, field, replace

import numpy as np

from ..training import IntTrainConfig
from .bn import bn_forward
from .bn_backward import backward_pass1, backward_rule
from .core import int_range, rshift_round_array
from .grad_quant import forward_weight, quantize_error, quantize_update
from .infer_bn import FoldedBN, apply_folded, fold_affine
from .lfsr import lfsr_draw, lfsr_seed
from .mac_layers import exact_matmul, input_grad, layer_cols
from .softmax_ce import softmax_ce_grad
from .widths import WidthChecker, WidthError

__all__ = ["TrainState", "StepResult", "EpochResult", "FoldedLayer", "init_state", "train_step",
           "train_epoch", "epoch_order", "fold_network", "evaluate", "forward_train",
           "quantize_images", "WidthError", "MULT_BITS"]

#: Multiplier width of the folded inference BN (``infer_bn.fold_affine``'s default).
MULT_BITS = 16

# LFSR bank salts: 0 = stochastic rounding, 1 = weight initialization, 2 + epoch = shuffling
_SALT_ROUND, _SALT_INIT, _SALT_SHUFFLE = 0, 1, 2


@dataclass(frozen=True)
class TrainState:
    """Everything a step reads and writes (numpy int64 unless noted; never modified in place).

    ``master`` (per layer, weight shape, ``master_frac`` fractional bits), ``gamma``/``beta``
    (per BN layer (C,), master formats ``gamma_master_frac``/``beta_master_frac``), ``run_mu`` /
    ``run_sigma`` (per BN layer (C,), at the fixed exponent of :func:`running_exp`), ``lfsr``
    (uint32 (lfsr_lanes,), the rounding bank), ``step`` (steps taken), ``seed``.
    """

    master: tuple
    gamma: tuple
    beta: tuple
    run_mu: tuple
    run_sigma: tuple
    lfsr: np.ndarray
    step: int
    seed: int

    def equal(self, other: TrainState) -> bool:
        """Bit-for-bit equality of every field."""
        def same(a, b):
            return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
        return (same(self.master, other.master) and same(self.gamma, other.gamma)
                and same(self.beta, other.beta) and same(self.run_mu, other.run_mu)
                and same(self.run_sigma, other.run_sigma) and np.array_equal(self.lfsr, other.lfsr)
                and self.step == other.step and self.seed == other.seed)


@dataclass(frozen=True)
class StepResult:
    """``logits`` (N, classes) int64 worth ``logits * 2**-logit_exp``; ``loss``: the mean
    cross-entropy of those logits in float64 (display only, not part of the arithmetic);
    ``correct``: right predictions; ``master_saturated``: master values clipped by the update;
    ``trace``: per-layer dicts of every tensor (with ``trace=True``), else None."""

    logits: np.ndarray
    logit_exp: int
    loss: float
    correct: int
    master_saturated: int
    trace: dict | None = field(default=None, repr=False)


@dataclass(frozen=True)
class EpochResult:
    loss: float
    train_accuracy: float
    steps: int
    time_s: float
    master_saturated: int


def quantize_images(x01: np.ndarray, cfg: IntTrainConfig) -> np.ndarray:
    """Images in [0, 1] (float) -> unsigned ``abits`` integers, ``clamp(floor(x * 2**abits + 1/2))``
    (the QAT input quantizer). Pixels that are already integers are returned checked."""
    lo, hi = int_range(cfg.abits, signed=False)
    return np.clip(np.floor(np.asarray(x01, dtype=np.float64) * 2.0 ** cfg.in_exp + 0.5), lo, hi).astype(np.int64)


def running_exp(cfg: IntTrainConfig, i: int) -> int:
    """Fixed exponent of layer ``i``'s running mean and sigma: ``master_frac + a_exp + frac +
    wbits - 1`` (the batch statistics are shifted left by ``s_w + wbits - 1 >= 0``)."""
    return cfg.master_frac + cfg.layer_in_bits(i)[1] + cfg.frac + cfg.wbits - 1


@functools.cache
def _blas_controller():
    try:
        from threadpoolctl import ThreadpoolController  # ships with scikit-learn
    except ImportError:                                 # pragma: no cover
        return None
    return ThreadpoolController()


def _one_blas_thread():
    """BLAS on one thread: the products here are small (at most a few million multiply-adds), and
    OpenBLAS's worker threads cost more than they save, ten times more on a busy machine."""
    c = _blas_controller()
    return c.limit(limits=1, user_api="blas") if c is not None else contextlib.nullcontext()


def _single_blas(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _one_blas_thread():
            return fn(*args, **kwargs)
    return wrapper


@functools.cache
def _checker(cfg: IntTrainConfig) -> WidthChecker:
    return WidthChecker(cfg.widths)


@functools.cache
def _bn_cfgs(cfg: IntTrainConfig, name: str, batch: int):
    return cfg.bn_config(name, batch), cfg.bn_backward_config(name, batch)


def init_state(cfg: IntTrainConfig, seed: int) -> TrainState:
    """Seeded initial state: weights uniform integers in ``[-B, B]``, ``B = isqrt(2**(2*master_frac)
    // fan_in)`` (PyTorch's default bound ``1/sqrt(fan_in)``) drawn as ``word mod (2B+1) - B`` from
    the LFSR bank with salt 1 (layer after layer, weights in C order); gamma 1, beta 0; running
    statistics 0 (the first step copies its batch statistics); the rounding bank with salt 0."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative integer")
    bank = lfsr_seed(seed, cfg.lfsr_lanes, _SALT_INIT)
    master = []
    for g in cfg.geometry:
        shape = ((g.layer.out, g.in_shape[0], g.layer.kernel, g.layer.kernel) if g.layer.kind == "conv2d"
                 else (g.layer.out, g.k))
        bound = math.isqrt((1 << (2 * cfg.master_frac)) // g.k)
        words, bank = lfsr_draw(bank, int(np.prod(shape)))
        master.append((words.astype(np.int64) % (2 * bound + 1) - bound).reshape(shape))
    chans = [g.out_shape[0] for g in cfg.geometry[:-1]]
    return TrainState(master=tuple(master),
                      gamma=tuple(np.full(c, 1 << cfg.gamma_master_frac, dtype=np.int64) for c in chans),
                      beta=tuple(np.zeros(c, dtype=np.int64) for c in chans),
                      run_mu=tuple(np.zeros(c, dtype=np.int64) for c in chans),
                      run_sigma=tuple(np.zeros(c, dtype=np.int64) for c in chans),
                      lfsr=lfsr_seed(seed, cfg.lfsr_lanes, _SALT_ROUND), step=0, seed=seed)


def _forward_params(state: TrainState, cfg: IntTrainConfig):
    """Per layer ``(w, s_w)`` and per BN layer forward ``gamma``, ``beta`` from the master values."""
    ws = [forward_weight(m, cfg.wbits) for m in state.master]
    gam = [np.clip(rshift_round_array(g, cfg.master_bits - cfg.gamma_width), *int_range(cfg.gamma_width))
           for g in state.gamma]
    bet = [np.clip(rshift_round_array(b, cfg.master_bits - cfg.beta_width), *int_range(cfg.beta_width))
           for b in state.beta]
    return ws, gam, bet


def _check_state(state: TrainState, cfg: IntTrainConfig, chk) -> None:
    if len(state.master) != len(cfg.geometry) or len(state.gamma) != len(cfg.geometry) - 1:
        raise ValueError("the state does not match the config's layers")
    for g, m in zip(cfg.geometry, state.master, strict=True):
        chk(f"{g.name}.master", m)
    for g, ga, be in zip(cfg.geometry, state.gamma, state.beta, strict=False):
        chk(f"{g.name}.gamma_master", ga)
        chk(f"{g.name}.beta_master", be)


def _check_batch(x: np.ndarray, labels: np.ndarray | None, cfg: IntTrainConfig) -> None:
    x = np.asarray(x)
    if x.dtype.kind not in "iu" or x.ndim != 4 or tuple(x.shape[1:]) != cfg.in_shape:
        raise ValueError(f"images must be integers of shape (N, {', '.join(map(str, cfg.in_shape))}); "
                         f"got {x.dtype} {tuple(x.shape)}")
    lo, hi = int_range(cfg.abits, signed=False)
    if x.size and (int(x.min()) < lo or int(x.max()) > hi):
        raise ValueError(f"images must be unsigned {cfg.abits}-bit integers ({lo}..{hi}); "
                         f"got {int(x.min())}..{int(x.max())}")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (x.shape[0],) or labels.dtype.kind not in "iu" or \
                (labels.size and (int(labels.min()) < 0 or int(labels.max()) >= cfg.classes)):
            raise ValueError(f"labels must be N={x.shape[0]} integers in 0..{cfg.classes - 1}")


def forward_train(state: TrainState, x: np.ndarray, cfg: IntTrainConfig, *, check=None):
    """The training-mode forward (batch statistics) of integer images ``x`` (N, C, H, W).

    Returns ``(logits (N, classes), logit_exp, layers)`` with ``layers`` a list of per-layer dicts
    (``cols``, ``w``, ``s_w``, ``w_exp``, ``a_exp``, ``acc``, and for BN layers ``bn`` (the
    forward result), ``y``, ``act``, ``mask``, ``gamma``).
    """
    chk = check or _checker(cfg).check
    n = x.shape[0]
    if n > cfg.batch:
        raise ValueError(f"a batch of {n} images exceeds the config's batch={cfg.batch}")
    ws, gam, bet = _forward_params(state, cfg)
    a = np.ascontiguousarray(np.asarray(x, dtype=np.int64).transpose(1, 0, 2, 3))   # (C, N, H, W)
    out, last = [], len(cfg.geometry) - 1
    for i, g in enumerate(cfg.geometry):
        la, p = g.layer, g.name
        w, s_w = ws[i]
        chk(f"{p}.weight", w)
        cols, (nn_, ho, wo) = layer_cols(la.kind, a, la.kernel, la.stride, la.padding)
        acc = chk(f"{p}.acc", exact_matmul(w.reshape(w.shape[0], -1), cols, cfg.widths[f"{p}.acc"]))
        a_exp = cfg.layer_in_bits(i)[1]
        rec = {"cols": cols, "w": w, "s_w": s_w, "w_exp": cfg.master_frac - s_w, "a_exp": a_exp,
               "acc": acc, "in_shape": a.shape}
        if i == last:
            out.append(rec)
            return acc.T, rec["w_exp"] + a_exp, out
        bcfg, _ = _bn_cfgs(cfg, p, n)
        res = bn_forward(acc, gam[i], bet[i], bcfg)      # its own widths: BNConfig.widths <= 62
        y = chk(f"{p}.y", res.y)
        hi = (1 << cfg.abits) - 1
        act = chk(f"{p}.act", np.clip(rshift_round_array(y, cfg.bn_extra_frac), 0, hi))
        # straight-through gradient where relu(y) reaches the activation grid unclipped:
        # 0 < y * 2**-extra < hi + 1/2
        mask = (y > 0) & (2 * y < ((2 * hi + 1) << cfg.bn_extra_frac))
        rec.update(bn=res, y=y, act=act, mask=mask, gamma=gam[i], beta=bet[i])
        out.append(rec)
        a = act.reshape(g.out_shape[0], nn_, ho, wo)
    raise AssertionError("unreachable")


@_single_blas
def train_step(state: TrainState, x: np.ndarray, labels: np.ndarray, cfg: IntTrainConfig, *,
               lr_shift: int | None = None, bn_lr_shift: int | None = None,
               trace: bool = False) -> tuple[TrainState, StepResult]:
    """One SGD step on the batch ``x`` (N, C, H, W) unsigned ``abits`` integers, ``labels`` (N,).

    Forward with batch statistics, softmax cross-entropy gradient, backward through every layer,
    then all parameters updated from gradients of the pre-step parameters (docs/arith/training.md).
    ``lr_shift``/``bn_lr_shift`` default to the config's. Returns the new state (the old one is
    unchanged) and the step's :class:`StepResult`.
    """
    if not isinstance(cfg, IntTrainConfig):
        raise ValueError(f"cfg={cfg!r} must be an IntTrainConfig")
    _check_batch(x, labels, cfg)
    n = x.shape[0]
    if n < 2:
        raise ValueError("a training batch needs at least 2 images (batch statistics)")
    chk = _checker(cfg).check
    _check_state(state, cfg, chk)
    lr = cfg.lr_shift if lr_shift is None else lr_shift
    blr = cfg.bn_lr_shift if bn_lr_shift is None else bn_lr_shift
    for name, v in (("lr_shift", lr), ("bn_lr_shift", blr)):
        if isinstance(v, bool) or not isinstance(v, int) or v < getattr(cfg, name) or v > 40:
            raise ValueError(f"{name}={v!r} must be an integer in {getattr(cfg, name)}..40 "
                             "(the config's rate or a smaller one)")
    labels = np.asarray(labels, dtype=np.int64)
    logits, z_exp, layers = forward_train(state, x, cfg, check=chk)

    # running statistics at a fixed exponent (the weight shift moves the accumulator scale)
    run_mu, run_sigma = list(state.run_mu), list(state.run_sigma)
    for i, rec in enumerate(layers[:-1]):
        p, sh = cfg.geometry[i].name, rec["s_w"] + cfg.wbits - 1
        mu = chk(f"{p}.running_mu", rec["bn"].mu << sh)
        sg = chk(f"{p}.running_sigma", rec["bn"].sigma << sh)
        if state.step == 0:
            run_mu[i], run_sigma[i] = mu, sg
        else:
            run_mu[i] = run_mu[i] + rshift_round_array(chk(f"{p}.running_delta", mu - run_mu[i]), cfg.momentum_shift)
            run_sigma[i] = run_sigma[i] + rshift_round_array(chk(f"{p}.running_delta", sg - run_sigma[i]),
                                                        cfg.momentum_shift)

    # loss gradient
    g, _ = softmax_ce_grad(logits, labels, z_exp, exp_frac=cfg.exp_frac, prob_bits=cfg.prob_bits,
                           log2e_bits=cfg.log2e_bits, check=chk)
    dz, s = quantize_error(g, cfg.gbits)
    dacc, e_dacc = dz.T, cfg.prob_bits - s          # (classes, N), exponent of dL/dz_real
    grads = [None] * len(layers)
    dA_next, e_dA_next = None, 0        # the activation gradient from the layer above
    tr = {"loss": {"g": g, "e_g": cfg.prob_bits, "dz": dz, "e_dz": e_dacc}} if trace else None

    for i in range(len(layers) - 1, -1, -1):
        rec, ge = layers[i], cfg.geometry[i]
        p, la = ge.name, ge.layer
        if i < len(layers) - 1:
            # BN backward: dy is the activation gradient through the straight-through mask
            dA = dA_next.reshape(ge.out_shape[0], -1) * rec["mask"]
            dy, s = quantize_error(dA, cfg.gbits)
            e_dy = e_dA_next - s
            chk(f"{p}.dy", dy)
            _, bwd = _bn_cfgs(cfg, p, n)
            pass1 = backward_pass1(rec["acc"], dy, rec["gamma"], rec["bn"].mu, rec["bn"].inv, bwd)
            chk(f"{p}.bn_backward.h", pass1.h)
            u = chk(f"{p}.bn_backward.u", backward_rule(cfg.norm)(pass1, bwd))
            dxw = chk(f"{p}.bn_backward.dx_product", u * (rec["gamma"] * pass1.inv)[:, None])
            dacc, s = quantize_error(dxw, cfg.gbits)
            chk(f"{p}.dacc", dacc)
            e_dxw = cfg.inner_frac + e_dy + cfg.gamma_frac + cfg.recip_bits - cfg.frac - (rec["w_exp"] + rec["a_exp"])
            e_dacc = e_dxw - s
            grads[i] = {"dgamma": pass1.h, "e_dgamma": cfg.inner_frac + e_dy,
                        "dbeta": pass1.sum_dy, "e_dbeta": e_dy}
            if trace:
                tr[p] = {"dA": dA, "e_dA": e_dA_next, "dy": dy, "e_dy": e_dy, "u": u, "dxw": dxw,
                         "e_dxw": e_dxw, "dacc": dacc, "e_dacc": e_dacc}
        else:
            grads[i] = {}
            if trace:
                tr[p] = {"dacc": dacc, "e_dacc": e_dacc}
        dW = chk(f"{p}.weight_grad", exact_matmul(dacc, rec["cols"].T, cfg.widths[f"{p}.weight_grad"]))
        grads[i].update(dW=dW.reshape(rec["w"].shape), e_dW=e_dacc + rec["a_exp"])
        if i > 0:
            w2 = rec["w"].reshape(rec["w"].shape[0], -1)
            dcols = exact_matmul(w2.T, dacc, cfg.widths[f"{p}.input_grad"])
            dA_next = chk(f"{p}.input_grad", input_grad(la.kind, dcols, rec["in_shape"], la.kernel,
                                                        la.stride, la.padding))
            e_dA_next = e_dacc + rec["w_exp"]
            if trace:
                tr[p].update(input_grad=dA_next, e_input_grad=e_dA_next)
        if trace:
            tr[p].update(grads[i])

    # updates: every parameter from its normalized gradient, in layer order (weights, gamma, beta)
    bank, sat_count = state.lfsr, 0
    master, gamma, beta = list(state.master), list(state.gamma), list(state.beta)
    mlo, mhi = int_range(cfg.master_bits)

    def update(param, grad, what, name, lrs):
        nonlocal bank, sat_count
        delta, _, bank = quantize_update(grad, cfg.gbits, cfg.update_shift(what, lrs),
                                         cfg.grad_rounding, bank)
        chk(name, delta)
        new = param - delta
        sat_count += int(((new < mlo) | (new > mhi)).sum())
        return np.clip(new, mlo, mhi)

    for i, ge in enumerate(cfg.geometry):
        p = ge.name
        master[i] = update(master[i], grads[i]["dW"], "weights", f"{p}.weight_update", lr)
        if i < len(layers) - 1:
            gamma[i] = update(gamma[i], grads[i]["dgamma"], "gamma", f"{p}.gamma_update", blr)
            beta[i] = update(beta[i], grads[i]["dbeta"], "beta", f"{p}.beta_update", blr)

    new_state = TrainState(master=tuple(master), gamma=tuple(gamma), beta=tuple(beta),
                           run_mu=tuple(run_mu), run_sigma=tuple(run_sigma), lfsr=bank,
                           step=state.step + 1, seed=state.seed)
    if trace:
        for i, rec in enumerate(layers):
            tr[cfg.geometry[i].name].update({k: v for k, v in rec.items() if k != "cols"})
        tr["logits"], tr["logit_exp"] = logits, z_exp
    return new_state, StepResult(logits=logits, logit_exp=z_exp, loss=_ce_loss(logits, labels, z_exp),
                                 correct=int((logits.argmax(1) == labels).sum()),
                                 master_saturated=sat_count, trace=tr)


def _ce_loss(logits: np.ndarray, labels: np.ndarray, z_exp: int) -> float:
    """Mean cross-entropy of the integer logits in float64 (for display; not part of the spec)."""
    z = logits.astype(np.float64) * 2.0 ** -z_exp
    z = z - z.max(1, keepdims=True)
    lse = np.log(np.exp(z).sum(1))
    return float((lse - z[np.arange(len(labels)), labels]).mean())


def epoch_order(seed: int, epoch: int, count: int) -> np.ndarray:
    """The image order of ``epoch``: the stable argsort of the ``count`` words of one row of
    ``lfsr_seed(seed, count, salt=2 + epoch)``."""
    words, _ = lfsr_draw(lfsr_seed(seed, count, _SALT_SHUFFLE + epoch), count)
    return np.argsort(words, kind="stable")


def train_epoch(state: TrainState, x: np.ndarray, labels: np.ndarray, cfg: IntTrainConfig, *,
                epoch: int, progress=None) -> tuple[TrainState, EpochResult]:
    """One epoch: the images in :func:`epoch_order`, consecutive batches of ``cfg.batch`` (a last
    batch of one image is skipped), the learning rates of ``cfg.lr_shifts(epoch)``.

    ``progress(step_in_epoch, steps, loss)`` is called after every step.
    """
    _check_batch(x, labels, cfg)
    x, labels = np.asarray(x, dtype=np.int64), np.asarray(labels, dtype=np.int64)
    order = epoch_order(state.seed, epoch, len(labels))
    lr, blr = cfg.lr_shifts(epoch)
    starts = [s for s in range(0, len(order), cfg.batch) if min(len(order), s + cfg.batch) - s >= 2]
    t0, tot, cnt, correct, sat = time.perf_counter(), 0.0, 0, 0, 0
    for k, s in enumerate(starts):
        idx = order[s:s + cfg.batch]
        state, r = train_step(state, x[idx], labels[idx], cfg, lr_shift=lr, bn_lr_shift=blr)
        tot += r.loss * len(idx)
        cnt += len(idx)
        correct += r.correct
        sat += r.master_saturated
        if progress is not None:
            progress(k + 1, len(starts), r.loss)
    return state, EpochResult(loss=tot / max(cnt, 1), train_accuracy=correct / max(cnt, 1),
                              steps=len(starts), time_s=time.perf_counter() - t0, master_saturated=sat)


@dataclass(frozen=True)
class FoldedLayer:
    """One layer of the inference network: forward ``weight`` (int64, wbits) worth
    ``weight * 2**-w_exp``, its input exponent ``a_exp``, and the folded BN (None for the output
    layer). ``acc_bits`` is the accumulator width."""

    name: str
    weight: np.ndarray
    w_exp: int
    a_exp: int
    acc_bits: int
    bn: FoldedBN | None


def fold_network(state: TrainState, cfg: IntTrainConfig) -> list[FoldedLayer]:
    """The inference network of ``state``: forward weights from the masters and, per BN layer,
    ``fold_affine(scale, offset)`` of ``scale = gamma / sigma_run``, ``offset = beta - scale *
    mu_run`` (float64 from the integers: ``gamma * 2**-gamma_frac``, ``beta * 2**-out_frac``,
    ``mu_run``/``sigma_run * 2**-running_exp``), ``MULT_BITS``-bit multipliers, ReLU, unsigned
    ``abits`` outputs with exponent ``a_exp`` (docs/arith/training.md, "Inference")."""
    if state.step == 0:
        raise ValueError("the state has no running statistics yet (no training step taken)")
    ws, gam, bet = _forward_params(state, cfg)
    out = []
    for i, ge in enumerate(cfg.geometry):
        w, s_w = ws[i]
        a_exp = cfg.layer_in_bits(i)[1]
        acc_bits = cfg.mac_config(ge.name).acc_bits
        bn = None
        if i < len(cfg.geometry) - 1:
            er = running_exp(cfg, i)
            sigma = state.run_sigma[i].astype(np.float64) * 2.0 ** -er
            if bool((sigma <= 0).any()):
                raise ValueError(f"{ge.name}: a running sigma is not positive")
            scale = gam[i].astype(np.float64) * 2.0 ** -cfg.gamma_frac / sigma
            offset = bet[i].astype(np.float64) * 2.0 ** -cfg.out_frac - scale * (
                state.run_mu[i].astype(np.float64) * 2.0 ** -er)
            bn = fold_affine(scale, offset, acc_exp=cfg.master_frac - s_w + a_exp, out_exp=cfg.a_exp,
                             acc_bits=acc_bits, out_bits=cfg.abits, relu=True, mult_bits=MULT_BITS)
        out.append(FoldedLayer(name=ge.name, weight=w, w_exp=cfg.master_frac - s_w, a_exp=a_exp,
                               acc_bits=acc_bits, bn=bn))
    return out


@_single_blas
def evaluate(state: TrainState, x: np.ndarray, cfg: IntTrainConfig, *,
             folded: list[FoldedLayer] | None = None) -> tuple[np.ndarray, int]:
    """Integer logits (N, classes) and their exponent of the inference network (:func:`fold_network`)
    on images ``x`` (N, C, H, W), unsigned ``abits``: exact MACs, ``apply_folded``, no statistics."""
    _check_batch(x, None, cfg)
    folded = folded or fold_network(state, cfg)
    a = np.ascontiguousarray(np.asarray(x, dtype=np.int64).transpose(1, 0, 2, 3))
    for ge, fl in zip(cfg.geometry, folded, strict=True):
        la = ge.layer
        cols, (nn_, ho, wo) = layer_cols(la.kind, a, la.kernel, la.stride, la.padding)
        acc = exact_matmul(fl.weight.reshape(fl.weight.shape[0], -1), cols, fl.acc_bits)
        if fl.bn is None:
            return acc.T, fl.w_exp + fl.a_exp
        a = apply_folded(acc, fl.bn, channel_dim=0).reshape(ge.out_shape[0], nn_, ho, wo)
    raise AssertionError("unreachable")


def replace_state(state: TrainState, **changes) -> TrainState:
    """A copy of ``state`` with fields replaced (tests inject faults this way)."""
    return replace(state, **changes)
