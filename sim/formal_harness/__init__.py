"""Formal harnesses (Amaranth ``Assert``/``Assume``) of the l1bn designs, on their public ports;
run by :mod:`l1bn.sim.formal` (``l1bn prove``)."""
