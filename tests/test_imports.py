"""No module of the package imports itself back: every ``import`` (top-level or inside a function)
is an edge, and the graph has no cycle, so each layer reads without the ones above it."""
from __future__ import annotations

import ast
from pathlib import Path

import neuroxai

ROOT = Path(neuroxai.__file__).parent


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_of(path: Path, module: str) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """``{module: {package modules it imports}}`` from the source, every ``import`` and
    ``from ... import`` at any depth (a function-level import is still an import). ``from pkg
    import name`` goes to ``pkg.name`` when that is a module, else to ``pkg`` itself."""
    files = {_module_name(p, root): p for p in root.rglob("*.py")}
    top = root.name
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = _package_of(path, mod).split(".")
                    base = base[: len(base) - (node.level - 1)]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                for a in node.names:
                    sub = f"{src}.{a.name}"
                    targets.append(sub if sub in files else src)
            for t in targets:
                # ``import a.b.c`` names a.b.c; keep the longest prefix that is a module of ours
                while t and t not in files:
                    t = t.rpartition(".")[0]
                if t.split(".")[0] == top and t in files and t != mod:
                    graph[mod].add(t)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def mutual_pairs(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((a, b) for a in graph for b in graph[a] if a < b and a in graph.get(b, ()))


def test_graph_sees_relative_absolute_and_function_level_imports(tmp_path):
    pkg = tmp_path / "neuroxai"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .a import f\n")
    (pkg / "sub" / "a.py").write_text("def f():\n    from ..b import g\n    return g\n")
    (pkg / "b.py").write_text("import neuroxai.sub.a\nfrom .sub import f\nfrom . import c\n")
    (pkg / "c.py").write_text("import os\n")
    g = import_graph(pkg)
    assert g["neuroxai.sub.a"] == {"neuroxai.b"}
    assert g["neuroxai.b"] == {"neuroxai.sub.a", "neuroxai.sub", "neuroxai.c"}
    assert g["neuroxai.sub"] == {"neuroxai.sub.a"}
    assert mutual_pairs(g) == [("neuroxai.b", "neuroxai.sub.a")]
    assert find_cycles(g) == [["neuroxai.b", "neuroxai.sub", "neuroxai.sub.a"]]


def test_no_two_modules_import_each_other():
    pairs = mutual_pairs(import_graph())
    assert pairs == [], "modules that import each other:\n" + "\n".join(f"  {a} <-> {b}" for a, b in pairs)


def test_no_import_cycle():
    cycles = find_cycles(import_graph())
    assert cycles == [], "import cycles:\n" + "\n".join("  " + ", ".join(c) for c in cycles)


def test_graph_holds_the_package_s_real_edges():
    # the two tests above would pass on an empty graph: check it sees top-level, relative and
    # function-level imports of the package itself
    g = import_graph()
    assert {"neuroxai.protocol.schema", "neuroxai.progress", "neuroxai.protocol.stages.attribute"} \
        <= g["neuroxai.protocol.runner"]
    assert "neuroxai.data.volume" in g["neuroxai.data.transforms"]
    assert "neuroxai.tasks" in g["neuroxai.protocol.stages.tasks"]  # imported inside build_tasks


# ---------------------------------------------------------------------------------- layering
#: The layers of the pipeline, lowest first (CONVENTIONS.md "Layout"): a module may import its own
#: layer and the ones below, never one above. ``protocol`` is on top: the only place that knows
#: the whole order.
LAYERS = ("data", "tasks", "models", "attribution", "scoring", "report", "protocol")
#: Modules under every layer (errors, atomic writes, safe paths, the registry class, limits,
#: progress, reading older results (compat)): they import no layer, except ``data`` (``limits`` reads a volume's header size).
FOUNDATION = ("errors", "atomic", "safepath", "registry", "limits", "progress", "_memory", "outdir", "safe_yaml", "compat")
#: Entry points above everything: nothing in the package imports them (but each other).
ENTRY = ("cli", "bench")
#: Siblings that stay apart although the order would allow the import: scoring takes any map and
#: mask (a prior study's too), so it imports neither the models nor the attribution methods; the
#: report reads results, never a stage of the runner.
FORBIDDEN = (("neuroxai.scoring", "neuroxai.models"), ("neuroxai.scoring", "neuroxai.attribution"),
             ("neuroxai.report", "neuroxai.protocol.stages"))


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import that breaks the layering above, as ``"a -> b (why)"``."""
    out = []
    for a in sorted(graph):
        la = _layer(a)
        for b in sorted(graph[a]):
            lb = _layer(b)
            if lb in ENTRY and la not in ENTRY:
                out.append(f"{a} -> {b} (an entry point is imported)")
            elif la in FOUNDATION + ("",) and lb not in FOUNDATION + ("", "data"):
                out.append(f"{a} -> {b} (a foundation module imports the {lb} layer)")
            elif la in LAYERS and lb in LAYERS and LAYERS.index(lb) > LAYERS.index(la):
                out.append(f"{a} -> {b} ({la} is below {lb})")
            for lo, hi in FORBIDDEN:
                if _under(a, lo) and _under(b, hi):
                    out.append(f"{a} -> {b} ({lo} never imports {hi})")
    return out


def test_layering_check_catches_each_kind_of_breach():
    g = {"neuroxai.data.volume": {"neuroxai.protocol.schema"},        # data -> protocol
         "neuroxai.scoring.localization": {"neuroxai.models.nets",    # scoring -> models (sibling)
                                           "neuroxai.data.transforms"},  # allowed: down
         "neuroxai.report.build": {"neuroxai.protocol.stages.attribute", "neuroxai.scoring"},
         "neuroxai.errors": {"neuroxai.tasks"},                        # foundation -> a layer
         "neuroxai.models.nets": {"neuroxai.cli"},                     # an entry point
         "neuroxai.protocol.runner": {"neuroxai.report", "neuroxai.data", "neuroxai.errors"}}  # allowed
    got = layering_violations(g)
    assert got == ["neuroxai.data.volume -> neuroxai.protocol.schema (data is below protocol)",
                   "neuroxai.errors -> neuroxai.tasks (a foundation module imports the tasks layer)",
                   "neuroxai.models.nets -> neuroxai.cli (an entry point is imported)",
                   "neuroxai.report.build -> neuroxai.protocol.stages.attribute (report is below protocol)",
                   "neuroxai.report.build -> neuroxai.protocol.stages.attribute "
                   "(neuroxai.report never imports neuroxai.protocol.stages)",
                   "neuroxai.scoring.localization -> neuroxai.models.nets (neuroxai.scoring never imports "
                   "neuroxai.models)"]


def test_every_module_of_the_package_is_in_a_known_layer():
    # a new top-level folder or module must be placed in the layering, or the checks skip it
    known = set(LAYERS) | set(FOUNDATION) | set(ENTRY) | {""}
    assert sorted({_layer(m) for m in import_graph()} - known) == []


def test_the_package_keeps_its_layering():
    """data -> tasks -> models -> attribution -> scoring -> report, protocol on top: data and
    scoring never import protocol or report, scoring neither models nor attribution, the report no
    stage; the audit is an input source, so neither the stages nor the export import it."""
    g = import_graph()
    bad = layering_violations(g)
    assert bad == [], "imports against the layering:\n" + "\n".join("  " + b for b in bad)
    audit = "neuroxai.protocol.audit"
    users = sorted(m for m in g if audit in g[m] and (_under(m, "neuroxai.protocol.stages")
                                                       or m == "neuroxai.protocol.export"))
    assert users == [], f"the stages and the export must not import the audit: {users}"
    assert {"neuroxai.data.bids", "neuroxai.protocol.saved_maps"} <= g[audit]  # the check sees real edges
