"""``study.sampler``: one of Optuna's samplers by name, or a sampler class of your own.

```yaml
study:
  sampler: auto                                   # auto | tpe | nsga2 | gp | random | grid
  sampler: "my_samplers.py:AnnealingSampler"      # a class (file.py relative to the spec, or pkg.mod)
  sampler: {class: "my_samplers.py:AnnealingSampler", kwargs: {temperature: 2.0}}
```

A class is called with ``kwargs`` (plus ``seed=<study.seed>`` when it takes a ``seed`` and the
kwargs give none) and must return an ``optuna.samplers.BaseSampler``; quantuna wraps it with the
distinct-config guard as it does Optuna's. Code is imported only because the spec names it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError

BUILTIN_SAMPLERS = ("auto", "tpe", "nsga2", "gp", "random", "grid")


def is_class_reference(text: str) -> bool:
    """``package.module:Name`` or ``path/to/file.py:Name``."""
    return re.fullmatch(r"(?:[A-Za-z_][\w.]*|[\w./~-]+\.py):[A-Za-z_]\w*", text) is not None


class SamplerClass(BaseModel):
    """``study.sampler: {class: "pkg.mod:Cls", kwargs: {...}}``: a sampler class of your own."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    cls: str = Field(alias="class")
    kwargs: dict[str, Any] = Field(default_factory=dict)

    def __str__(self) -> str:
        return self.cls


def parse_sampler(value: Any) -> str | SamplerClass:
    """A builtin sampler's name, or the :class:`SamplerClass` a reference or mapping names."""
    if isinstance(value, SamplerClass):
        return value
    if isinstance(value, str):
        if value in BUILTIN_SAMPLERS:
            return value
        if is_class_reference(value):
            return SamplerClass.model_validate({"class": value})
        raise ValueError(
            f"not a sampler name ({', '.join(BUILTIN_SAMPLERS)}) nor a class 'pkg.mod:Class'"
        )
    if isinstance(value, dict):
        try:
            parsed = SamplerClass.model_validate(value)
        except ValidationError as err:
            first = err.errors()[0]
            key = ".".join(str(p) for p in first["loc"])
            problem = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
            raise ValueError(f"{key}: {problem} (give {{class: 'pkg.mod:Class', kwargs: {{...}}}})") from None
        if not is_class_reference(parsed.cls):
            raise ValueError(f"class {parsed.cls!r} must look like 'package.module:Class' or 'file.py:Class'")
        return parsed
    raise ValueError("give a sampler name or {class: 'pkg.mod:Class', kwargs: {...}}")


SamplerChoice = Annotated[str | SamplerClass, PlainValidator(parse_sampler)]


def with_sampler_resolved(section: Any, root: Path) -> Any:
    """The ``study`` section with a ``file.py:Class`` sampler made absolute (relative to ``root``)."""
    sampler = section.sampler
    if not isinstance(sampler, SamplerClass) or not sampler.cls.rpartition(":")[0].endswith(".py"):
        return section
    file, _, name = sampler.cls.rpartition(":")
    path = Path(file).expanduser()
    resolved = sampler.model_copy(update={"cls": f"{path if path.is_absolute() else root / path}:{name}"})
    return section.model_copy(update={"sampler": resolved})
