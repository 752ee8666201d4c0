"""The package's architecture, checked: imports point down the layer order, no cycles, no private names across
modules, no argparse outside the CLI, and ``--help`` imports no torch."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hfsoup"

#: The layer order: a module may import its own layer or a lower one, never a higher one.
LAYERS = ["errors", "core", "data", "eval", "recipes", "hub", "zoo", "study", "cli"]
#: Entry points (``python -m …`` shims) sit with the CLI.
ENTRY_POINTS = {"hfsoup.__main__", "hfsoup.train", "hfsoup.study.__main__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int | None:
    """Index in :data:`LAYERS`; None for the lazy façade ``hfsoup`` itself."""
    if module in ENTRY_POINTS:
        return LAYERS.index("cli")
    parts = module.split(".")
    if len(parts) == 1:
        return None
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else None


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(path: Path, name: str, known: set[str]) -> list[tuple[str, list[str], int]]:
    """(target module, imported names, line) for every import in the file, at any depth, plus importlib strings
    ``"hfsoup.x[:fn]"``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parent = base[: len(base) - (node.level - 1)]
                mod = ".".join(parent + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("hfsoup"):
                continue
            names = [a.name for a in node.names]
            submodules = [f"{mod}.{n}" for n in names if f"{mod}.{n}" in known]
            if submodules:  # `from pkg import module`
                out += [(s, [], node.lineno) for s in submodules]
                names = [n for n in names if f"{mod}.{n}" not in known]
            if names or not submodules:
                out.append((mod, names, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("hfsoup")]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("hfsoup."):
            target = node.value.split(":")[0]
            if target in known:
                out.append((target, [], node.lineno))
    return out


def edges() -> dict[str, list[tuple[str, list[str], int]]]:
    mods = modules()
    known = set(mods)
    return {m: imports(p, m, known) for m, p in mods.items()}


def test_imports_point_down_the_layer_order():
    bad = []
    for src, targets in edges().items():
        if src == "hfsoup":  # the lazy façade names every public module
            continue
        ls = layer(src)
        for target, _, line in targets:
            lt = layer(target)
            if ls is None or lt is None:
                continue
            if lt > ls:
                bad.append(f"{src}:{line} imports {target} ({LAYERS[ls]} -> {LAYERS[lt]})")
    assert not bad, "imports pointing up the layers:\n" + "\n".join(bad)


def test_no_import_cycles():
    graph = {m: {t for t, _, _ in ts if t != m and t != "hfsoup" and not m.startswith(t + ".")}
             for m, ts in edges().items()}
    graph = {m: {t for t in ts if t in graph} for m, ts in graph.items()}
    cycles = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    cycles.append(" -> ".join(path + [start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles))[:10])


def test_no_private_names_imported_across_modules():
    bad = []
    for src, targets in edges().items():
        for target, names, line in targets:
            if target == src:
                continue
            bad += [f"{src}:{line} imports {n} from {target}" for n in names if n.startswith("_") and n != "__version__"]
    assert not bad, "private names imported across modules:\n" + "\n".join(bad)


def test_argparse_lives_in_the_cli_only():
    bad = []
    for name, path in modules().items():
        if layer(name) == LAYERS.index("cli"):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) and any(a.name == "argparse" for a in node.names):
                bad.append(f"{name}:{node.lineno}")
            if isinstance(node, ast.ImportFrom) and node.module == "argparse":
                bad.append(f"{name}:{node.lineno}")
    assert not bad, "argparse imported by library modules:\n" + "\n".join(bad)


def test_the_guard_sees_function_level_and_string_imports(tmp_path):
    """The checks above would pass vacuously if the walker missed imports: check it finds all three kinds."""
    mods = modules()
    found = imports(mods["hfsoup.__init__".replace(".__init__", "")], "hfsoup", set(mods))
    assert any(t == "hfsoup.core.models" for t, _, _ in found)  # an importlib string
    f = tmp_path / "probe.py"
    f.write_text("def f():\n    from hfsoup.core import averaging\n    from hfsoup.recipes.mix import mix\n")
    found = imports(f, "hfsoup.core.probe", set(mods))
    assert ("hfsoup.core.averaging", [], 2) in found and ("hfsoup.recipes.mix", ["mix"], 3) in found


HELP_PROBE = """
import contextlib, io, json, sys
from hfsoup.cli import main
out = {}
for argv in ARGVS:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            main(argv)
        except SystemExit:
            pass
    out[" ".join(argv)] = sorted(m for m in ("torch", "timm", "torchvision", "datasets") if m in sys.modules)
print(json.dumps(out))
"""


def help_argvs() -> list[list[str]]:
    return [["--help"], ["mix", "--help"], ["soup", "--help"], ["eval", "--help"], ["push", "--help"],
            ["data", "--help"], ["data", "cifar100c", "--help"], ["zoo", "--help"], ["zoo", "push", "--help"],
            ["zoo", "pull", "--help"], ["zoo", "list", "--help"], ["zoo", "init", "--help"],
            ["zoo", "build", "--help"], ["demo", "--help"], ["study", "--help"], ["study", "run", "--help"]]


@pytest.mark.parametrize("argv", help_argvs(), ids=lambda a: " ".join(a))
def test_help_imports_no_torch(argv):
    code = HELP_PROBE.replace("ARGVS", repr([argv]))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded == {" ".join(argv): []}, f"`hfsoup {' '.join(argv)}` imported {loaded}"


def test_import_hfsoup_is_lazy_and_timm_still_sees_the_cifar_models():
    code = ("import sys, hfsoup; assert 'torch' not in sys.modules and 'timm' not in sys.modules, 'eager';"
            "import timm; m = timm.create_model('resnet10_cifar_nano', num_classes=10);"
            "print(type(m).__name__, m.conv1.kernel_size, sorted(set(hfsoup.list_recipes())))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[:3] == ["CifarResNet", "(3,", "3)"]
    for name in ("mix", "uniform", "greedy", "radin", "learned", "ensemble"):
        assert f"'{name}'" in proc.stdout


def test_every_public_name_resolves_from_its_module():
    import importlib

    import hfsoup

    for name, module in hfsoup._EXPORTS.items():
        assert getattr(hfsoup, name) is getattr(importlib.import_module(module), name), name
    assert sorted(set(hfsoup.__all__) - {"__version__"}) == sorted(hfsoup._EXPORTS)
