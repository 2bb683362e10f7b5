"""l1bn.cli: the one ``l1bn`` command line (doctor, train, export, infer, verilog, sim, report, ...).

``l1bn.cli.main.COMMANDS`` lists every command and the module that holds it. This package sits on
top of the others: it imports spec, hw, sw and sim; none of them imports it.
"""
