"""``l1bn report --network``: the training-step estimate (:mod:`l1bn.sim.report.network`) on the
``report`` command. :func:`network_options` adds its options to ``report`` and runs the estimate
instead of the flows when ``--network`` is given."""

from __future__ import annotations

import functools

import click

__all__ = ["network_options", "parse_networks"]

#: options of the estimate (parameter name -> option as typed)
NETWORK_PARAMS = {"network": "--network", "from_json": "--from-json", "mac_json": "--mac-json",
                  "mac_point": "--mac-point", "batch": "--batch", "bn_units": "--bn-units",
                  "mac_arrays": "--mac-arrays"}

#: options of ``report`` that only the flows use (refused with --network)
FLOW_PARAMS = {"n": "--n", "lanes": "--lanes", "channels": "--channels", "no_pnr": "--no-pnr",
               "seeds": "--seeds", "no_stages": "--no-stages", "no_backward": "--no-backward",
               "jobs": "--jobs", "scheduler": "--scheduler", "target": "--target", "family": "--family",
               "device": "--device", "dsp": "--dsp/--no-dsp",
               "asic_clock_gating": "--asic-clock-gating/--no-asic-clock-gating",
               "asic_sram": "--asic-sram/--no-asic-sram"}


def parse_networks(text: str) -> tuple[str, ...]:
    """``"digits,cnv"`` -> ("digits", "cnv"); ``"all"`` -> every standard network."""
    from l1bn.spec.netshape import network_names, network_shape

    names = tuple(t.strip() for t in text.split(",") if t.strip())
    if names == ("all",):
        return network_names()
    if not names:
        raise ValueError(f"network={text!r} is empty; give e.g. digits,cnv,resnet18 or all")
    if len(set(names)) != len(names):
        raise ValueError(f"network={text!r} repeats a network")
    for nm in names:
        network_shape(nm)               # an unknown name: one line naming the allowed ones
    return names


def _given(ctx, name: str) -> bool:
    from click.core import ParameterSource

    return ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP, None)


def _run(ctx, kw: dict, net: dict, parse_widths) -> None:
    from l1bn.sim.report.network import estimate_networks, load_costs, report_widths, write_estimate
    from l1bn.spec.outdir import check_output_dir, check_writable, claimed_dir

    for name, opt in FLOW_PARAMS.items():
        if _given(ctx, name):
            raise click.UsageError(f"{opt} is an option of the flows; --network reads measured report.json files")
    networks = parse_networks(net["network"])
    if not net["from_json"]:
        raise click.UsageError("--network needs --from-json REPORT.json (of `l1bn report`, FPGA and/or ASIC)")
    if not net["mac_json"]:
        raise click.UsageError("--network needs --mac-json RESULTS.json (of `l1bn sweep --design mac`)")
    inputs = [*net["from_json"], net["mac_json"]]
    # the one output rule: a new folder or an earlier output of `l1bn report` (its marker), writable
    outp = check_output_dir(kw["out"], command="report", inputs=inputs, must_be_new=False)
    check_writable(outp)
    have = report_widths(net["from_json"])
    if _given(ctx, "widths"):
        widths = parse_widths(kw["widths"])
        missing = [w for w in widths if w not in have]
        if missing:
            raise ValueError(f"width {missing[0]} is not in every report given (common widths: "
                             f"{', '.join(map(str, have)) or 'none'})")
    else:
        widths = have
    if len(widths) != 1:
        raise ValueError(f"the reports hold widths {', '.join(map(str, widths)) or 'none in common'}; "
                         "choose one with --widths")
    w = widths[0]
    costs = load_costs(net["from_json"], net["mac_json"], width=w, mac_point=net["mac_point"])
    est = estimate_networks(networks, costs, width=w, batch=net["batch"], bn_units=net["bn_units"],
                             mac_arrays=net["mac_arrays"])
    with claimed_dir(outp, "report"):   # a new folder is removed again if writing fails
        paths = write_estimate(est, outp)
    click.echo((outp / "estimate.md").read_text())
    click.echo(f"wrote {paths['json']}, {paths['md']}")


def network_options(parse_widths):
    """A decorator adding the estimate's options to the ``report`` command; with ``--network`` it
    runs the estimate (``--widths`` read by ``parse_widths``), else the command (the estimate's
    options are then refused)."""
    return functools.partial(_decorate, parse_widths=parse_widths)


def _decorate(f, *, parse_widths):
    @functools.wraps(f)
    def wrapper(**kw):
        net = {k: kw.pop(k) for k in NETWORK_PARAMS}
        ctx = click.get_current_context()
        if net["network"] is None:
            for name, opt in NETWORK_PARAMS.items():
                if _given(ctx, name):
                    raise click.UsageError(f"{opt} needs --network")
            return f(**kw)
        return _run(ctx, kw, net, parse_widths)

    opts = [
        click.option("--network", default=None,
                     help="Estimate one training step of these networks instead of running the flows: "
                          "digits, cnv, resnet18 (comma-separated) or all. Reads --from-json and --mac-json; "
                          "writes OUT/estimate.json and OUT/estimate.md."),
        click.option("--from-json", "from_json", multiple=True, type=str,
                     help="With --network: a report.json of `l1bn report` (FPGA, --target asic or both); "
                          "repeat for FPGA and ASIC."),
        click.option("--mac-json", "mac_json", default=None, type=str,
                     help="With --network: results.json of `l1bn sweep --design mac` (energy and Fmax per MAC)."),
        click.option("--mac-point", "mac_point", default=None,
                     help="With --network: the sweep point to use, e.g. 4x4w8a8 (default: the only one)."),
        click.option("--batch", type=int, default=64, show_default=True,
                     help="With --network: images per training step (1..65536)."),
        click.option("--bn-units", "bn_units", type=int, default=1, show_default=True,
                     help="With --network: BN forward and backward units working in parallel on a layer's "
                          "channels (1..4096)."),
        click.option("--mac-arrays", "mac_arrays", type=int, default=1, show_default=True,
                     help="With --network: copies of the swept MAC array sharing a step's MACs (1..4096)."),
    ]
    for o in reversed(opts):
        wrapper = o(wrapper)
    return wrapper
