"""cocotb benches, each a small testbench class built from the bench kit (:mod:`.kit`) and launched
by :func:`l1bn.sim.simulate.runner.run_bench` (see docs/benches.md)."""
