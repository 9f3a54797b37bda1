"""A dspex program as a ``dspy.Module`` (``BestProgram.to_dspy()``): its predictions become
``dspy.Predict`` / ``dspy.ChainOfThought`` with the chosen instructions and demos, so the result
can leave dspex; retrieval still searches the session's BM25 index (keep the session open),
Python tools call the function, fusion is computed in Python. Needs ``pip install dspy``."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping

from dspex._program import ChainOfThought, Fuse, Predict, Program, PythonTool, Retrieve


def _rrf(a: List[Any], b: List[Any], weight: float, k: int) -> List[Any]:
    """Reciprocal-rank fusion as the engine's ``fuse`` step computes it (c = 60, first
    appearance breaking ties)."""
    scores: Dict[str, float] = {}
    items: Dict[str, Any] = {}
    for lst, w in ((a, weight), (b, 1.0 - weight)):
        for rank, item in enumerate(lst):
            key = repr(item)
            items.setdefault(key, item)
            scores[key] = scores.get(key, 0.0) + w / (60.0 + rank + 1)
    order = sorted(items, key=lambda key: -scores[key])  # sorted() is stable: ties keep first appearance
    return [items[key] for key in order[:k]]


def to_dspy(program: Program, params: Mapping[str, Any]) -> Any:
    """``program`` with the configuration ``params`` as a ``dspy.Module``."""
    try:
        import dspy
    except ImportError:
        raise ImportError("to_dspy needs DSPy: pip install dspy") from None

    values = program.defaults()
    values.update(params)
    bound = program.to_json()["steps"]

    def arg(step: Any, name: str) -> Any:
        key = f"{step.name}.{name}"
        return values[key] if key in values else step.args.get(name)

    ctx = program.context

    class DspexProgram(dspy.Module):
        def __init__(self) -> None:
            super().__init__()
            for step in program.steps:
                if isinstance(step, Predict):
                    sig = dspy.Signature(step.args["signature"], arg(step, "instructions") or None)
                    config = {k: arg(step, k) for k in ("temperature", "max_tokens") if arg(step, k) is not None}
                    module = (dspy.ChainOfThought if isinstance(step, ChainOfThought) else dspy.Predict)(sig, **config)
                    demos = arg(step, "demos") or []
                    if arg(step, "demo_set") is not None:
                        demos = demos[arg(step, "demo_set")]
                    predictor = module.predict if isinstance(step, ChainOfThought) else module
                    predictor.demos = [dspy.Example(**d) for d in demos]
                    setattr(self, step.name, module)

        def forward(self, **inputs: Any) -> Any:
            state: Dict[str, Any] = dict(inputs)
            written: Dict[str, Any] = {}
            for step, spec in zip(program.steps, bound):
                out: Dict[str, Any]
                if isinstance(step, Retrieve):
                    index = spec["args"]["index"] + ("#stem" if arg(step, "stem") else "")
                    hits = ctx.tools["search"](index=index, query=state[step.args["query"]], k=int(arg(step, "k")),
                                               k1=float(arg(step, "k1")), b=float(arg(step, "b")))
                    out = {step.args["output"]: [h["text"] for h in hits]}
                elif isinstance(step, Predict):
                    pred = getattr(self, step.name)(**{f: state[f] for f in step.reads()})
                    out = {k: pred[k] for k in Program._writes(step)}
                elif isinstance(step, PythonTool):
                    kwargs = {f: state[f] for f in step.args["inputs"]}
                    kwargs.update({k: arg(step, k) for k in step.args if k not in ("tool", "inputs", "output")})
                    result = step.func(**kwargs) if step.func is not None else ctx.tools[step.args["tool"]](**kwargs)
                    out = {step.args["output"]: result} if step.args["output"] else dict(result)
                elif isinstance(step, Fuse):
                    out = {step.args["output"]: _rrf(state[step.args["a"]], state[step.args["b"]], float(arg(step, "weight")), int(arg(step, "k")))}
                else:  # pragma: no cover - every module kind is handled above
                    raise TypeError(f"to_dspy cannot convert {type(step).__name__}")
                state.update(out)
                written.update(out)
            return dspy.Prediction(**written)

    return DspexProgram()
