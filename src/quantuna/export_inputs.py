"""``apply --input-map NAME=NEW``: the calibration data's input names onto another model's.

An exported config names its calibration inputs by the study model's input names
(``calibration.inputs: {x: x}``: model input ``x`` <- ``.npz`` key ``x``). The model given to
``apply`` may name them otherwise (a re-export whose input is ``input.1``); the map renames the
config's names (``inputs`` and ``constants``) to the model's. A single-input model fed by a single
array is mapped without being asked, and says so; anything else that does not line up is one line
naming the names on both sides.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from quantuna.errors import SpecError

logger = logging.getLogger(__name__)
HOW = "map them with --input-map NAME=NEW (API: input_map={NAME: NEW})"


def parse_input_map(items: Sequence[str]) -> dict[str, str]:
    """``["x=input.1"]`` -> ``{"x": "input.1"}``; a malformed or repeated name is a SpecError."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, new = item.partition("=")
        if not sep or not name or not new:
            raise SpecError(f"--input-map {item!r}: write NAME=NEW (the config's input name, "
                            "then the model's)")
        if name in out and out[name] != new:
            raise SpecError(f"--input-map: {name!r} is mapped twice ({out[name]!r} and {new!r})")
        out[name] = new
    return out


def _names(values: Sequence[str]) -> str:
    return ", ".join(repr(v) for v in values) or "none"


def map_calibration(info: Mapping[str, Any], model_inputs: Sequence[str],
                    input_map: Mapping[str, str] | None, where: str) -> dict[str, Any]:
    """The calibration section with its input names renamed to ``model_inputs``.

    ``input_map`` maps a config name (a key of ``inputs`` or ``constants``; without ``inputs``,
    an ``.npz`` key) to a model input. Without it, names that already match stay; one recorded
    input onto a single-input model is mapped implicitly (logged).

    Raises:
        SpecError: a name on either side that is not there, two names onto one input, or names
            that do not line up and no map given.
    """
    out = dict(info)
    inputs, constants = dict(info.get("inputs") or {}), dict(info.get("constants") or {})
    given = dict(input_map or {})
    if given and info.get("loader"):
        raise SpecError(f"{where}: --input-map renames .npz data; a loader must yield the "
                        f"model's input names ({_names(model_inputs)})")
    if not given:
        return _implicit(out, inputs, constants, model_inputs, where)
    recorded = [*inputs, *constants] if inputs else []
    _check_map(given, recorded, model_inputs)
    if not inputs:  # the config named no inputs: the map's names are .npz keys
        out["inputs"] = {new: name for name, new in given.items()}
        return out
    out["inputs"] = {given.get(n, n): v for n, v in inputs.items()}
    if constants:
        out["constants"] = {given.get(n, n): v for n, v in constants.items()}
    _check_lined_up([*out["inputs"], *(out.get("constants") or {})], model_inputs, where)
    return out


def _implicit(out: dict[str, Any], inputs: dict[str, Any], constants: dict[str, Any],
              model_inputs: Sequence[str], where: str) -> dict[str, Any]:
    recorded = [*inputs, *constants]
    if not inputs or set(recorded) == set(model_inputs):
        return out
    if len(inputs) == 1 and not constants and len(model_inputs) == 1:
        name, new = next(iter(inputs)), model_inputs[0]
        logger.warning("%s: the calibration input %r fed to the model's only input %r "
                       "(--input-map %s=%s says so explicitly)", where, name, new, name, new)
        out["inputs"] = {new: inputs[name]}
        return out
    raise SpecError(f"{where}.inputs: the config's inputs ({_names(recorded)}) are not the "
                    f"model's ({_names(model_inputs)}); {HOW}")


def _check_map(given: Mapping[str, str], recorded: Sequence[str], model_inputs: Sequence[str]) -> None:
    for name, new in given.items():
        if recorded and name not in recorded:
            raise SpecError(f"--input-map {name}={new}: the config has no input {name!r} "
                            f"(its inputs: {_names(recorded)}; the model's: {_names(model_inputs)})")
        if new not in model_inputs:
            raise SpecError(f"--input-map {name}={new}: the model has no input {new!r} "
                            f"(its inputs: {_names(model_inputs)}; the config's: {_names(recorded)})")
    targets = list(given.values())
    twice = sorted({t for t in targets if targets.count(t) > 1})
    if twice:
        names = [n for n, t in given.items() if t == twice[0]]
        raise SpecError(f"--input-map: {_names(names)} are all mapped to the model's input "
                        f"{twice[0]!r}; map one config input to each model input")


def _check_lined_up(names: Sequence[str], model_inputs: Sequence[str], where: str) -> None:
    if sorted(names) != sorted(model_inputs):
        missing = [m for m in model_inputs if m not in names]
        extra = [n for n in names if n not in model_inputs]
        raise SpecError(f"{where}.inputs: after --input-map the config's inputs ({_names(names)}) "
                        f"are still not the model's ({_names(model_inputs)}: "
                        f"unmapped {_names(extra)}, unfed {_names(missing)}); {HOW}")
