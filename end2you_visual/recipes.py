"""The training recipes that ship with the package: TOML files in the zoo's
``recipes/`` folder (``pretrained/recipes/`` of the repository,
``end2you_visual/pretrained/recipes/`` once installed), found by name::

    from end2you_visual.recipes import find_recipe, shipped_recipes
    [r.name for r in shipped_recipes()]      # ['finetune', 'pretrain', ...]
    find_recipe("finetune")                  # .../pretrained/recipes/finetune.toml
    find_recipe("my_recipe.toml")            # a path that exists: itself

A recipe's name is its file's stem; its description is the first sentence of
its opening comment. `e2y-visual train --config NAME_OR_PATH` reads recipes
through :func:`find_recipe`, `e2y-visual zoo recipes` lists them.
"""
import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Union

from .errors import InputError
from .registry import shipped_dir

__all__ = ["Recipe", "recipes_dir", "shipped_recipes", "find_recipe"]

# A description longer than this is cut at its first ": " (the heading before it).
_LONGEST = 120


@dataclass(frozen=True)
class Recipe:
    """A shipped recipe: ``name`` (the file stem, for ``train --config``),
    ``path`` and ``description`` (the first sentence of its opening comment)."""

    name: str
    path: Path
    description: str


def recipes_dir() -> Path:
    """The folder of the shipped recipes (``recipes/`` of the installed zoo)."""
    return shipped_dir() / "recipes"


def _description(path: Path) -> str:
    """The first sentence of the opening comment's first paragraph (a command
    line or an empty comment line ends the paragraph)."""
    words = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return ""
    for line in lines:
        if not line.startswith("#"):
            break
        text = line[1:]
        if not text.strip() or text.startswith("   "):
            break
        words.append(text.strip())
    paragraph = " ".join(words)
    sentence = re.split(r"(?<=\.)\s|:$", paragraph, maxsplit=1)[0].strip()
    if len(sentence) > _LONGEST and ": " in sentence:
        sentence = sentence.split(": ", 1)[0]
    return sentence


def shipped_recipes() -> List[Recipe]:
    """The shipped recipes, sorted by name."""
    folder = recipes_dir()
    paths = sorted(folder.glob("*.toml")) if folder.is_dir() else []
    return [Recipe(p.stem, p, _description(p)) for p in paths]


def find_recipe(name_or_path: Union[str, Path]) -> Path:
    """The recipe file ``name_or_path`` names: a file that exists (it wins),
    else the shipped recipe of that name (``finetune``; ``finetune.toml`` and
    ``pretrained/recipes/finetune.toml`` of the repository name it too, so
    that the repository's command lines work after ``pip install``).

    Raises:
        InputError: a folder, or neither a file nor a shipped recipe's name
            (listing the shipped names).
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.is_dir():
        raise InputError(path, "is a folder, not a TOML recipe")
    recipes = shipped_recipes()
    wanted = path.stem if path.suffix == ".toml" and _names_shipped_folder(path) else str(path)
    for recipe in recipes:
        if recipe.name == wanted:
            return recipe.path
    names = ", ".join(r.name for r in recipes) or "none"
    raise InputError(name_or_path, f"no such recipe file, nor a shipped recipe's name; "
                                   f"shipped recipes: {names} (e2y-visual zoo recipes)")


def _names_shipped_folder(path: Path) -> bool:
    """``x.toml`` or ``pretrained/recipes/x.toml``: the repository's way to
    name a shipped recipe."""
    return path.parent in (Path("."), Path("pretrained/recipes"),
                           Path("end2you_visual/pretrained/recipes"))
