"""The package's shape: no import cycle, and no arrow that points the wrong way.

Every import of squeeze_span's own modules counts, at the top of a file or inside a function
(a lazy import still ties the two modules together). Importing ``squeeze_span.a.b`` also runs
``squeeze_span/a/__init__.py``, so it depends on that package too.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "squeeze_span"

# (importer prefix, forbidden import prefixes, why)
FORBIDDEN = [
    ("squeeze_span.train", ("squeeze_span.cli", "squeeze_span.demo", "squeeze_span.experiments"), "the loop"),
    ("squeeze_span.experiments", ("squeeze_span.cli", "squeeze_span.demo"), "jobs are built from the library"),
    (
        "squeeze_span.eval",
        ("squeeze_span.cli", "squeeze_span.demo", "squeeze_span.experiments", "squeeze_span.train"),
        "evaluation",
    ),
    (
        "squeeze_span.config",
        (
            "squeeze_span.generators",
            "squeeze_span.models",
            "squeeze_span.methods",
            "squeeze_span.train",
            "squeeze_span.data",
            "squeeze_span.eval",
        ),
        "the config names things",
    ),
    ("squeeze_span.losses", ("squeeze_span.",), "losses are pure"),
]
for lower in ("squeeze_span.models", "squeeze_span.data", "squeeze_span.generators"):
    FORBIDDEN.append(
        (
            lower,
            (
                "squeeze_span.methods",
                "squeeze_span.train",
                "squeeze_span.experiments",
                "squeeze_span.cli",
                "squeeze_span.demo",
            ),
            "know nothing of methods or training",
        )
    )
# The trainer knows a method only through its interface (methods.base), never a concrete one.
CONCRETE_METHODS = tuple(
    f"squeeze_span.methods.{path.stem}" for path in (PACKAGE / "methods").glob("*.py") if path.stem != "base"
) + ("squeeze_span.methods",)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports_of(path: Path, known: dict[str, Path], *, with_packages: bool = True) -> set[str]:
    """The package's modules that ``path`` imports (with the packages whose __init__ that runs)."""
    found = set()
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            if not target.startswith("squeeze_span"):
                continue
            parts = target.split(".")
            ends = range(1, len(parts) + 1) if with_packages else [len(parts)]
            for end in ends:  # the packages on the way run their __init__
                prefix = ".".join(parts[:end])
                if prefix in known and prefix != "squeeze_span":
                    found.add(prefix)
            if not with_packages and target not in known and target.rpartition(".")[0] in known:
                found.add(target.rpartition(".")[0])  # from package.module import name
    found.discard(name)
    return found


def graph(*, with_packages: bool = True) -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(path, known, with_packages=with_packages) for name, path in known.items()}


def test_the_package_has_no_import_cycle():
    edges = graph()
    # A package's __init__ re-exporting its own submodules is not a cycle: skip edges parent -> child
    # when the child imports back only the parent (Python handles the partially initialised package).
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(edges[node]):
            if node.startswith(target + "."):  # a submodule importing its own package's __init__
                continue
            if state.get(target) == 1:
                cycle = stack[stack.index(target) :] + [target]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if state.get(target) is None:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_no_arrow_points_upward():
    # What a module names in its imports: a package's __init__ that Python runs on the way
    # (methods/__init__ re-exports every method) is not an arrow of the code's own.
    wrong = []
    for importer, targets in graph(with_packages=False).items():
        for prefix, forbidden, why in FORBIDDEN:
            if importer == prefix or importer.startswith(prefix + "."):
                wrong += [
                    f"{importer} -> {target} ({why})"
                    for target in targets
                    if any(target == f or target.startswith(f if f.endswith(".") else f + ".") for f in forbidden)
                ]
        if importer.startswith("squeeze_span.train"):
            wrong += [
                f"{importer} -> {t} (the trainer knows only methods.base)" for t in targets if t in CONCRETE_METHODS
            ]
        if importer != "squeeze_span.cli":
            wrong += [
                f"{importer} -> squeeze_span.cli (nothing imports the front door)"
                for t in targets
                if t == "squeeze_span.cli"
            ]
    assert not wrong, "imports against the architecture:\n" + "\n".join(sorted(set(wrong)))


def test_the_walk_sees_the_imports_it_must_judge():
    # The checks above are only as good as the graph: it must see a top-level and a lazy import.
    edges = graph()
    assert "squeeze_span.methods.registry" in edges["squeeze_span.methods"]  # from-import of a submodule
    assert "squeeze_span.experiments.sweep" in edges["squeeze_span.cli"]  # inside a handler function
    assert "squeeze_span.errors" in edges["squeeze_span.config"]
