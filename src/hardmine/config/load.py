"""Loading a hardmine YAML: ``extends:``, dotted overrides, one error for every problem.

* ``extends: base.yaml`` (a path relative to the file that says it) merges the
  base first; mappings merge key by key, anything else is replaced. Chains are
  allowed, cycles are an error.
* Overrides ``key.sub=value`` (command line) are applied after the merge; the
  value is parsed as YAML, so ``training.learning_rate=1e-4`` is a float and
  ``custom.hard_sample_mining.enabled=true`` a bool.
* Relative paths in ``custom`` (``train_jsonl``, ``val_jsonl``,
  ``fusion_config``), ``training.output_dir`` and
  ``deepspeed.config`` are resolved against the directory of the config file
  given on the command line (overrides included).
* Validation collects every problem (unknown keys with the closest valid key,
  wrong types, out-of-range values, missing files, unknown TrainingArguments
  fields) and raises one :class:`ConfigError` listing them by dotted path.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from ..core import MiningSettings, SettingError
from ..core.errors import UserInputError
from .schema import HARDMINE_TRAINING_KEYS, HardmineConfig
from .training_fields import training_fields

BUILTIN_DEEPSPEED = ("zero2",)
#: Where a run goes when the config names no ``training.output_dir`` (beside the config).
DEFAULT_OUTPUT_DIR = "runs/hardmine"
#: ``training`` keys that name folders: resolved against the config's folder like the data paths.
RELATIVE_TRAINING_PATHS = ("output_dir",)


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-4`` as a float (YAML 1.2), not as a string.

    PyYAML follows YAML 1.1, where a float needs a dot: ``learning_rate: 1e-4``
    would otherwise reach TrainingArguments as the string "1e-4".
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_yaml(text: str):
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


@dataclass(frozen=True)
class Problem:
    key: str  # dotted YAML path
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


class ConfigError(UserInputError):
    """Every problem of one config, each on its own line."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem{'s' if len(problems) != 1 else ''} in the config:\n{lines}")


# ------------------------------------------------------------------- reading
def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), [Problem("(file)", "no such file")]) from None
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        raise ConfigError(str(path), [Problem("(yaml)", f"not valid YAML at {where}: {getattr(e, 'problem', e)}")]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), [Problem("(top level)", f"expected a mapping, got {type(data).__name__}")])
    return data


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_tree(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The merged YAML tree of ``path`` and everything it extends."""
    path = Path(path).resolve()
    if path in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, path))
        raise ConfigError(str(_chain[0]), [Problem("extends", f"cycle: {cycle}")])
    data = read_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ConfigError(str(path), [Problem("extends", f"got {parent!r}; expected a path to a YAML file")])
    base_path = (path.parent / parent).resolve()
    if not base_path.is_file():
        raise ConfigError(str(path), [Problem("extends", f"{parent!r} does not exist (looked for {base_path})")])
    return deep_merge(load_tree(base_path, (*_chain, path)), data)


def apply_overrides(tree: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    tree = deep_merge({}, tree)
    problems = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            problems.append(Problem(item, "an override must look like key.sub=value"))
            continue
        try:
            value = parse_yaml(raw)
        except yaml.YAMLError:
            value = raw
        node = tree
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                problems.append(Problem(".".join(parts[: i + 1]), f"is {child!r}, not a mapping, so {key} cannot be set"))
                break
            node = child
        else:
            node[parts[-1]] = value
    if problems:
        raise ConfigError("command line", problems)
    return tree


# ---------------------------------------------------------------- validation
def _pydantic_problems(err: ValidationError, tree: Mapping[str, Any]) -> list[Problem]:
    problems = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        key = ".".join(loc)
        cause = (e.get("ctx") or {}).get("error")
        if isinstance(cause, SettingError):
            # The engine's own check (a settings dataclass): it names the exact key.
            problems.append(Problem(cause.key, f"got {cause.value!r}; expected {cause.expected}"))
        elif e["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            allowed = _allowed_keys(loc[:-1])
            hint = difflib.get_close_matches(loc[-1], allowed, n=1)
            suggestion = f"; did you mean {'.'.join([*loc[:-1], hint[0]])!r}?" if hint else ""
            problems.append(Problem(key, f"unknown key{suggestion} (allowed here: {', '.join(sorted(allowed))})"))
        else:
            problems.append(Problem(key, f"got {e.get('input')!r}; {e['msg'].lower()}"))
    return problems


def _allowed_keys(loc: list[str]) -> list[str]:
    """The keys the schema allows at a dotted location (pydantic models and settings dataclasses)."""
    node: Any = HardmineConfig
    for part in loc:
        if isinstance(node, type) and issubclass(node, BaseModel):
            field = node.model_fields.get(part)
            node = getattr(field, "annotation", None)
        elif dataclasses.is_dataclass(node):
            node = typing.get_type_hints(node).get(part)
        else:
            return []
    if isinstance(node, type) and issubclass(node, BaseModel):
        return list(node.model_fields)
    if dataclasses.is_dataclass(node):
        return [f.name for f in dataclasses.fields(node)]
    return []


def _training_problems(training: Mapping[str, Any]) -> list[Problem]:
    fields = training_fields()
    problems = []
    for key, value in training.items():
        if key in HARDMINE_TRAINING_KEYS:
            types, name = HARDMINE_TRAINING_KEYS[key]
            if not isinstance(value, types):
                problems.append(Problem(f"training.{key}", f"got {value!r}; expected {name}"))
        elif key not in fields:
            hint = difflib.get_close_matches(key, sorted(set(fields) | set(HARDMINE_TRAINING_KEYS)), n=1)
            suggestion = f"; did you mean 'training.{hint[0]}'?" if hint else ""
            problems.append(Problem(f"training.{key}", f"not a TrainingArguments field{suggestion}"))
        elif not fields[key].accepts(value):
            problems.append(Problem(f"training.{key}", f"got {value!r}; expected {fields[key].annotation}"))
    return problems


def _mining_problems(tree: Mapping[str, Any]) -> list[Problem]:
    """Range problems of the mining section: each top-level value tried alone, each
    nested mapping (``selector``, ``aggregation``, ``noise_guard``) as a whole, so
    that a bad value in one place does not hide a bad value in another.
    The engine's :class:`MiningSettings` judges every value."""
    section = tree.get("custom", {})
    section = section.get("hard_sample_mining") if isinstance(section, dict) else None
    if not isinstance(section, dict):
        return []
    known = {f.name for f in dataclasses.fields(MiningSettings)}
    problems = []
    for key, value in section.items():
        if key not in known:
            continue  # pydantic names unknown keys, with a suggestion
        try:
            MiningSettings(**{key: value})
        except SettingError as e:
            problems.append(Problem(e.key, f"got {e.value!r}; expected {e.expected}"))
        except (TypeError, ValueError):
            pass  # a wrong type: pydantic reports it
    return problems


def _resolve(base_dir: Path, value: str | None) -> str | None:
    if value is None:
        return None
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base_dir / p).resolve())


def _file_problems(tree: Mapping[str, Any]) -> list[Problem]:
    """Missing files and the data choice, read from the raw tree so that they are
    reported together with schema problems, not only once the schema passes."""
    problems = []
    custom = tree.get("custom") if isinstance(tree.get("custom"), dict) else {}
    for key in ("train_jsonl", "val_jsonl", "fusion_config"):
        value = custom.get(key)
        if isinstance(value, str) and not Path(value).is_file():
            problems.append(Problem(f"custom.{key}", f"file {value!r} does not exist"))
    if custom.get("train_jsonl") is None and custom.get("fusion_config") is None:
        problems.append(Problem("custom", "set custom.train_jsonl or custom.fusion_config (the training data)"))
    if custom.get("train_jsonl") is not None and custom.get("fusion_config") is not None:
        problems.append(Problem("custom", "set only one of custom.train_jsonl and custom.fusion_config"))
    ds = tree.get("deepspeed") if isinstance(tree.get("deepspeed"), dict) else {}
    config = ds.get("config", "zero2")
    if ds.get("enabled") is True and isinstance(config, str) and config not in BUILTIN_DEEPSPEED and not Path(config).is_file():
        problems.append(
            Problem("deepspeed.config", f"got {config!r}; expected one of {list(BUILTIN_DEEPSPEED)} or a JSON file")
        )
    return problems


Check = Callable[[HardmineConfig], list[Problem]]


def parse_config(tree: Mapping[str, Any], source: str | Path, checks: Iterable[Check] = ()) -> HardmineConfig:
    """Validate a merged tree; raise :class:`ConfigError` listing every problem."""
    source = Path(source)
    base_dir = source.parent if source.suffix else source
    tree = deep_merge({}, tree)
    custom = tree.get("custom")
    if isinstance(custom, dict):
        for key in ("train_jsonl", "val_jsonl", "fusion_config"):
            if isinstance(custom.get(key), str):
                custom[key] = _resolve(base_dir, custom[key])
    if "training" not in tree:
        tree["training"] = {}
    training = tree["training"]
    if isinstance(training, dict):
        training.setdefault("output_dir", DEFAULT_OUTPUT_DIR)
        for key in RELATIVE_TRAINING_PATHS:
            if isinstance(training.get(key), str):
                training[key] = _resolve(base_dir, training[key])
    ds = tree.get("deepspeed")
    if isinstance(ds, dict) and isinstance(ds.get("config"), str) and ds["config"] not in BUILTIN_DEEPSPEED:
        ds["config"] = _resolve(base_dir, ds["config"])

    problems: list[Problem] = _mining_problems(tree)
    try:
        cfg = HardmineConfig.model_validate(tree)
    except ValidationError as err:
        problems.extend(_pydantic_problems(err, tree))
        cfg = None
    if isinstance(training, dict):
        problems.extend(_training_problems(training))
    problems.extend(_file_problems(tree))
    if cfg is not None:
        for check in checks:
            problems.extend(check(cfg))
    if problems:
        unique = list({(p.key, p.message): p for p in problems}.values())
        seen_keys: set[str] = set()
        # A value that is both out of range and reported again by a later
        # check keeps only its first message.
        problems = [p for p in unique if not (p.key in seen_keys or seen_keys.add(p.key))]
        raise ConfigError(str(source), problems)
    return cfg


def load_config(path: str | Path, overrides: Iterable[str] = (), checks: Iterable[Check] = ()) -> HardmineConfig:
    tree = apply_overrides(load_tree(path), overrides)
    return parse_config(tree, Path(path).resolve(), checks)


def load_mining_settings(path: str | Path) -> MiningSettings:
    """:class:`MiningSettings` from a YAML file of ``custom.hard_sample_mining`` keys (for other
    frameworks' entry points, such as the ms-swift plugin). The file may also hold them under a
    ``hard_sample_mining`` key; ``enabled`` defaults to true there, since the file asks for mining.
    """
    path = Path(path)
    tree = read_yaml(path)
    if set(tree) == {"hard_sample_mining"} and isinstance(tree["hard_sample_mining"], dict):
        tree = tree["hard_sample_mining"]
    tree = {"enabled": True, **tree}
    try:
        return TypeAdapter(MiningSettings).validate_python(tree)
    except ValidationError as err:
        raise ConfigError(str(path), _pydantic_problems(err, tree)) from None


def dump_config(cfg: HardmineConfig) -> str:
    """The resolved config as YAML (what ``hardmine validate`` prints)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
