"""The artifact store's errors (``optuna.artifacts.exceptions``)."""

from __future__ import annotations

from dspex.exceptions import DSpexError


class ArtifactNotFound(DSpexError):
    """The store has no artifact with the id asked for."""


__all__ = ["ArtifactNotFound"]
