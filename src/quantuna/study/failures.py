"""Settings that fail because of the model: recorded once in the study, never proposed again.

A calibration method that cannot calibrate this model fails every config that uses it, whatever
the op types; a quantizer that rejects one op type of this model (under an approach, format and
per-channel choice) fails every config that quantizes it. The first trial that hits it stores the setting (the config fields it fixes) in a
study user attr ``failed_setting:<key>``, with the reason and the trial; the log says it once;
:class:`~quantuna.study.sampler.DistinctSampler` of every worker skips the configs it matches.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import optuna

from quantuna.config import QuantConfig
from quantuna.study import attrs

logger = logging.getLogger(__name__)


def failed_setting_of(config: QuantConfig, op_type: str | None = None) -> dict[str, Any]:
    """The fields a failure depends on.

    Without ``op_type``: a calibration failure, the approach and the calibration setting. With
    it: the quantizer rejected that op type alone, under this approach, format and per-channel
    choice (``op_type`` matches every config that quantizes it).
    """
    if op_type is None:
        return {"approach": config.approach, **(config.calibration_setting or {})}
    return {"approach": config.approach, "quant_format": config.quant_format,
            "per_channel": config.per_channel, "op_type": op_type}


def _key(setting: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(setting, sort_keys=True).encode()).hexdigest()[:16]


def record_failed_setting(study: optuna.Study, setting: dict[str, Any], reason: str,
                          trial: int | None) -> None:
    """Store ``setting`` as failing for this model (once; a later failure keeps the first)."""
    name = attrs.FAILED_SETTING + _key(setting)
    if name in study.user_attrs:
        return
    study.set_user_attr(name, {"setting": setting, "reason": reason[:300], "trial": trial})
    shown = ", ".join(f"{k}={v}" for k, v in setting.items() if v is not None)
    logger.warning("%s fails for this model (trial %d: %s); it is not proposed again",
                   shown, trial, reason[:160])


def failed_settings(study: optuna.Study) -> list[dict[str, Any]]:
    """Every failing setting of the study, with its reason and first trial."""
    return [v for k, v in study.user_attrs.items() if k.startswith(attrs.FAILED_SETTING)]


def _matches(values: dict[str, Any], setting: dict[str, Any]) -> bool:
    for key, value in setting.items():
        if key == "op_type":
            if value not in values.get("op_types", ()):
                return False
        elif value is not None and values.get(key) != value:
            return False
    return True


def is_blocked(config: QuantConfig, settings: list[dict[str, Any]]) -> bool:
    """Whether ``config`` has every field of one failing setting (``op_type``: among its op
    types; a field that is ``None`` in the setting matches anything)."""
    if not settings:
        return False
    values = config.to_dict()
    return any(_matches(values, s["setting"]) for s in settings)
