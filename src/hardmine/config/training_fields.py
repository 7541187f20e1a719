"""The fields of ``transformers.TrainingArguments`` and their types, read without importing transformers.

``hardmine validate`` checks every ``training.*`` key and value before anything
heavy loads. Importing transformers' ``TrainingArguments`` costs seconds (tens
of seconds on a cold disk), so the class is read from the installed source
with :mod:`ast` instead: the field names, whether ``__init__`` takes them, and
their annotations. It is always the installed version's truth, with no table
to keep in step by hand.

Values are judged by their annotation: ``bool``, ``int`` (not a bool),
``float`` (an int or a float), ``str``, ``dict``, ``list[...]``, ``None``,
``Literal[...]`` and unions of these. An enum-typed field (``IntervalStrategy |
str``) takes a string here; which strings are allowed is checked when the
arguments are built, still before the model loads.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

Predicate = Callable[[Any], bool]


@dataclass(frozen=True)
class TrainingField:
    name: str
    annotation: str  # as written in transformers' source, e.g. "float | None"
    accepts: Predicate


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_SIMPLE: dict[str, Predicate] = {
    "bool": lambda v: isinstance(v, bool),
    "int": _is_int,
    "float": lambda v: _is_int(v) or isinstance(v, float),
    "str": lambda v: isinstance(v, str),
    "dict": lambda v: isinstance(v, dict),
    "list": lambda v: isinstance(v, list),
    "Any": lambda v: True,
}


def _predicate(node: ast.expr) -> Predicate:
    """What values an annotation admits (unknown classes: any value; an enum also takes a str)."""
    if isinstance(node, ast.Constant) and node.value is None:
        return lambda v: v is None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        left, right = _predicate(node.left), _predicate(node.right)
        return lambda v: left(v) or right(v)
    if isinstance(node, ast.Name):
        return _SIMPLE.get(node.id, lambda v: True)
    if isinstance(node, ast.Attribute):  # typing.Any and the like
        return _SIMPLE.get(node.attr, lambda v: True)
    if isinstance(node, ast.Subscript):
        outer = node.value.id if isinstance(node.value, ast.Name) else getattr(node.value, "attr", "")
        args = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if outer in ("Optional", "Union"):
            options = [_predicate(a) for a in args] + ([lambda v: v is None] if outer == "Optional" else [])
            return lambda v: any(p(v) for p in options)
        if outer in ("list", "List"):
            item = _predicate(args[0])
            return lambda v: isinstance(v, list) and all(item(x) for x in v)
        if outer in ("dict", "Dict"):
            return _SIMPLE["dict"]
        if outer == "Literal":
            allowed = [a.value for a in args if isinstance(a, ast.Constant)]
            return lambda v: any(v == a and type(v) is type(a) for a in allowed)
    return lambda v: True


def _init_false(value: ast.expr | None) -> bool:
    """Whether a field's default is ``field(..., init=False)``."""
    if not isinstance(value, ast.Call):
        return False
    return any(k.arg == "init" and isinstance(k.value, ast.Constant) and k.value.value is False for k in value.keywords)


def training_args_source() -> Path:
    """The installed ``transformers/training_args.py`` (found without importing transformers)."""
    spec = importlib.util.find_spec("transformers")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("transformers is not installed")
    return Path(spec.origin).parent / "training_args.py"


def parse_training_fields(source: str) -> dict[str, TrainingField]:
    """The ``__init__`` fields of the ``TrainingArguments`` class defined in ``source``."""
    tree = ast.parse(source)
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "TrainingArguments"]
    if not classes:
        raise ValueError("no TrainingArguments class in the source")
    fields = {}
    for node in classes[0].body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and not _init_false(node.value):
            name = node.target.id
            fields[name] = TrainingField(name, ast.unparse(node.annotation), _predicate(node.annotation))
    return fields


@functools.lru_cache(maxsize=1)
def training_fields() -> dict[str, TrainingField]:
    return parse_training_fields(training_args_source().read_text(encoding="utf-8"))
