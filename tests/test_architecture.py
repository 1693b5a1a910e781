"""The house's shape, checked: stages import only earlier stages, drivers import stages and never the reverse,
no import cycles, few modules at the top, none too long (docs/architecture.md says why)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tagger"

# Lowest first. A module may import its own layer and any layer before it; the drivers share a layer.
LAYERS: list[tuple[str, ...]] = [
    ("tagger.errors", "tagger.fsutil", "tagger.fields", "tagger"),
    ("tagger.config",),
    ("tagger.models",),
    ("tagger.analysis",),
    ("tagger.decision",),
    ("tagger.library",),
    ("tagger.tagging",),
    ("tagger.pipeline",),
    ("tagger.lookup",),
    ("tagger.serving", "tagger.daemon", "tagger.batch", "tagger.integrations"),
    ("tagger.cli", "tagger.__main__"),
]


def _modules() -> dict[str, Path]:
    out = {}
    for p in PACKAGE.rglob("*.py"):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _runtime_imports(path: Path, known: dict[str, Path]) -> set[str]:
    """tagger modules imported at run time (imports under ``if TYPE_CHECKING:`` are for the type checker)."""
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)}
    deps: set[str] = set()
    for n in ast.walk(tree):
        if id(n) in skip:
            continue
        if isinstance(n, ast.ImportFrom) and n.level == 0 and n.module and n.module.split(".")[0] == "tagger":
            deps.add(n.module)
            deps.update(f"{n.module}.{a.name}" for a in n.names if f"{n.module}.{a.name}" in known)
        elif isinstance(n, ast.Import):
            deps.update(a.name for a in n.names if a.name.split(".")[0] == "tagger")
    return {d for d in deps if d in known}


def _layer(module: str) -> int:
    best = (-1, -1)  # (length of the matching prefix, layer)
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best[0]:
                best = (len(name), i)
    assert best[1] >= 0, f"{module} is in no layer: add it to LAYERS and docs/architecture.md"
    return best[1]


def test_stages_import_only_earlier_stages_and_drivers_are_never_imported_by_them():
    known = _modules()
    wrong = [f"{m} -> {d}" for m, p in known.items() for d in _runtime_imports(p, known)
             if _layer(d) > _layer(m)]
    assert not wrong, "imports against the flow:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles():
    known = _modules()
    graph = {m: _runtime_imports(p, known) - {m} for m, p in known.items()}
    # a package imports its own submodules when they are named in its __init__; that is not a cycle
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_few_modules_at_the_top_and_none_too_long():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 8, top
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 450}
    assert not long, f"modules over 450 lines: {long}"


def test_the_layer_table_names_every_package():
    packages = {".".join(p.parent.relative_to(ROOT).parts) for p in PACKAGE.rglob("__init__.py")}
    for pkg in packages:
        _layer(pkg)  # fails naming a package that has no place in the flow
