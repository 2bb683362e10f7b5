"""l1bn.sw: PyTorch layers, quantizers, quantization-aware training and export of integer weights.

The arithmetic contract (configs, integer rules, the reference model) is :mod:`l1bn.spec`; the
command line is :mod:`l1bn.cli`.
"""
