"""How one integer SGD step of a chain network is laid out on the training accelerator: layer
geometry, the tap lists that drive the MAC array, the memory map, the program of the sequencer and
the cycle formulas. Plain Python: no hardware is built here (docs/train_accel.md).

The arithmetic is :mod:`l1bn.spec.reference.train` (docs/arith/training.md); this module only says
where each tensor lives and in which order the hardware visits it.

MAC operations
--------------
Every product of the step runs on one ``rows x 1`` MAC array (:class:`~l1bn.hw.mac_array.MACArray`):
``rows`` output rows in parallel, one output element per array tile. A :class:`MacOp` is four
nested loops and a tap list::

    for r in range(nr):                    row tile: rows r*R .. r*R+R-1 (output or input channels)
      for a in range(na):                  outer index
        for b in range(nb):                one array tile = output element (r, a, b)
          for c in range(nc):              reduction, outer part
            for (e1, e2, zero) in lists[b]:    reduction, inner part: one beat
              w word  = wb + r*swr + c*swc + e1          (a word of R operands, one per row)
              a elem  = ab + a*saa + c*sac + e2          (one operand, broadcast to the rows)
    out[ob + (r*R + i)*sorow + a*soa + b] = the tile's row i

=======  ====================  =====  ========  =====  =======================  ======================
op       rows (r*R + i)        a      b         c      (e1, e2)                  out
=======  ====================  =====  ========  =====  =======================  ======================
``fwd``  output channel o      image  out pos   in ch  (tap, in pos)            acc[o, n, q] / logits
``da``   input channel c       image  in pos    out o  (tap, out pos)           dA[c, n, q]
``dw``   output channel o      in ch  tap       image  (out pos, in pos)        dW[o, c, tap]
=======  ====================  =====  ========  =====  =======================  ======================

The lists hold only valid taps (inside the image: no padding products), so a stride-2 layer's input
gradient costs what its forward costs; an empty list gets one entry with ``zero`` set (the operand
is 0), so every tile has at least one beat. A linear layer is a convolution whose kernel covers its
input (taps = H*W, one output position), exactly the contract's flattening in (c, y, x) order.

Memories (element addressed unless noted; ``R``-wide words are the array's row operands)
-----------------------------------------------------------------------------------------
``act`` (input images, then each BN layer's activations; (c, n, y, x)), ``acc`` (each BN layer's
accumulators, (o, n, y, x)), ``mask`` (1 bit per acc element), ``fw`` (R-wide: forward weights,
word (o-tile, c, tap)), ``fwt`` (R-wide: the same weights transposed, word (c-tile, o, tap)),
``master`` and ``dw`` (weights and their exact gradients, (o, c, tap) C order, all layers),
``dacc`` (the layer's quantized accumulator gradient, (o, n, y, x)), ``daccw`` (R-wide: the same,
word (o-tile, n, y, x)), ``da`` (the input gradient, (c, n, y, x)), ``ebuf`` (BN backward's
``u*gamma*inv`` or the loss gradient, before the error quantizer), ``logits`` ((n, class)),
per-channel ``gamma``, ``beta``, ``run_mu``, ``run_sigma``, ``stat_mu``, ``stat_inv``, ``dgamma``,
``dbeta`` (BN layers one after another), ``labels``, and the LFSR bank ``lfsr``.

Each entry is ``{depth, bits, signed, lanes, latency}``. ``latency`` is the read latency in cycles:
1 (a synchronous read) for all but ``master``, whose read data is registered once more after the
port (2): it is the deepest memory (15 block RAMs on ECP5 for the digits CNN), and its cascade's
output multiplexer was the clock's critical path into every reader.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from l1bn.spec.config import BNBackwardConfig, MACConfig
from l1bn.spec.norms import backward_spec, norm_spec
from l1bn.spec.training import IntTrainConfig

__all__ = ["TrainGeometry", "MacOp", "TrainPlan", "tap_lists", "train_geometry", "cdiv",
           "MAX_ROWS", "check_trainable", "bn_backward_hw_config"]

#: Largest MAC array height (``l1bn.spec.config.MAX_MAC_ARRAY``).
MAX_ROWS = 16


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def bits_for(v: int) -> int:
    """Unsigned bits that hold 0..v (at least 1)."""
    return max(1, int(v).bit_length())


@dataclass(frozen=True)
class TrainGeometry:
    """One layer as the accelerator sees it: a convolution (a linear layer is one whose kernel
    covers the input). ``bn``: followed by BN, ReLU and the activation quantizer."""

    index: int
    name: str
    kind: str
    cin: int
    h: int
    w: int
    out: int
    ho: int
    wo: int
    kh: int
    kw: int
    stride: int
    pad: int
    bn: bool

    @property
    def taps(self) -> int:
        return self.kh * self.kw

    @property
    def hwi(self) -> int:
        return self.h * self.w

    @property
    def hwo(self) -> int:
        return self.ho * self.wo

    @property
    def k(self) -> int:
        """Reduction length of the forward product, C*kh*kw."""
        return self.cin * self.taps

    @property
    def weights(self) -> int:
        return self.out * self.k


def train_geometry(cfg: IntTrainConfig) -> tuple[TrainGeometry, ...]:
    """Per layer of ``cfg`` its :class:`TrainGeometry`."""
    out = []
    last = len(cfg.geometry) - 1
    for i, g in enumerate(cfg.geometry):
        c, h, w = g.in_shape
        o, ho, wo = g.out_shape
        if g.layer.kind == "conv2d":
            kh = kw = g.layer.kernel
            s, p = g.layer.stride, g.layer.padding
        else:
            kh, kw, s, p = h, w, 1, 0
        out.append(TrainGeometry(index=i, name=g.name, kind=g.layer.kind, cin=c, h=h, w=w, out=o, ho=ho,
                                 wo=wo, kh=kh, kw=kw, stride=s, pad=p, bn=i != last))
    return tuple(out)


def tap_lists(g: TrainGeometry) -> dict:
    """The valid (inside the image) pairs of one layer, three ways round:
    ``fwd[q_out] = [(tap, q_in)]``, ``da[q_in] = [(tap, q_out)]``, ``dw[tap] = [(q_out, q_in)]``
    (positions ``q = y*W + x`` within one image, ``tap = ky*kw + kx``)."""
    fwd = {q: [] for q in range(g.hwo)}
    da = {q: [] for q in range(g.hwi)}
    dw = {t: [] for t in range(g.taps)}
    for oy in range(g.ho):
        for ox in range(g.wo):
            for ky in range(g.kh):
                for kx in range(g.kw):
                    iy, ix = oy * g.stride + ky - g.pad, ox * g.stride + kx - g.pad
                    if 0 <= iy < g.h and 0 <= ix < g.w:
                        qo, qi, t = oy * g.wo + ox, iy * g.w + ix, ky * g.kw + kx
                        fwd[qo].append((t, qi))
                        da[qi].append((t, qo))
                        dw[t].append((qo, qi))
    for d in (fwd, da, dw):
        for key in d:
            d[key].sort()
    return {"fwd": fwd, "da": da, "dw": dw}


def bn_backward_hw_config(cfg: IntTrainConfig, name: str) -> BNBackwardConfig:
    """The backward unit's config in the accelerator: the contract's (``cfg.bn_backward_config``)
    with the output shift 0 and the output as wide as ``u * gamma * inv`` (``dx_product``), so the
    unit's ``dx`` is that product exactly, the value the contract's error quantizer takes
    (docs/arith/training.md, section 6)."""
    c = cfg.bn_backward_config(name)
    b = c.bn
    shift = c.inner_frac + b.gamma_frac + b.recip_bits - b.frac
    return BNBackwardConfig(bn=b, grad_width=c.grad_width, inner_frac=c.inner_frac,
                            grad_out_width=c.widths["dx_product"], grad_out_frac=shift, div_bits=c.div_bits)


def check_trainable(cfg: IntTrainConfig, rows: int) -> None:
    """Refuse (``ValueError``, one line) a config the accelerator cannot build: a norm without a
    backward unit, operands wider than the MAC array takes, an array height outside 1..16."""
    if not isinstance(cfg, IntTrainConfig):
        raise ValueError(f"cfg={cfg!r} must be an IntTrainConfig")
    if isinstance(rows, bool) or not isinstance(rows, int) or not 1 <= rows <= MAX_ROWS:
        raise ValueError(f"rows={rows!r} must be an integer in 1..{MAX_ROWS}")
    backward_spec(cfg.norm)                       # a norm without a backward rule is refused
    if not norm_spec(cfg.norm).hw_backward:
        raise ValueError(f"norm={cfg.norm!r} has no backward unit (the registry's hw_backward is "
                         "empty); the training accelerator needs one")
    if cfg.gbits > 8:
        raise ValueError(f"gbits={cfg.gbits}: the MAC array takes operands of at most 8 bits "
                         "(gradients are an operand of the weight and input gradients); use gbits <= 8")
    if cfg.abits > 7:
        raise ValueError(f"abits={cfg.abits}: activations enter the MAC array as signed "
                         "abits+1-bit operands, at most 8 bits; use abits <= 7")


@dataclass(frozen=True)
class MacOp:
    """One product of the step on the MAC array (module docstring): loop counts, the tap lists,
    the operand sources and the output, all per-op constants."""

    kind: str            #: "fwd", "da" or "dw"
    layer: int
    rows: int            #: valid rows (channels) of the output
    nr: int              #: row tiles ceil(rows / R)
    na: int
    nb: int
    nc: int
    lists: tuple         #: per b, a tuple of (e1, e2, zero)
    wsrc: str            #: "fw", "fwt" or "daccw"
    wb: int
    swr: int
    swc: int
    asrc: str            #: "act" or "dacc"
    ab: int
    saa: int
    sac: int
    dst: str             #: "acc", "logits", "da" or "dw"
    ob: int
    sorow: int
    soa: int
    mask_base: int       #: "da": the mask element of output element e is mask_base + (e - ob); else -1

    @property
    def tiles(self) -> int:
        return self.nr * self.na * self.nb

    def tile_beats(self) -> list[int]:
        """Beats (K-steps) of each tile, in issue order."""
        per_b = [self.nc * len(lst) for lst in self.lists]
        return per_b * (self.nr * self.na)

    @property
    def beats(self) -> int:
        return self.nc * sum(len(lst) for lst in self.lists) * self.nr * self.na

    @property
    def useful_macs(self) -> int:
        """Multiply-accumulates of valid rows and non-zero entries."""
        nz = sum(1 for lst in self.lists for e in lst if not e[2])
        return self.rows * self.na * self.nc * nz


def _lists(pairs: dict, n: int) -> tuple:
    """Per key 0..n-1 the entries ``(e1, e2, zero)``; an empty list gets one zero entry."""
    return tuple(tuple((e1, e2, 0) for e1, e2 in pairs[k]) or ((0, 0, 1),) for k in range(n))


class TrainPlan:
    """The layout of one training step of ``cfg`` on a ``rows x 1`` MAC array.

    Parameters
    ----------
    cfg : IntTrainConfig
        The network and the arithmetic; the accelerator trains full batches of ``cfg.batch``.
    rows : int, 1..16
        MAC array height.

    Attributes
    ----------
    layers : tuple of TrainGeometry
    n : int (the batch)
    mem : dict name -> {"depth", "bits", "signed", "lanes"} (lanes > 1: R-wide words)
    bases : dict of per-layer base addresses (``act``, ``acc``, ``fw``, ``fwt``, ``master``,
        ``chan``: the first channel of a BN layer in the per-channel memories)
    mac_ops : dict (kind, layer) -> MacOp
    program : list of (engine, index) in execution order, one step
    mac_cfg : MACConfig of the array
    """

    def __init__(self, cfg: IntTrainConfig, *, rows: int):
        check_trainable(cfg, rows)
        self.cfg, self.rows = cfg, rows
        self.layers = train_geometry(cfg)
        self.n = n = cfg.batch
        R = rows
        L = self.layers
        bn_layers = [g for g in L if g.bn]
        self.bn_layers = tuple(g.index for g in bn_layers)

        # ---------------------------------------------------------------- memory map
        act, acc, chan, fw, fwt, master = {}, {}, {}, {}, {}, {}
        a = c = ch = f = ft = ms = 0
        for g in L:
            act[g.index] = a
            a += g.cin * n * g.hwi
            fw[g.index] = f
            f += cdiv(g.out, R) * g.k
            master[g.index] = ms
            ms += g.weights
            if g.index > 0:
                fwt[g.index] = ft
                ft += cdiv(g.cin, R) * g.out * g.taps
            if g.bn:
                acc[g.index] = c
                c += g.out * n * g.hwo
                chan[g.index] = ch
                ch += g.out
        self.bases = {"act": act, "acc": acc, "chan": chan, "fw": fw, "fwt": fwt, "master": master}
        self.channels = ch
        w = cfg.widths
        names = cfg.names
        bnw = [cfg.bn_config(names[i]) for i in self.bn_layers]
        bww = [bn_backward_hw_config(cfg, names[i]) for i in self.bn_layers]
        self.bn_cfgs = dict(zip(self.bn_layers, bnw, strict=True))
        self.bwd_cfgs = dict(zip(self.bn_layers, bww, strict=True))
        last = L[-1]
        dacc_depth = max(g.out * n * g.hwo for g in L)
        ebuf_depth = max([last.out * n] + [g.out * n * g.hwo for g in bn_layers])
        self.mem = {
            "act": self._m(a, cfg.abits, False),
            "acc": self._m(c, max((w[f"{names[i]}.acc"] for i in self.bn_layers), default=2), True),
            "mask": self._m(c, 1, False),
            "fw": self._m(f, cfg.wbits, True, R),
            "fwt": self._m(ft, cfg.wbits, True, R),
            "master": self._m(ms, cfg.master_bits, True, latency=2),
            "dw": self._m(ms, max(w[f"{g.name}.weight_grad"] for g in L), True),
            "dacc": self._m(dacc_depth, cfg.gbits, True),
            "daccw": self._m(max(cdiv(g.out, R) * n * g.hwo for g in L), cfg.gbits, True, R),
            "da": self._m(max([g.cin * n * g.hwi for g in L[1:]], default=1),
                          max([w[f"{g.name}.input_grad"] for g in L[1:]], default=2), True),
            "ebuf": self._m(ebuf_depth, max([w["loss.grad"]] + [b.grad_out_width for b in bww]), True),
            "logits": self._m(n * last.out, w[f"{last.name}.acc"], True),
            "labels": self._m(n, bits_for(last.out - 1), False),
            "lfsr": self._m(cfg.lfsr_lanes, 32, False),
        }
        if ch:
            self.mem.update({
                "gamma": self._m(ch, cfg.master_bits, True),
                "beta": self._m(ch, cfg.master_bits, True),
                "run_mu": self._m(ch, max(w[f"{names[i]}.running_mu"] for i in self.bn_layers), True),
                "run_sigma": self._m(ch, max(w[f"{names[i]}.running_sigma"] for i in self.bn_layers), True),
                "stat_mu": self._m(ch, max(b.mean_bits for b in bnw), True),
                "stat_inv": self._m(ch, max(b.inv_bits for b in bnw), False),
                "dgamma": self._m(ch, max(b.widths["h"] for b in bww), True),
                "dbeta": self._m(ch, max(b.widths["sum_dy"] for b in bww), True),
            })

        # ---------------------------------------------------------------- MAC operations
        ops = {}
        for g in L:
            tl = tap_lists(g)
            i = g.index
            if g.bn:
                dst, ob, sorow, soa = "acc", acc[i], n * g.hwo, g.hwo
            else:
                dst, ob, sorow, soa = "logits", 0, 1, g.out
            ops[("fwd", i)] = MacOp(
                kind="fwd", layer=i, rows=g.out, nr=cdiv(g.out, R), na=n, nb=g.hwo, nc=g.cin,
                lists=_lists(tl["fwd"], g.hwo), wsrc="fw", wb=fw[i], swr=g.k, swc=g.taps,
                asrc="act", ab=act[i], saa=g.hwi, sac=n * g.hwi, dst=dst, ob=ob, sorow=sorow, soa=soa,
                mask_base=-1)
            if i > 0:
                # the input gradient lands where the mask of layer i-1's output lies
                ops[("da", i)] = MacOp(
                    kind="da", layer=i, rows=g.cin, nr=cdiv(g.cin, R), na=n, nb=g.hwi, nc=g.out,
                    lists=_lists(tl["da"], g.hwi), wsrc="fwt", wb=fwt[i], swr=g.out * g.taps, swc=g.taps,
                    asrc="dacc", ab=0, saa=g.hwo, sac=n * g.hwo, dst="da", ob=0, sorow=n * g.hwi,
                    soa=g.hwi, mask_base=acc[i - 1])
            ops[("dw", i)] = MacOp(
                kind="dw", layer=i, rows=g.out, nr=cdiv(g.out, R), na=g.cin, nb=g.taps, nc=n,
                lists=_lists(tl["dw"], g.taps), wsrc="daccw", wb=0, swr=n * g.hwo, swc=g.hwo,
                asrc="act", ab=act[i], saa=n * g.hwi, sac=g.hwi, dst="dw", ob=master[i], sorow=g.k,
                soa=g.taps, mask_base=-1)
        self.mac_ops = ops
        self.mac_order = sorted(ops, key=lambda k: ({"fwd": 0, "da": 1, "dw": 2}[k[0]], k[1]))
        kmax = max(max(op.tile_beats()) for op in ops.values())
        self.mac_cfg = MACConfig(rows=R, cols=1, wbits=max(cfg.wbits, cfg.gbits),
                                 abits=max(cfg.abits + 1, cfg.gbits), signed_w=True, signed_a=True, k=kmax)

        # ---------------------------------------------------------------- program of one step
        prog = [("load", 0)]
        prog += [("prep", g.index) for g in L]
        for g in L:
            prog.append(("mac", self.mac_order.index(("fwd", g.index))))
            if g.bn:
                prog.append(("bnf", g.index))
        prog += [("loss", 0), ("quant", last.index)]
        for g in reversed(L):
            i = g.index
            if i > 0:
                prog.append(("mac", self.mac_order.index(("da", i))))
            prog.append(("mac", self.mac_order.index(("dw", i))))
            if i > 0:
                prog += [("bnb", i - 1), ("quant", i - 1)]
        for g in L:
            prog.append(("update", ("weights", g.index)))
            if g.bn:
                prog += [("update", ("gamma", g.index)), ("update", ("beta", g.index))]
        prog.append(("out", 0))
        self.program = prog

    @staticmethod
    def _m(depth: int, bits: int, signed: bool, lanes: int = 1, latency: int = 1) -> dict:
        return {"depth": max(1, depth), "bits": bits, "signed": signed, "lanes": lanes, "latency": latency}

    # -------------------------------------------------------------------- tensors
    def update_tensors(self) -> list[tuple[str, int]]:
        """The updates in the contract's order (the order they draw from the LFSR bank)."""
        out = []
        for g in self.layers:
            out.append(("weights", g.index))
            if g.bn:
                out += [("gamma", g.index), ("beta", g.index)]
        return out

    def tensor_size(self, what: str, i: int) -> int:
        g = self.layers[i]
        return g.weights if what == "weights" else g.out

    def update_shift(self, what: str) -> int:
        """``ush`` of the contract at the config's learning rates (epoch 0)."""
        lr = self.cfg.lr_shift if what == "weights" else self.cfg.bn_lr_shift
        return self.cfg.update_shift(what, lr)

    @functools.cached_property
    def mem_bits(self) -> int:
        """On-chip memory bits, all memories."""
        return sum(m["depth"] * m["bits"] * m["lanes"] for m in self.mem.values())

    # -------------------------------------------------------------------- MAC counts
    @property
    def mac_beats(self) -> int:
        """Beats into the array per step (each is ``rows`` multiply-accumulates)."""
        return sum(op.beats for op in self.mac_ops.values())

    @property
    def useful_macs(self) -> int:
        return sum(op.useful_macs for op in self.mac_ops.values())

    def mac_period_cycles(self, op: MacOp) -> int:
        """Array cycles of an op from its first beat to its last tile's last beat accepted, with
        the array's stalls: the first tile ``K``, each later tile ``max(K, rows + 1)`` (the
        result bank of ``rows`` rows drains while the next tile accumulates)."""
        ks = op.tile_beats()
        return ks[0] + sum(max(k, self.rows + 1) for k in ks[1:])

