"""Operation counts of one integer training step (docs/arith/training.md) of a network shape.

:func:`step_counts` walks a :class:`~l1bn.spec.netshape.NetShape` once and counts, for a
mini-batch of ``batch`` images, what one SGD step of the training contract computes. Per MAC
layer (conv2d or linear; ``K`` = its reduction length ``C*k*k`` or ``C*H*W``, ``P`` = output
positions per image, ``O`` = output channels, ``B`` = batch):

==================  ===========================  ==================================================
count               formula                      the contract's operation
==================  ===========================  ==================================================
``fwd_macs``        ``B*P*O*K``                  ``acc = w @ cols`` (section 3.2)
``igrad_macs``      ``B*P*O*K``, 0 for the       ``dA = col2im(w.T @ dacc)`` (section 6); the first
                    network's first layer        layer's input needs no gradient
``wgrad_macs``      ``B*P*O*K``                  ``dW = dacc @ cols.T`` (section 6)
``bn_elements``     ``B*P*O`` (BN layers)        the BN forward of every element (batch statistics
                                                 and normalize) and its backward (passes 1 and 2)
``bn_channels``     ``O`` (BN layers)            per-channel work, once forward (mu, dispersion,
                                                 sigma, reciprocal) and once backward (Sdyd, H,
                                                 mean dy, the bracket's constants, gamma*inv)
``weights``         ``O*K``                      master-weight updates (section 5)
``bn_params``       ``2*O`` (BN layers)          gamma and beta updates
``act_elements``    ``B*P*O`` (``act`` layers)   ReLU + activation quantizer forward, the
                                                 straight-through mask backward
==================  ===========================  ==================================================

Outside the MAC layers (:attr:`StepCounts.other`): ``maxpool_compares`` (``k*k - 1`` per output),
``residual_adds`` (the forward add and the backward sum of the two branches' input gradients, one
each per element of the block's output), ``avgpool_adds`` (one per input element),
``residual_act_elements`` (ReLU + quantizer after the add) and ``loss_elements`` (``B*classes``,
the softmax cross-entropy gradient).

Pooling and residual blocks are not in the training contract (a chain of conv2d and linear
layers); their counts follow the same per-element reading. Pure Python (integers), no numpy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import check_int
from .netshape import Conv, GlobalAvgPool, Linear, MaxPool, NetShape, Residual

__all__ = ["LayerCount", "StepCounts", "step_counts", "COUNT_FIELDS"]

#: The per-layer counts, in table order.
COUNT_FIELDS = ("fwd_macs", "igrad_macs", "wgrad_macs", "bn_elements", "bn_channels", "weights",
                "bn_params", "act_elements")


@dataclass(frozen=True)
class LayerCount:
    """The counts of one MAC layer (see the module docstring); shapes are per image,
    ``(C, H, W)``; ``k`` the reduction length, ``positions`` the output positions per image."""

    name: str
    kind: str
    in_shape: tuple
    out_shape: tuple
    k: int
    positions: int
    fwd_macs: int
    igrad_macs: int
    wgrad_macs: int
    bn_elements: int
    bn_channels: int
    weights: int
    bn_params: int
    act_elements: int

    @property
    def macs(self) -> int:
        """Every MAC of the layer in one step: forward, input gradient and weight gradient."""
        return self.fwd_macs + self.igrad_macs + self.wgrad_macs

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("name", "kind", "k", "positions", *COUNT_FIELDS)}
        d["in_shape"], d["out_shape"] = list(self.in_shape), list(self.out_shape)
        return d


@dataclass(frozen=True)
class StepCounts:
    """Counts of one training step of ``network`` at mini-batch ``batch``: per MAC layer
    (``layers``) and outside them (``other``)."""

    network: str
    batch: int
    in_shape: tuple
    layers: tuple
    other: dict = field(default_factory=dict)

    def total(self, name: str) -> int:
        """The sum of a per-layer count (:data:`COUNT_FIELDS` or ``"macs"``) over the layers."""
        if name != "macs" and name not in COUNT_FIELDS:
            raise ValueError(f"count={name!r} is unknown; allowed macs, {', '.join(COUNT_FIELDS)}")
        return sum(getattr(la, name) for la in self.layers)

    @property
    def totals(self) -> dict:
        """Every per-layer count summed, ``macs`` (all three kinds) and ``updates``
        (weights + BN parameters)."""
        t = {k: self.total(k) for k in COUNT_FIELDS}
        t["macs"] = self.total("macs")
        t["updates"] = t["weights"] + t["bn_params"]
        return t

    def to_dict(self) -> dict:
        return {"network": self.network, "batch": self.batch, "in_shape": list(self.in_shape),
                "totals": self.totals, "other": dict(self.other), "layers": [la.to_dict() for la in self.layers]}


def _out_hw(h: int, w: int, kernel: int, stride: int, padding: int, what: str) -> tuple[int, int]:
    ho = (h + 2 * padding - kernel) // stride + 1
    wo = (w + 2 * padding - kernel) // stride + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"{what} leaves no output from a {h}x{w} input")
    return ho, wo


class _Walker:
    """One pass over the layers: shapes, names and counts."""

    def __init__(self, batch: int, last):
        self.batch, self.last = batch, last
        self.rows: list[LayerCount] = []
        self.other = {"maxpool_compares": 0, "residual_adds": 0, "avgpool_adds": 0,
                      "residual_act_elements": 0, "loss_elements": 0}
        self.nconv = self.nlin = self.nblock = 0
        self.first = True

    def mac_layer(self, la, shape, name: str):
        c, h, w = shape
        if isinstance(la, Conv):
            ho, wo = _out_hw(h, w, la.kernel, la.stride, la.padding, f"{name} ({la.kernel}x{la.kernel} conv)")
            k, out, kind = c * la.kernel * la.kernel, (la.out, ho, wo), "conv2d"
        else:
            k, out, kind = c * h * w, (la.out, 1, 1), "linear"
        pos = out[1] * out[2]
        macs = self.batch * pos * la.out * k
        elems = self.batch * pos * la.out
        self.rows.append(LayerCount(
            name=name, kind=kind, in_shape=tuple(shape), out_shape=out, k=k, positions=pos,
            fwd_macs=macs, igrad_macs=0 if self.first else macs, wgrad_macs=macs,
            bn_elements=elems if la.bn else 0, bn_channels=la.out if la.bn else 0,
            weights=la.out * k, bn_params=2 * la.out if la.bn else 0,
            act_elements=elems if la.act else 0))
        self.first = False
        return out

    def walk(self, layers, shape, prefix: str = ""):
        for la in layers:
            if isinstance(la, Conv):
                self.nconv += 1
                shape = self.mac_layer(la, shape, f"{prefix}conv{self.nconv}")
            elif isinstance(la, Linear):
                self.nlin += 1
                # the output layer is "fc", as in the training contract (conv1.., fc1.., fc)
                last = not prefix and la is self.last
                shape = self.mac_layer(la, shape, "fc" if last else f"{prefix}fc{self.nlin}")
            elif isinstance(la, MaxPool):
                c, h, w = shape
                ho, wo = _out_hw(h, w, la.kernel, la.stride, 0, f"maxpool {la.kernel}")
                self.other["maxpool_compares"] += self.batch * c * ho * wo * (la.kernel * la.kernel - 1)
                shape = (c, ho, wo)
            elif isinstance(la, GlobalAvgPool):
                c, h, w = shape
                self.other["avgpool_adds"] += self.batch * c * h * w
                shape = (c, 1, 1)
            elif isinstance(la, Residual):
                self.nblock += 1
                saved = (self.nconv, self.nlin)
                self.nconv = self.nlin = 0
                name = f"{prefix}block{self.nblock}."
                body = self.walk(la.body, shape, name)
                if la.shortcut:
                    self.nconv = self.nlin = 0          # block<i>.short.conv1, ...
                    short = self.walk(la.shortcut, shape, name + "short.")
                else:
                    short = shape
                if body != short:
                    raise ValueError(f"{name[:-1]}: the body gives {body} and the shortcut {short}; "
                                     "a residual add needs equal shapes")
                elems = self.batch * body[0] * body[1] * body[2]
                self.other["residual_adds"] += 2 * elems
                if la.act:
                    self.other["residual_act_elements"] += elems
                self.nconv, self.nlin = saved
                shape = body
        return shape


def step_counts(net: NetShape, *, batch: int = 64) -> StepCounts:
    """Operation counts of one training step of ``net`` on a mini-batch of ``batch`` images.

    Parameters
    ----------
    net : NetShape
        The network (:func:`l1bn.spec.netshape.network_shape` gives the standard ones).
    batch : int, 1..65536, keyword-only
        Images per step; every count but ``bn_channels``, ``weights`` and ``bn_params`` is
        proportional to it.

    Returns
    -------
    StepCounts
        One :class:`LayerCount` per MAC layer, in forward order, and the counts outside them.
    """
    if not isinstance(net, NetShape):
        raise ValueError(f"net={net!r} must be a NetShape")
    check_int("batch", batch, 1, 65536)
    wk = _Walker(batch, net.layers[-1])
    out = wk.walk(net.layers, net.in_shape)
    wk.other["loss_elements"] = batch * out[0]
    return StepCounts(network=net.name, batch=batch, in_shape=net.in_shape, layers=tuple(wk.rows),
                      other=dict(wk.other))
