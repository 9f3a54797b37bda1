"""What the built-in samplers and pruners share: each is built by the engine from its kind and
constructor keywords (validated there, as study.toml's ``[sampler]``/``[pruner]`` are), keeps
them as its spec (sent to a remote engine), and pickles as that spec."""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, Tuple


class EngineComponent:
    """Base of :class:`~dspex.samplers.BaseSampler` and :class:`~dspex.pruners.BasePruner`."""

    _native: Any
    #: (kind, constructor keywords): what the engine builds the component from, in this process
    #: or in a remote engine.
    _spec: Tuple[str, Dict[str, Any]]

    @staticmethod
    def _engine_factory() -> Callable[[str, str], Any]:
        raise NotImplementedError

    def _build(self, kind: str, options: Dict[str, Any]) -> None:
        try:
            self._native = self._engine_factory()(kind, json.dumps(options))
        except ValueError as e:
            raise ValueError(f"{type(self).__name__}: {e}") from None
        self._spec = (kind, options)

    def __getstate__(self) -> Dict[str, Any]:
        # Pickled as its settings; the engine's object is built again from them when unpickled.
        state = dict(self.__dict__)
        state.pop("_native", None)
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "_spec" in state:
            self._build(*state["_spec"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
