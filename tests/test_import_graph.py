"""The import graph of the whole ``l1bn`` package, built statically (``ast``, every ``import``
statement, including those inside functions): no cycle, the layering of the project guide
(``spec`` imports no other l1bn package and no torch/amaranth; ``hw`` imports only ``spec``; the
shared top-level modules of ``sim`` import none of its flow subpackages), and no private name
imported across modules.

The packages and their folders come from pyproject.toml (``[tool.setuptools.package-dir]``), so a
new subpackage is checked as soon as it is installable; a folder with an ``__init__.py`` that
pyproject.toml does not list fails here.

Edges: ``A`` imports ``m`` gives ``A -> m``. ``from p import x`` gives ``A -> p.x`` when ``p.x`` is
a module, else ``A -> p``. Importing a module from outside its package also runs the package's
``__init__``, so ``A -> p`` is added for every package ``p`` above ``m`` that does not hold ``A``
(a package ``__init__`` importing its own submodules is not a cycle; a package whose ``__init__``
imports a module that imports back into the package from outside is).
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("spec", "hw", "sw", "sim", "cli")


def package_dirs(root: Path = ROOT) -> dict[str, Path]:
    """``{package: folder}`` of every l1bn package, from pyproject.toml."""
    cfg = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = cfg["package-dir"]
    out = {}
    for pkg in cfg["packages"]:
        # as setuptools does: the folder of the nearest listed ancestor, plus the rest of the name
        head, rest = pkg, []
        while head not in dirs:
            assert "." in head, f"pyproject.toml: no package-dir entry covers {pkg}"
            head, _, last = head.rpartition(".")
            rest.insert(0, last)
        out[pkg] = root / dirs[head] / Path(*rest)
    return out


def modules(pkgs: dict[str, Path]) -> dict[str, Path]:
    """``{module name: file}``; a package is its ``__init__.py`` (where it has one)."""
    out = {}
    for pkg, folder in pkgs.items():
        if (folder / "__init__.py").exists():
            out[pkg] = folder / "__init__.py"
        for f in folder.glob("*.py"):
            if f.name != "__init__.py":
                out[f"{pkg}.{f.stem}"] = f
    return out


def _resolve(mod: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    """The absolute module name of ``from <node.module> import ...`` inside ``mod``."""
    if not node.level:
        return node.module or ""
    parts = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = parts[:len(parts) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(mods: dict[str, Path]) -> dict[str, list[tuple[str, str | None, int]]]:
    """Per module, every import: ``(imported module, name or None, line)``; ``name`` is the
    name of a ``from ... import name`` (None for ``import m``)."""
    out = {}
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        is_pkg = path.name == "__init__.py"
        found = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [(a.name, None, node.lineno) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
                src = _resolve(mod, is_pkg, node)
                found += [(src, a.name, node.lineno) for a in node.names]
        out[mod] = found
    return out


def _target(name: str, mods) -> str | None:
    """The nearest l1bn module that ``name`` is or is inside of (None: not an l1bn module)."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def graph(mods, imps) -> dict[str, dict[str, int]]:
    """``{module: {imported l1bn module: first line}}`` with the package edges described in the
    module docstring."""
    g = {m: {} for m in mods}
    for mod, found in imps.items():
        for src, name, line in found:
            full = f"{src}.{name}" if name and f"{src}.{name}" in mods else src
            tgt = _target(full, mods)
            if tgt is None or tgt == mod:
                continue
            g[mod].setdefault(tgt, line)
            parts = tgt.split(".")
            for i in range(1, len(parts)):
                pkg = ".".join(parts[:i])
                if pkg in mods and pkg != mod and not mod.startswith(pkg + "."):
                    g[mod].setdefault(pkg, line)
    return g


def find_cycle(g: dict[str, dict[str, int]]) -> list[str] | None:
    """One cycle of ``g`` as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}      # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in sorted(g.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state:
                c = visit(n)
                if c:
                    return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state:
            c = visit(m)
            if c:
                return c
    return None


def _show(cycle, g, mods) -> str:
    return "\n".join(f"  {a} ({mods[a].relative_to(ROOT)}:{g[a][b]}) -> {b}"
                     for a, b in zip(cycle, cycle[1:], strict=False))


@pytest.fixture(scope="module")
def tree():
    pkgs = package_dirs()
    mods = modules(pkgs)
    imps = imports(mods)
    return pkgs, mods, imps, graph(mods, imps)


def test_every_package_folder_is_in_pyproject(tree):
    pkgs = tree[0]
    listed = {p.resolve() for p in pkgs.values()}
    on_disk = {f.parent.resolve() for top in PACKAGES for f in (ROOT / top).rglob("*.py")
               if "__pycache__" not in f.parts}
    assert not sorted(on_disk - listed), \
        f"package folders missing from pyproject.toml [tool.setuptools]: {sorted(on_disk - listed)}"
    assert {p.split(".")[1] for p in pkgs} == set(PACKAGES)


def test_no_import_cycle(tree):
    _, mods, _, g = tree
    cycle = find_cycle(g)
    assert cycle is None, "import cycle:\n" + _show(cycle, g, mods)


def _external(imps, mod) -> set[str]:
    """Top-level names of the non-l1bn packages ``mod`` imports."""
    return {src.split(".")[0] for src, _, _ in imps[mod] if not src.startswith("l1bn")} - {""}


def _layer_violations(tree, prefix: str, allowed: tuple[str, ...], banned_ext: set[str]) -> list[str]:
    _, mods, imps, g = tree
    bad = []
    for mod in sorted(m for m in mods if m == prefix or m.startswith(prefix + ".")):
        for tgt, line in sorted(g[mod].items()):
            if not any(tgt == a or tgt.startswith(a + ".") for a in allowed):
                bad.append(f"{mods[mod].relative_to(ROOT)}:{line} imports {tgt}")
        for ext in sorted(_external(imps, mod) & banned_ext):
            line = next(ln for s, _, ln in imps[mod] if s.split(".")[0] == ext)
            bad.append(f"{mods[mod].relative_to(ROOT)}:{line} imports {ext}")
    return bad


def test_spec_imports_no_other_package(tree):
    bad = _layer_violations(tree, "l1bn.spec", ("l1bn.spec",), {"torch", "amaranth"})
    assert not bad, "l1bn.spec must import no other l1bn package, no torch, no amaranth:\n" + "\n".join(bad)


def test_hw_imports_only_spec(tree):
    bad = _layer_violations(tree, "l1bn.hw", ("l1bn.hw", "l1bn.spec"), {"torch"})
    assert not bad, "l1bn.hw may import only l1bn.spec (and no torch):\n" + "\n".join(bad)


def test_sim_shared_modules_import_no_flow(tree):
    """The top-level modules of ``l1bn.sim`` (jobs, executors, tools, ...) are the layer the
    flows share: they import none of the flow subpackages."""
    pkgs, mods, _, g = tree
    flows = tuple(p for p in pkgs if p.startswith("l1bn.sim."))
    bad = []
    for mod in sorted(m for m in mods if m.rpartition(".")[0] == "l1bn.sim" and m not in pkgs):
        for tgt, line in sorted(g[mod].items()):
            if any(tgt == f or tgt.startswith(f + ".") for f in flows):
                bad.append(f"{mods[mod].relative_to(ROOT)}:{line} imports {tgt}")
    assert not bad, "shared l1bn.sim modules importing a flow subpackage:\n" + "\n".join(bad)


def private_imports(mods, imps) -> set[tuple[str, str, str]]:
    """``(importing module, imported module, name)`` for every private name (``_x``, not a
    dunder) imported from another l1bn module."""
    out = set()
    for mod, found in imps.items():
        for src, name, _ in found:
            tgt = _target(src, mods)
            if tgt is None or tgt == mod:
                continue
            last = name if name is not None else src.rpartition(".")[2]
            if last.startswith("_") and not last.startswith("__"):
                out.add((mod, tgt, last))
    return out


def test_no_private_import_across_modules(tree):
    _, mods, imps, _ = tree
    found = private_imports(mods, imps)
    new = sorted(found)
    assert not new, ("private names imported from another module (make the name public, in the "
                     "lower-level module):\n" + "\n".join(f"  {m} imports {t}.{n}" for m, t, n in new))
