"""DSPy programs optimized by the dspex engine: a drop-in ``MIPROv2``.

Change one import::

    from dspex.dspy import MIPROv2          # instead of: from dspy import MIPROv2

    optimizer = MIPROv2(metric=metric, auto="light", concurrency=4, storage="sqlite:///mipro.db")
    optimized = optimizer.compile(program, trainset=trainset)

The constructor and ``compile`` take DSPy 3.4's arguments, with the same defaults, presets
(``auto="light" | "medium" | "heavy"``) and trial count, and the candidates are DSPy's own:
its demo bootstrapping and its grounded instruction proposer. The search is dspex's: the
instruction and demo-set choices of every predictor go to the engine's TPE sampler, several
trials run at once (constant liar), each evaluating ``num_threads`` examples at once as DSPy does,
minibatch scores and full-valset scores are kept apart (the sampler learns from minibatches;
the result is the best full-valset score, the default program's included), and ``seed`` is
used as given (0 is 0).

What dspex adds: ``concurrency`` (trials at once), ``storage`` / ``study_name`` (the study in
a SQLite or PostgreSQL database: every trial's configuration, example scores and LM usage;
running the same compile again continues it, reusing its candidates and finished trials),
``max_metric_calls`` / ``max_lm_calls`` / ``max_cost`` (the search stops cleanly once one is
spent and the best so far is returned), ``pruner``, ``callbacks`` and a progress bar.

Needs DSPy 3.4 (``pip install "dspex[dspy]"``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from dspex._imports import optional
from dspex.exceptions import BudgetExceeded

SUPPORTED = ((3, 4), (3, 5))
"""The DSPy versions this module works with: >= 3.4, < 3.5."""


def _import_dspy() -> Any:
    dspy = optional("dspy", "dspex.dspy (DSPy 3.4)", "dspy")
    version = getattr(dspy, "__version__", "0")
    try:
        found = tuple(int(p) for p in version.split(".")[:2])
    except ValueError:
        found = (0, 0)
    if not SUPPORTED[0] <= found < SUPPORTED[1]:
        raise ImportError(f"dspex.dspy works with DSPy >= 3.4, < 3.5; this is DSPy {version} "
                          '(pip install "dspex[dspy]" installs a supported one)')
    return dspy


dspy = _import_dspy()

from dspy.dsp.utils.settings import thread_local_overrides  # noqa: E402
from dspy.teleprompt.mipro_optimizer_v2 import MIPROv2 as _DSPyMIPROv2  # noqa: E402
from dspy.teleprompt.utils import get_signature, set_signature  # noqa: E402

__all__ = ["MIPROv2", "SUPPORTED"]

logger = logging.getLogger("dspex.dspy")


def _score(value: Any) -> float:
    """A metric's answer as a number (bool: 0/1; an object with ``.score``: that)."""
    if not isinstance(value, (bool, int, float)) and hasattr(value, "score"):
        value = value.score
    if isinstance(value, bool):
        return float(value)
    if not isinstance(value, (int, float)):
        raise TypeError(f"the metric returned {value!r}, not a number (or bool)")
    x = float(value)
    if not math.isfinite(x):
        raise ValueError(f"the metric returned {value!r}, not a finite number")
    return x


def _percent(mean: float) -> float:
    """A mean metric as DSPy's ``Evaluate`` reports it (percent, 2 decimals)."""
    return round(100 * mean, 2)


class _Usage:
    """One evaluation's LM use, as DSPy reports it: the ``usage_tracker`` it feeds (one
    ``add_usage`` per call that reached an LM; cache hits are not counted), and a caller module
    whose ``history`` gets each call's entry, with DSPy's cost estimate. Calls are passed on to
    the tracker that was active."""

    def __init__(self, parent: Any) -> None:
        self.parent = parent
        self.calls = 0
        self.tokens = 0
        self.history: List[Dict[str, Any]] = []

    def add_usage(self, model: str, usage: Dict[str, Any]) -> None:
        self.calls += 1
        self.tokens += int(usage.get("total_tokens") or 0)
        if self.parent is not None:
            self.parent.add_usage(model, usage)

    @property
    def cost(self) -> float:
        """DSPy's estimate of what the calls cost (0 for those it has no price for)."""
        return float(sum(e.get("cost") or 0.0 for e in self.history))


class _Budget:
    """The search's limits: no evaluation starts once one is reached (those under way finish)."""

    def __init__(self, metric_calls: Optional[int], lm_calls: Optional[int], cost: Optional[float]) -> None:
        self.limits = (metric_calls, lm_calls, cost)
        self.spent = [0, 0, 0.0]  # metric calls, LM calls, cost
        self.tokens = 0
        self.lock = threading.Lock()

    def start(self) -> None:
        with self.lock:
            for name, limit, spent in zip(("max_metric_calls", "max_lm_calls", "max_cost"), self.limits, self.spent):
                if limit is not None and spent >= limit:
                    raise BudgetExceeded(f"{name}={limit} is spent")
            self.spent[0] += 1

    def add(self, usage: _Usage) -> None:
        with self.lock:
            self.spent[1] += usage.calls
            self.spent[2] += usage.cost
            self.tokens += usage.tokens


def _check_int(what: str, value: Any, low: int, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{what} must be an int >= {low}{' or None' if optional else ''}, got {value!r}")


def _plain(value: Any) -> Any:
    """``value`` as JSON can hold it (an Example as its fields; anything else unknown as its
    string)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "toDict"):
        return _plain(value.toDict())
    return str(value)


def _fingerprint(program: Any, trainset: Sequence[Any], valset: Sequence[Any], settings: Dict[str, Any]) -> str:
    """What a stored study must have been made with to be continued: the program's predictors
    (names, fields, instructions), the data and the candidate settings."""
    predictors = []
    for name, pred in program.named_predictors():
        sig = get_signature(pred)
        predictors.append([name, list(sig.input_fields), list(sig.output_fields), sig.instructions])
    text = json.dumps([predictors, _plain(list(trainset)), _plain(list(valset)), settings], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


class MIPROv2(_DSPyMIPROv2):
    """DSPy's MIPROv2 with dspex's search (see the module docs). DSPy's arguments mean what
    they mean in DSPy 3.4 (``num_threads``: examples a trial evaluates at once, so up to
    ``concurrency * num_threads`` in all; ``max_errors``: failed examples a trial tolerates, past which it fails; a
    failed example scores 0). The others:

    ``concurrency``: trials at once (default 4). ``storage``: a SQLite/PostgreSQL URL keeping
    the study; ``study_name``: its name (default: one derived from the program, the data and
    the settings, so the same compile finds its study again). A study found there is
    continued: its candidates are reused (no proposal or bootstrapping calls), its finished
    trials and full evaluations count, trials a killed process left running are run again; a
    study made with another program, data or settings is refused. ``max_metric_calls``,
    ``max_lm_calls`` (calls that reached an LM, cache hits excluded), ``max_cost`` (DSPy's
    estimate of what those calls cost): limits on the search (candidate generation is not counted); once
    one is reached no evaluation starts, the trials in flight fail and the best program so far
    is returned. ``pruner``: a :mod:`dspex.pruners` pruner fed each trial's running mean
    (default None: MIPROv2 never prunes). ``callbacks``: called with this optimizer and a
    :class:`dspex.optimizer.ProgramTrial` after each trial. ``show_progress_bar``: trials done
    and the best minibatch score on stderr.
    """

    def __init__(
        self,
        metric: Callable[..., Any],
        prompt_model: Any = None,
        task_model: Any = None,
        teacher_settings: Optional[dict] = None,
        max_bootstrapped_demos: int = 4,
        max_labeled_demos: int = 4,
        auto: Optional[str] = "light",
        num_candidates: Optional[int] = None,
        num_threads: Optional[int] = None,
        max_errors: Optional[int] = None,
        seed: int = 9,
        init_temperature: float = 1.0,
        verbose: bool = False,
        track_stats: bool = True,
        log_dir: Optional[str] = None,
        metric_threshold: Optional[float] = None,
        *,
        concurrency: int = 4,
        storage: Optional[str] = None,
        study_name: Optional[str] = None,
        max_metric_calls: Optional[int] = None,
        max_lm_calls: Optional[int] = None,
        max_cost: Optional[float] = None,
        pruner: Any = None,
        callbacks: Optional[Sequence[Callable[..., None]]] = None,
        show_progress_bar: bool = True,
    ) -> None:
        if not callable(metric):
            raise TypeError(f"metric must be callable (example, prediction, trace=None) -> float, got {metric!r}")
        _check_int("seed", seed, 0)
        _check_int("num_threads", num_threads, 1, optional=True)
        _check_int("num_candidates", num_candidates, 1, optional=True)
        _check_int("max_errors", max_errors, 0, optional=True)
        _check_int("max_metric_calls", max_metric_calls, 0, optional=True)
        _check_int("max_lm_calls", max_lm_calls, 0, optional=True)
        _check_int("concurrency", concurrency, 1)
        if max_cost is not None and (isinstance(max_cost, bool) or not isinstance(max_cost, (int, float))
                                     or not math.isfinite(max_cost) or max_cost < 0):
            raise ValueError(f"max_cost must be a finite number >= 0 or None, got {max_cost!r}")
        for what, v in (("storage", storage), ("study_name", study_name)):
            if v is not None and (not isinstance(v, str) or not v):
                raise ValueError(f"{what} must be a non-empty str or None, got {v!r}")
        if pruner is not None and not hasattr(pruner, "_spec"):
            raise TypeError(f"pruner must be a dspex.pruners pruner (e.g. MedianPruner()), got {pruner!r}")
        from dspex.optimizer import _callbacks

        trial_callbacks = _callbacks(callbacks)
        super().__init__(metric, prompt_model=prompt_model, task_model=task_model, teacher_settings=teacher_settings,
                         max_bootstrapped_demos=max_bootstrapped_demos, max_labeled_demos=max_labeled_demos, auto=auto,
                         num_candidates=num_candidates, num_threads=num_threads, max_errors=max_errors, seed=seed,
                         init_temperature=init_temperature, verbose=verbose, track_stats=track_stats, log_dir=log_dir,
                         metric_threshold=metric_threshold)
        #: Called after each trial (``callbacks``; DSPy's own ``callbacks`` attribute holds
        #: ``dspy.utils.callback.BaseCallback`` instances, as on every DSPy teleprompter).
        self.trial_callbacks = trial_callbacks
        self.concurrency = concurrency
        self.storage = storage
        self.study_name = study_name
        self.max_metric_calls = max_metric_calls
        self.max_lm_calls = max_lm_calls
        self.max_cost = max_cost
        self.pruner = pruner
        self.show_progress_bar = bool(show_progress_bar)
        self._stop = False
        #: After ``compile``: the engine's summary of the search (study name, trial counts,
        #: full-set scores by trial, stop reason) and what the search spent.
        self.summary: Dict[str, Any] = {}

    def stop(self) -> None:
        """From a callback: start no more trials (those running finish)."""
        self._stop = True

    def compile(
        self,
        student: Any,
        *,
        trainset: list,
        teacher: Any = None,
        valset: Optional[list] = None,
        num_trials: Optional[int] = None,
        max_bootstrapped_demos: Optional[int] = None,
        max_labeled_demos: Optional[int] = None,
        seed: Optional[int] = None,
        minibatch: bool = True,
        minibatch_size: int = 35,
        minibatch_full_eval_steps: int = 5,
        program_aware_proposer: bool = True,
        data_aware_proposer: bool = True,
        view_data_batch_size: int = 10,
        tip_aware_proposer: bool = True,
        fewshot_aware_proposer: bool = True,
        requires_permission_to_run: Optional[bool] = None,
        provide_traceback: Optional[bool] = None,
    ) -> Any:
        """Finds the best instructions and demos for ``student``'s predictors; returns the
        optimized copy (DSPy's arguments; see the class docs for what differs)."""
        if requires_permission_to_run:
            raise ValueError("requires_permission_to_run is not supported (DSPy removed the confirmation too)")
        if not isinstance(student, dspy.Module):
            raise TypeError(f"student must be a dspy.Module, got {type(student).__name__}")
        if not student.predictors():
            raise ValueError("the student has no predictors (dspy.Predict, dspy.ChainOfThought, ...): there is nothing to optimize")
        _check_int("minibatch_size", minibatch_size, 1)
        _check_int("minibatch_full_eval_steps", minibatch_full_eval_steps, 1)
        _check_int("seed", seed, 0, optional=True)
        _check_int("num_trials", num_trials, 1, optional=True)
        max_errors = self.max_errors if self.max_errors is not None else dspy.settings.max_errors
        boot = self.max_bootstrapped_demos if max_bootstrapped_demos is None else max_bootstrapped_demos
        labeled = self.max_labeled_demos if max_labeled_demos is None else max_labeled_demos
        zeroshot = boot == 0 and labeled == 0
        if self.auto is None and (self.num_candidates is None or num_trials is None):
            hint = ""
            if self.num_candidates is not None:
                hint = f" (about {self._set_num_trials_from_num_candidates(student, zeroshot, self.num_candidates)} for num_candidates={self.num_candidates})"
            raise ValueError(f"with auto=None, give num_candidates (to the constructor) and num_trials{hint}")
        if self.auto is not None and (self.num_candidates is not None or num_trials is not None):
            raise ValueError(f"auto={self.auto!r} sets num_candidates and num_trials: leave them out, or use auto=None")
        seed = self.seed if seed is None else seed  # 0 is a seed like any other
        self._set_random_seeds(seed)
        if not trainset:
            raise ValueError("the trainset is empty")
        if valset is not None and not valset:
            raise ValueError("the valset is empty")
        trainset, valset = self._set_and_validate_datasets(list(trainset), None if valset is None else list(valset))
        num_trials, valset, minibatch, n_instructions, n_demo_sets = self._set_hyperparams_from_run_mode(
            student, num_trials, minibatch, zeroshot, valset, self.num_candidates, self.num_candidates)
        if minibatch and minibatch_size > len(valset):
            raise ValueError(f"minibatch_size={minibatch_size} is more than the valset's {len(valset)} examples")
        program = student.deepcopy()
        settings = {"seed": seed, "instructions": n_instructions, "demo_sets": n_demo_sets, "boot": boot,
                    "labeled": labeled, "num_trials": num_trials, "minibatch": minibatch_size if minibatch else None}
        study = self._open_study(program, trainset, valset, settings)
        candidates = None if study is None else study.user_attrs.get("dspy_candidates")
        if candidates is not None:
            instructions = {int(k): v for k, v in candidates["instructions"].items()}
            demos = None if candidates["demos"] is None else {
                int(k): [[dspy.Example(**d) for d in demo_set] for demo_set in sets] for k, sets in candidates["demos"].items()}
            logger.info("continuing study %r with its stored candidates", self.summary.get("study_name"))
        else:
            with dspy.context(lm=self.task_model):
                demos = self._bootstrap_fewshot_examples(
                    program, trainset, seed, teacher, num_fewshot_candidates=n_demo_sets, max_bootstrapped_demos=boot,
                    max_labeled_demos=labeled, max_errors=max_errors, metric_threshold=self.metric_threshold)
            instructions = self._propose_instructions(
                program, trainset, demos, view_data_batch_size, program_aware_proposer, data_aware_proposer,
                tip_aware_proposer, fewshot_aware_proposer, num_instruct_candidates=n_instructions)
            if zeroshot:
                demos = None
            if study is not None:
                study.set_user_attr("dspy_candidates", {
                    "instructions": {str(k): list(v) for k, v in instructions.items()},
                    "demos": None if demos is None else {str(k): [[_plain(d) for d in s] for s in sets] for k, sets in demos.items()}})
        return self._search(program, instructions, demos, valset, num_trials, minibatch_size if minibatch else None,
                            minibatch_full_eval_steps, seed, max_errors)

    def _open_study(self, program: Any, trainset: list, valset: list, settings: Dict[str, Any]) -> Any:
        """The stored study to continue or start (None without storage); refuses one made with
        another program, data or settings."""
        fingerprint = _fingerprint(program, trainset, valset, settings)
        name = self.study_name or f"dspex-mipro-{fingerprint[:16]}"
        self.summary = {"study_name": name}
        if self.storage is None:
            return None
        import dspex

        study = dspex.create_study(study_name=name, storage=self.storage, direction="maximize", load_if_exists=True)
        made_with = study.user_attrs.get("dspy_program")
        if made_with is None and study.trials:
            raise ValueError(f"study {name!r} in {self.storage} was not made by dspex.dspy.MIPROv2: use another study_name")
        if made_with is not None and made_with != fingerprint:
            raise ValueError(f"study {name!r} in {self.storage} was made with another program, trainset/valset or "
                             "candidate settings (seed, auto, num_candidates, demos), so its trials do not apply here: "
                             "use another study_name, or the same program, data and settings to continue it")
        if made_with is None:
            study.set_user_attr("dspy_program", fingerprint)
        return study

    def _search(self, program: Any, instructions: Dict[int, List[str]], demos: Optional[Dict[int, list]], valset: list,
                num_trials: int, minibatch_size: Optional[int], full_eval_steps: int, seed: int, max_errors: int) -> Any:
        """Step 3 in the engine: trials over the candidates; returns the best program."""
        from dspex import samplers
        from dspex.distributions import CategoricalDistribution, distribution_to_json
        from dspex.optimizer import StudyError, _run_engine_study
        from dspex.session import DSpexSessionContext

        n = len(program.predictors())
        space: Dict[str, str] = {}
        for i in range(n):
            space[f"{i}_predictor_instruction"] = distribution_to_json(CategoricalDistribution(list(range(len(instructions[i])))))
            if demos:
                space[f"{i}_predictor_demos"] = distribution_to_json(CategoricalDistribution(list(range(len(demos[i])))))
        built: Dict[Tuple[Tuple[str, int], ...], Any] = {}
        lock = threading.Lock()

        def candidate(params: Dict[str, Any]) -> Any:
            key = tuple(sorted((k, int(v)) for k, v in params.items()))
            with lock:
                if key not in built:
                    p = program.deepcopy()
                    for i, pred in enumerate(p.predictors()):
                        text = instructions[i][int(params[f"{i}_predictor_instruction"])]
                        set_signature(pred, get_signature(pred).with_instructions(text))
                        if demos:
                            pred.demos = demos[i][int(params[f"{i}_predictor_demos"])]
                    built[key] = p
                return built[key]

        budget = _Budget(self.max_metric_calls, self.max_lm_calls, self.max_cost)
        overrides = dict(thread_local_overrides.get())
        overrides["lm"] = self.task_model
        parent = overrides.get("usage_tracker")
        metric = self.metric

        def evaluate_one(params: Dict[str, Any], example: int) -> Dict[str, Any]:
            budget.start()
            usage = _Usage(parent)
            try:
                callers = [*(overrides.get("caller_modules") or []), usage]
                with dspy.context(**{**overrides, "usage_tracker": usage, "caller_modules": callers}):
                    ex = valset[example]
                    prediction = candidate(params)(**ex.inputs())
                    score = _score(metric(ex, prediction))
            finally:
                budget.add(usage)
            return {"score": score, "tokens": usage.tokens, "cost": usage.cost}

        # each trial evaluates num_threads examples at once, as DSPy's Evaluate does
        threads = self.num_threads or dspy.settings.num_threads or 8

        def evaluate(params: dict, example: int, trial: Any = None) -> Dict[str, Any]:
            return evaluate_one(params, example)

        seen: Dict[int, Any] = {}

        def keep(_: Any, trial: Any) -> None:
            seen[trial.number] = trial

        sampler = samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
        baseline = {name: 0 for name in space}
        spec = {
            "space": space,
            "n_examples": len(valset),
            "baseline": baseline,
            "storage": self.storage,
            "study_name": self.summary["study_name"],
            "sampler": {"kind": sampler._spec[0], "options": sampler._spec[1]},
            "pruner": None if self.pruner is None else {"kind": self.pruner._spec[0], "options": self.pruner._spec[1]},
            "n_trials": num_trials + 1,  # the default program's trial, then num_trials
            "concurrency": self.concurrency,
            "example_concurrency": threads,
            "failure_score": 0.0,
            "max_errors": max_errors,
            "trial_max_errors": max_errors,
            "minibatch_size": minibatch_size,
            "full_eval_steps": full_eval_steps,
            "seed": seed,
        }

        def usage() -> Dict[str, str]:
            out = {"metric_calls": str(budget.spent[0]), "lm_calls": str(budget.spent[1])}
            if budget.spent[2]:
                out["cost"] = f"{budget.spent[2]:.4g}"
            return out

        logger.info("searching %d trials over %d predictor(s), %d at once", num_trials, n, self.concurrency)
        with DSpexSessionContext() as ctx:
            summary = _run_engine_study(ctx, spec, self, evaluate, "evaluate_tool", callbacks=[keep, *self.trial_callbacks],
                                        show_progress_bar=self.show_progress_bar, usage=usage,
                                        threads=threads * self.concurrency)
        summary["seed"] = seed
        summary["spent"] = {"metric_calls": budget.spent[0], "lm_calls": budget.spent[1], "tokens": budget.tokens,
                            "cost": budget.spent[2]}
        self.summary = summary
        if summary["stop_reason"] == "aborted" or "best_params" not in summary:
            why = summary.get("stop_detail") or "no trial completed"
            raise StudyError(f"the MIPROv2 search (study {summary['study_name']!r}) stopped: {why}", summary.get("errors", []))
        best = candidate(summary["best_params"]).deepcopy()
        if self.track_stats:
            self._attach_stats(best, summary, seen, candidate)
        return best

    def _attach_stats(self, best: Any, summary: Dict[str, Any], seen: Dict[int, Any], candidate: Callable[[Dict[str, Any]], Any]) -> None:
        """DSPy's statistics on the returned program, scores in percent as DSPy's ``Evaluate``
        gives them: ``score`` (its full-valset score),
        ``candidate_programs`` (fully evaluated, best first), ``mb_candidate_programs``
        (minibatch trials, best first), plus ``study_name`` and ``total_calls`` (metric calls)."""
        params_of = {n: t.params for n, t in seen.items()}
        if self.storage is not None:  # trials of earlier runs of a continued study
            import dspex

            for t in dspex.load_study(study_name=summary["study_name"], storage=self.storage).trials:
                params_of.setdefault(t.number, t.params)
        full = {int(k): v for k, v in summary.get("full_scores", {}).items()}
        best.score = _percent(summary["best_value"])
        best.study_name = summary["study_name"]
        best.total_calls = summary["spent"]["metric_calls"]
        best.candidate_programs = [{"score": _percent(s), "program": candidate(params_of[n]), "full_eval": True}
                                   for n, s in sorted(full.items(), key=lambda x: -x[1]) if n in params_of]
        best.mb_candidate_programs = [{"score": _percent(t.value), "program": candidate(t.params), "full_eval": False}
                                      for t in sorted(seen.values(), key=lambda t: -(t.value or 0.0))
                                      if t.state == "COMPLETE" and t.value is not None]
