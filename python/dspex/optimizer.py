"""Program mode: optimize an engine-resident program (:mod:`dspex.native`) against a Python
metric. The engine runs the trials — it samples the program's tunable arguments, runs the
program over the examples concurrently, and calls back into this process only to score each
prediction::

    from dspex import DSpexSessionContext
    from dspex.optimizer import TPESampler, Study
    from dspex.native import RAG, LM

    with DSpexSessionContext() as ctx:
        rag = RAG(context=ctx, corpus=docs, lm=LM("my-model", base_url="http://127.0.0.1:8000/v1"))

        def metric(example, prediction, trace=None):
            return float(example.answer.lower() in prediction.answer.lower())

        study = Study(program=rag, optimizer=TPESampler(metric=metric, n_trials=100), trainset=train)
        best = study.optimize()
        print(best.k.value, best.score)
        print(best(question="...").answer)

``dspex.samplers`` / ``dspex.Study`` stay the objective-function API; this module is the
program-mode one.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import uuid
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from dspex import samplers as _samplers
from dspex._lm import LM
from dspex._metric_servers import _MetricServers
from dspex._program import Predict, Prediction, Program, _fields_of, _plain
from dspex.distributions import BaseDistribution, CategoricalDistribution

if TYPE_CHECKING:
    from dspex.pruners import BasePruner

__all__ = ["BestProgram", "ProgramTrial", "Study", "StudyError", "TPESampler", "Variable"]

Metric = Callable[..., Any]
_metric_ids = itertools.count(1)


class StudyError(RuntimeError):
    """A program study stopped without a result: too many failed examples (``.errors`` lists
    them), or no trial completed."""

    def __init__(self, message: str, errors: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.errors = list(errors)


class TPESampler:
    """The program-mode optimizer configuration: the engine's TPE sampler
    (:class:`dspex.samplers.TPESampler`, built with ``seed`` and ``**sampler_options``) searching
    a program's variables, ``n_trials`` trials, each scored by ``metric(example, prediction,
    trace=None)`` (a number; bool counts as 0/1).

    ``minibatch_size``: with a valset of more than 50 examples, a trial scores a random
    minibatch of this many (None: every example, always); every ``minibatch_full_eval_steps``
    trials, and at the end, the best minibatch configuration not yet fully evaluated is scored on
    the whole valset, and the best full-set score picks the result (as DSPy's MIPROv2 does; the
    full-set scores are the study's ``full_scores`` user attribute, apart from the trials'
    minibatch values the sampler learns from).
    ``num_candidates``, ``max_bootstrapped_demos``, ``max_labeled_demos``: demonstrations for
    every ``Predict``/``ChainOfThought`` step given no ``demos``, as MIPROv2 builds them: the
    program (default configuration) runs on the trainset, the traces whose metric passes give
    up to ``max_bootstrapped_demos`` demos per set, topped up with up to ``max_labeled_demos``
    raw trainset examples; ``num_candidates`` sets (the first without demos, the second with
    labeled ones only) become the step's ``demo_set`` variable. 0 demos of both kinds: none.
    ``failure_score``: the score of an example whose program run or metric call failed.
    ``max_errors``: failed examples tolerated over the whole study; past it, the study stops
    and :class:`StudyError` lists them. ``pruner``: a :mod:`dspex.pruners` pruner, fed the
    running mean score of each trial as its examples finish. ``aggregate``: a callable turning
    the list of a trial's example scores (in example order) into its score, instead of the mean
    (e.g. a trimmed mean, or a quantile for a worst-case objective).
    ``max_calls``, ``max_total_tokens``, ``max_cost``: a budget over every LM call the study's
    trials and full evaluations make (on top of each LM's own): once one runs out, no call
    starts, the trials in flight fail and the study ends cleanly with the best so far
    (``Study.summary["budget_spent"]`` says what was spent). Cache hits are free; demo
    bootstrapping, before the trials, is charged to it too.
    """

    def __init__(
        self,
        metric: Metric,
        n_trials: int = 100,
        seed: Optional[int] = None,
        *,
        minibatch_size: Optional[int] = 35,
        minibatch_full_eval_steps: int = 5,
        num_candidates: int = 6,
        max_bootstrapped_demos: int = 4,
        max_labeled_demos: int = 4,
        failure_score: float = 0.0,
        max_errors: int = 10,
        pruner: Optional["BasePruner"] = None,
        aggregate: Optional[Callable[[List[float]], float]] = None,
        timeout: Optional[float] = None,
        max_calls: Optional[int] = None,
        max_total_tokens: Optional[int] = None,
        max_cost: Optional[float] = None,
        **sampler_options: Any,
    ) -> None:
        if not callable(metric):
            raise TypeError(f"metric must be callable (example, prediction, trace=None) -> float, got {metric!r}")
        if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
            raise ValueError(f"n_trials must be an int >= 1, got {n_trials!r}")
        if isinstance(max_errors, bool) or not isinstance(max_errors, int) or max_errors < 0:
            raise ValueError(f"max_errors must be an int >= 0, got {max_errors!r}")
        if isinstance(failure_score, bool) or not isinstance(failure_score, (int, float)) or not math.isfinite(failure_score):
            raise ValueError(f"failure_score must be a finite number, got {failure_score!r}")
        for what, v in (("minibatch_size", minibatch_size), ("minibatch_full_eval_steps", minibatch_full_eval_steps),
                        ("num_candidates", num_candidates)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{what} must be an int >= 1, got {v!r}")
        for what, v in (("max_bootstrapped_demos", max_bootstrapped_demos), ("max_labeled_demos", max_labeled_demos)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{what} must be an int >= 0, got {v!r}")
        for what, v in (("max_calls", max_calls), ("max_total_tokens", max_total_tokens)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise ValueError(f"{what} must be an int >= 0 or None, got {v!r}")
        if max_cost is not None and (isinstance(max_cost, bool) or not isinstance(max_cost, (int, float)) or not math.isfinite(max_cost) or max_cost < 0):
            raise ValueError(f"max_cost must be a finite number >= 0 or None, got {max_cost!r}")
        #: The study-wide LM budget (None where unlimited).
        self.budget: Dict[str, Any] = {"max_calls": max_calls, "max_total_tokens": max_total_tokens, "max_cost": max_cost}
        self.num_candidates = num_candidates
        self.max_bootstrapped_demos = max_bootstrapped_demos
        self.max_labeled_demos = max_labeled_demos
        if aggregate is not None and not callable(aggregate):
            raise TypeError(f"aggregate must be a callable (scores) -> float, got {aggregate!r}")
        self.aggregate = aggregate
        self.metric = metric
        self.n_trials = n_trials
        self.seed = seed
        self.minibatch_size = minibatch_size
        self.minibatch_full_eval_steps = minibatch_full_eval_steps
        self.failure_score = float(failure_score)
        self.max_errors = max_errors
        self.timeout = timeout
        self.sampler = _samplers.TPESampler(seed=seed, **sampler_options)
        self.pruner = pruner

    def __repr__(self) -> str:
        return f"TPESampler(n_trials={self.n_trials}, metric={getattr(self.metric, '__name__', self.metric)!r})"


class ProgramTrial:
    """A finished trial of a program study, as callbacks see it: ``number``, ``state``
    (``"COMPLETE"``, ``"PRUNED"`` or ``"FAIL"``), ``value`` (the mean score, None unless
    complete) and ``params``."""

    __slots__ = ("number", "state", "value", "params")

    def __init__(self, number: int, state: str, value: Optional[float], params: Dict[str, Any]) -> None:
        self.number = number
        self.state = state
        self.value = value
        self.params = params

    def __repr__(self) -> str:
        return f"ProgramTrial(number={self.number}, state={self.state!r}, value={self.value!r}, params={self.params})"


class Variable:
    """A tunable argument of the best program: ``name`` (``"step.arg"``), ``value`` (the best
    configuration's), ``distribution``."""

    __slots__ = ("name", "value", "distribution")

    def __init__(self, name: str, value: Any, distribution: BaseDistribution) -> None:
        self.name = name
        self.value = value
        self.distribution = distribution

    def __repr__(self) -> str:
        return f"Variable({self.name!r}, value={self.value!r})"


class BestProgram:
    """The best configuration of a program study: ``params`` (``"step.arg"`` → value),
    ``score`` (its mean metric over the whole valset), a :class:`Variable` per tunable
    argument by its full name (``best["retrieve.k"]``) or, when no other step has an argument
    of that name, by the argument alone (``best.k.value``). Calling it runs the program with
    that configuration in the engine."""

    def __init__(self, program: Program, params: Dict[str, Any], score: float, summary: Dict[str, Any],
                 values: Optional[List[float]] = None) -> None:
        self.program = program
        #: The trial's values in the study's objective order (``[score]`` for one objective).
        self.values = list(values) if values is not None else [score]
        self.params = dict(params)
        self.score = score
        self.summary = summary
        self.study_name: str = summary["study_name"]
        self.variables = {k: Variable(k, v, program.variables[k]) for k, v in params.items() if k in program.variables}

    def __getitem__(self, name: str) -> Variable:
        return self.variables[name]

    def __getattr__(self, name: str) -> Variable:
        if name.startswith("_") or "variables" not in self.__dict__:
            raise AttributeError(name)
        found = [v for k, v in self.variables.items() if k.split(".", 1)[1] == name]
        if len(found) == 1:
            return found[0]
        if found:
            raise AttributeError(f"several steps have an argument {name!r}: use best[{found[0].name!r}] ({', '.join(v.name for v in found)})")
        raise AttributeError(f"the program has no tunable argument {name!r} (it has: {', '.join(self.variables) or 'none'})")

    def __call__(self, **inputs: Any) -> Prediction:
        return self.program.run(self.params, **inputs)

    def to_dspy(self) -> Any:
        """This configuration as a ``dspy.Module`` (``dspy.Predict``/``dspy.ChainOfThought``
        with the chosen instructions and demos; retrieval keeps searching the session's index,
        so keep the session open). Needs ``pip install dspy``."""
        from dspex._to_dspy import to_dspy

        return to_dspy(self.program, self.params)

    def save(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Writes this configuration of the program to a JSON file
        (:meth:`dspex.native.Program.save`); ``dspex.native.load_program(path, context=ctx)``
        reads it back, ready to run."""
        self.program.save(path, self.params, score=self.score, study_name=self.study_name)

    def __repr__(self) -> str:
        return f"BestProgram(score={self.score:.4g}, params={self.params})"


def _score(value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    if value is None or isinstance(value, (str, bytes)) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise TypeError(f"the metric returned {value!r}, not a number")
    x = float(value)
    if not math.isfinite(x):
        raise ValueError(f"the metric returned {value!r}, not a finite number")
    return x


class _Scorer:
    """The metric as the engine calls it: ``score(example index, prediction fields)``. It pickles
    (with the metric and the examples) for the worker processes of ``processes=N``."""

    def __init__(self, metric: Callable[..., Any], valset: Sequence[Any]) -> None:
        self.metric = metric
        self.valset = valset

    def score(self, example: int, prediction: dict, trace: Any = None) -> float:
        return _score(self.metric(self.valset[example], Prediction(prediction), None))

    __call__ = score


class _MetricPool(_MetricServers):
    """``processes=N``: N worker processes (``python -m dspex.worker --metric-tool``) serve the
    metric, supervised by the engine's worker pool (restarted when they die; a call a dying
    worker had is sent to another)."""

    def __init__(self, ctx: Any, scorer: _Scorer, tool: str, processes: int) -> None:
        import pickle
        import tempfile

        if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
            raise ValueError(f"processes must be an int >= 1, got {processes!r}")
        try:
            data = pickle.dumps(scorer)
        except Exception as e:  # noqa: BLE001
            raise TypeError(f"processes=N sends the metric and the examples to worker processes, and they do not pickle: {e} "
                            "(define the metric at module level)") from None
        fd, self._path = tempfile.mkstemp(prefix="dspex-metric-", suffix=".pkl")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        self._processes = processes
        self._pool: Any = None
        super().__init__(ctx, tool)

    def _start(self, address: str, token: Optional[str]) -> None:
        import sys

        from dspex import _native
        from dspex.remote import _check_objective

        ctx = self._ctx
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), *[p for p in sys.path if p], env.get("PYTHONPATH", "")])
        args = ["--objective-pickle", self._path]
        _check_objective(args, env)
        if ctx.engine is not None and ctx._auth[1] is not None:
            args += ["--tls-ca", ctx._auth[1]]
        if token:
            env["DSPEX_TOKEN"] = token
        cmd = [sys.executable, "-m", "dspex.worker", "--engine", address, "--session", ctx.session_id,
               "--metric-tool", self._tool, "--pool-variable", self._var, "--tool-timeout", str(ctx.tool_timeout), *args]
        self._pool = _native.WorkerPool(cmd, env, self._processes, name_prefix="metric-worker")

    def _look(self) -> Optional[str]:
        if self._pool is not None and self._pool.supervise() == 0 and self._pool.exhausted:
            return "the metric worker processes crashed before serving the metric (see their output above)"
        return None

    def _stop(self) -> None:
        if self._pool is not None:
            self._pool.close(5.0)
        try:
            os.unlink(self._path)
        except OSError:
            pass


def _callbacks(callbacks: Optional[Sequence[Callable[..., None]]]) -> List[Callable[..., None]]:
    """``callbacks`` checked: a list of callables (study, trial) -> None."""
    out = list(callbacks or [])
    if not all(callable(c) for c in out):
        raise TypeError("callbacks must be callables (study, trial) -> None")
    return out


def _run_engine_study(
    ctx: Any,
    spec: Dict[str, Any],
    owner: Any,
    score: Callable[..., Any],
    role: str,
    *,
    aggregate: Optional[Callable[[list], float]] = None,
    callbacks: Sequence[Callable[[Any, ProgramTrial], None]] = (),
    show_progress_bar: bool = True,
    usage: Optional[Callable[[], Dict[str, str]]] = None,
    pool: Optional[Callable[[str], Any]] = None,
    threads: Optional[int] = None,
) -> Dict[str, Any]:
    """Runs a program study (``spec``, the engine's JSON without its tools) in ``ctx``'s
    engine and returns its summary. ``score`` becomes the study's ``role`` tool
    (``metric_tool``, or ``evaluate_tool`` for a program that stays in Python), served by
    ``pool(tool name)`` when given, else in this process (on ``threads`` threads of its own
    when given, and then without a timeout); ``aggregate`` its aggregate tool. After every trial the
    progress bar moves and ``callbacks(owner, ProgramTrial)`` run; one that raises stops the
    study and its exception is raised here; ``owner._stop`` set by a callback stops it too."""
    from dspex._optimize import _Progress

    owner._stop = False
    progress = _Progress(bool(show_progress_bar), spec.get("n_trials"), None)
    best: List[Optional[float]] = [None]
    failure: List[BaseException] = []

    def on_trial(number: int, state: str, value: Optional[float] = None, params: Optional[dict] = None) -> bool:
        if state == "COMPLETE" and value is not None and (best[0] is None or value > best[0]):
            best[0] = value
        progress.update(best[0], usage() if progress.enabled and usage is not None else None)
        trial = ProgramTrial(number, state, value, dict(params or {}))
        for cb in callbacks:
            try:
                cb(owner, trial)
            except BaseException as e:  # stop the study; raised once it has ended
                failure.append(e)
                return True
        return bool(owner._stop)

    # the engine calls these as tools of the session; unique names, as other processes may
    # share a session on a served engine
    suffix = f"{next(_metric_ids)}_{uuid.uuid4().hex[:12]}"
    tool, trial_tool = f"__metric_{suffix}", f"__trial_{suffix}"
    aggregate_tool = f"__aggregate_{suffix}" if aggregate is not None else None
    spec = {**spec, role: tool, "trial_tool": trial_tool, "aggregate_tool": aggregate_tool}
    registered: List[str] = []
    served: Any = None
    try:
        if pool is not None:
            served = pool(tool)
        for name, func in ((tool, score), (trial_tool, on_trial), (aggregate_tool, aggregate)):
            if name is not None and func is not None and not (name == tool and served is not None):
                own = {"threads": threads, "timeout": 365 * 24 * 3600.0} if name == tool and threads is not None else {}
                ctx.register_tool(func, name=name, description="part of a program study (dspex.optimizer)", **own)
                registered.append(name)
        summary: Dict[str, Any] = ctx._native.program("optimize", json.dumps(spec))
    finally:
        progress.close()
        if served is not None:
            served.close()
        for name in registered:
            try:
                ctx.unregister_tool(name)
            except (KeyError, ValueError):
                pass
    if failure:
        raise failure[0]
    return summary


class Study:
    """A study of a program's configurations (see the module docs).

    ``program``: a :class:`dspex.native.Program` (e.g. ``RAG``) with at least one argument
    given as a distribution. ``optimizer``: a :class:`TPESampler` configuration. ``trainset``:
    examples (``dspy.Example``, dicts, or objects with attributes) holding the program's input
    fields; the metric gets them as they are. ``valset``: the examples a trial is scored on
    (default: the trainset). ``storage`` / ``study_name``: a SQLite/PostgreSQL URL keeps the
    study in Optuna's schema. Running it again with the same name continues it: ``n_trials`` is
    the number of trials the study should hold, so only the missing ones run; its finished
    trials stay as they are, and trials a killed process left running are failed and replaced.
    ``objectives``: what a trial's values are, ``["score"]`` by default; adding ``"latency"``,
    ``"tokens"`` or ``"cost"`` (seconds, LM tokens or estimated LM cost per example, from the
    LMs' ``prices``; all minimized) makes it a multi-objective study (``directions`` then are
    e.g. ``["maximize", "minimize"]``): no minibatches, and :attr:`best_programs` holds the
    Pareto set.
    """

    def __init__(
        self,
        program: Program,
        optimizer: TPESampler,
        trainset: Sequence[Any],
        valset: Optional[Sequence[Any]] = None,
        storage: Optional[str] = None,
        study_name: Optional[str] = None,
        directions: Optional[Sequence[str]] = None,
        objectives: Optional[Sequence[str]] = None,
    ) -> None:
        if not isinstance(program, Program):
            raise TypeError(f"program must be a dspex.native.Program (e.g. RAG), got {type(program).__name__}")
        if not isinstance(optimizer, TPESampler):
            raise TypeError(f"optimizer must be a dspex.optimizer.TPESampler, got {type(optimizer).__name__}")
        objectives = ["score"] if objectives is None else list(objectives)
        known = {"score": "maximize", "latency": "minimize", "tokens": "minimize", "cost": "minimize"}
        if not objectives or objectives[0] != "score" or any(o not in known for o in objectives) or len(set(objectives)) != len(objectives):
            raise ValueError(f"objectives must start with 'score' and may add 'latency', 'tokens' and 'cost' (each once), got {objectives!r}")
        if "cost" in objectives:
            for step in program.steps:
                lm = getattr(step, "lm", None) if isinstance(step, Predict) else None
                if isinstance(lm, LM) and lm.model not in (json.loads(lm._config).get("prices") or {}):
                    raise ValueError(f"the 'cost' objective needs a price for every LM: step {step.name!r} uses {lm.model!r}, "
                                     f"which has none (LM(..., prices={{{lm.model!r}: {{'input': ..., 'output': ...}}}}))")
        derived = [known[o] for o in objectives]
        if directions is not None and list(directions) != derived:
            raise ValueError(f"directions {list(directions)!r} do not match objectives {objectives!r}: they are {derived!r}")
        self.objectives = objectives
        self.directions = derived
        #: The Pareto-optimal programs of a study with several objectives (after optimize).
        self.best_programs: List[BestProgram] = []
        self._spent: Optional[Dict[str, Any]] = None  # of the study-wide budget, before the trials
        self.program = program
        self.optimizer = optimizer
        self.trainset = list(trainset)
        if not self.trainset:
            raise ValueError("the trainset is empty")
        if not program.variables and not self._demo_steps():
            raise ValueError("the program has nothing to tune: give an argument as a distribution, e.g. Retrieve(corpus, k=IntDistribution(1, 20))")
        self.valset = list(valset) if valset is not None else self.trainset
        if not self.valset:
            raise ValueError("the valset is empty")
        self.storage = storage
        self.study_name = study_name
        # checked now: a field missing from an example is an error before any trial
        self._inputs = [program.example_inputs(e, f"valset example {i}") for i, e in enumerate(self.valset)]

    def _demo_steps(self) -> List[Predict]:
        """The prediction steps whose demos the study bootstraps."""
        opt = self.optimizer
        if opt.num_candidates < 2 or opt.max_bootstrapped_demos + opt.max_labeled_demos == 0:
            return []
        return [s for s in self.program.steps if isinstance(s, Predict) and s.args["demos"] is None and s.args["demo_set"] is None]

    def _budget_spec(self) -> Optional[Dict[str, Any]]:
        """The study-wide budget as the engine takes it: limits and what was spent already."""
        if all(v is None for v in self.optimizer.budget.values()):
            return None
        return {"budget": self.optimizer.budget, "budget_spent": self._spent}

    def _bootstrap(self) -> None:
        """Builds the demo sets of :meth:`_demo_steps` (see :class:`TPESampler`)."""
        steps = self._demo_steps()
        if not steps:
            return
        opt = self.optimizer
        rng = random.Random(opt.seed)
        order = list(range(len(self.trainset)))
        rng.shuffle(order)
        runs, self._spent = self.program._run_many([self.trainset[i] for i in order], budget=self._budget_spec())
        passed: List[Tuple[int, Dict[str, Dict[str, Any]]]] = []  # (example, step -> demo)
        for i, r in zip(order, runs):
            if isinstance(r, Exception):
                continue
            try:
                ok = opt.metric(self.trainset[i], r, r.trace)
            except Exception:
                continue
            if ok:
                passed.append((i, {step: {**ins, **outs} for step, ins, outs in (r.trace or [])}))
        used = {i for i, _ in passed}
        for step in steps:
            fields = step.reads() + Program._writes(step)
            outputs = [f for f in Program._writes(step) if f != "reasoning"]
            labeled = []  # raw examples with the step's outputs (and whichever inputs they have)
            for i in order:
                ex = _fields_of(self.trainset[i])
                if i not in used and all(f in ex for f in outputs):
                    labeled.append({f: _plain(ex[f]) for f in fields if f in ex})
            boot = [demos[step.name] for _, demos in passed if step.name in demos]
            sets: List[List[Dict[str, Any]]] = [[], labeled[: opt.max_labeled_demos]]
            while len(sets) < opt.num_candidates:
                rng.shuffle(boot)
                rng.shuffle(labeled)
                b = boot[: opt.max_bootstrapped_demos]
                sets.append(b + labeled[: max(0, opt.max_labeled_demos - len(b))])
            step.args["demos"] = sets
            step.args["demo_set"] = CategoricalDistribution(list(range(len(sets))))
        self.program._json = None  # the steps changed: bind them again

    def estimate(self, sample: int = 5, completion_tokens: int = 64, show: bool = True) -> Dict[str, Any]:
        """A dry run: how many LM calls, tokens and how much cost :meth:`optimize` would spend,
        without calling an LM. Calls are counted from the study's plan (trials, examples per
        trial, full evaluations, demo bootstrapping); prompt tokens are estimated (4 characters
        a token) from the instructions, the demos and the inputs of up to ``sample`` valset
        examples, run through the steps before the first prediction (retrieval and Python
        steps, which cost no LM call); each answer is taken as ``completion_tokens`` tokens
        (or the step's ``max_tokens``). Cost uses each LM's ``prices``; prints a summary when
        ``show``."""
        opt = self.optimizer
        predicts = [s for s in self.program.steps if isinstance(s, Predict)]
        n_val = len(self.valset)
        minibatch = opt.minibatch_size if opt.minibatch_size is not None and n_val > 50 and len(self.objectives) == 1 else None
        per_trial = min(minibatch, n_val) if minibatch else n_val
        full_evals = (opt.n_trials // opt.minibatch_full_eval_steps + 1) if minibatch else 0
        bootstrap = len(self.trainset) if self._demo_steps() else 0
        runs = opt.n_trials * per_trial + full_evals * n_val + bootstrap
        first = next((i for i, s in enumerate(self.program.steps) if isinstance(s, Predict)), len(self.program.steps))
        samples = self.valset[: max(1, sample)]
        states = [dict(self.program.example_inputs(e)) for e in samples]
        if 0 < first:  # the free steps before the first prediction, run in the engine
            prefix = Program(self.program.steps[:first], context=self.program.context)
            prefix.params = {k: v for k, v in self.program.params.items() if k in prefix.variables}
            for st, out in zip(states, prefix.run_many(samples)):
                if not isinstance(out, Exception):
                    st.update(out)
        calls = tokens = 0
        cost = 0.0
        unpriced = []
        for step in predicts:
            text = [len(str(step.args.get("instructions") or "")) + 200]
            demos = step.args.get("demos") or []
            demo_chars = len(json.dumps(demos[0] if demos and isinstance(demos[0], list) else demos))
            for st in states:
                text.append(sum(len(json.dumps(st.get(f, ""))) for f in step.reads()))
            prompt = (text[0] + demo_chars + sum(text[1:]) / max(1, len(states))) / 4
            answer = step.args.get("max_tokens") or completion_tokens
            calls += runs
            tokens += int(runs * (prompt + answer))
            lm = step.lm
            price = json.loads(lm._config).get("prices") or {} if isinstance(lm, LM) else {}
            model = lm.model if isinstance(lm, LM) else str(lm)
            p = price.get(model) or price.get(model.split("/", 1)[-1])
            if p:
                cost += runs * (prompt * p.get("input", 0.0) + answer * p.get("output", 0.0)) / 1e6
            else:
                unpriced.append(model)
        result: Dict[str, Any] = {"trials": opt.n_trials, "examples_per_trial": per_trial, "full_evaluations": full_evals,
                  "bootstrap_runs": bootstrap, "program_runs": runs, "lm_calls": calls, "tokens": tokens,
                  "cost": cost, "unpriced_models": sorted(set(unpriced))}
        if show:
            priced = f"~{cost:.4g}" + (f" (no price for {', '.join(result['unpriced_models'])})" if unpriced else "")
            print(f"program study estimate: {runs} program runs ({opt.n_trials} trials x {per_trial} examples"
                  f"{f', {full_evals} full evaluations' if full_evals else ''}{f', {bootstrap} bootstrap runs' if bootstrap else ''}), "
                  f"{calls} LM calls, ~{tokens} tokens, cost {priced}")
        return result

    def stop(self) -> None:
        """From a callback: start no more trials (running ones finish)."""
        self._stop = True

    def optimize(
        self,
        concurrency: int = 4,
        example_concurrency: int = 64,
        callbacks: Optional[Sequence[Callable[["Study", ProgramTrial], None]]] = None,
        show_progress_bar: bool = True,
        processes: Optional[int] = None,
        workers: Any = None,
    ) -> BestProgram:
        """Runs the study in the engine: ``concurrency`` trials at once (constant-liar TPE),
        each with ``example_concurrency`` examples in flight. Blocks until the study ends;
        returns the best configuration. ``callbacks`` are called with this study and a
        :class:`ProgramTrial` after each trial (one may call :meth:`stop`; one that raises stops
        the study and its exception is raised here); ``show_progress_bar``: trials done, the
        best minibatch score and the LM calls, tokens and cost so far on stderr (tqdm when
        installed). Raises :class:`StudyError` when
        more than ``max_errors`` examples failed or no trial completed; a spent LM budget
        (``max_calls``...) ends the study cleanly with the best so far.

        ``processes=N``: the metric runs in N worker processes instead of this one (for a
        metric heavy enough that one Python process is the bottleneck). They join the session,
        are restarted when they die (a prediction a dying worker was scoring is scored by
        another) and leave when the study ends. The metric and the examples must pickle (a
        metric defined at module level). ``workers=dspex.launchers.Ray(num_workers=N)``: the
        metric runs in N Ray actors that join the session the same way."""
        callbacks = _callbacks(callbacks)
        ctx = self.program.context
        opt = self.optimizer
        if workers is not None:
            from dspex.launchers import Launcher

            if not isinstance(workers, Launcher):
                raise TypeError(f"workers must be a dspex.launchers launcher (e.g. Ray(num_workers=4)), got {workers!r}")
            if processes is not None:
                raise ValueError("give processes=N or workers=..., not both")

        # the program's LMs: in this process's engine they are these objects, so their stats
        # count the study's calls (a served engine keeps its own copies)
        lms = list({id(s.lm): s.lm for s in self.program.steps if isinstance(s, Predict) and isinstance(s.lm, LM)}.values())

        def lm_usage() -> Dict[str, str]:
            if not lms or ctx.engine is not None:
                return {}
            stats = [lm.stats() for lm in lms]
            out = {"lm_calls": str(sum(st["calls"] for st in stats)), "tokens": str(sum(st["total_tokens"] for st in stats))}
            cost = sum(st["cost"] for st in stats)
            if cost:
                out["cost"] = f"{cost:.4g}"
            return out

        self._spent = None
        self._bootstrap()
        user_aggregate = opt.aggregate
        scorer = _Scorer(opt.metric, self.valset)
        spec = {
            "program": self.program.to_json(),
            "examples": self._inputs,
            "storage": self.storage,
            "study_name": self.study_name,
            "sampler": {"kind": opt.sampler._spec[0], "options": opt.sampler._spec[1]},
            "pruner": None if opt.pruner is None else {"kind": opt.pruner._spec[0], "options": opt.pruner._spec[1]},
            "n_trials": opt.n_trials,
            "timeout": opt.timeout,
            "concurrency": concurrency,
            "example_concurrency": example_concurrency,
            "failure_score": opt.failure_score,
            "max_errors": opt.max_errors,
            "minibatch_size": opt.minibatch_size if opt.minibatch_size is not None and len(self.valset) > 50 else None,
            "full_eval_steps": opt.minibatch_full_eval_steps,
            "seed": opt.seed,
            "objectives": self.objectives,
            **(self._budget_spec() or {}),
        }
        summary = _run_engine_study(
            ctx, spec, self, scorer.score, "metric_tool",
            aggregate=None if user_aggregate is None else lambda scores: _score(user_aggregate(list(scores))),
            callbacks=callbacks, show_progress_bar=show_progress_bar, usage=lm_usage,
            pool=(lambda tool: workers.serve_metric(ctx, scorer, tool)) if workers is not None
            else None if processes is None else lambda tool: _MetricPool(ctx, scorer, tool, processes),
        )
        self.summary = summary
        if len(self.objectives) > 1 and summary["stop_reason"] != "aborted" and summary.get("best_trials"):
            self.best_programs = [BestProgram(self.program, t["params"], t["values"][0], summary, values=t["values"])
                                  for t in sorted(summary["best_trials"], key=lambda t: -t["values"][0])]
            return self.best_programs[0]
        if summary["stop_reason"] == "aborted" or "best_params" not in summary:
            errors = summary.get("errors", [])
            why = summary.get("stop_detail") or "no trial completed"
            raise StudyError(f"the program study {summary['study_name']!r} stopped: {why}", errors)
        return BestProgram(self.program, summary["best_params"], summary["best_value"], summary)

