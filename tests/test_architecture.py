"""The package dependencies of docs/architecture.md, checked on the source.

Every import counts, at the top of a module or inside a function (lazy imports are still
dependencies): probes/ is the lowest layer, remote/ may use probes/, agent/ may use both,
config/ is data. And one way to do each thing: a name is imported from the module that
defines it, never through a module that only imported it (no re-export shims).
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

CODE = ("agent", "probes", "remote", "config")
MAY_IMPORT = {
    "probes": {"probes", "config"},
    "remote": {"remote", "probes", "config"},
    "agent": {"agent", "probes", "remote", "config"},
    "config": set(),
}


def imports(path: Path, root: Path) -> list[tuple[int, str, list[str]]]:
    """(line, absolute module, imported names) of every import in the file."""
    package = path.relative_to(root).with_suffix("").parts
    package = package[:-1] if package[-1] != "__init__" else package[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else ()
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.append((node.lineno, module, [alias.name for alias in node.names]))
    return found


def sources(root: Path, packages: tuple[str, ...]) -> list[Path]:
    return sorted(p for package in packages for p in (root / package).rglob("*.py"))


def layer_violations(root: Path) -> list[str]:
    problems = []
    for path in sources(root, CODE):
        layer = path.relative_to(root).parts[0]
        for line, module, names in imports(path, root):
            top = (module or names[0]).split(".")[0]
            if top in CODE and top not in MAY_IMPORT[layer]:
                shown = module if "." in module or not names else ".".join(filter(None, [module, names[0]]))
                problems.append(f"{path.relative_to(root)}:{line}: {layer}/ imports {shown}")
    return problems


def defined_and_borrowed(path: Path) -> tuple[set[str], set[str]]:
    """Names a module defines itself, and names it only imports."""
    defined: set[str] = set()
    borrowed: set[str] = set()
    todo = list(ast.parse(path.read_text(encoding="utf-8")).body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defined.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defined |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, ast.Import | ast.ImportFrom):
            borrowed |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.If | ast.Try | ast.With):
            todo += [*node.body, *getattr(node, "orelse", []), *getattr(node, "finalbody", [])]
            todo += [s for h in getattr(node, "handlers", []) for s in h.body]
    return defined, borrowed - defined


def module_file(root: Path, module: str) -> Path | None:
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def reexport_violations(root: Path) -> list[str]:
    problems = []
    cache: dict[Path, tuple[set[str], set[str]]] = {}
    for path in sources(root, (*CODE, "tests", "bench")):
        for line, module, names in imports(path, root):
            target = module_file(root, module) if module.split(".")[0] in CODE else None
            if target is None:
                continue
            _, borrowed = cache.setdefault(target, defined_and_borrowed(target))
            for name in names:
                if name in borrowed and module_file(root, f"{module}.{name}") is None:
                    problems.append(f"{path.relative_to(root)}:{line}: {name} is imported from {module}, which does not define it")
    return problems


def test_packages_depend_one_way():
    assert layer_violations(ROOT) == []


def test_every_name_is_imported_from_where_it_is_defined():
    assert reexport_violations(ROOT) == []


def test_the_checks_see_lazy_imports_and_shims(tmp_path):
    """The two checks above can fail: a function-level import upward and a re-export."""
    for package in CODE:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "agent" / "model.py").write_text("from probes.records import Finding\n")
    (tmp_path / "probes" / "records.py").write_text("class Finding:\n    pass\n")
    (tmp_path / "probes" / "modem.py").write_text("def run():\n    from agent.model import Finding\n")
    (tmp_path / "remote" / "client.py").write_text("from agent import outbox\nfrom .. import config\n")
    assert layer_violations(tmp_path) == [
        "probes/modem.py:2: probes/ imports agent.model",
        "remote/client.py:1: remote/ imports agent.outbox",
    ]
    assert reexport_violations(tmp_path) == ["probes/modem.py:2: Finding is imported from agent.model, which does not define it"]
