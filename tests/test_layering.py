"""The layering declared in ``sound2image/__init__.py``'s docstring, enforced on every module's imports.

The table is read from the docstring itself, so the documentation and this test cannot drift. Every
import counts: module level and inside functions, absolute and relative, and
``importlib.import_module("sound2image....")`` with a literal name.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import sound2image

PACKAGE = Path(sound2image.__file__).parent
ROW = re.compile(r"^\s+(\d+)\.\s+([a-z_ ]+?)\s*$")


def layer_table(docstring: str) -> dict[str, int]:
    """``{top-level part: layer number}`` (1 = top) from the numbered rows of the docstring."""
    table: dict[str, int] = {}
    for line in docstring.splitlines():
        match = ROW.match(line)
        if match:
            for name in match.group(2).split():
                assert name not in table, f"{name} is listed twice in the layer table"
                table[name] = int(match.group(1))
    return table


LAYERS = layer_table(sound2image.__doc__ or "")


def module_name(path: Path) -> str:
    """``.../sound2image/cli/main.py`` -> ``sound2image.cli.main`` (a package is its ``__init__``)."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, name: str, is_package: bool) -> list[tuple[str, int]]:
    """Every ``sound2image`` module that ``source`` (module ``name``) imports, with its line number."""
    found: list[tuple[str, int]] = []
    package = name.split(".") if is_package else name.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            found.append((base, node.lineno))
            # `from sound2image import cli` / `from . import x` import submodules by name.
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.args[0].value, node.lineno))
    return [(module, line) for module, line in found if module.split(".")[0] == "sound2image"]


def part_of(module: str) -> str | None:
    """The top-level part (``cli``, ``errors`` ...) of a dotted name; None for the root package itself
    and for names that are attributes of the root (``sound2image.__version__``)."""
    parts = module.split(".")
    if len(parts) < 2 or parts[1] not in LAYERS:
        return None
    return parts[1]


def violations(source: str, name: str, is_package: bool = False) -> list[str]:
    """The imports of module ``name`` that break the declared layering, as readable lines."""
    own = part_of(name)
    assert own is not None, f"{name}: its top-level part is not in the layer table"
    problems = []
    for module, line in imported_modules(source, name, is_package):
        target = part_of(module)
        if target is None:
            continue
        if target == "cli" and own != "cli":
            problems.append(f"{name}:{line} imports {module}: only cli imports cli")
        elif LAYERS[target] < LAYERS[own]:
            problems.append(
                f"{name}:{line} imports {module}: layer {LAYERS[target]} ({target}) is above "
                f"layer {LAYERS[own]} ({own})"
            )
        elif own == "errors" and target != "errors":
            problems.append(f"{name}:{line} imports {module}: errors imports nothing from the package")
    return problems


def test_the_table_names_every_part_of_the_package_and_nothing_else() -> None:
    parts = {p.stem for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    parts |= {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert set(LAYERS) == parts
    # The order the docstring's summary line gives, top to bottom.
    assert LAYERS["cli"] < LAYERS["training"] < LAYERS["diffusion"] == LAYERS["transformer"]
    assert LAYERS["transformer"] < LAYERS["encoders"] == LAYERS["modules"] == LAYERS["metrics"]
    assert LAYERS["metrics"] < LAYERS["data"] < LAYERS["audio"] < LAYERS["outputs"] == LAYERS["errors"]
    assert LAYERS["errors"] == LAYERS["validation"] == LAYERS["hub"] == LAYERS["persistence"]


def test_no_module_imports_a_higher_layer_or_the_cli() -> None:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "__init__.py":
            continue  # the root, checked below
        problems += violations(path.read_text(), module_name(path), path.name == "__init__.py")
    assert problems == []


def test_the_root_module_imports_nothing_from_the_package() -> None:
    source = (PACKAGE / "__init__.py").read_text()
    assert imported_modules(source, "sound2image", is_package=True) == []


@pytest.mark.parametrize(
    ("name", "source", "expected"),
    [
        (
            "sound2image.data.pairs",
            "def f():\n    from sound2image.training import transformer\n",
            [
                "sound2image.data.pairs:2 imports sound2image.training: "
                "layer 2 (training) is above layer 5 (data)",
                "sound2image.data.pairs:2 imports sound2image.training.transformer: "
                "layer 2 (training) is above layer 5 (data)",
            ],
        ),
        (
            "sound2image.training.soundiff",
            "from sound2image.cli.generate import main\n",
            [
                "sound2image.training.soundiff:1 imports sound2image.cli.generate: only cli imports cli",
                "sound2image.training.soundiff:1 imports sound2image.cli.generate.main: only cli imports cli",
            ],
        ),
        (
            "sound2image.audio.io",
            "from ..encoders import imagebind\n",
            [
                "sound2image.audio.io:1 imports sound2image.encoders: "
                "layer 4 (encoders) is above layer 6 (audio)",
                "sound2image.audio.io:1 imports sound2image.encoders.imagebind: layer 4 (encoders) is above "
                "layer 6 (audio)",
            ],
        ),
        (
            "sound2image.webui",
            "import importlib\nimportlib.import_module('sound2image.cli.main')\n",
            ["sound2image.webui:2 imports sound2image.cli.main: only cli imports cli"],
        ),
        (
            "sound2image.errors",
            "import sound2image.outputs\n",
            ["sound2image.errors:1 imports sound2image.outputs: errors imports nothing from the package"],
        ),
        # Down and sideways are fine; so is the root's __version__.
        ("sound2image.cli.main", "from sound2image.training import transformer\nimport sound2image\n", []),
        (
            "sound2image.metrics.classifier",
            "from sound2image.modules import x\nfrom sound2image import __version__\n",
            [],
        ),
    ],
)
def test_the_checker_finds_what_it_should(name: str, source: str, expected: list[str]) -> None:
    is_package = name.count(".") == 1 and name.split(".")[1] in {"webui"}
    assert violations(source, name, is_package) == expected
