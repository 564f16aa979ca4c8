"""The package's floors: data flows down them, and no module imports from a floor below its own."""

import ast
from pathlib import Path

import dancegenre

ROOT = Path(dancegenre.__file__).parent
# Each floor may import from its own and the floors before it in this list.
FLOORS = [
    {"__init__", "__version__", "config", "errors", "safety", "device"},
    {"present"},
    {"audio"},
    {"data"},
    {"models"},
    {"training"},
    {"inference"},
    {"research"},
    {"web"},
    {"demo", "cli", "__main__"},
]


def floor_of(module: str) -> int:
    """Floor of ``dancegenre.<top>...`` (or of a file's top-level part)."""
    top = module.split(".")[0]
    for k, names in enumerate(FLOORS):
        if top in names:
            return k
    raise AssertionError(f"{module} is on no floor: add it to FLOORS")


def imports_of(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dancegenre"):
            names = node.module.split(".")[1:]
            if not names:  # from dancegenre import x
                names = [a.name for a in node.names]
                out += [(node.lineno, n) for n in names]
            else:
                out.append((node.lineno, ".".join(names)))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".", 1)[1]) for a in node.names
                    if a.name.startswith("dancegenre.")]
    return out


def test_no_import_from_a_lower_floor():
    bad = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        own = floor_of(rel.parts[0].removesuffix(".py"))
        for line, module in imports_of(path):
            if floor_of(module) > own:
                bad.append(f"{rel}:{line} imports dancegenre.{module}")
    assert not bad, "\n".join(bad)


def test_every_module_is_on_a_floor_and_no_flat_leftovers():
    tops = {p.name.removesuffix(".py") for p in ROOT.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    for top in tops:
        floor_of(top)
    assert len([p for p in ROOT.glob("*.py")]) <= 7  # the floors are folders, not files side by side
