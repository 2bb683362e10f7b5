"""Shared tolerances of the float BN-kernel tests (test_bn_fast, test_range_fast): a result
against its float64 autograd reference, relative to the reference's largest magnitude."""

import torch

TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 5e-3, torch.bfloat16: 3e-2}


def assert_close(got, want, dtype, what):
    """``max |got - want| <= TOL[dtype] * max(1, max |want|)``, naming ``what`` when it fails."""
    got, want = got.detach(), want.detach()
    scale = max(1.0, float(want.abs().max()))
    err = float((got.double() - want).abs().max())
    assert err <= TOL[dtype] * scale, f"{what}: max error {err:.3g} > {TOL[dtype]} * {scale:.3g}"
