"""Formal proofs of the generated designs (``l1bn prove``): the runner (:mod:`.check`) and the
harnesses (Amaranth ``Assert``/``Assume`` on the designs' public ports)."""
