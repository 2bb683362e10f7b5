"""l1bn.hw: Amaranth 0.5 generators (``wiring.Component`` with ``lib.stream`` interfaces).

Generators take the config objects of :mod:`l1bn.spec.config`; they never import torch.
"""
