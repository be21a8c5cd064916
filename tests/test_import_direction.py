"""Dependencies point one way: the product (library, flows, tasks, deployments) never imports the emulator
or the dev tooling, and the emulator takes from the library only what Metriport itself defines (webhook
signing, the API's models), with no import circle inside it. Read from the source with `ast`, so a lazy
import inside a function counts."""

from __future__ import annotations

import ast
import graphlib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("metriport_flows", "flows", "tasks", "deployments")
EMULATOR_MAY_IMPORT = {"metriport_flows.client.signing", "metriport_flows.client.models"}


def imports(folder: str) -> Iterator[tuple[str, str]]:
    """(file, imported module) for every import statement of every module under `folder`."""
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                yield from ((str(path.relative_to(ROOT)), alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                yield str(path.relative_to(ROOT)), node.module


def top(module: str) -> str:
    return module.partition(".")[0]


@pytest.mark.parametrize("folder", PRODUCT)
def test_the_product_never_imports_the_emulator_or_the_dev_tooling(folder: str) -> None:
    found = list(imports(folder))
    assert found, f"no imports read under {folder}/"
    assert [(f, m) for f, m in found if top(m) in {"metriport_sandbox", "metriport_devtools"}] == []


def test_the_emulator_imports_only_signing_and_models_from_the_library() -> None:
    library = {(f, m) for f, m in imports("metriport_sandbox") if top(m) in PRODUCT}
    assert library, "the emulator signs its webhooks with the library's signer"
    assert {(f, m) for f, m in library if m not in EMULATOR_MAY_IMPORT} == set()


def test_the_emulator_has_no_import_circle() -> None:
    """Each operation family is given the core, the backend composes them, routers share `deps`."""
    graph: dict[str, set[str]] = {}
    for file, module in imports("metriport_sandbox"):
        importer = file.removesuffix(".py").replace("/", ".")
        graph.setdefault(importer, set())
        if module.startswith("metriport_sandbox.") and module != importer:
            graph[importer].add(module)
    assert len(graph) > 20
    list(graphlib.TopologicalSorter(graph).static_order())  # raises CycleError naming the circle
