"""Property tests (Hypothesis) of the Python API with hostile input: extreme ints and floats,
NaN and infinities, unicode and megabyte names, wrong types, mutated program files. Every input
is accepted (and then behaves) or refused with a ValueError or TypeError that says what was
wrong; nothing crashes the process or the study.

``DSPEX_FUZZ_EXAMPLES`` sets the examples per test (``scripts/fuzz.sh`` runs many more)."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Optional, Tuple

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import dspex  # noqa: E402

EXAMPLES = int(os.environ.get("DSPEX_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
REFUSED = (ValueError, TypeError, OverflowError)

floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, 5e-324, 1.7976931348623157e308, -1.7976931348623157e308])
ints = st.integers() | st.sampled_from([0, -1, 2**63 - 1, -(2**63), 2**63, 2**64, -(2**64)])
names = st.text(max_size=40) | st.sampled_from(["", " ", "x" * 1_000_000, "é/\\\x00", "🙂" * 1000])
wrong = st.none() | st.booleans() | st.lists(st.integers(), max_size=2) | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2) | st.binary(max_size=4)


def _study() -> dspex.Study:
    return dspex.create_study(sampler=dspex.samplers.RandomSampler(seed=0))


def _accepted(call: Callable[[], Any]) -> Optional[Tuple[Any]]:
    """``(result,)`` when the call is accepted; None when it is refused with a message."""
    try:
        return (call(),)
    except REFUSED as e:
        assert str(e)
        return None


@FUZZ
@given(name=names | wrong)
def test_study_names(name: Any) -> None:
    got = _accepted(lambda: dspex.create_study(study_name=name))
    if got:
        assert got[0].study_name == name or name is None


@FUZZ
@given(low=floats | ints | wrong, high=floats | ints | wrong, log=st.booleans(), step=st.none() | floats)
def test_suggest_float(low: Any, high: Any, log: bool, step: Any) -> None:
    trial = _study().ask()
    got = _accepted(lambda: trial.suggest_float("x", low, high, log=log, step=step))
    if got:
        x = got[0]
        assert isinstance(x, float) and math.isfinite(x)
        assert float(low) <= x <= float(high) or math.isclose(x, float(high)) or math.isclose(x, float(low))


@FUZZ
@given(low=ints | wrong, high=ints | wrong, log=st.booleans(), step=ints | wrong)
def test_suggest_int(low: Any, high: Any, log: bool, step: Any) -> None:
    trial = _study().ask()
    got = _accepted(lambda: trial.suggest_int("n", low, high, step=step, log=log))
    if got:
        assert isinstance(got[0], int) and low <= got[0] <= high


@FUZZ
@given(choices=st.lists(st.none() | st.booleans() | ints | floats | names | wrong, max_size=5) | wrong)
def test_suggest_categorical(choices: Any) -> None:
    trial = _study().ask()
    got = _accepted(lambda: trial.suggest_categorical("c", choices))
    if got:
        assert any(got[0] is v or got[0] == v or (isinstance(v, float) and math.isnan(v)) for v in choices)


json_like = st.recursive(st.none() | st.booleans() | ints | floats | st.text(max_size=5),
                        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3), max_leaves=8)


@FUZZ
@given(value=floats | ints | wrong | st.lists(floats, max_size=3), key=names, attr=json_like | wrong)
def test_objective_results_and_attributes(value: Any, key: Any, attr: Any) -> None:
    """Whatever the objective returns or stores, the trial ends COMPLETE or FAIL and the study
    goes on (an attribute that cannot be stored raises in the objective: caught here, as
    Optuna's ``catch`` does)."""
    study = _study()

    def objective(trial: dspex.Trial) -> Any:
        trial.suggest_float("x", 0, 1)
        trial.set_user_attr(key, attr)
        return value

    study.optimize(objective, n_trials=1, catch=(TypeError, ValueError))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    states = [t.state for t in study.trials]
    assert states[1] == dspex.TrialState.COMPLETE
    assert states[0] in (dspex.TrialState.COMPLETE, dspex.TrialState.FAIL)
    if states[0] == dspex.TrialState.COMPLETE:
        assert math.isfinite(study.trials[0].value)


@FUZZ
@given(step=ints | wrong, value=floats | ints | wrong)
def test_report(step: Any, value: Any) -> None:
    trial = _study().ask()
    if _accepted(lambda: trial.report(value, step)):
        trial.should_prune()


@pytest.fixture(scope="module")
def program_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("prog")
    examples = Path(__file__).resolve().parent.parent / "examples"
    for name in ("program.toml", "program_bm25.py"):
        shutil.copy(examples / name, d / name)
    return d


SEED_TOML = (Path(__file__).resolve().parent.parent / "examples" / "program.toml").read_text()
MUTATION = st.tuples(st.integers(0, len(SEED_TOML)), st.integers(0, 12), st.text(alphabet="=[]{}\"',.-0123456789abkxyz_ \n", max_size=6))


@FUZZ
@given(edits=st.lists(MUTATION, max_size=5))
def test_program_files(program_dir: Path, edits: list) -> None:
    """A mutated examples/program.toml loads, or is refused with a ValueError naming the file."""
    from dspex import _program_cli

    text = SEED_TOML
    for at, cut, insert in edits:
        at = min(at, len(text))
        text = text[:at] + insert + text[at + cut:]
    path = program_dir / "fuzzed.toml"
    path.write_text(text)
    try:
        _program_cli.load(str(path))
    except (ValueError, TypeError) as e:
        assert "fuzzed.toml" in str(e) or str(e), e
