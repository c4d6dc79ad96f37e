"""The layers hold: services and the runtime library never import the application.

`streamsight` is the runtime library every service stands on; `streamsight.app` is the
application (CLI, analyze, reports, demo, `up`'s supervisor, test-media generation). A service
that imported the application would drag the CLI and its dependencies into every container.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_services_and_the_runtime_never_import_the_application():
    runtime = [p for p in (REPO / "streamsight").rglob("*.py") if "app" not in p.relative_to(REPO / "streamsight").parts]
    services = list((REPO / "services").rglob("*.py")) + list((REPO / "gateway").rglob("*.py"))
    assert len(runtime) > 10 and len(services) > 40
    offenders = {str(p.relative_to(REPO)): sorted(n for n in _imports(p) if n == "streamsight.app" or n.startswith("streamsight.app."))
                 for p in runtime + services}
    assert {p: names for p, names in offenders.items() if names} == {}


def test_a_service_imports_no_other_service():
    for service in (REPO / "services").iterdir():
        if not (service / "__init__.py").is_file():
            continue
        for path in service.rglob("*.py"):
            others = {n.split(".")[1] for n in _imports(path) if n.startswith("services.") and n.count(".") >= 1}
            assert others <= {service.name}, f"{path.relative_to(REPO)} imports services {sorted(others - {service.name})}"
