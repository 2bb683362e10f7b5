"""``l1bn verilog DESIGN ...``: write synthesizable Verilog for one design.

Each design's subcommand lives in its own module (imported only when used).
"""

import click
from l1bn.cli.main import LazyGroup

VERILOG_COMMANDS = {
    "l1bn": ("l1bn.sim.verilog_bn", "l1bn_cmd", "Training-mode L1-BN unit (sign/abs datapath)."),
    "l2bn": ("l1bn.sim.verilog_bn", "l2bn_cmd", "Training-mode L2-BN baseline unit (square/sqrt)."),
    "l1bn-bwd": ("l1bn.sim.verilog_bwd", "l1bn_bwd_cmd", "L1-BN backward unit (sign-based gradient)."),
    "l2bn-bwd": ("l1bn.sim.verilog_bwd", "l2bn_bwd_cmd", "L2-BN backward baseline unit."),
    "mac": ("l1bn.sim.verilog_mac", "mac_cmd", "Low-bit fixed-point MAC array."),
    "net": ("l1bn.sim.verilog_net", "net_cmd", "The accelerator for an exported network, with memory files."),
}


@click.group("verilog", cls=LazyGroup, commands=VERILOG_COMMANDS)
def verilog():
    """Generate Verilog for a design."""
