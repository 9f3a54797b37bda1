"""Program mode: engine-resident programs (Retrieve, Predict, PythonTool, Fuse) optimized by a
program study against a Python metric, embedded and against a real ``dspex serve``; LM steps
talk to the local OpenAI-compatible server (``dspex-testlm``), which answers ``echo: `` and the
prompt's last message, so an answer holds the retrieved context."""

import math

import pytest
from test_remote import _start_server, _stop

from dspex import DSpexSessionContext
from dspex.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from dspex.native import LM, RAG, Fuse, Predict, Prediction, Program, PythonTool, Retrieve
from dspex.optimizer import Study, StudyError, TPESampler

# A corpus where each fact sits in one document among distractors that share the question's words.
FACTS = [(f"city{i}", f"river{i}") for i in range(12)]
DOCS = [f"The river of city{i} is river{i}." for i, _ in enumerate(FACTS)]
DOCS += [f"People in city{i} like the river and boats and trains number {j}." for i in range(12) for j in range(3)]
TRAIN = [{"question": f"Which river flows through city{i}?", "answer": f"river{i}"} for i, _ in enumerate(FACTS)]


def contains(example, prediction, trace=None):
    return float(example["answer"] in prediction.answer)


def in_context(example, prediction, trace=None):
    return float(example["answer"] in " ".join(prediction.context))


def test_a_rag_program_runs_in_the_engine_and_the_study_finds_a_better_k(lm):
    with DSpexSessionContext() as ctx:
        rag = RAG(context=ctx, corpus=DOCS, lm=LM("m-rag", base_url=lm.url))
        assert set(rag.variables) == {"retrieve.k", "predict.instructions"} and rag.inputs == ["question"]
        pred = rag(question=TRAIN[0]["question"])
        assert isinstance(pred, Prediction) and pred.answer.startswith("echo: ") and len(pred.context) == 5
        assert [step for step, _, _ in pred.trace] == ["retrieve", "predict"]
        default = sum(contains(e, rag(question=e["question"])) for e in TRAIN) / len(TRAIN)

        study = Study(program=rag, optimizer=TPESampler(metric=contains, n_trials=12, seed=1), trainset=TRAIN)
        best = study.optimize(concurrency=3, example_concurrency=8)
        assert 1 <= best.k.value <= 20 and best.k.name == "retrieve.k"
        assert best.params["retrieve.k"] == best.k.value and best["predict.instructions"].value in best.instructions.distribution.choices
        assert best.score >= default and best.score == 1.0  # a large enough k always holds the answer
        assert study.summary["complete"] == 12 and study.summary["error_count"] == 0
        assert TRAIN[3]["answer"] in best(question=TRAIN[3]["question"]).answer


def test_a_program_study_is_stored_and_continued_in_sqlite(lm, tmp_path):
    import optuna

    url = f"sqlite:///{tmp_path / 'prog.db'}"
    with DSpexSessionContext() as ctx:
        rag = RAG(context=ctx, corpus=DOCS, lm=LM("m-store", base_url=lm.url), instructions="Answer.")
        for n in (4, 6, 6):  # n_trials is what the study should hold: a re-run adds what is missing
            Study(rag, TPESampler(contains, n_trials=n, seed=0), TRAIN, storage=url, study_name="rag").optimize()
    s = optuna.load_study(study_name="rag", storage=url)
    assert len(s.trials) == 6 and all(t.state.name == "COMPLETE" for t in s.trials)
    t = s.trials[0]
    assert set(t.params) == {"retrieve.k", "predict.demo_set"} and len(t.user_attrs["example_scores"]) == len(TRAIN)
    assert t.value == pytest.approx(sum(t.user_attrs["example_scores"]) / len(TRAIN))
    assert t.intermediate_values  # the running mean, reported as examples finished


def test_python_tools_and_fusion_are_steps_and_their_arguments_are_tunable(lm):
    calls = []

    def dense(question: str, depth: int = 3) -> list:
        calls.append(depth)
        words = set(question.lower().strip("?").split())
        ranked = sorted(DOCS, key=lambda d: -len(words & set(d.lower().strip(".").split())))
        return ranked[:depth]

    def top1(example, prediction, trace=None):
        return float(example["answer"] in prediction.context[0])

    with DSpexSessionContext() as ctx:
        prog = Program([
            Retrieve(DOCS, k=10, output="bm25"),
            PythonTool(dense, output="dense", depth=IntDistribution(1, 8)),
            Fuse("bm25", "dense", weight=FloatDistribution(0.0, 1.0), k=3),
        ], context=ctx)
        assert set(prog.variables) == {"dense.depth", "fuse.weight"} and prog.inputs == ["question"]
        assert prog.defaults() == {"dense.depth": 3, "fuse.weight": 0.5}
        out = prog(question=TRAIN[2]["question"])
        assert len(out.context) == 3 and calls == [3]
        best = Study(prog, TPESampler(top1, n_trials=10, seed=3), TRAIN).optimize(concurrency=2)
        assert 0.0 <= best.weight.value <= 1.0 and best.depth.value in range(1, 9)
        assert best.score >= 0.5 and len(calls) > 10 * len(TRAIN)


def test_the_metric_failing_scores_failure_score_and_too_many_failures_stop_the_study(lm):
    def flaky(example, prediction, trace=None):
        if example["answer"] == "river3":
            raise RuntimeError("metric bug")
        return 1.0

    with DSpexSessionContext() as ctx:
        rag = RAG(context=ctx, corpus=DOCS, lm=LM("m-err", base_url=lm.url), instructions="Answer.")
        best = Study(rag, TPESampler(flaky, n_trials=3, seed=0, max_errors=5, failure_score=-1.0), TRAIN).optimize(concurrency=1)
        assert best.score == pytest.approx((len(TRAIN) - 1 - 1) / len(TRAIN))  # one example at -1
        for bad, says in ((lambda e, p, t=None: None, "returned None"), (lambda e, p, t=None: "yes", "returned 'yes'"),
                          (lambda e, p, t=None: math.nan, "not a finite number")):
            with pytest.raises(StudyError, match="max_errors=2") as e:
                Study(rag, TPESampler(bad, n_trials=5, max_errors=2), TRAIN).optimize(concurrency=1)
            assert len(e.value.errors) == 3 and says in e.value.errors[0], e.value.errors


def test_an_lm_that_fails_every_call_ends_the_study_with_a_clear_error(lm):
    with DSpexSessionContext() as ctx:
        rag = RAG(context=ctx, corpus=DOCS, lm=LM("m-down", base_url="http://127.0.0.1:9/v1", max_retries=0, timeout=2))
        with pytest.raises(StudyError, match="max_errors=10") as e:
            Study(rag, TPESampler(contains, n_trials=5), TRAIN).optimize()
        assert "LMError" in e.value.errors[0], e.value.errors


def test_bad_programs_and_examples_are_refused_before_any_trial(lm):
    with DSpexSessionContext() as ctx:
        model = LM("m-bad", base_url=lm.url)
        rag = RAG(context=ctx, corpus=DOCS, lm=model)
        with pytest.raises(ValueError, match="valset example 1 has no field 'question', which step 'retrieve' reads"):
            Study(rag, TPESampler(contains), [TRAIN[0], {"query": "x"}])
        with pytest.raises(ValueError, match="trainset is empty"):
            Study(rag, TPESampler(contains), [])
        with pytest.raises(ValueError, match="documents \\[1\\] are empty"):
            Retrieve(["a", "  "])
        with pytest.raises(ValueError, match="signature"):
            Predict("question answer", model)
        with pytest.raises(ValueError, match="nothing to tune"):
            Study(RAG(context=ctx, corpus=DOCS, lm=model, k=3, instructions="x"), TPESampler(contains, max_bootstrapped_demos=0, max_labeled_demos=0), TRAIN)
        with pytest.raises(ValueError, match="two steps have the name 'retrieve'"):
            Program([Retrieve(DOCS), Retrieve(DOCS)], context=ctx)
        with pytest.raises(ValueError, match="unknown type"):
            Program([Retrieve(DOCS, k=IntDistribution(1, 3)), Predict("context, question -> answer: tensor", model)], context=ctx)(question="q")
        with pytest.raises(TypeError, match="metric must be callable"):
            TPESampler(metric="accuracy")
        wrong = Program([Retrieve(DOCS, output="ctx"), Predict("passages, question -> answer", model, instructions=CategoricalDistribution(["a"]))], context=ctx)
        assert wrong.inputs == ["question", "passages"]
        with pytest.raises(ValueError, match="has no field 'passages', which step 'predict' reads"):
            wrong(question="q")
    with pytest.raises(ValueError, match="needs a session"):
        Program([Retrieve(DOCS)])


def test_the_same_program_study_runs_against_a_served_engine(lm):
    p, addr = _start_server()
    try:
        _served_study(lm, addr)
    finally:
        _stop(p)


def _served_study(lm, addr):
    with DSpexSessionContext(engine=addr) as ctx:
        rag = RAG(context=ctx, corpus=DOCS, lm=LM("m-remote", base_url=lm.url))
        best = Study(rag, TPESampler(contains, n_trials=6, seed=2), TRAIN).optimize(concurrency=2)
        assert best.score > 0 and TRAIN[1]["answer"] in best(question=TRAIN[1]["question"]).answer


def test_minibatches_and_periodic_full_evaluations_pick_the_best_on_the_full_set(lm, tmp_path):
    import optuna

    many = [dict(t, question=t["question"] + f" (variant {j})") for j in range(5) for t in TRAIN]  # 60 > 50
    url = f"sqlite:///{tmp_path / 'mb.db'}"
    with DSpexSessionContext() as ctx:
        rag = RAG(context=ctx, corpus=DOCS, lm=LM("m-mb", base_url=lm.url), instructions="Answer.")
        opt = TPESampler(contains, n_trials=10, seed=4, minibatch_size=8, minibatch_full_eval_steps=4)
        study = Study(rag, opt, many, storage=url, study_name="mb")
        best = study.optimize(concurrency=2)
    full = {int(k): v for k, v in study.summary["full_scores"].items()}
    assert 3 <= len(full) <= 4  # after trials 4 and 8 (or a tie of two due together), and at the end
    assert best.score == max(full.values()) and best.summary["best_number"] in full
    s = optuna.load_study(study_name="mb", storage=url)
    assert {int(k): v for k, v in s.user_attrs["full_scores"].items()} == full
    for t in s.trials:  # every trial scored 8 examples
        assert sum(x is not None for x in t.user_attrs["example_scores"]) == 8


def test_program_lm_calls_count_in_the_users_lm_and_its_budget_ends_the_study_cleanly(lm):
    with DSpexSessionContext() as ctx:
        model = LM("m-budget", base_url=lm.url, cache=False, max_calls=30)
        rag = RAG(context=ctx, corpus=DOCS, lm=model)
        best = Study(rag, TPESampler(contains, n_trials=20, seed=0, num_candidates=1), TRAIN).optimize(concurrency=1, example_concurrency=4)
        st = model.stats()
        assert st["requests"] <= 30 and st["budget"]["calls"] == 30 and st["errors"] >= 1  # the refused ones
        assert set(st["by_tag"]) == {"predict"}  # a step tags its calls with its name
        summary = best.summary
        assert summary["budget_exhausted"] and summary["complete"] == 2 and summary["failed"] == 1
        assert summary["error_count"] == 0 and best.score > 0


def test_a_study_budget_caps_the_lm_calls_of_the_whole_study_and_ends_it_cleanly(lm):
    with DSpexSessionContext() as ctx:
        model = LM("m-study-budget", base_url=lm.url, cache=False, prices={"m-study-budget": {"input": 1.0, "output": 1.0}})
        rag = RAG(context=ctx, corpus=DOCS, lm=model)
        opt = TPESampler(contains, n_trials=20, seed=0, num_candidates=1, max_calls=30)
        lm.reset()
        best = Study(rag, opt, TRAIN).optimize(concurrency=2, example_concurrency=4, show_progress_bar=False)
        summary = best.summary
        assert summary["budget_exhausted"] and summary["error_count"] == 0 and best.score > 0
        assert summary["budget_spent"]["calls"] == 30 and summary["complete"] < 20
        # no call started past the study's budget (a call the study's end cancelled in flight
        # may not have reached the server)
        assert 28 <= lm.stats()["requests"] <= 30
        spent_tokens = summary["budget_spent"]["tokens"]
        assert spent_tokens == model.stats()["total_tokens"] and summary["budget_spent"]["cost"] == pytest.approx(spent_tokens / 1e6)
        assert model("after the study").text  # the LM's own budget is untouched
        # a cost budget: the study stops once its estimated cost reaches max_cost
        capped = Study(rag, TPESampler(contains, n_trials=20, seed=1, num_candidates=1, max_cost=spent_tokens / 3e6), TRAIN)
        s2 = capped.optimize(concurrency=1, example_concurrency=2, show_progress_bar=False).summary
        assert s2["budget_exhausted"] and spent_tokens / 3e6 <= s2["budget_spent"]["cost"] < spent_tokens / 2e6
    for bad, match in (({"max_calls": -1}, "max_calls must be an int >= 0"), ({"max_cost": float("nan")}, "max_cost must be a finite"),
                       ({"max_total_tokens": 1.5}, "max_total_tokens must be an int")):
        with pytest.raises(ValueError, match=match):
            TPESampler(contains, **bad)


def test_score_and_cost_give_programs_priced_by_their_lm_calls(lm):
    with DSpexSessionContext() as ctx:
        model = LM("m-cost", base_url=lm.url, prices={"m-cost": {"input": 2.0, "output": 4.0}})
        rag = RAG(context=ctx, corpus=DOCS, lm=model, instructions="Answer.")
        study = Study(rag, TPESampler(contains, n_trials=8, seed=0, num_candidates=1), TRAIN, objectives=["score", "cost"])
        study.optimize(concurrency=2, show_progress_bar=False)
        front = study.best_programs
        assert front and all(p.values[1] > 0 for p in front)
        by_k = sorted((p.k.value, p.values[1]) for p in front)
        assert [c for _, c in by_k] == sorted(c for _, c in by_k)  # more passages: more prompt tokens, more cost
        unpriced = RAG(context=ctx, corpus=DOCS, lm=LM("m-unpriced", base_url=lm.url))
        with pytest.raises(ValueError, match="needs a price for every LM: step 'predict'"):
            Study(unpriced, TPESampler(contains), TRAIN, objectives=["score", "cost"])


RESUMED = """
import sys, time
sys.path.insert(0, {tests!r})
from test_program import DOCS, TRAIN
from dspex import DSpexSessionContext
from dspex.native import LM, RAG
from dspex.optimizer import Study, TPESampler

def slow(example, prediction, trace=None):
    time.sleep(0.01)
    return float(example["answer"] in prediction.answer)

with DSpexSessionContext({engine}) as ctx:
    rag = RAG(context=ctx, corpus=DOCS, lm=LM("m-resume", base_url={url!r}))
    best = Study(rag, TPESampler(slow, n_trials=12, seed=0), TRAIN, storage={storage!r}, study_name="resume").optimize(concurrency=2, example_concurrency=2)
    print("done", best.score)
"""


def test_a_program_study_killed_with_sigkill_continues_without_losing_or_rerunning_trials(lm, tmp_path):
    import os
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    db = tmp_path / "resume.db"
    code = RESUMED.format(tests=os.path.dirname(__file__), url=lm.url, storage=f"sqlite:///{db}", engine="")

    def finished() -> list:
        if not db.exists():
            return []
        with sqlite3.connect(db) as c:
            try:
                return c.execute("SELECT t.number, t.state, v.value FROM trials t LEFT JOIN trial_values v ON v.trial_id = t.trial_id "
                                 "WHERE t.state = 'COMPLETE' ORDER BY t.number").fetchall()
            except sqlite3.OperationalError:  # the schema is not there yet
                return []

    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while len(finished()) < 3 and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    before = finished()
    assert 3 <= len(before) < 12, before
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    after = finished()
    assert after[: len(before)] == before  # the finished trials are kept as they were
    assert len(after) == 12  # and only the missing ones ran
    with sqlite3.connect(db) as c:
        states = dict(c.execute("SELECT state, COUNT(*) FROM trials GROUP BY state").fetchall())
    assert states.get("RUNNING", 0) == 0 and states["COMPLETE"] == 12


@pytest.mark.parametrize("served", [False, True], ids=["embedded", "served"])
def test_ctrl_c_stops_a_program_study_keeping_its_finished_trials(lm, tmp_path, served):
    """Ctrl-C in the process that runs the study: embedded, the engine's task is cancelled; against
    a served engine, the engine is asked to cancel the request. Either way the trials in flight
    are failed before KeyboardInterrupt is raised and the finished ones are kept."""
    import os
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    db = tmp_path / "interrupted.db"
    server, addr = _start_server() if served else (None, "")
    engine = f"engine={addr!r}" if served else ""
    code = RESUMED.format(tests=os.path.dirname(__file__), url=lm.url, storage=f"sqlite:///{db}", engine=engine)
    code = code.replace("n_trials=12", "n_trials=500")

    def states() -> dict:
        if not db.exists():
            return {}
        with sqlite3.connect(db) as c:
            try:
                return dict(c.execute("SELECT state, COUNT(*) FROM trials GROUP BY state").fetchall())
            except sqlite3.OperationalError:
                return {}

    try:
        p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while states().get("COMPLETE", 0) < 3 and time.time() < deadline and p.poll() is None:
            time.sleep(0.05)
        t0 = time.time()
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)
        assert time.time() - t0 < 5, "the study did not stop promptly"
        assert p.returncode != 0 and "KeyboardInterrupt" in err, err
        after = states()
        assert after.get("RUNNING", 0) == 0 and 3 <= after["COMPLETE"] < 500, after
        time.sleep(0.3)
        assert states() == after  # nothing ran on after the interrupt (the served engine's study stopped)
    finally:
        if server is not None:
            _stop(server)


@pytest.mark.parametrize("served", [False, True], ids=["embedded", "served"])
def test_the_metric_runs_in_supervised_worker_processes_and_survives_one_killed(lm, tmp_path, monkeypatch, served):
    """processes=2: the metric is a shared tool served by two worker processes (which join the
    session: over a loopback server of this process's engine, or on the served engine); one of
    them is killed (SIGKILL) in the middle of a call and the call it had is scored by another
    (the pool restarts it); no example fails and every trial completes."""
    import os

    monkeypatch.setenv("DSPEX_TEST_POOL_DIR", str(tmp_path))
    monkeypatch.setenv("DSPEX_TEST_POOL_OWNER", str(os.getpid()))
    server, addr = _start_server() if served else (None, None)
    try:
        _pool_study(lm, addr)
    finally:
        if server is not None:
            _stop(server)
    # (this process scores only the bootstrap runs of the demo sets)
    workers = {int(n[4:]) for n in os.listdir(tmp_path) if n.startswith("pid-")} - {os.getpid()}
    assert len(workers) >= 2, workers  # (the one restarted after the kill may come too late to score)
    assert (tmp_path / "killed").exists()
    scored = sum((tmp_path / f"pid-{p}").stat().st_size for p in workers)
    assert scored >= 10 * len(TRAIN)  # every prediction of every trial (the killed call twice)


def _pool_study(lm, addr):
    import pool_metric

    with DSpexSessionContext(engine=addr) as ctx:
        rag = RAG(context=ctx, corpus=DOCS, lm=LM("m-pool", base_url=lm.url))
        study = Study(rag, TPESampler(pool_metric.metric, n_trials=10, seed=0), TRAIN)
        best = study.optimize(concurrency=2, example_concurrency=4, processes=2, show_progress_bar=False)
        assert best.score == 1.0
        assert study.summary["complete"] == 10 and study.summary["failed"] == 0
        assert not study.summary.get("errors"), study.summary["errors"]
        assert "__metric" not in " ".join(ctx._native.tool_specs())  # the workers left


def test_processes_needs_a_metric_that_pickles(lm):
    with DSpexSessionContext() as ctx:
        rag = RAG(context=ctx, corpus=DOCS, lm=LM("m-pool", base_url=lm.url))
        study = Study(rag, TPESampler(lambda e, p, t=None: 1.0, n_trials=2), TRAIN)
        with pytest.raises(TypeError, match="do not pickle"):
            study.optimize(processes=2, show_progress_bar=False)
        with pytest.raises(ValueError, match="processes must be an int >= 1"):
            study.optimize(processes=0, show_progress_bar=False)


def test_the_best_program_is_saved_without_secrets_and_loaded_ready_to_run(lm, tmp_path):
    from dspex.native import load_program

    path = tmp_path / "best.json"

    def dense(question: str, depth: int = 2) -> list:
        return [d for d in DOCS if question.split()[-1].strip("?") in d][:depth]

    with DSpexSessionContext() as ctx:
        model = LM("openai/m-save", base_url=lm.url, api_key="sk-secret-123", headers={"Authorization": "Bearer sk-secret-123", "X-Team": "a"})
        prog = Program([Retrieve(DOCS, k=IntDistribution(1, 10), output="bm25"), PythonTool(dense, output="dense", depth=IntDistribution(1, 3)),
                        Fuse("bm25", "dense", weight=FloatDistribution(0, 1)), Predict("context, question -> answer", model)], context=ctx)
        best = Study(prog, TPESampler(contains, n_trials=4, seed=0), TRAIN).optimize()
        best.save(path)
        expected = best(question=TRAIN[5]["question"]).answer
    text = path.read_text()
    assert "sk-secret" not in text and "X-Team" in text
    with DSpexSessionContext() as ctx:
        loaded = load_program(path, context=ctx, tools={"dense": dense})
        assert loaded.params == best.params and loaded.saved["score"] == best.score
        assert set(loaded.variables) == set(prog.variables)
        assert loaded(question=TRAIN[5]["question"]).answer == expected
    with pytest.raises(ValueError, match="not a saved dspex program"):
        (tmp_path / "x.json").write_text("{}")
        load_program(tmp_path / "x.json", context=ctx)


def test_callbacks_see_every_trial_and_can_stop_the_study(lm, capsys):
    seen = []

    def cb(study, trial):
        seen.append(trial)
        if len(seen) == 3:
            study.stop()

    with DSpexSessionContext() as ctx:
        rag = RAG(context=ctx, corpus=DOCS, lm=LM("m-cb", base_url=lm.url))
        study = Study(rag, TPESampler(contains, n_trials=20, seed=0), TRAIN)
        study.optimize(concurrency=1, callbacks=[cb], show_progress_bar=True)
        assert len(seen) == 3 and study.summary["complete"] == 3
        assert [t.number for t in seen] == [0, 1, 2] and all(t.state == "COMPLETE" and 0 <= t.value <= 1 for t in seen)
        assert set(seen[0].params) == {"retrieve.k", "predict.instructions", "predict.demo_set"}
        err = capsys.readouterr().err  # the progress bar (tqdm, or one plain line)
        assert "best" in err and "lm_calls" in err and "tokens" in err, err

        def broken(study, trial):
            raise KeyError("callback bug")

        with pytest.raises(KeyError, match="callback bug"):
            Study(rag, TPESampler(contains, n_trials=20, seed=0), TRAIN).optimize(concurrency=1, callbacks=[broken], show_progress_bar=False)


def test_demo_sets_are_bootstrapped_from_passing_traces_and_become_a_variable(lm):
    with DSpexSessionContext() as ctx:
        model = LM("m-demos", base_url=lm.url, cache=False)
        rag = RAG(context=ctx, corpus=DOCS, lm=model, k=IntDistribution(1, 3))
        study = Study(rag, TPESampler(contains, n_trials=6, seed=0, num_candidates=4, max_bootstrapped_demos=2, max_labeled_demos=3), TRAIN)
        best = study.optimize(concurrency=2, show_progress_bar=False)
        predict = rag.steps[1]
        sets = predict.args["demos"]
        assert len(sets) == 4 and sets[0] == [] and all(len(s) <= 3 for s in sets)
        boot = [d for d in sets[2] if "context" in d]  # from a trace: the step's inputs and outputs
        assert boot and all(set(d) == {"context", "question", "answer"} and d["answer"].startswith("echo: ") for d in boot)
        assert "predict.demo_set" in best.params and tuple(best.demo_set.distribution.choices) == (0, 1, 2, 3)

        def prompt_tokens(demo_set):
            before = model.stats()["prompt_tokens"]
            rag.run({"predict.demo_set": demo_set}, question=TRAIN[0]["question"])
            return model.stats()["prompt_tokens"] - before

        assert prompt_tokens(2) > prompt_tokens(0)  # the demos are in the prompt


def test_demo_bootstrapping_is_charged_to_the_study_budget(lm):
    n = len(TRAIN)
    with DSpexSessionContext() as ctx:
        rag = RAG(context=ctx, corpus=DOCS, lm=LM("m-boot-budget", base_url=lm.url, cache=False), k=IntDistribution(1, 3))
        lm.reset()
        # the bootstrap runs the program once per training example, then one trial fits
        opt = TPESampler(contains, n_trials=20, seed=0, num_candidates=3, max_calls=2 * n + 3)
        best = Study(rag, opt, TRAIN).optimize(concurrency=1, example_concurrency=1, show_progress_bar=False)
        s = best.summary
        assert s["budget_exhausted"] and s["budget_spent"]["calls"] == 2 * n + 3, s
        assert s["complete"] == 1 and lm.stats()["requests"] == 2 * n + 3


def test_a_python_tool_that_disappears_mid_study_fails_its_examples_and_the_study_says_why(lm):
    with DSpexSessionContext() as ctx:
        calls = []

        def dense(question: str) -> list:
            calls.append(question)
            if len(calls) == 20:  # the tool's owner takes it away mid-study
                ctx.unregister_tool("dense")
            return DOCS[:3]

        prog = Program([Retrieve(DOCS, k=IntDistribution(1, 5), output="bm25"), PythonTool(dense, output="dense"),
                        Fuse("bm25", "dense", k=3)], context=ctx)
        with pytest.raises(StudyError, match="max_errors=4") as e:
            Study(prog, TPESampler(in_context, n_trials=10, max_errors=4), TRAIN).optimize(concurrency=1, example_concurrency=1, show_progress_bar=False)
        assert "dense" in e.value.errors[0] and len(calls) == 20, e.value.errors


def test_the_best_program_leaves_dspex_as_a_dspy_module(lm):
    dspy = pytest.importorskip("dspy")
    with DSpexSessionContext() as ctx:
        rag = RAG(context=ctx, corpus=DOCS, lm=LM("m-dspy", base_url=lm.url))
        best = Study(rag, TPESampler(contains, n_trials=4, seed=0, num_candidates=3), TRAIN).optimize(show_progress_bar=False)
        module = best.to_dspy()
        assert isinstance(module, dspy.Module)
        predictor = module.predict
        assert predictor.signature.instructions == best.instructions.value
        demos = rag.steps[1].args["demos"][best.demo_set.value]
        assert [dict(d) for d in predictor.demos] == demos
        with dspy.context(lm=dspy.LM("openai/m-dspy", api_base=lm.url, api_key="none", cache=False)):
            pred = module(question=TRAIN[4]["question"])
        ours = best(question=TRAIN[4]["question"])
        assert pred.context == ours.context and TRAIN[4]["answer"] in pred.answer


def test_score_and_tokens_give_a_pareto_set_of_programs(lm):
    with DSpexSessionContext() as ctx:
        rag = RAG(context=ctx, corpus=DOCS, lm=LM("m-pareto", base_url=lm.url), instructions="Answer.")
        study = Study(rag, TPESampler(contains, n_trials=10, seed=0, num_candidates=1), TRAIN, objectives=["score", "tokens"])
        assert study.directions == ["maximize", "minimize"]
        best = study.optimize(concurrency=2, show_progress_bar=False)
        front = study.best_programs
        assert front and best is front[0] and all(len(p.values) == 2 for p in front)
        for p in front:  # no program of the front dominates another
            assert not any(q.values[0] >= p.values[0] and q.values[1] <= p.values[1] and q.values != p.values for q in front)
        ks = sorted(p.k.value for p in front)
        assert ks == sorted(set(ks))  # more retrieved passages: more tokens
    with pytest.raises(ValueError, match="do not match objectives"):
        Study(rag, TPESampler(contains), TRAIN, objectives=["score", "latency"], directions=["maximize", "maximize"])
    with pytest.raises(ValueError, match="must start with 'score'"):
        Study(rag, TPESampler(contains), TRAIN, objectives=["cost"])


def test_aggregate_turns_the_example_scores_into_the_trial_score(lm):
    seen = []

    def worst(scores):
        seen.append(list(scores))
        return min(scores)

    with DSpexSessionContext() as ctx:
        rag = RAG(context=ctx, corpus=DOCS, lm=LM("m-agg", base_url=lm.url), instructions="Answer.")
        study = Study(rag, TPESampler(contains, n_trials=4, seed=0, num_candidates=1, aggregate=worst), TRAIN)
        study.optimize(concurrency=1, show_progress_bar=False)
        assert len(seen) == 4 and all(len(s) == len(TRAIN) for s in seen)
        assert study.summary["best_value"] == max(min(s) for s in seen)
        with pytest.raises(StudyError):  # an aggregate that fails fails its trials: none completes
            Study(rag, TPESampler(contains, n_trials=2, num_candidates=1, aggregate=lambda s: None), TRAIN).optimize(show_progress_bar=False)


def test_estimate_counts_the_calls_a_study_will_make_without_calling_the_lm(lm, capsys):
    with DSpexSessionContext() as ctx:
        model = LM("m-estimate", base_url=lm.url, cache=False, prices={"m-estimate": {"input": 1.0, "output": 2.0}})
        rag = RAG(context=ctx, corpus=DOCS, lm=model, instructions="Answer.")
        study = Study(rag, TPESampler(contains, n_trials=5, seed=0, num_candidates=1), TRAIN)
        est = study.estimate()
        assert model.stats()["calls"] == 0  # a dry run
        assert est["lm_calls"] == 5 * len(TRAIN) and est["tokens"] > 0 and est["cost"] > 0 and not est["unpriced_models"]
        assert "60 LM calls" in capsys.readouterr().out
        study.optimize(show_progress_bar=False)
        st = model.stats()
        assert st["calls"] == est["lm_calls"]
        assert 0.3 < est["tokens"] / st["total_tokens"] < 3  # the right order of magnitude
        many = [dict(t, question=t["question"] + f" ({j})") for j in range(5) for t in TRAIN]  # 60: minibatches
        est = Study(rag, TPESampler(contains, n_trials=10, minibatch_size=8, minibatch_full_eval_steps=5), many).estimate(show=False)
        assert est["examples_per_trial"] == 8 and est["full_evaluations"] == 3 and est["bootstrap_runs"] == 60
        assert est["program_runs"] == 10 * 8 + 3 * 60 + 60
