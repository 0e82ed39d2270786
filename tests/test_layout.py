"""The runtime's layout, checked: no import circles (function-level imports included), no module over 400 lines,
uvicorn internals only under runtime/server/, protocol layers that never import each other or the app."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUNTIME = REPO / "runtime"
MODULES = {
    ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): path
    for path in sorted(RUNTIME.rglob("*.py"))
}


def _imports(module: str, path: Path) -> set[str]:
    """Every runtime module `module` imports, at any depth of its code (functions and TYPE_CHECKING included)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module and name != "runtime":
                found.add(name)
    return found


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _cycle_from(start: str) -> list[str] | None:
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, trail = stack.pop()
        for nxt in GRAPH[node]:
            if nxt == start:
                return [*trail, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*trail, nxt]))
    return None


def test_the_graph_is_real() -> None:
    assert "runtime.service" in GRAPH["runtime.http.predict"]
    assert "runtime.http.app" in GRAPH["runtime.server.serve"]
    assert {"runtime.service", "runtime.tensors", "runtime.triton"} <= GRAPH["runtime.grpc.servicer"] | GRAPH[
        "runtime.grpc.tensors"
    ]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_circle(module: str) -> None:
    cycle = _cycle_from(module)
    assert cycle is None, " -> ".join(cycle or [])


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_over_400_lines(module: str) -> None:
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= 400, f"{MODULES[module].relative_to(REPO)} has {lines} lines"


LAYERS = ["runtime.http.predict", "runtime.http.v2", "runtime.http.stream", "runtime.http.docs"]


@pytest.mark.parametrize("layer", LAYERS)
def test_protocol_layers_are_siblings_over_the_service(layer: str) -> None:
    assert not GRAPH[layer] & {"runtime.http.app", *LAYERS} - {layer}


def test_http_and_grpc_are_siblings() -> None:
    """gRPC reuses the core (tensor rules, Triton builders, service), never the HTTP layer; and the reverse."""
    grpc_modules = [m for m in MODULES if m.startswith("runtime.grpc")]
    assert "runtime.grpc.servicer" in grpc_modules
    for module in grpc_modules:
        assert not {m for m in GRAPH[module] if m.startswith(("runtime.http", "runtime.server"))}, module
    for module in (m for m in MODULES if m.startswith("runtime.http")):
        assert not {m for m in GRAPH[module] if m.startswith("runtime.grpc")}, module


def test_the_core_knows_no_protocol_and_no_server() -> None:
    protocols = ("runtime.http", "runtime.grpc", "runtime.server")
    core = [m for m in MODULES if not m.startswith((*protocols, "runtime.__main__"))]
    for module in core:
        assert not {m for m in GRAPH[module] if m.startswith(protocols)}, module


def test_uvicorn_internals_only_under_runtime_server() -> None:
    for module, path in MODULES.items():
        if module.startswith("runtime.server"):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("uvicorn."):
                pytest.fail(f"{module} imports {node.module}")
            if isinstance(node, ast.Import) and any(a.name.startswith("uvicorn.") for a in node.names):
                pytest.fail(f"{module} imports a uvicorn submodule")
            if isinstance(node, ast.Attribute) and node.attr in ("server_state", "_transport"):
                pytest.fail(f"{module} reads uvicorn's {node.attr}")
