"""cocotb test modules; each is run through :func:`l1bn.sim.runner.run_cocotb`."""
