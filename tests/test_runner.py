"""The simulator helper, proven on the AbsDiff unit on both simulators, plus a broken mutant."""

import pytest
from amaranth import Module, Mux
from l1bn.hw.absdiff import AbsDiff
from l1bn.sim.simulate.runner import SimulationError, run_cocotb

BENCH = "l1bn.sim.simulate.benches.absdiff_tb"


class BrokenAbsDiff(AbsDiff):
    """Test-only mutant: forgets to negate (returns a - b for negative differences, truncated)."""

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.y.eq(Mux(self.a > self.b, self.a - self.b, self.b - self.a + 1))
        return m


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
@pytest.mark.parametrize("width", [1, 4, 9])
def test_absdiff_passes(simulator, width, tmp_path):
    res = run_cocotb(AbsDiff(width=width), toplevel="absdiff", test_module=BENCH,
                     simulator=simulator, build_dir=tmp_path)
    assert res.passed
    assert res.failed == []
    assert [t.name for t in res.tests] == ["absdiff_random_and_corners"]


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_broken_dut_names_the_failing_test(simulator, tmp_path):
    with pytest.raises(SimulationError) as e:
        run_cocotb(BrokenAbsDiff(width=6), toplevel="absdiff", test_module=BENCH,
                   simulator=simulator, build_dir=tmp_path)
    assert "absdiff_random_and_corners" in str(e.value)
    assert e.value.failed == ["absdiff_random_and_corners"]


def test_unknown_simulator_is_a_clear_error():
    with pytest.raises(ValueError, match="simulator='modelsim' is unknown"):
        run_cocotb("module absdiff; endmodule\n", toplevel="absdiff", test_module=BENCH, simulator="modelsim")


def test_bad_width_names_the_parameter():
    with pytest.raises(ValueError, match="width=0 is out of range; allowed 1..32"):
        AbsDiff(width=0)
