"""``l1bn report``: every registered BN norm measured through the FPGA and ASIC flows, written as
``report.json``, ``report.md`` and ratio plots; ``l1bn report --network`` (:mod:`.network`)
estimates a whole training step from those measured parts."""
