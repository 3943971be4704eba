"""The shape of the code base, read from its source: layers, `__all__`, imports, Ray internals.

These are the house rules (DESIGN.md section 2) in executable form, so a change that breaks
one fails here, with the module and name to look at.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ohlcv", "workflows")
# Modules of Ray that are not its public API: only workflows/_ray_compat.py may touch them.
RAY_INTERNALS = ("ray._private", "ray.workflow.common", "ray.workflow.workflow_context", "ray.workflow.workflow_access",
                 "ray.workflow.serialization", "ray.workflow.workflow_storage")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def _all_of(tree: ast.Module) -> list[str] | None:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return list(ast.literal_eval(node.value))
    return None


def _defined(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def _imports(tree: ast.Module, top_level_only: bool = False):
    """(module, imported name or None) for every import, resolved to absolute module names."""
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                yield node.module, alias.name


LEAF_MODULES = [name for name, path in MODULES.items() if path.name not in ("__init__.py", "__main__.py")]


@pytest.mark.parametrize("module", LEAF_MODULES)
def test_every_module_says_what_it_exports_and_exports_what_it_defines(module):
    tree = TREES[module]
    exported = _all_of(tree)
    assert exported is not None, f"{module} has no __all__"
    defined = _defined(tree)
    missing = [name for name in exported if name not in defined]
    assert not missing, f"{module}.__all__ names what it does not define: {missing}"
    public = {name for name in defined if not name.startswith("_") and name not in ("log", "app")} - set(exported)
    # Module constants in capitals may stay private to the module without a leading underscore
    # only if nothing else imports them; functions and classes must be exported or underscored.
    functions = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert not (public & functions), f"{module} defines public {sorted(public & functions)} outside its __all__"


def test_every_import_between_project_modules_uses_the_exported_names():
    wrong = []
    for module, tree in TREES.items():
        for target, name in _imports(tree):
            if target not in MODULES or name is None or f"{target}.{name}" in MODULES:
                continue
            exported = _all_of(TREES[target])
            if exported is not None and name not in exported:
                wrong.append(f"{module} imports {name} from {target}")
    for path in [*ROOT.glob("tests/*.py"), *ROOT.glob("benchmarks/*.py")]:
        for target, name in _imports(ast.parse(path.read_text())):
            if target in MODULES and name is not None and f"{target}.{name}" not in MODULES:
                exported = _all_of(TREES[target])
                if exported is not None and name not in exported:
                    wrong.append(f"{path.relative_to(ROOT)} imports {name} from {target}")
    assert not wrong, "; ".join(wrong)


def test_the_domain_never_imports_ray_or_the_workflows_package():
    offending = [
        f"{module} imports {target}"
        for module, tree in TREES.items() if module.startswith("ohlcv")
        for target, _ in _imports(tree)
        if target.split(".")[0] in ("ray", "raydp", "workflows")
    ]
    assert not offending, offending


def test_only_the_compat_module_touches_rays_internals():
    offending = []
    for module, path in MODULES.items():
        if module == "workflows._ray_compat":
            continue
        text = path.read_text()
        offending += [f"{module} uses {internal}" for internal in RAY_INTERNALS if internal in text]
        for target, name in _imports(TREES[module]):
            if target == "ray.workflow" and name in ("common", "workflow_context", "workflow_access", "serialization"):
                offending.append(f"{module} imports ray.workflow.{name}")
    assert not offending, offending


def test_the_cli_package_has_no_import_cycle():
    graph = {
        module: {target for target, _ in _imports(tree) if target in MODULES and target.startswith("workflows.cli")}
        for module, tree in TREES.items() if module.startswith("workflows.cli")
    }
    # Imports inside functions count too: they hide a cycle, they do not remove it.
    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cycles = [module for module in graph if reaches(module, module, {module})]
    assert not cycles, f"import cycles through {cycles}"


def test_workflows_is_split_into_layers_and_every_module_lives_in_one():
    flat = sorted(p.name for p in (ROOT / "workflows").glob("*.py") if p.name != "__init__.py")
    # runtime (which Ray this process joins) and local_ray (the warm head `ohlcv up` keeps) are
    # shared by every layer; everything else lives in one.
    assert flat == ["_ray_compat.py", "local_ray.py", "runtime.py"], flat
    layers = sorted(p.name for p in (ROOT / "workflows").iterdir() if p.is_dir() and p.name != "__pycache__")
    assert layers == ["cli", "observability", "orchestration", "scheduling", "spark"]


def test_ray_is_the_version_the_compat_module_was_written_for():
    import ray

    from workflows._ray_compat import WRITTEN_FOR_RAY

    assert ray.__version__ == WRITTEN_FOR_RAY, (
        f"ray {ray.__version__} is installed, workflows/_ray_compat.py was written for {WRITTEN_FOR_RAY}: "
        "re-check every wrapper in it against the new Ray before changing the pin"
    )
