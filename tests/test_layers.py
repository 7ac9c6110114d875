"""Data flows one way (ARCHITECTURE.md, Layers): each package may import only the layers below it.

Checked on the source (every import statement, module level or inside a function), so an upward import
fails here rather than as a cycle or a surprise dependency at run time.
"""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("tfenv", "contracts", "preprocessing", "trainer", "serving", "recsys", "pipelines", "benchmarks")
# recsys's modules that the lower layers share (files on any filesystem, the typed configuration, the exploration
# policy the exporter bakes in); the rest of recsys (cli, steps, stages, loop, ...) sits on top of every layer
RECSYS_BASE = {"recsys", "recsys.fileio", "recsys.config", "recsys.exploration"}
MAY_IMPORT = {
    "contracts": {"tfenv"},
    "preprocessing": {"tfenv", "contracts"},
    "trainer": {"tfenv", "contracts", "preprocessing"},
    "serving": {"tfenv", "contracts"},
}
# the one exception, and why: `recsys query` builds a request from the feature schema's defaults
ALLOWED = {("serving/client.py", "preprocessing.schema")}


def imports(path: pathlib.Path):
    """Every absolute module name the file imports (``from recsys import fileio`` counts as recsys.fileio)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module in PACKAGES:
                yield from (f"{node.module}.{alias.name}" for alias in node.names)
            else:
                yield node.module


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_lower_layers_never_import_upward(package):
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for name in imports(path):
            top = name.split(".")[0]
            if top not in PACKAGES or top == package or top in MAY_IMPORT[package]:
                continue
            if top == "recsys" and (name in RECSYS_BASE or ".".join(name.split(".")[:2]) in RECSYS_BASE):
                continue
            if (rel, name) not in ALLOWED:
                bad.append(f"{rel} imports {name}")
    assert not bad, "\n".join(bad)


def test_the_check_sees_an_upward_import(tmp_path):
    """The walk finds imports inside functions too (where lazy upward imports hide)."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from serving import servable\n    import recsys.cli\nfrom recsys import fileio\n")
    assert set(imports(f)) == {"serving.servable", "recsys.cli", "recsys.fileio"}
