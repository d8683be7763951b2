"""The spec's ``measure:`` section: the latency loop, its rounds, and the confirm phase.

Kept apart from :mod:`quantuna.spec` (which re-exports it) so that the measuring keys live in one
small module.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PerformanceMeasure(_Strict):
    """``measure.performance:`` the dedicated latency loop.

    ``iterations`` timed runs of the trial's model are split into ``rounds``; each round times a
    block of the trial's runs and a block of the fp32 reference's runs (the same count), so that
    drift on a shared machine cancels in the per-round ratio.
    """

    batch_size: int = Field(default=1, gt=0)
    warmup: int = Field(default=10, ge=0)
    iterations: int = Field(default=100, gt=0)
    threads: int = Field(default=1, gt=0)
    rounds: int = Field(default=10, gt=0)

    @property
    def timed_rounds(self) -> int:
        """Rounds actually timed: ``rounds``, at most one per iteration."""
        return min(self.rounds, self.iterations)

    @property
    def runs_per_round(self) -> int:
        """Timed runs of each model per round (``iterations // rounds``, at least 1)."""
        return max(1, self.iterations // self.timed_rounds)


class ConfirmMeasure(_Strict):
    """``measure.confirm:`` re-time the feasible front and fp32 together before reporting."""

    candidates: int = Field(default=8, gt=0)
    rounds: int = Field(default=10, gt=0)


class MeasureSection(_Strict):
    """``measure:`` how trials are measured."""

    performance: PerformanceMeasure = PerformanceMeasure()
    accuracy_threads: int = Field(default=0, ge=0)
    confirm: ConfirmMeasure | bool = ConfirmMeasure()

    @property
    def confirm_settings(self) -> ConfirmMeasure | None:
        """The confirm phase's settings (``confirm: true`` takes the defaults), None when off."""
        if self.confirm is False:
            return None
        return ConfirmMeasure() if self.confirm is True else self.confirm
