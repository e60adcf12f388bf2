"""The package's import graph: no cycle between its parts (subpackages and top-level modules), and nothing below
the command line and the service imports them. Every import counts, those inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

import sk_deploy

ROOT = Path(sk_deploy.__file__).parent
TOP = ("cli", "service")  # the two front ends: nothing else may import them


def _part(module: str) -> str | None:
    """``sk_deploy.graph.passes.cleanup`` -> ``graph``; ``sk_deploy.bundle`` -> ``bundle``; others None."""
    names = module.split(".")
    return names[1] if names[0] == "sk_deploy" and len(names) > 1 else None


def _module_name(path: Path) -> str:
    relative = path.relative_to(ROOT.parent).with_suffix("")
    names = list(relative.parts)
    return ".".join(names[:-1] if names[-1] == "__init__" else names)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute, relative resolved), wherever in the file."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base
                                                                                                  else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # ``from sk_deploy import bundle``
    return found


def part_graph() -> nx.DiGraph:
    """Which part of sk_deploy imports which (edges carry one example module)."""
    graph = nx.DiGraph()
    for path in sorted(ROOT.rglob("*.py")):
        source = _part(_module_name(path))
        if source is None:
            continue
        graph.add_node(source)
        for imported in _imports(path):
            target = _part(imported)
            if target and target != source and ((ROOT / target).is_dir() or (ROOT / f"{target}.py").is_file()):
                graph.add_edge(source, target, example=_module_name(path))
    return graph


def test_the_graph_sees_the_known_edges() -> None:
    graph = part_graph()
    assert graph.has_edge("cli", "runtime") and graph.has_edge("runtime", "bundle")
    assert graph.has_edge("engines", "machine") and graph.has_edge("service", "runtime")
    assert {"cli", "service", "bundle", "machine", "graph", "runtime", "engines"} <= set(graph)


def test_no_import_cycle_between_parts() -> None:
    graph = part_graph()
    cycles = [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]
    described = [" <-> ".join(c) + ": " + ", ".join(f"{a}->{b} ({graph.edges[a, b]['example']})"
                                                   for a in c for b in c if graph.has_edge(a, b)) for c in cycles]
    assert not cycles, "import cycles: " + "; ".join(described)


def test_nothing_below_imports_the_command_line_or_the_service() -> None:
    graph = part_graph()
    upward = [(a, b, graph.edges[a, b]["example"]) for a, b in graph.edges
              if b in TOP and a not in (*TOP, "__main__")]
    assert not upward, f"imports from below into cli/service: {upward}"
    assert not graph.has_edge("service", "cli")
