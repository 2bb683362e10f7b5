"""Simulation of the generated designs with cocotb: the runner (:mod:`.runner`), the bench kit and
benches (:mod:`.benches`), and one driver per design (:mod:`.bn`, :mod:`.bwd`, :mod:`.mac`,
:mod:`.net`) that builds the design, runs its bench and returns the result."""
