"""Shared pytest configuration and fixtures: the trained digits run, its export and the trained QAT
stand-in are built once per test run (the first pytest-xdist worker that needs one builds it in the
run's shared temporary folder, under a lock; the others wait and read it), for every test module
that needs them."""

import fcntl
import os

import pytest
import torch
import torch.nn.functional as F


def built_once(tmp_path_factory, name: str, build):
    """The folder ``name``, shared by every xdist worker of this run; ``build(folder)`` fills it once.

    ``getbasetemp()`` is per worker (``.../popen-gw0``); its parent is the run's folder. A
    ``.complete`` marker written after ``build`` returns tells later callers the folder is whole.
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    folder = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)    # released when the file closes (or the worker dies)
        if not (folder / ".complete").exists():
            folder.mkdir(exist_ok=True)
            build(folder)
            (folder / ".complete").touch()
    return folder


#: Seconds of the longest tests (call + setup, ``make test`` at -n 2 on the 2-core machine): the
#: order in which they start. Only the order matters, so rough figures do; a test not listed
#: counts as 0 s and keeps its place (slow-marked ones before the rest).
LONGEST = {
    "tests/test_report.py::test_cli_report_with_backward_and_pnr": 70,
    "tests/test_build.py::test_l1bn_build_ulx3s_85f": 85,
    "tests/test_train_accel.py::test_digits_cnn_on_verilator[l2]": 77,
    "tests/test_train_accel.py::test_digits_cnn_on_verilator[l1]": 69,
    "tests/test_mac_array.py::test_ecp5_8x8_w4a4_meets_100mhz": 75,   # in a fresh clone (no build/ cache)
    "tests/test_report.py::test_tiny_report_is_complete_and_reproducible": 41,
    "tests/test_demo.py::test_demo_end_to_end": 40,
    "tests/test_asic_realism.py::test_unit_bit_exact_with_clock_gating_and_sram": 41,
    "tests/test_accelerator.py::test_verilator_every_test_image_bit_exact": 39,
    "tests/test_interop_models.py::test_accelerator_runs_the_imported_model_bit_exact[sfc_1w1a]": 30,
    "tests/test_bn_unit.py::test_unit_bit_exact[verilator-l1-16-4-200-50-0]": 30,
    "tests/test_interrupts.py::test_random_interrupts_leave_nothing_and_the_rerun_is_identical[train]": 34,
    "tests/test_reliability.py::test_two_reports_on_one_build_folder_both_finish_identically": 28,
    "tests/test_reliability.py::test_sigint_stops_report_jobs_2_within_5s_leaving_no_process": 27,
    "tests/test_interrupts.py::test_killed_verilator_build_leaves_no_make_or_compiler[9]": 24,
    "tests/test_interrupts.py::test_killed_verilator_build_leaves_no_make_or_compiler[15]": 24,
    "tests/test_asic.py::test_tiny_asic_report_is_complete_and_reproducible": 22,
    "tests/test_interop_models.py::test_model_imports_and_infer_agrees_with_qonnx[resnet18_4w4a]": 21,
    "tests/test_interrupts.py::test_random_interrupts_leave_nothing_and_the_rerun_is_identical[sim mac]": 21,
    "tests/test_range_bn.py::test_range_unit_bit_exact[verilator-4-3-24-6]": 20,
    "tests/test_runner.py::test_absdiff_passes[1-verilator]": 18,
    "tests/test_range_bn.py::test_range_unit_bit_exact[verilator-16-2-48-8]": 17,
}

#: Modules whose module-scoped fixtures are expensive (a training run, a local sweep, the model
#: zoo): all their tests go to one xdist worker, so that each fixture is built once, not once per
#: worker. Every other test is scheduled on its own.
TOGETHER = {
    "tests/test_sweep.py",          # local_energy, local_synth: two sweeps in this process
    "tests/test_train.py",          # run: a 2-epoch QAT training
    "tests/test_int_train_cli.py",  # int_run: a 2-epoch integer training
    "tests/test_interop.py",        # brevitas_onnx: a Brevitas CNN trained 30 steps
}


def pytest_collection_modifyitems(config, items):
    """The longest tests first (:data:`LONGEST`), then the other slow ones, then the rest.

    With :func:`pytest_xdist_make_scheduler` the two workers take the next test whenever they are
    free, so a long test started first overlaps with the many short ones, and the run ends with
    short tests on both workers (longest-first list scheduling)."""
    items.sort(key=lambda item: (-LONGEST.get(item.nodeid, 0), item.get_closest_marker("slow") is None))


def pytest_xdist_make_scheduler(config, log):
    """``-n N`` (``--dist load``): one test (or one :data:`TOGETHER` module) at a time to whichever
    worker is free, in collection order.

    xdist's own ``load`` scheduler first gives each worker a block of consecutive tests (a quarter
    of its share): with the slow tests sorted first, one worker got all of them and ran them one
    after the other while the other worker ran the short tests."""
    if config.getvalue("dist") != "load":
        return None     # an explicit --dist (loadfile, worksteal...) is kept
    from xdist.scheduler import LoadScopeScheduling

    class LongestFirst(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            module = nodeid.split("::", 1)[0]
            return module if module in TOGETHER else nodeid

    config.option.loadscopereorder = False    # keep the collection order (longest first)
    return LongestFirst(config, log)


@pytest.fixture
def l1bn_cli(capsys):
    """Run ``l1bn ARGV`` in-process; return (exit status, stdout + stderr)."""
    from l1bn.cli.main import main

    def run(argv):
        with pytest.raises(SystemExit) as e:
            main(argv)
        out = capsys.readouterr()
        return e.value.code, out.out + out.err

    return run


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """Run folder of a 1-epoch trained digits CNN (L1-BN, w4a4, seed 0): ``model.pt`` and its
    metrics, trained once per test run. Read only: tests that change a run copy it first."""
    from l1bn.sw.quant import QuantConfig
    from l1bn.sw.train import run_config, train_run

    def build(folder):
        cfg = run_config(model="cnn", norm="l1", qcfg=QuantConfig(wbits=4, abits=4), epochs=1, seed=0)
        train_run(cfg, folder / "run")

    return built_once(tmp_path_factory, "digits", build) / "run"


@pytest.fixture(scope="session")
def trained_export(trained_run, tmp_path_factory):
    """Folder of the export of :func:`trained_run` with its 360 test images: real integer weights
    and activations for the accelerator, MAC array and interop tests. Read only."""
    from l1bn.sw.export import export_run

    return built_once(tmp_path_factory, "digits-export",
                      lambda folder: export_run(trained_run, folder / "export")) / "export"


# ------------------------------------------------ a trained stand-in: QAT L1BN CNN on the digits data

class _QATL1CNN(torch.nn.Module):
    """Minimal 4-bit QAT CNN with L1BN (power-of-two scales, round half up, straight-through).

    A stand-in with the planned digits architecture so that the folding is measured on *trained*
    statistics without depending on the training package.
    """

    def __init__(self, g, w_exp=3, a_exp=2, in_exp=4, bits=4):
        super().__init__()
        self.w_exp, self.a_exp, self.in_exp, self.bits = w_exp, a_exp, in_exp, bits
        self.convs = torch.nn.ParameterList()
        self.bn = []
        cin = 1
        for c in (16, 32, 32):
            self.convs.append(torch.nn.Parameter(torch.randn(c, cin, 3, 3, generator=g) * (cin * 9) ** -0.5))
            cin = c
        self.fc = torch.nn.Parameter(torch.randn(10, 128, generator=g) * 128 ** -0.5)
        self.gamma = torch.nn.ParameterList([torch.nn.Parameter(torch.ones(c)) for c in (16, 32, 32)])
        self.beta = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros(c)) for c in (16, 32, 32)])
        self.stats = [[torch.zeros(c), torch.ones(c)] for c in (16, 32, 32)]  # running mean, running s

    @staticmethod
    def _q(v, exp, lo, hi):
        q = torch.clamp(torch.floor(v * 2 ** exp + 0.5), lo, hi) / 2 ** exp
        return v + (q - v).detach()

    def _w(self, w):
        return self._q(w, self.w_exp, -(1 << (self.bits - 1)), (1 << (self.bits - 1)) - 1)

    def forward(self, x):
        h = self._q(x, self.in_exp, 0, 2 ** self.bits - 1)
        self.acts = []
        for i, (w, s) in enumerate(zip(self.convs, (1, 2, 2), strict=False)):
            h = F.conv2d(h, self._w(w), stride=s, padding=1)
            if self.training:
                mu = h.mean((0, 2, 3))
                sd = (h - mu.view(1, -1, 1, 1)).abs().mean((0, 2, 3))
                with torch.no_grad():
                    self.stats[i][0].mul_(0.9).add_(0.1 * mu)
                    self.stats[i][1].mul_(0.9).add_(0.1 * sd)
            else:
                mu, sd = self.stats[i]
            sigma = (1.2533141373155001 * sd + 1e-5).view(1, -1, 1, 1)
            h = self.gamma[i].view(1, -1, 1, 1) * (h - mu.view(1, -1, 1, 1)) / sigma + self.beta[i].view(1, -1, 1, 1)
            h = self._q(torch.relu(h), self.a_exp, 0, 2 ** self.bits - 1)
            self.acts.append(h.detach())
        return h.flatten(1) @ self._w(self.fc).T

    def input_spec(self):
        return {"shape": (1, 8, 8), "bits": self.bits, "exp": self.in_exp, "signed": False}

    def export_spec(self):
        spec = []
        for i, (w, s) in enumerate(zip(self.convs, (1, 2, 2), strict=False)):
            bn = type("BN", (), dict(norm="l1", running_mean=self.stats[i][0], running_s=self.stats[i][1],
                                     weight=self.gamma[i].detach(), bias=self.beta[i].detach(), eps=1e-5))
            spec.append(dict(name=f"conv{i + 1}", type="conv2d", weight=self._w(w).detach(), w_bits=4,
                             w_exp=self.w_exp, stride=s, padding=1, bn=bn, relu=True, out_bits=4,
                             out_exp=self.a_exp))
        spec.append(dict(name="fc", type="linear", weight=self._w(self.fc).detach(), w_bits=4, w_exp=self.w_exp))
        return spec



def _train_standin():
    """(model, x_test, y_test): the stand-in trained for 8 epochs on the digits training split."""
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    y = torch.tensor(d.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    tr, te = perm[:1437], perm[1437:]
    model = _QATL1CNN(torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(8):
        model.train()
        for idx in tr[torch.randperm(len(tr))].split(64):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return model, x[te], y[te]


@pytest.fixture(scope="session")
def trained_standin(tmp_path_factory):
    """``(model, x_test, y_test)`` of the QAT L1BN stand-in, trained once per test run."""
    def build(folder):
        model, x, y = _train_standin()
        torch.save({"state": model.state_dict(), "stats": model.stats, "x": x, "y": y}, folder / "standin.pt")

    saved = torch.load(built_once(tmp_path_factory, "standin", build) / "standin.pt")
    model = _QATL1CNN(torch.Generator().manual_seed(0))
    model.load_state_dict(saved["state"])
    model.stats = saved["stats"]
    model.eval()
    return model, saved["x"], saved["y"]


@pytest.fixture
def cli_streams(capsys):
    """Run ``l1bn ARGV`` in-process; return (exit status, stdout, stderr); 0 when it returns."""
    from l1bn.cli.main import main

    def run(argv):
        try:
            main(argv)
            code = 0
        except SystemExit as e:
            code = e.code or 0
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


@pytest.fixture
def cli(cli_streams):
    """Run ``l1bn ARGV`` in-process; return (exit status, stdout + stderr); 0 when it returns."""

    def run(argv):
        code, out, err = cli_streams(argv)
        return code, out + err

    return run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A real trained run (MLP, L1, w4a4, one epoch: seconds), shared read-only: copy it to change it."""
    from l1bn.sw.quant import QuantConfig
    from l1bn.sw.train import run_config, train_run

    run = tmp_path_factory.mktemp("tiny") / "run"
    train_run(run_config(model="mlp", norm="l1", qcfg=QuantConfig(wbits=4, abits=4), epochs=1, seed=0), run)
    return run
