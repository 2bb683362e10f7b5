"""l1bn.sim: simulation, synthesis, timing, energy, proofs and reports of the generated designs.

One subpackage per flow:

- :mod:`.simulate`: cocotb runner, bench kit and benches, one driver per design;
- :mod:`.verilog`: the Verilog files of ``l1bn verilog``;
- :mod:`.fpga`: ECP5 synthesis, place and route, generic gates and gate-level energy;
- :mod:`.asic`: NanGate45 synthesis, OpenSTA timing and the library power model;
- :mod:`.formal`: formal proofs (``l1bn prove``) and their harnesses;
- :mod:`.report`: ``l1bn report`` over the FPGA and ASIC flows;
- :mod:`.sweep`: ``l1bn sweep``, design-space sweeps over the flows.

The shared layer, top-level modules that import no flow: :mod:`.jobs` (flow steps as cached jobs,
run in parallel), :mod:`.executors` (local processes or a Dask cluster), :mod:`.tools` (external
tools), :mod:`.rtl` (a component's Verilog and ports), :mod:`.gatesim` (gate-level simulation on
Icarus), :mod:`.yowasp` (the WebAssembly tools in a work folder), :mod:`.build_root`.
Layers: ``simulate``, ``verilog``, ``fpga``, ``asic`` and ``formal`` use only the shared layer
(and ``spec``, ``hw``, ``sw``); ``report`` builds on ``fpga`` and ``asic``; ``sweep`` on ``fpga``,
``asic``, ``report`` and ``simulate``. ``tests/test_import_graph.py`` checks that there is no
import cycle and that the shared layer imports no flow.
"""
