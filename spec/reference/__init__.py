"""The bit-exact integer reference model: the specification of the hardware arithmetic.

numpy int64 functions, vectorized (no Python loops over elements), that implement
``docs/arithmetic.md`` exactly and take the same config objects as the hardware generators. They
import neither torch nor amaranth; torch CPU tensors are accepted and returned as tensors.
"""

from .core import div_const, int_range, recip_const, rshift_round, saturate

__all__ = ["div_const", "rshift_round", "saturate", "recip_const", "int_range"]
