"""The exceptions quantuna raises: one tree, each message says value, place and fix."""

from __future__ import annotations

MAX_MESSAGE = 600  # characters; a message quoting a huge value keeps its head and its tail


class QuantunaError(Exception):
    """Base class of every error quantuna raises on purpose.

    The message is kept on one line and bounded (:data:`MAX_MESSAGE`), whatever value it quotes.
    """

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str):
            text = " ".join(args[0].split())
            if len(text) > MAX_MESSAGE:
                text = f"{text[: MAX_MESSAGE - 205]} ... {text[-200:]}"
            args = (text,)
        super().__init__(*args)


class SpecError(QuantunaError):
    """The study spec, the model or the data it names is invalid.

    The CLI prints the message on one line and exits with status 2; nothing is written.
    """


class TrialError(QuantunaError):
    """One trial could not be quantized or measured; the study marks it failed and goes on."""


class HopelessTrial(TrialError):
    """The first part of the evaluation already proves that the accuracy target cannot be met.

    Attributes:
        best_possible: the best final accuracy still reachable (the bound that failed).
        samples: how many evaluation samples were measured before stopping.
        partial: the metric on those samples (nan when not given).
        total: the evaluation set's size (0 when not given).
    """

    def __init__(self, message: str, best_possible: float, samples: int,
                 partial: float = float("nan"), total: int = 0) -> None:
        super().__init__(message)
        self.best_possible = best_possible
        self.samples = samples
        self.partial = partial
        self.total = total


class PrunedTrial(TrialError):
    """A pruner asked to stop the trial while its accuracy pass reported intermediate values.

    Attributes:
        samples: how many evaluation samples were measured before stopping.
        partial: the metric on those samples.
    """

    def __init__(self, message: str, samples: int, partial: float) -> None:
        super().__init__(message)
        self.samples = samples
        self.partial = partial
