"""Configuration of integer-only training (docs/arith/training.md): the network, every width, shift
and rounding of one SGD step, validated up front.

``IntTrainConfig`` describes a chain network (conv2d / linear layers, training-mode BN of one
registered norm, ReLU and activation quantizers after every layer but the last, whose accumulators
are the logits) and the fixed-point formats of its forward, loss gradient, backward and update.
``IntTrainConfig.widths`` is the table of every intermediate's signed worst-case width; the
constructor refuses any configuration whose table has an entry above 62 bits, or whose gradients
or updates cannot fit the master weights, with a ``ValueError`` naming the intermediate. The
reference (:mod:`l1bn.spec.reference.train`) checks every value it computes against this table.

Like every l1bn config it is frozen, keyword-only and JSON round-trips (``to_json``/``from_json``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

from .config import (
    MAX_INTERMEDIATE_BITS,
    BNBackwardConfig,
    BNConfig,
    ConfigBase,
    MACConfig,
    check_choice,
    check_int,
    clog2,
)
from .norms import backward_spec, norm_names

__all__ = ["TrainLayer", "IntTrainConfig", "DIGITS_CNN", "ROUNDINGS", "FLOAT64_EXACT_BITS",
           "LayerGeometry"]

#: Rounding modes of the weight-gradient quantizer: round half up, or stochastic rounding driven
#: by the xorshift LFSR bank (:mod:`l1bn.spec.reference.lfsr`).
ROUNDINGS = ("nearest", "stochastic")

#: A float64 product-sum of integers is exact while every partial sum stays below 2**53: the
#: reference uses the BLAS float64 matmul when a layer's declared width is at most this many
#: signed bits, else an int64 matmul.
FLOAT64_EXACT_BITS = 54


@dataclass(frozen=True, kw_only=True)
class TrainLayer:
    """One MAC layer of the chain.

    Parameters
    ----------
    kind : {"conv2d", "linear"}
        A ``linear`` layer flattens its input in (C, H, W) order.
    out : int, 1..4096
        Output channels (conv2d) or features (linear).
    kernel, stride, padding : int
        conv2d only (square kernel, zero padding); a linear layer keeps the defaults 1, 1, 0.
    """

    kind: str = "conv2d"
    out: int = 16
    kernel: int = 3
    stride: int = 1
    padding: int = 1

    def __post_init__(self):
        check_choice("kind", self.kind, ("conv2d", "linear"))
        check_int("out", self.out, 1, 4096)
        if self.kind == "linear":
            if (self.kernel, self.stride, self.padding) != (1, 1, 0):
                raise ValueError("a linear layer has kernel=1, stride=1, padding=0")
            return
        check_int("kernel", self.kernel, 1, 7)
        check_int("stride", self.stride, 1, 4)
        check_int("padding", self.padding, 0, self.kernel - 1)


#: The digits CNN of ``l1bn.sw.models.DigitsCNN``: 1x8x8 -> conv3x3 16 -> conv3x3 s2 32 ->
#: conv3x3 s2 32 -> linear 10.
DIGITS_CNN = (TrainLayer(kind="conv2d", out=16, stride=1), TrainLayer(kind="conv2d", out=32, stride=2),
              TrainLayer(kind="conv2d", out=32, stride=2), TrainLayer(kind="linear", out=10, kernel=1,
                                                                       stride=1, padding=0))


@dataclass(frozen=True)
class LayerGeometry:
    """Derived shapes of one layer: input (C, H, W), output (C, H, W) (linear: (out, 1, 1)),
    reduction length ``k`` and output positions per image ``hw``."""

    name: str
    layer: TrainLayer
    in_shape: tuple
    out_shape: tuple
    k: int
    hw: int


def _signed_bits_of_bound(mag_bits: int) -> int:
    """Signed bits of a value whose magnitude is below ``2**mag_bits``."""
    return mag_bits + 1


@dataclass(frozen=True, kw_only=True)
class IntTrainConfig(ConfigBase):
    """Integer-only SGD training of a chain network (docs/arith/training.md).

    Parameters
    ----------
    in_shape : tuple (C, H, W)
        Input image shape.
    layers : tuple of TrainLayer
        The MAC layers in order; the last one must be ``linear`` (its accumulators are the logits).
    batch : int, 2..4096
        Largest mini-batch; every width is sized for it (a smaller last batch only narrows them).
    norm : str
        A registered norm with a backward rule (``l1bn.spec.norms.backward_spec``).
    wbits : int, 2..8
        Signed forward weight bits (per-tensor power-of-two scale from the master weights).
    abits : int, 2..8
        Unsigned activation bits (and input bits).
    a_range_log2 : int, 0..abits
        Activations cover ``[0, 2**a_range_log2)``: ``a_exp = abits - a_range_log2``.
    gbits : int, 2..24
        Bits of every quantized gradient: the errors between layers and the weight gradients.
    grad_rounding : {"nearest", "stochastic"}
        Rounding of the weight-gradient quantizer (errors always round half up).
    master_bits : int, wbits+1..32
        Signed bits of the master weights and of the master gamma and beta.
    lr_shift, bn_lr_shift : int, 0..30
        Learning rates ``2**-lr_shift`` (weights) and ``2**-bn_lr_shift`` (gamma, beta), in the
        parameters' real units per step for a full-scale normalized gradient.
    lr_decay : tuple of int
        Epochs (0-based) at whose start both shifts grow by one (the rate halves).
    frac, xhat_frac, recip_bits, c_bits, eps : int
        The BN forward's fixed-point parameters (``BNConfig``), shared by all BN layers.
    gamma_width, gamma_frac, beta_width : int
        Forward gamma (``gamma_frac`` fractional bits) and beta (in BN output units).
    bn_extra_frac : int, 0..8
        The BN output has ``a_exp + bn_extra_frac`` fractional bits; the activation quantizer
        rounds them away.
    inner_frac, div_bits : int
        The BN backward's fixed-point parameters (``BNBackwardConfig``).
    exp_frac : int, 2..10
        Fractional bits of the base-2 exponent in the softmax (its lookup table has 2**exp_frac entries).
    prob_bits : int, 8..30
        Fractional bits of the softmax probabilities.
    log2e_bits : int, exp_frac..30
        ``log2(e)`` is the constant ``round(log2(e) * 2**log2e_bits)``.
    momentum_shift : int, 1..16
        Running statistics move by ``2**-momentum_shift`` of the difference per step.
    lfsr_lanes : int, 1..65536
        Lanes of the xorshift LFSR bank driving stochastic rounding.
    """

    kind: ClassVar[str] = "int_train"

    in_shape: tuple = (1, 8, 8)
    layers: tuple = DIGITS_CNN
    batch: int = 64
    norm: str = "l1"
    wbits: int = 4
    abits: int = 4
    a_range_log2: int = 2
    gbits: int = 8
    grad_rounding: str = "stochastic"
    master_bits: int = 16
    lr_shift: int = 6
    bn_lr_shift: int = 5
    lr_decay: tuple = (8, 12, 16)
    frac: int = 4
    xhat_frac: int = 8
    recip_bits: int = 20
    c_bits: int = 12
    eps: int = 1
    gamma_width: int = 10
    gamma_frac: int = 7
    beta_width: int = 12
    bn_extra_frac: int = 4
    inner_frac: int = 6
    div_bits: int = 24
    exp_frac: int = 6
    prob_bits: int = 16
    log2e_bits: int = 16
    momentum_shift: int = 3
    lfsr_lanes: int = 1024
    _geometry: tuple = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self):
        shp = tuple(self.in_shape) if isinstance(self.in_shape, (tuple, list)) else None
        if shp is None or len(shp) != 3:
            raise ValueError(f"in_shape={self.in_shape!r} must be (C, H, W)")
        for name, v in zip(("in_shape C", "in_shape H", "in_shape W"), shp, strict=True):
            check_int(name, v, 1, 4096)
        object.__setattr__(self, "in_shape", shp)
        layers = tuple(self.layers) if isinstance(self.layers, (tuple, list)) else ()
        if not layers or not all(isinstance(la, TrainLayer) for la in layers):
            raise ValueError(f"layers={self.layers!r} must be a non-empty tuple of TrainLayer")
        if layers[-1].kind != "linear":
            raise ValueError("the last layer must be linear: its accumulators are the logits")
        object.__setattr__(self, "layers", layers)
        check_int("batch", self.batch, 2, 4096)
        check_choice("norm", self.norm, norm_names())
        backward_spec(self.norm)                 # a norm without a backward rule is refused
        check_int("wbits", self.wbits, 2, 8)
        check_int("abits", self.abits, 2, 8)
        check_int("a_range_log2", self.a_range_log2, 0, self.abits)
        check_int("gbits", self.gbits, 2, 24)
        check_choice("grad_rounding", self.grad_rounding, ROUNDINGS)
        check_int("lr_shift", self.lr_shift, 0, 30)
        check_int("bn_lr_shift", self.bn_lr_shift, 0, 30)
        decay = tuple(self.lr_decay) if isinstance(self.lr_decay, (tuple, list)) else None
        if decay is None or any(isinstance(e, bool) or not isinstance(e, int) or e < 1 for e in decay) \
                or list(decay) != sorted(set(decay)):
            raise ValueError(f"lr_decay={self.lr_decay!r} must be increasing epochs >= 1")
        object.__setattr__(self, "lr_decay", decay)
        check_int("gamma_width", self.gamma_width, 2, 18)
        check_int("gamma_frac", self.gamma_frac, 0, self.gamma_width - 2)   # gamma = 1 must fit
        check_int("beta_width", self.beta_width, 2, 32)
        check_int("bn_extra_frac", self.bn_extra_frac, 0, 8)
        check_int("master_bits", self.master_bits, max(self.wbits + 1, self.gamma_width, self.beta_width), 32)
        check_int("exp_frac", self.exp_frac, 2, 10)
        check_int("prob_bits", self.prob_bits, 8, 30)
        check_int("log2e_bits", self.log2e_bits, self.exp_frac, 30)
        check_int("momentum_shift", self.momentum_shift, 1, 16)
        check_int("lfsr_lanes", self.lfsr_lanes, 1, 65536)
        object.__setattr__(self, "_geometry", self._make_geometry())
        # the BN configs validate their own parameters; name the layer in their message
        for g in self.geometry[:-1]:
            try:
                self.bn_backward_config(g.name)
            except ValueError as e:
                raise ValueError(f"{g.name} BN: {e}") from None
        for g in self.geometry:
            for what, lr in (("weights", self.lr_shift),) + ((("gamma", self.bn_lr_shift),
                                                               ("beta", self.bn_lr_shift))
                                                              if g is not self.geometry[-1] else ()):
                ub = self.gbits + max(0, self.update_shift(what, lr))
                if ub > self.master_bits:
                    raise ValueError(
                        f"{g.name} {what} update: a {self.gbits}-bit gradient at learning rate "
                        f"2**-{lr} is {ub} bits in master LSBs, "
                        f"wider than the {self.master_bits}-bit master {what} (raise lr_shift or "
                        f"master_bits, or lower gbits)")
        widths = self.widths
        name = max(widths, key=widths.get)
        if widths[name] > MAX_INTERMEDIATE_BITS:
            raise ValueError(f"the intermediate {name} needs {widths[name]} signed bits; at most "
                             f"{MAX_INTERMEDIATE_BITS} are supported (lower gbits, batch, "
                             f"master_bits, prob_bits or the BN widths)")

    # ------------------------------------------------------------------ JSON round trip
    def to_dict(self) -> dict:
        d = {"kind": self.kind}
        for f in dataclasses.fields(self):
            if f.name.startswith("_"):
                continue
            v = getattr(self, f.name)
            if f.name == "layers":
                v = [dataclasses.asdict(la) for la in v]
            elif isinstance(v, tuple):
                v = list(v)
            d[f.name] = v
        return d

    @classmethod
    def from_dict(cls, d: dict):
        d = dict(d)
        if isinstance(d.get("layers"), list):
            d["layers"] = tuple(TrainLayer(**la) if isinstance(la, dict) else la for la in d["layers"])
        for k in ("in_shape", "lr_decay"):
            if isinstance(d.get(k), list):
                d[k] = tuple(d[k])
        kind = d.pop("kind", cls.kind)
        if kind != cls.kind:
            raise ValueError(f"config kind={kind!r} does not match {cls.kind!r}")
        names = {f.name for f in dataclasses.fields(cls) if not f.name.startswith("_")}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
        return cls(**d)

    # ------------------------------------------------------------------ derived quantities
    def _make_geometry(self) -> tuple:
        out, shape, nconv, nlin = [], self.in_shape, 0, 0
        for i, la in enumerate(self.layers):
            c, h, w = shape
            if la.kind == "conv2d":
                nconv += 1
                ho = (h + 2 * la.padding - la.kernel) // la.stride + 1
                wo = (w + 2 * la.padding - la.kernel) // la.stride + 1
                if ho < 1 or wo < 1:
                    raise ValueError(f"layer {i} (conv2d) leaves no output from a {h}x{w} input")
                k, oshape, name = c * la.kernel * la.kernel, (la.out, ho, wo), f"conv{nconv}"
            else:
                nlin += 1
                k, oshape = c * h * w, (la.out, 1, 1)
                name = "fc" if i == len(self.layers) - 1 else f"fc{nlin}"
            out.append(LayerGeometry(name=name, layer=la, in_shape=tuple(shape), out_shape=oshape,
                                     k=k, hw=oshape[1] * oshape[2]))
            shape = oshape
        return tuple(out)

    @property
    def geometry(self) -> tuple:
        """One :class:`LayerGeometry` per layer (names conv1, conv2, ..., fc)."""
        return self._geometry

    @property
    def names(self) -> tuple:
        return tuple(g.name for g in self.geometry)

    @property
    def classes(self) -> int:
        return self.layers[-1].out

    @property
    def a_exp(self) -> int:
        """Activations (after ReLU) are ``a * 2**-a_exp``, unsigned ``abits``."""
        return self.abits - self.a_range_log2

    @property
    def in_exp(self) -> int:
        """The input (values in [0, 1]) is unsigned ``abits`` with ``exp = abits``."""
        return self.abits

    @property
    def master_frac(self) -> int:
        """Master weights are ``M * 2**-master_frac``: the range [-1, 1) (WAGE's weight clip)."""
        return self.master_bits - 1

    @property
    def gamma_master_frac(self) -> int:
        return self.gamma_frac + self.master_bits - self.gamma_width

    @property
    def out_frac(self) -> int:
        """Fractional bits of the BN output y."""
        return self.a_exp + self.bn_extra_frac

    @property
    def out_width(self) -> int:
        """Signed BN output bits: two more than the activation so y saturates only where the
        activation is clipped anyway."""
        return self.abits + self.bn_extra_frac + 2

    @property
    def beta_master_frac(self) -> int:
        return self.out_frac + self.master_bits - self.beta_width

    def param_frac(self, what: str) -> int:
        """Fractional bits of a master parameter (``"weights"``, ``"gamma"``, ``"beta"``)."""
        return {"weights": self.master_frac, "gamma": self.gamma_master_frac,
                "beta": self.beta_master_frac}[what]

    def update_shift(self, what: str, lr_shift: int) -> int:
        """``param_frac - lr_shift - (gbits - 1)``: the left shift from a normalized gbits gradient
        to master LSBs. Negative: the master grid is coarser than ``lr * 2**-(gbits-1)``, and the
        gradient quantizer rounds that many bits more (the update has fewer than gbits bits)."""
        return self.param_frac(what) - lr_shift - (self.gbits - 1)

    def lr_shifts(self, epoch: int) -> tuple[int, int]:
        """(lr_shift, bn_lr_shift) in ``epoch`` (0-based) after the ``lr_decay`` halvings."""
        k = sum(1 for e in self.lr_decay if epoch >= e)
        return self.lr_shift + k, self.bn_lr_shift + k

    def layer_in_bits(self, i: int) -> tuple[int, int]:
        """(bits, exp) of layer ``i``'s unsigned input activations."""
        return (self.abits, self.in_exp) if i == 0 else (self.abits, self.a_exp)

    def mac_config(self, name: str) -> MACConfig:
        g = self._geom(name)
        return MACConfig(rows=1, cols=1, wbits=self.wbits, abits=self.abits, signed_w=True,
                         signed_a=False, k=g.k)

    def _geom(self, name: str) -> LayerGeometry:
        for g in self.geometry:
            if g.name == name:
                return g
        raise ValueError(f"no layer named {name!r}; layers: {', '.join(self.names)}")

    def bn_config(self, name: str, batch: int | None = None) -> BNConfig:
        """The training-mode BN forward of layer ``name`` for a mini-batch of ``batch`` images."""
        g = self._geom(name)
        if g is self.geometry[-1]:
            raise ValueError(f"{name} is the output layer; it has no BN")
        b = self.batch if batch is None else batch
        return BNConfig(norm=self.norm, width=self.mac_config(name).acc_bits, out_width=self.out_width,
                        channels=g.out_shape[0], n=b * g.hw, lanes=1, frac=self.frac,
                        xhat_frac=self.xhat_frac, recip_bits=self.recip_bits,
                        gamma_width=self.gamma_width, gamma_frac=self.gamma_frac,
                        beta_width=self.beta_width, out_frac=self.out_frac, eps=self.eps,
                        c_bits=self.c_bits)

    def bn_backward_config(self, name: str, batch: int | None = None) -> BNBackwardConfig:
        """The BN backward of layer ``name``: ``grad_width = gbits``. The step does not use the
        unit's fixed-shift ``dx`` output (it requantizes ``u * gamma * inv`` itself), so
        ``grad_out_width``/``grad_out_frac`` are left at 32/0."""
        return BNBackwardConfig(bn=self.bn_config(name, batch), grad_width=self.gbits,
                                inner_frac=self.inner_frac, grad_out_width=32, grad_out_frac=0,
                                div_bits=self.div_bits)

    @property
    def max_weight_shift(self) -> int:
        """Largest forward-weight shift ``clog2(max|M|) - (wbits - 1)`` (``|M| <= 2**(master_bits-1)``)."""
        return self.master_bits - self.wbits

    @property
    def min_logit_exp(self) -> int:
        """Smallest exponent of the logits (``w_exp + a_exp`` at the largest weight shift)."""
        return self.master_frac - self.max_weight_shift + self.a_exp

    @property
    def max_logit_exp(self) -> int:
        """Largest exponent of the logits (the weight shift is at least ``-(wbits - 1)``)."""
        return self.master_frac + self.wbits - 1 + self.a_exp

    @property
    def widths(self) -> dict:
        """Signed worst-case bits of every intermediate of one step, ``"layer.name" -> bits``.

        The reference checks each value it computes against this table (docs/arith/training.md
        lists the formulas). Unsigned quantities count one sign bit too.
        """
        w: dict[str, int] = {}
        g, ab, wb, n = self.gbits, self.abits, self.wbits, self.batch
        geo = self.geometry
        for i, ge in enumerate(geo):
            p = ge.name
            mac = self.mac_config(p)
            w[f"{p}.master"] = self.master_bits
            w[f"{p}.weight"] = wb
            w[f"{p}.acc"] = mac.acc_bits
            # weight gradient: sum over batch*hw of (gbits signed) x (abits unsigned)
            w[f"{p}.weight_grad"] = _signed_bits_of_bound((g - 1) + ab + clog2(n * ge.hw))
            w[f"{p}.weight_update"] = g + max(0, self.update_shift("weights", self.lr_shift))
            if i > 0:
                # input gradient: W^T @ dacc sums `out` products per column, col2im adds up to
                # kernel**2 overlapping taps (conv) or none (linear)
                taps = ge.layer.kernel ** 2 if ge.layer.kind == "conv2d" else 1
                w[f"{p}.input_grad"] = _signed_bits_of_bound((g - 1) + (wb - 1) + clog2(ge.out_shape[0])
                                                             + clog2(taps))
            if ge is geo[-1]:
                continue
            bn = self.bn_config(p)
            bwd = self.bn_backward_config(p)
            for k, v in bn.widths.items():
                w[f"{p}.bn.{k}"] = v
            for k, v in bwd.widths.items():
                w[f"{p}.bn_backward.{k}"] = v
            w[f"{p}.y"] = self.out_width
            w[f"{p}.act"] = ab + 1
            w[f"{p}.dy"] = g
            w[f"{p}.dacc"] = g
            w[f"{p}.gamma_master"] = self.master_bits
            w[f"{p}.beta_master"] = self.master_bits
            w[f"{p}.gamma_update"] = g + max(0, self.update_shift("gamma", self.bn_lr_shift))
            w[f"{p}.beta_update"] = g + max(0, self.update_shift("beta", self.bn_lr_shift))
            # running statistics at a fixed exponent: the batch mu and sigma shifted left by
            # s_w + wbits - 1, at most master_bits - 1 (train.running_exp)
            w[f"{p}.running_mu"] = bn.mean_bits + self.master_bits - 1
            w[f"{p}.running_sigma"] = bn.sigma_bits + 1 + self.master_bits - 1
            w[f"{p}.running_delta"] = max(w[f"{p}.running_mu"], w[f"{p}.running_sigma"]) + 1
        # softmax cross-entropy gradient
        zb = self.mac_config(geo[-1].name).acc_bits
        w["loss.delta"] = zb + 1                                   # max z - z_i >= 0
        # delta * round(log2 e * 2**Lc) < 2**(zb + Lc + 1), plus the rounding add 2**(shift - 1)
        shift_max = self.log2e_bits + self.max_logit_exp - self.exp_frac
        w["loss.delta_log2e"] = max(zb + self.log2e_bits + 1, shift_max - 1) + 2
        w["loss.t"] = ((self.prob_bits + 2) << self.exp_frac).bit_length() + 1
        w["loss.exp"] = self.prob_bits + 2
        w["loss.sum"] = self.prob_bits + 1 + clog2(self.classes) + 1
        w["loss.div_numerator"] = 2 * self.prob_bits + 4          # 2 * (E << P) + S
        w["loss.grad"] = self.prob_bits + 2
        # the error quantizer's input: the wide values it normalizes are the ones above
        return w

    def matmul_bits(self) -> dict:
        """Worst-case signed bits of each matrix product of one step (float64 BLAS when <= 54)."""
        out = {}
        for i, ge in enumerate(self.geometry):
            p = ge.name
            out[f"{p}.acc"] = self.mac_config(p).acc_bits
            out[f"{p}.weight_grad"] = self.widths[f"{p}.weight_grad"]
            if i > 0:
                out[f"{p}.input_grad"] = self.widths[f"{p}.input_grad"]
        return out
