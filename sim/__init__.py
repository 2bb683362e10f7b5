"""l1bn.sim: cocotb benches, the simulator runner, synthesis / place-and-route / energy flows."""
