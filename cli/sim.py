"""``l1bn sim DESIGN ...``: run a design's cocotb bench through the simulator helper."""

import click
from l1bn.cli.main import LazyGroup

SIM_COMMANDS = {
    "net": ("l1bn.sim.sim_net", "net_cmd", "Classify test images on the simulated accelerator."),
    "bn": ("l1bn.sim.sim_bn", "bn_cmd", "Check an L1-/L2-BN unit against the integer reference."),
    "mac": ("l1bn.sim.sim_mac", "mac_cmd", "Check a MAC array against the integer reference."),
}


@click.group("sim", cls=LazyGroup, commands=SIM_COMMANDS)
def sim():
    """Simulate a design or an exported network with cocotb."""
