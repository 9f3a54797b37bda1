"""dspex.dspy.MIPROv2: DSPy's candidates, dspex's search, against the local OpenAI-compatible
server (``dspex-testlm``) whose answers hash the whole prompt, so instructions and demos change
the score."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

dspy = pytest.importorskip("dspy")

from lmserver import LMServer  # noqa: E402

from dspex.dspy import MIPROv2  # noqa: E402
from dspex.optimizer import StudyError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def server() -> Iterator[LMServer]:
    s = LMServer()
    yield s
    s.proc.kill()


def lm(server: LMServer) -> Any:
    return dspy.LM("openai/test-model", api_base=server.url, api_key="test", cache=False, num_retries=0)


def data(n: int) -> list:
    return [dspy.Example(question=f"question {i} [[hash]]", answer="high").with_inputs("question") for i in range(n)]


def make(server: LMServer, **kw: Any) -> MIPROv2:
    model = lm(server)
    return MIPROv2(prompt_model=model, task_model=model, show_progress_bar=False, **kw)


def metric(example: Any, prediction: Any, trace: Any = None) -> bool:
    """Passes when the model's hashed digit is 5 or more."""
    return prediction.answer.strip()[-1:] in "56789"


def test_compile_searches_dspy_candidates_in_the_engine(server: LMServer) -> None:
    trainset, valset = data(20), data(60)
    seen = []
    opt = make(server, metric=metric, auto="light", seed=0, num_threads=8, concurrency=3,
               callbacks=[lambda o, t: seen.append(t)])
    best = opt.compile(dspy.Predict("question -> answer"), trainset=trainset, valset=valset)
    s = opt.summary
    # auto="light", one predictor with demos: 10 trials, plus the default program's
    assert s["complete"] == 11 and s["failed"] == 0 and len(seen) == 11
    assert s["seed"] == 0
    full = {int(k): v for k, v in s["full_scores"].items()}
    # the default program (trial 0) is fully evaluated first, then one after every 5 trials (as
    # DSPy: no extra one at the end when the last trial was just followed by one)
    assert 0 in full and len(full) == 3
    # scores on the program are in percent, as DSPy's Evaluate gives them
    assert best.score == round(100 * max(full.values()), 2) and max(full.values()) >= full[0]
    # the sampler learned from minibatch values (35 examples), apart from the full-set scores
    assert all(t.value is not None and round(t.value * 35) == pytest.approx(t.value * 35) for t in seen)
    # the returned program carries one of DSPy's proposed instructions and demo sets
    pred = best.predictors()[0]
    assert isinstance(best, dspy.Predict) and pred.signature.instructions
    assert best.candidate_programs[0]["score"] == best.score
    assert s["spent"]["metric_calls"] == 11 * 35 + len(full) * 60 - 35  # the baseline ran its 60 once
    # the candidates were evaluated with the demos/instructions chosen: the scores differ
    assert len({round(t.value, 6) for t in seen}) > 1


def test_seed_zero_is_zero_and_runs_repeat(server: LMServer) -> None:
    def run(seed: int) -> list:
        params = []
        opt = make(server, metric=metric, auto=None, num_candidates=3, seed=seed, concurrency=1,
                   callbacks=[lambda o, t: params.append(t.params)])
        opt.compile(dspy.Predict("question -> answer"), trainset=data(10), valset=data(12), num_trials=5, minibatch=False)
        assert opt.summary["seed"] == seed
        return params

    assert run(0) == run(0)


@pytest.mark.parametrize("limit", [{"max_metric_calls": 40}, {"max_lm_calls": 40}, {"max_cost": 0.003}],
                         ids=lambda d: next(iter(d)))
def test_budget_stops_cleanly_with_the_best_so_far(server: LMServer, limit: dict) -> None:
    # DSPy prices gpt-4o-mini from its bundled metadata (about 1e-4 a call here)
    model = dspy.LM("openai/gpt-4o-mini", api_base=server.url, api_key="test", cache=False, num_retries=0)
    opt = MIPROv2(metric=metric, auto=None, num_candidates=3, concurrency=2, prompt_model=model, task_model=model,
                  show_progress_bar=False, **limit)
    best = opt.compile(dspy.Predict("question -> answer"), trainset=data(10), valset=data(12), num_trials=20, minibatch=False)
    s = opt.summary
    assert s["budget_exhausted"]
    spent = s["spent"]
    assert spent["lm_calls"] == spent["metric_calls"] and spent["cost"] > 0
    if "max_cost" in limit:
        assert 0.003 <= spent["cost"] < 0.003 + 2 * 12 * 3e-4  # evaluations under way when it ran out finish
    else:
        assert 40 <= spent["metric_calls"] <= 40 + 2 * 12
    assert s["complete"] < 21 and isinstance(best, dspy.Predict)
    # without minibatches every trial scored the whole valset: the best trial is the result
    assert s["full_scores"] == {} and best.score == round(100 * s["best_value"], 2)


def test_a_pruner_stops_trials_on_a_bad_running_mean(server: LMServer) -> None:
    from dspex.pruners import ThresholdPruner

    seen: list = []
    opt = make(server, metric=metric, auto=None, num_candidates=3, concurrency=2, pruner=ThresholdPruner(lower=0.99),
               callbacks=[lambda o, t: seen.append(t)])
    best = opt.compile(dspy.Predict("question -> answer"), trainset=data(10), valset=data(12), num_trials=6, minibatch=False)
    states = {t.number: t.state for t in seen}
    # the default program is the reference and runs to the end; the others fall below 0.99
    assert states[0] == "COMPLETE" and opt.summary["pruned"] >= 1
    assert opt.summary["spent"]["metric_calls"] < 7 * 12
    assert best.score == round(100 * opt.summary["best_value"], 2)


def test_bad_metrics_fail_clearly(server: LMServer) -> None:
    def raises(example: Any, prediction: Any, trace: Any = None) -> float:
        raise RuntimeError("metric exploded")

    def words(example: Any, prediction: Any, trace: Any = None) -> str:
        return "yes"

    for bad, said in ((raises, "metric exploded"), (words, "not a number")):
        opt = make(server, metric=bad, auto=None, num_candidates=2, max_bootstrapped_demos=0, max_labeled_demos=0,
                   concurrency=2)
        with pytest.raises(StudyError) as e:
            opt.compile(dspy.Predict("question -> answer"), trainset=data(6), valset=data(12), num_trials=4, minibatch=False)
        assert said in str(e.value.errors) and "stopped" in str(e.value)


def test_bad_input(server: LMServer, tmp_path: Path) -> None:
    class Empty(dspy.Module):
        def forward(self, question: str) -> Any:
            return dspy.Prediction(answer=question)

    opt = make(server, metric=metric)
    with pytest.raises(ValueError, match="no predictors"):
        opt.compile(Empty(), trainset=data(6))
    with pytest.raises(ValueError, match="trainset is empty"):
        opt.compile(dspy.Predict("question -> answer"), trainset=[])
    with pytest.raises(ValueError, match="valset is empty"):
        opt.compile(dspy.Predict("question -> answer"), trainset=data(6), valset=[])
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        make(server, metric=metric, seed=-1)
    with pytest.raises(ValueError, match="concurrency"):
        make(server, metric=metric, concurrency=0)
    with pytest.raises(TypeError, match="pruner"):
        make(server, metric=metric, pruner="median")
    # a study made with another program is not continued
    url = f"sqlite:///{tmp_path / 'mipro.db'}"
    kw: Any = dict(auto=None, num_candidates=2, max_bootstrapped_demos=0, max_labeled_demos=0, storage=url, study_name="s")
    make(server, metric=metric, **kw).compile(dspy.Predict("question -> answer"), trainset=data(6), valset=data(8), num_trials=2, minibatch=False)
    with pytest.raises(ValueError, match="another program"):
        make(server, metric=metric, **kw).compile(dspy.Predict("question -> reply"), trainset=data(6), valset=data(8), num_trials=2, minibatch=False)


def test_works_with_dspys_dummy_lm() -> None:
    from dspy.utils.dummies import DummyLM

    # every output field DSPy's proposer and the program ask for
    fields = ["answer", "proposed_instruction", "observations", "summary", "program_description", "module_description",
              "dataset_description"]
    model = DummyLM([{f: "4" if f == "answer" else "Answer with the number only." for f in fields}] * 2000)
    qa = [dspy.Example(question=f"what is 2+2 ({i})?", answer="4").with_inputs("question") for i in range(20)]
    opt = MIPROv2(metric=lambda e, p, t=None: e.answer == p.answer, auto=None, num_candidates=3, prompt_model=model,
                  task_model=model, show_progress_bar=False)
    best = opt.compile(dspy.Predict("question -> answer"), trainset=qa[:8], valset=qa[8:], num_trials=4, minibatch=False)
    assert best.score == 100.0 and opt.summary["complete"] == 5


def test_dspy_missing_or_unsupported_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import dspex.dspy as mod

    monkeypatch.setattr(dspy, "__version__", "3.3.2")
    with pytest.raises(ImportError, match=r"DSPy >= 3.4, < 3.5; this is DSPy 3.3.2"):
        mod._import_dspy()
    monkeypatch.setitem(sys.modules, "dspy", None)  # what `import dspy` finds when it is not installed
    with pytest.raises(ImportError, match=r'pip install "dspex\[dspy\]"'):
        mod._import_dspy()


SCRIPT = """
import json, sys
import dspy
sys.path.insert(0, {tests!r})
from dspex.dspy import MIPROv2
from test_dspy_mipro import data, metric

lm = dspy.LM("openai/test-model", api_base={url!r}, api_key="test", cache=False, num_retries=0)
dspy.configure(lm=lm)
opt = MIPROv2(metric=metric, auto=None, num_candidates=3, concurrency=2, num_threads=4, storage={storage!r},
              show_progress_bar=False)
best = opt.compile(dspy.Predict("question -> answer"), trainset=data(10), valset=data(60), num_trials=12)
print(json.dumps({{"summary": {{k: v for k, v in opt.summary.items() if k != "errors"}}, "score": best.score}}))
"""


def test_a_killed_compile_continues_from_its_storage(server: LMServer, tmp_path: Path) -> None:
    db = tmp_path / "mipro.db"
    script = tmp_path / "compile.py"
    script.write_text(SCRIPT.format(tests=str(ROOT / "tests"), url=server.url, storage=f"sqlite:///{db}"))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    # each answer takes 40 ms, so the first run is killed mid-search
    server._control("/control/behavior", {"latency_ms": 40})
    try:
        proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        done = 0
        while time.monotonic() < deadline and proc.poll() is None:
            if db.exists():
                try:
                    with sqlite3.connect(db) as c:
                        done = c.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]
                except sqlite3.Error:
                    done = 0
                if done >= 4:
                    break
            time.sleep(0.05)
        assert proc.poll() is None, "the first run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with sqlite3.connect(db) as c:
            before = dict(c.execute("select number, datetime_complete from trials where state = 'COMPLETE'").fetchall())
    finally:
        server._control("/control/behavior", {"latency_ms": 0})
    assert len(before) >= 4
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    with sqlite3.connect(db) as c:
        after = dict(c.execute("select number, datetime_complete from trials where state = 'COMPLETE'").fetchall())
        states = dict(c.execute("select state, count(*) from trials group by state").fetchall())
        usage = [json.loads(v) for (v,) in c.execute("select value_json from trial_user_attributes where key = 'usage'")]
    # finished trials were kept as they were, and the study holds the 13 trials asked for
    assert all(after[n] == t for n, t in before.items())
    assert len(after) == 13 and "RUNNING" not in states
    # each trial keeps what its examples used (tokens counted from the server's answers)
    assert len(usage) >= 13 and all(u["tokens"] > 0 and u["examples"] > 0 for u in usage)
    assert states.get("FAIL", 0) + len(after) == result["summary"]["complete"] + result["summary"]["failed"]
    # the second run evaluated only what was missing
    spent = result["summary"]["spent"]["metric_calls"]
    assert spent <= (13 - len(before) + 2) * 35 + 4 * 60
    assert result["score"] == round(100 * max(result["summary"]["full_scores"].values()), 2)
