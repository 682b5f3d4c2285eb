"""The import graph: no cycles between project modules, and no import upward against the layering contract.

Layers, lowest first (ARCHITECTURE.md): shared infrastructure → the contract (policy, prompt, verdict, split names) →
data_gen / rewards → inference (model loading, generation, engines) → training → evals / serve → entry points and
benchmarks. A module may import its own layer or lower ones, never a higher one. Imports are read from the source
(AST), function-level ones included, so a cycle cannot hide inside a function body.
"""

from __future__ import annotations

import ast
from pathlib import Path

from moderation.paths import REPO_ROOT

INFRA = {
    "moderation.errors",
    "moderation.config",
    "moderation.paths",
    "moderation.jsonl",
    "moderation.secrets",
    "moderation.ids",
    "moderation.files",
    "moderation.provenance",
    "moderation.plotting",
    "moderation.openai_client",
    "moderation.retrying",
}
CONTRACT = {"moderation.policy", "moderation.prompt", "moderation.verdict", "moderation.splits"}
LAYER_OF_PACKAGE = {"data_gen": 2, "rewards": 2, "inference": 3, "training": 4, "evals": 5, "serve": 5}
TOP = 6  # entry-point scripts, benchmarks
SOURCES = ["moderation", "data_gen", "rewards", "inference", "training", "evals", "serve", "benchmarks"]


def layer(module: str) -> int:
    if module in INFRA:
        return 0
    if module in CONTRACT:
        return 1
    return LAYER_OF_PACKAGE.get(module.split(".")[0], TOP)


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    files = [p for folder in SOURCES for p in (REPO_ROOT / folder).rglob("*.py")]
    files += list(REPO_ROOT.glob("*.py"))
    return {module_name(p): p for p in files}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules that `path` imports (`from pkg import mod` resolves to `pkg.mod` when that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module for a in node.names
            ]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None (depth-first search, white/grey/black)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def package_of(module: str) -> str:
    return module.split(".")[0]


def test_no_import_cycles_between_modules():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_import_cycles_between_packages():
    edges: dict[str, set[str]] = {}
    for source, targets in graph().items():
        edges.setdefault(package_of(source), set()).update(
            package_of(t) for t in targets if package_of(t) != package_of(source)
        )
    cycle = find_cycle(edges)
    assert cycle is None, "package cycle: " + " -> ".join(cycle)


def test_no_upward_imports():
    upward = sorted(
        f"{source} (layer {layer(source)}) imports {target} (layer {layer(target)})"
        for source, targets in graph().items()
        for target in targets
        if layer(target) > layer(source)
    )
    assert not upward, "\n".join(upward)


def external_imports_of(path: Path) -> set[str]:
    """Top-level names of every package `path` imports, function-level imports included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_the_contract_and_infrastructure_import_no_torch():
    """moderation/ is the pure contract plus infrastructure: loading it never pulls in the torch runtime (that is
    inference/'s job), so data_gen, rewards and the CLIs stay light."""
    heavy = {"torch", "transformers", "peft", "trl", "accelerate", "vllm", "ctranslate2"}
    offending = sorted(
        f"{name} imports {', '.join(sorted(external_imports_of(path) & heavy))}"
        for name, path in project_modules().items()
        if name.split(".")[0] == "moderation" and external_imports_of(path) & heavy
    )
    assert not offending, "\n".join(offending)


def test_the_checker_sees_cycles_and_function_level_imports(tmp_path):
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from evals import runner\n    import serve.app\n")
    modules = {"evals.runner": source, "evals": source, "serve.app": source, "serve": source}
    assert imports_of(source, modules) == {"evals.runner", "serve.app"}
    source.write_text("import os\n\ndef f():\n    from transformers import AutoModel\n    import torch.nn\n")
    assert external_imports_of(source) == {"os", "transformers", "torch"}
