"""The norm registry (:mod:`l1bn.spec.norms`) is the one place that says what differs per norm:
no shared module branches on a norm's name.

The check reads every module of the shared code (``spec``, ``hw``, ``sw``, ``sim``, ``cli`` and
``bench``) with ``ast`` and reports, as ``file:line``, each place that

- compares something with a registered norm's name (``norm == "l1"``, ``"l1" in name``,
  ``norm in ("l1", "l2")``),
- uses a norm's name as a dict key (``{"l1": ...}``) or a subscript (``out["l1"]``),
- iterates over a literal list of norm names (``for norm in ("l1", "l2")``).

Excluded are the registry itself and each norm's own modules, the ones its entry names: the
module of its forward unit's dispersion datapath and of its backward term (``hw/bn_l1.py``,
``hw/bn_l2.py``, ``hw/bn_range.py``) and of its torch layers (``sw/range_bn.py``; L2's are
``torch.nn``'s). Naming a norm elsewhere is allowed (a default argument, a class stating the norm
it implements); deciding by it is not.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from l1bn.spec.norms import NORMS, resolve
from test_import_graph import ROOT, modules, package_dirs


def own_modules() -> set[Path]:
    """The files of every norm's own modules (and the registry)."""
    import l1bn.spec.norms as registry

    own = {Path(inspect.getsourcefile(registry)).resolve()}
    for spec in NORMS.values():
        objs = [resolve(spec.hw_unit).dispersion]
        if spec.hw_backward:
            objs.append(resolve(spec.hw_backward).term)
        objs += [resolve(p) for p in (spec.layer1d, spec.layer2d) if p]
        for obj in objs:
            f = Path(inspect.getsourcefile(obj)).resolve()
            if ROOT in f.parents:            # torch.nn's layers are not ours
                own.add(f)
    return own


def shared_files() -> list[Path]:
    """Every module of spec, hw, sw, sim, cli and bench but the norms' own ones."""
    files = [f.resolve() for f in modules(package_dirs()).values()]
    files += sorted((ROOT / "bench").glob("*.py"))
    own = own_modules()
    return sorted(f for f in files if f not in own)


def _is_name(node, names) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names


def _names_in(node, names) -> bool:
    """A literal tuple/list/set holding a norm's name."""
    return isinstance(node, ast.Tuple | ast.List | ast.Set) and any(_is_name(e, names) for e in node.elts)


def norm_branches(source: str, names) -> list[tuple[int, str]]:
    """``(line, what)`` of each comparison with, dict key of, subscript by or iteration over a
    name of ``names`` in ``source``."""
    hits = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(_is_name(o, names) or _names_in(o, names) for o in operands):
                hits.append((node.lineno, "compares with a norm's name"))
        elif isinstance(node, ast.Dict):
            if any(k is not None and _is_name(k, names) for k in node.keys):
                hits.append((node.lineno, "a norm's name as a dict key"))
        elif isinstance(node, ast.Subscript):
            if _is_name(node.slice, names):
                hits.append((node.lineno, "subscript by a norm's name"))
        elif isinstance(node, ast.For | ast.comprehension):
            if _names_in(node.iter, names):
                hits.append((getattr(node, "lineno", node.iter.lineno), "iterates over norm names"))
    return hits


def branch_report(files, root: Path = ROOT) -> list[str]:
    """``file:line: what: source line`` of each norm-name branch in ``files`` (paths relative to
    ``root``)."""
    names = set(NORMS)
    out = []
    for f in files:
        text = f.read_text()
        out += [f"{f.relative_to(root)}:{line}: {what}: {text.splitlines()[line - 1].strip()}"
                for line, what in norm_branches(text, names)]
    return out


def test_no_branch_on_norm_names_in_shared_code():
    """What differs per norm sits in its registry entry or in that norm's own module: no shared
    module compares with, keys by or iterates over registered norm names."""
    files = shared_files()
    assert len(files) > 100 and (ROOT / "hw" / "bn_l1.py").resolve() not in files
    assert (ROOT / "sim" / "report" / "analytic.py").resolve() in files
    hits = branch_report(files)
    assert hits == [], "branches on norm names in shared code:\n" + "\n".join(hits)


def test_the_check_finds_each_form():
    """The scanner flags every form it is meant to (so the test above can fail), and not a
    default argument, a class attribute or a docstring."""
    names = set(NORMS)
    bad = ['if cfg.norm == "l1":\n    pass\n',
           'x = "l1" if "l1" in type(bn).__name__ else "l2"\n',
           'y = norm != "range"\n',
           'z = norm in ("l1", "l2")\n',
           'cls = {"l1": 1, "l2": 2}[norm]\n',
           'v = out["l2"]\n',
           'for norm in ("l1", "l2"):\n    pass\n',
           'w = [n for n in ["l1", "range"]]\n']
    for src in bad:
        assert [line for line, _ in norm_branches(src, names)] and \
            norm_branches(src, names)[0][0] == 1, src
    ok = 'def f(norm: str = "l1"):\n    """norm == "l1" here."""\n\nclass U:\n    norm = "l2"\n'
    assert norm_branches(ok, names) == []


def test_a_planted_branch_is_reported_with_file_and_line(tmp_path):
    """A branch planted in a copy of a shared module is reported with its file and line."""
    lines = (ROOT / "sim" / "report" / "analytic.py").read_text().splitlines()
    lines.insert(20, 'FLAG = {"l1": 1}')
    planted = tmp_path / "sim" / "analytic.py"
    planted.parent.mkdir()
    planted.write_text("\n".join(lines) + "\n")
    assert branch_report([planted], root=tmp_path) == [
        "sim/analytic.py:21: a norm's name as a dict key: FLAG = {\"l1\": 1}"]


def test_backward_sign_in_flag_matches_the_unit():
    """The registry's ``backward_sign_in`` (read by the CLI without importing the hardware) says
    what the unit's term says."""
    for spec in NORMS.values():
        if spec.hw_backward:
            assert resolve(spec.hw_backward).term.takes_sign is spec.backward_sign_in, spec.name


def test_commands_follow_the_registry():
    """``l1bn verilog`` and ``l1bn prove`` build one forward command per norm and one backward
    command per norm with a backward unit, with the registry's help."""
    import click
    from l1bn.cli.prove import prove
    from l1bn.cli.verilog import verilog
    from l1bn.sim.formal.designs import DESIGNS
    from l1bn.spec.norms import backward_norms

    bn = {f"{nm}bn" for nm in NORMS}
    bwd = {f"{nm}bn-bwd" for nm in backward_norms()}
    assert bwd and set(verilog.commands) == bn | bwd | {"mac", "net", "train"}
    assert set(prove.commands) == bn | bwd | {"mac", "requant", "accel", "train"} == set(DESIGNS)
    # the training accelerator takes every norm with a backward unit
    train_norm = next(p for p in prove.commands["train"].params if p.name == "norm")
    assert tuple(train_norm.type.choices) == backward_norms()
    ctx = click.Context(verilog)
    for nm in backward_norms():
        cmd = verilog.commands[f"{nm}bn-bwd"]
        assert cmd.get_short_help_str(200) == NORMS[nm].backward_help
        assert ("--sign-in" in [o for p in cmd.get_params(ctx) for o in p.opts]) is NORMS[nm].backward_sign_in


def test_backward_energy_takes_the_registry_ops(monkeypatch):
    """The analytic backward energy lists exactly the norm's registry operations besides the
    shared ones, and a changed registry op changes the estimate."""
    import dataclasses

    from l1bn.sim.report.analytic import analytic_energy
    from l1bn.sim.report.units import backward_config
    from l1bn.spec import norms
    from l1bn.spec.norms import backward_norms

    names = {nm: [op[0] for op in NORMS[nm].backward_ops] for nm in backward_norms()}
    shared = None
    for nm in backward_norms():
        got = [k for k, _ in analytic_energy("backward", backward_config(nm, 8, n=64, channels=4))["ops"]]
        assert [k for k in got if k in names[nm]] == names[nm]
        rest = [k for k in got if k not in names[nm]]
        assert shared is None or rest == shared
        shared = rest
    nm = backward_norms()[0]
    cfg = backward_config(nm, 8, n=64, channels=4)
    before = analytic_energy("backward", cfg)["pj"]
    spec = NORMS[nm]
    bigger = dataclasses.replace(spec, backward_ops=spec.backward_ops + (("extra", "mul", lambda b: 16),))
    monkeypatch.setitem(norms.NORMS, nm, bigger)
    assert analytic_energy("backward", cfg)["pj"] > before
