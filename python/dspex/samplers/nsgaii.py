"""The crossovers and the mutation of :class:`~dspex.samplers.NSGAIISampler` and
:class:`~dspex.samplers.NSGAIIISampler`, with Optuna 5.0's names and arguments
(``optuna.samplers.nsgaii``). They describe what the engine does: pass one as the sampler's
``crossover=`` or ``mutation=``; the sampler validates its arguments. Numeric parameters are
crossed on their transformed scale (log scale for log parameters, an integer or stepped range
widened by half a step at each end); a child outside a range is clipped into it."""

from __future__ import annotations

from typing import Any, Dict, Optional


class _Operator:
    """What the crossovers and mutations share: a kind and keyword arguments for the engine."""

    _kind: str = ""

    def _options(self) -> Dict[str, Any]:
        return {}

    def _spec(self) -> Dict[str, Any]:
        return dict(kind=self._kind, **self._options())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._options().items())
        return f"{type(self).__name__}({args})"


class BaseCrossover(_Operator):
    """Base of the crossovers. ``n_parents`` parents make a child. dspex runs the built-in
    crossovers in the engine; a subclass written in Python is not supported."""

    n_parents: int = 2


class UniformCrossover(BaseCrossover):
    """Each parameter from one of the two parents: the first with probability
    ``swapping_prob``."""

    _kind = "uniform"

    def __init__(self, swapping_prob: float = 0.5) -> None:
        self._swapping_prob = swapping_prob

    def _options(self) -> Dict[str, Any]:
        return {"swapping_prob": self._swapping_prob}


class BLXAlphaCrossover(BaseCrossover):
    """Blend crossover: each parameter uniform in the parents' interval widened by ``alpha``
    times its width on each side."""

    _kind = "blx_alpha"

    def __init__(self, alpha: float = 0.5) -> None:
        self._alpha = alpha

    def _options(self) -> Dict[str, Any]:
        return {"alpha": self._alpha}


class SBXCrossover(BaseCrossover):
    """Simulated binary crossover, bounded by the ranges. ``eta`` is the distribution index
    (larger keeps children nearer their parents; default 2 for one objective, 20 for several);
    each parameter takes the crossover's gene with probability ``use_child_gene_prob`` (else
    a parent's), and a pair is swapped with probability ``uniform_crossover_prob``."""

    _kind = "sbx"

    def __init__(self, eta: Optional[float] = None, uniform_crossover_prob: float = 0.5, use_child_gene_prob: float = 0.5) -> None:
        self._eta = eta
        self._uniform_crossover_prob = uniform_crossover_prob
        self._use_child_gene_prob = use_child_gene_prob

    def _options(self) -> Dict[str, Any]:
        return {"eta": self._eta, "uniform_crossover_prob": self._uniform_crossover_prob, "use_child_gene_prob": self._use_child_gene_prob}


class VSBXCrossover(SBXCrossover):
    """Vector-wise simulated binary crossover (not bounded by the ranges), with
    :class:`SBXCrossover`'s arguments."""

    _kind = "vsbx"


class UNDXCrossover(BaseCrossover):
    """Unimodal normal distribution crossover of three parents: normal around the middle of
    the first two, with spread ``sigma_xi`` along their difference and ``sigma_eta`` (default
    0.35 / sqrt(parameters)) across it, scaled by the third parent's distance from their
    line."""

    n_parents = 3
    _kind = "undx"

    def __init__(self, sigma_xi: float = 0.5, sigma_eta: Optional[float] = None) -> None:
        self._sigma_xi = sigma_xi
        self._sigma_eta = sigma_eta

    def _options(self) -> Dict[str, Any]:
        return {"sigma_xi": self._sigma_xi, "sigma_eta": self._sigma_eta}


class SPXCrossover(BaseCrossover):
    """Simplex crossover of three parents: uniform in their simplex expanded by ``epsilon``
    (default sqrt(parameters + 2)) around its centre."""

    n_parents = 3
    _kind = "spx"

    def __init__(self, epsilon: Optional[float] = None) -> None:
        self._epsilon = epsilon

    def _options(self) -> Dict[str, Any]:
        return {"epsilon": self._epsilon}


class BaseMutation(_Operator):
    """Base of the mutations. dspex runs the built-in ones in the engine; a subclass written
    in Python is not supported."""


class PolynomialMutation(BaseMutation):
    """Polynomial mutation: a mutated numeric parameter moves from its value by a polynomial
    perturbation within its range; ``eta`` (>= 0) larger keeps it nearer. A categorical
    parameter chosen for mutation is drawn again at random."""

    _kind = "polynomial"

    def __init__(self, eta: float = 20.0) -> None:
        self._eta = eta

    def _options(self) -> Dict[str, Any]:
        return {"eta": self._eta}


__all__ = ["BLXAlphaCrossover", "BaseCrossover", "BaseMutation", "PolynomialMutation", "SBXCrossover", "SPXCrossover", "UNDXCrossover", "UniformCrossover", "VSBXCrossover"]
