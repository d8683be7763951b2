"""The exceptions quantuna raises: one tree, each message says value, place and fix."""

from __future__ import annotations


class QuantunaError(Exception):
    """Base class of every error quantuna raises on purpose."""


class SpecError(QuantunaError):
    """The study spec, the model or the data it names is invalid.

    The CLI prints the message on one line and exits with status 2; nothing is written.
    """


class TrialError(QuantunaError):
    """One trial could not be quantized or measured; the study marks it failed and goes on."""
