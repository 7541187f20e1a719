"""The fusion config: one target dataset plus auxiliary sources at fixed ratios.

```yaml
target:
  name: bdd
  train_jsonl: bdd/train.jsonl
  val_jsonl: bdd/val.jsonl
sources:
  - name: coco
    train_jsonl: coco/train.jsonl
    val_jsonl: coco/val.jsonl      # optional
    ratio: 0.25                     # draws per epoch = round(ratio * target size)
    augmentation: false             # default true
```

Paths are relative to the fusion YAML. Per epoch the whole target pool is
shown once and each source draws its quota with replacement (see
:mod:`hardmine.core.schedule`); only the target is ever mined.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..core.errors import UserInputError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetSpec(_Strict):
    name: str = Field(min_length=1)
    train_jsonl: str
    val_jsonl: Optional[str] = None
    ratio: Optional[float] = Field(None, ge=0)
    augmentation: bool = True


class FusionSpec(_Strict):
    target: DatasetSpec
    sources: list[DatasetSpec] = Field(default_factory=list)

    @property
    def datasets(self) -> list[DatasetSpec]:
        return [self.target, *self.sources]


class FusionConfigError(UserInputError):
    pass


def load_fusion(path: str | Path) -> FusionSpec:
    """Read and check a fusion YAML; every problem is reported with the file and key."""
    path = Path(path)
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FusionConfigError(f"{path}: no such fusion config") from None
    except yaml.YAMLError as e:
        raise FusionConfigError(f"{path}: not valid YAML: {e}") from None
    try:
        spec = FusionSpec.model_validate(tree)
    except ValidationError as err:
        lines = [f"  - {'.'.join(str(p) for p in e['loc'])}: got {e.get('input')!r}; {e['msg'].lower()}" for e in err.errors()]
        raise FusionConfigError(f"{path}: {len(lines)} problem(s):\n" + "\n".join(lines)) from None
    problems = []
    if spec.target.ratio is not None:
        problems.append("target.ratio: the target is covered once per epoch; remove its ratio")
    names = [d.name for d in spec.datasets]
    if len(set(names)) != len(names):
        problems.append(f"dataset names must be distinct, got {names}")
    base = path.parent
    resolved = []
    for i, d in enumerate(spec.datasets):
        where = "target" if i == 0 else f"sources[{i - 1}]"
        if i > 0 and d.ratio is None:
            problems.append(f"{where}.ratio: missing; expected a number >= 0 (draws per epoch = ratio * target size)")
        fields = {}
        for key in ("train_jsonl", "val_jsonl"):
            value = getattr(d, key)
            if value is None:
                continue
            p = Path(value) if Path(value).is_absolute() else (base / value).resolve()
            if not p.is_file():
                problems.append(f"{where}.{key}: file {value!r} does not exist (looked for {p})")
            fields[key] = str(p)
        resolved.append(d.model_copy(update=fields))
    if problems:
        raise FusionConfigError(f"{path}: {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems))
    return FusionSpec(target=resolved[0], sources=resolved[1:])
