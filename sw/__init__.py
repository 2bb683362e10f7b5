"""l1bn.sw: PyTorch layers, quantization-aware training, export, the bit-exact integer reference
and the ``l1bn`` CLI.

This package's ``__init__`` imports nothing heavy, so that ``l1bn.sw.config`` can be imported by the
hardware generators without pulling in torch.
"""
