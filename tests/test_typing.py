"""Type hints: the mypy settings in setup.cfg, and the annotated public API.

`make test` runs mypy with these settings before pytest. This file checks,
without running mypy, that the settings stay strict, that no module is let
off them, and that the public API of every module (the names in its
``__all__``, or its public names when it has none) is fully annotated.
"""
from __future__ import annotations

import ast
import configparser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("end2you_visual", "cli")


def _config() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg", encoding="utf-8")
    return parser


def _not_yet_annotated(parser: configparser.ConfigParser) -> list[str]:
    """The module patterns whose sections turn disallow_untyped_defs off."""
    patterns = []
    for section in parser.sections():
        if section.startswith("mypy-") and not parser.getboolean(
                section, "disallow_untyped_defs", fallback=True):
            patterns += [p.strip() for p in section[len("mypy-"):].split(",")]
    return patterns


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES
            for p in sorted((ROOT / package).rglob("*.py"))}


def _public_names(tree: ast.Module) -> set[str] | None:
    """The names of ``__all__``, or None when the module has none."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return {elt.value for elt in node.value.elts
                    if isinstance(elt, ast.Constant) and isinstance(elt.value, str)}
    return None


def _missing(function: ast.FunctionDef | ast.AsyncFunctionDef, method: bool) -> list[str]:
    """What ``function`` leaves unannotated: its parameters' names, and
    ``return`` (not required of ``__init__``, as in mypy)."""
    args = function.args
    params = args.posonlyargs + args.args
    static = any(isinstance(d, ast.Name) and d.id == "staticmethod"
                 for d in function.decorator_list)
    if method and not static and params:
        params = params[1:]  # self / cls
    params = params + args.kwonlyargs + [a for a in (args.vararg, args.kwarg) if a]
    missing = [a.arg for a in params if a.annotation is None]
    if function.returns is None and function.name != "__init__":
        missing.append("return")
    return missing


def unannotated(source: str) -> list[str]:
    """``name: what is missing`` for each public function and public method
    (including dunder methods) of the public classes of ``source``."""
    tree = ast.parse(source)
    wanted = _public_names(tree)

    def public(name: str) -> bool:
        return name in wanted if wanted is not None else not name.startswith("_")

    found = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and public(node.name):
            missing = _missing(node, method=False)
            if missing:
                found.append(f"{node.name}: {', '.join(missing)}")
        elif isinstance(node, ast.ClassDef) and public(node.name):
            for item in node.body:
                if not isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                dunder = item.name.startswith("__") and item.name.endswith("__")
                if item.name.startswith("_") and not dunder:
                    continue
                missing = _missing(item, method=True)
                if missing:
                    found.append(f"{node.name}.{item.name}: {', '.join(missing)}")
    return found


def test_mypy_settings_are_strict_and_installed_with_the_tests():
    parser = _config()
    mypy = parser["mypy"]
    assert [f.strip() for f in mypy["files"].split(",")] == list(PACKAGES)
    assert mypy.getboolean("disallow_untyped_defs")
    assert mypy.getboolean("disallow_incomplete_defs")
    extras = parser["options.extras_require"]["test"].split()
    assert any(e.startswith("mypy") for e in extras)
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    test_rule = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert test_rule.index("-m mypy") < test_rule.index("-m pytest")


def test_every_module_is_checked_strictly():
    """No module is let off mypy's strict settings: every function of the
    package and the CLI is annotated."""
    patterns = _not_yet_annotated(_config())
    assert patterns == [], f"setup.cfg lets these off the strict check: {patterns}"


@pytest.mark.parametrize("module", sorted(_modules()))
def test_the_public_api_of_typed_modules_is_annotated(module):
    source = _modules()[module].read_text(encoding="utf-8")
    assert unannotated(source) == []


def test_unannotated_names_what_a_public_signature_lacks():
    source = '''
__all__ = ["f", "g", "C", "h"]

def f(x, y: int, *args, key=None, **kwargs) -> int: ...
def g(x: int): ...
def h(x: int, *, key: str = "") -> None: ...
def not_exported(x): ...
def _private(x): ...

class C:
    def __init__(self, n): ...
    def method(self, a: int): ...
    @staticmethod
    def build(a) -> "C": ...
    @classmethod
    def make(cls, a: int) -> "C": ...
    def __len__(self): ...
    def _helper(self, a): ...

class Hidden:
    def method(self, a): ...
'''
    assert unannotated(source) == [
        "f: x, key, args, kwargs", "g: return", "C.__init__: n", "C.method: return",
        "C.build: a", "C.__len__: return"]
    # Without __all__, every name not starting with "_" is public.
    assert unannotated("def a(x): ...\ndef _b(x): ...\nclass K:\n    def m(self) -> None: ...\n"
                       ) == ["a: x, return"]
