"""The forward BN unit's stage interfaces (streams joined with ``wiring.connect``) and the
registry's ``sigma_kind`` that chooses the reciprocal stage's sigma datapath."""

import dataclasses

import pytest
from l1bn.spec.norms import NORMS, SIGMA_KINDS, norm_spec


def test_every_norm_has_a_valid_sigma_kind():
    assert SIGMA_KINDS == ("const", "sqrt")
    for name, spec in NORMS.items():
        assert spec.sigma_kind in SIGMA_KINDS, name
    # L1 and range multiply s by a constant, L2 takes a square root
    assert {n: s.sigma_kind for n, s in NORMS.items()} == {"l1": "const", "l2": "sqrt", "range": "const"}


def test_a_bad_sigma_kind_is_refused():
    with pytest.raises(ValueError, match="sigma_kind='cbrt' of norm 'l1' is not allowed"):
        dataclasses.replace(norm_spec("l1"), sigma_kind="cbrt")
