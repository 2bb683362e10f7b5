"""Verilog text and files of the generated designs: the library side of ``l1bn verilog``
(:mod:`.bn`, :mod:`.bwd`, :mod:`.mac`, :mod:`.net`)."""
