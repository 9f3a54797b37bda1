//! Program studies: a study whose trials are configurations of a [`Program`], each run over
//! the examples concurrently in the engine and scored by the session's metric tool (the user's
//! Python metric, called in batches through the session's tool channel, in-process or over the
//! session stream).
//!
//! A trial samples every tunable argument of the program (`step.arg`), runs the program on its
//! examples with `example_concurrency` in flight, calls the metric on each prediction, reports
//! the running mean as an intermediate value (so pruners apply), and is told the mean. An
//! example whose program run or metric call fails scores `failure_score` and counts against
//! `max_errors`; past it, the study stops with the errors listed. An LM budget running out
//! (`BudgetExceeded`) stops the study cleanly: the best so far stands.
//!
//! The subject may also stay in the calling process ([`Subject::Python`], a DSPy program):
//! then the search space is given, and one session tool runs a configuration on an example
//! and scores it; everything else (sampling, scheduling, minibatches, storage) is the same.
//!
//! With more examples than `minibatch_size` (and minibatching on), a trial scores a random
//! minibatch of them (drawn from the trial number and the seed), as MIPROv2 does; every
//! `full_eval_steps` finished trials, and at the end (unless the last trial to finish was just
//! followed by one), the configuration with the best
//! mean minibatch score (over the trials that ran it) that has not been fully evaluated yet
//! is scored on every example, with the example capacity of the trials not running at the
//! time; a `baseline` configuration is scored on every example first. Those
//! full-set scores are kept apart from the trials' values (the study's user attribute
//! `full_scores`: trial number → score; the sampler sees minibatch scores only), and the best
//! configuration is the one with the best full-set score.
//!
//! A study in a storage is continued by running it again with the same name: its finished
//! trials count towards `n_trials` and stay as they are; trials a killed process left running
//! are failed and replaced.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dspex_optimizer::{Distribution, ParamValue, StudyDirection, TrialState};
use parking_lot::Mutex;
use serde_json::{Map, Value};
use tokio::task::JoinSet;

use crate::error::{EngineError, Result};
use crate::program::{Configured, Program};
use crate::scheduler::{Done, Run, RunOptions};
use crate::session::{Data, Session};
use crate::study::{Outcome, Study};
use crate::tools;

/// Errors kept to show the user when a study stops on them.
const ERRORS_SHOWN: usize = 10;

/// What a program study's trials configure and score.
#[derive(Debug, Clone)]
pub enum Subject {
    /// An engine-resident program, run over the examples in the engine; each prediction is
    /// scored by the session tool `metric_tool` (called with `example`, the position,
    /// `prediction`, a dict, and `trace`, None; returns a number).
    Program {
        /// The program whose tunable arguments are the search space.
        program: Program,
        /// The examples a trial is scored on (their fields).
        examples: Vec<Map<String, Value>>,
        /// The metric tool.
        metric_tool: String,
    },
    /// A program that stays in the calling process (a DSPy program): `space` is the search
    /// space, and the session tool `evaluate_tool` runs one configuration on one example and
    /// scores it (called with `params`, a dict, `example`, the position, and `trial`, the trial
    /// number or None for a full evaluation; returns a number, or a dict with `score` and
    /// optionally `tokens` and `cost`).
    Python {
        /// Parameter name → distribution.
        space: Vec<(String, Distribution)>,
        /// How many examples there are.
        examples: usize,
        /// The evaluation tool.
        evaluate_tool: String,
    },
}

impl Subject {
    fn examples(&self) -> usize {
        match self {
            Subject::Program { examples, .. } => examples.len(),
            Subject::Python { examples, .. } => *examples,
        }
    }

    fn space(&self) -> Vec<(String, Distribution)> {
        match self {
            Subject::Program { program, .. } => program.space(),
            Subject::Python { space, .. } => space.clone(),
        }
    }

    fn budget(&self) -> Option<&Arc<dspex_native::lm::Budget>> {
        match self {
            Subject::Program { program, .. } => program.budget.as_ref(),
            Subject::Python { .. } => None,
        }
    }
}

/// Everything a program study needs (the JSON of `dspex.optimizer.Study.optimize`).
#[derive(Debug, Clone)]
pub struct ProgramStudySpec {
    /// What the trials configure and score.
    pub subject: Subject,
    /// A session tool called after every trial with `number`, `state`, `value` (None unless
    /// COMPLETE) and `params`; answering true stops the study (progress bars, callbacks).
    pub trial_tool: Option<String>,
    /// A session tool that turns a trial's example scores (`scores`, in example order) into its
    /// score, instead of their mean.
    pub aggregate_tool: Option<String>,
    /// A storage URL (None: in memory).
    pub storage: Option<String>,
    /// The study's name (None: generated).
    pub study_name: Option<String>,
    /// Sampler kind and its options (JSON object).
    pub sampler: (String, String),
    /// Pruner kind and options (None: no pruning).
    pub pruner: Option<(String, String)>,
    /// Trials the study should have: a study continued from its storage runs only those that
    /// are missing (its finished trials count, whatever their state).
    pub n_trials: Option<u64>,
    /// Start no trial after this long.
    pub timeout: Option<Duration>,
    /// Trials at once.
    pub concurrency: usize,
    /// Examples at once in each trial.
    pub example_concurrency: usize,
    /// The score of a failed example.
    pub failure_score: f64,
    /// Failed examples tolerated over the whole study before it stops. With
    /// `trial_max_errors`, only while no example has scored yet (the setup is broken).
    pub max_errors: usize,
    /// Failed examples a trial tolerates; past it, the trial fails and the study goes on.
    pub trial_max_errors: Option<usize>,
    /// A configuration scored first, on every example: its full-set score counts as a full
    /// evaluation and its trial's value is its mean over the trial's own minibatch (the
    /// baseline a search must beat, as MIPROv2's default program).
    pub baseline: Option<BTreeMap<String, ParamValue>>,
    /// Examples per trial when minibatching (None: every trial scores every example).
    pub minibatch_size: Option<usize>,
    /// Finished trials between two full evaluations.
    pub full_eval_steps: usize,
    /// Seeds the minibatches.
    pub seed: u64,
    /// What a trial's values are, in order (`score` maximized; `latency`, seconds per example,
    /// `tokens`, LM tokens per example, and `cost`, estimated LM cost per example, minimized).
    pub objectives: Vec<Objective>,
}

/// One value of a program study's trials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objective {
    /// The mean metric (maximized).
    Score,
    /// Mean seconds per example of the program run (minimized).
    Latency,
    /// Mean LM tokens per example (minimized).
    Tokens,
    /// Mean estimated LM cost per example, from the LMs' prices (minimized).
    Cost,
}

impl Objective {
    fn parse(s: &str) -> Result<Objective> {
        Ok(match s {
            "score" => Objective::Score,
            "latency" => Objective::Latency,
            "tokens" => Objective::Tokens,
            "cost" => Objective::Cost,
            _ => {
                return Err(EngineError::InvalidArgument(format!(
                    "unknown objective {s:?} (score, latency, tokens, cost)"
                )))
            }
        })
    }

    fn direction(self) -> StudyDirection {
        match self {
            Objective::Score => StudyDirection::Maximize,
            Objective::Latency | Objective::Tokens | Objective::Cost => StudyDirection::Minimize,
        }
    }
}

fn opt_str(v: &Value, k: &str) -> Result<Option<String>> {
    match v.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(x) => Err(EngineError::InvalidArgument(format!(
            "{k} must be a str, not {x}"
        ))),
    }
}

fn count(v: &Value, k: &str, default: u64) -> Result<u64> {
    match v.get(k) {
        None | Some(Value::Null) => Ok(default),
        Some(x) => x.as_u64().filter(|n| *n >= 1).ok_or_else(|| {
            EngineError::InvalidArgument(format!("{k} must be an int >= 1, not {x}"))
        }),
    }
}

fn component(v: &Value, k: &str) -> Result<Option<(String, String)>> {
    match v.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(c) => {
            let kind = c
                .get("kind")
                .and_then(Value::as_str)
                .ok_or_else(|| EngineError::InvalidArgument(format!("{k} needs a kind")))?;
            let options = c
                .get("options")
                .cloned()
                .unwrap_or(Value::Object(Map::new()));
            Ok(Some((kind.to_string(), options.to_string())))
        }
    }
}

impl ProgramStudySpec {
    /// Reads a spec from JSON: `program`, `examples` (a list of dicts) and `metric_tool`, or
    /// `space` (`{name: distribution}`), `n_examples` and `evaluate_tool`; and optionally
    /// `trial_max_errors`, `baseline` (`{name: value}`), `storage`, `study_name`, `sampler`/`pruner` (`{kind, options}`), `n_trials`,
    /// `timeout`, `concurrency`, `example_concurrency`, `failure_score`, `max_errors`,
    /// `minibatch_size` (null: off), `full_eval_steps`, `seed`, `objectives`, `budget` and
    /// `budget_spent` (see [`crate::program::budget_of`]).
    pub fn from_json(v: &Value) -> Result<ProgramStudySpec> {
        let subject = match v.get("program") {
            Some(p) if !p.is_null() => {
                let mut program = Program::from_json(p)?;
                program.budget = crate::program::budget_of(v)?;
                let examples: Vec<Map<String, Value>> = v
                    .get("examples")
                    .and_then(Value::as_array)
                    .ok_or_else(|| {
                        EngineError::InvalidArgument("examples must be a list of dicts".into())
                    })?
                    .iter()
                    .enumerate()
                    .map(|(i, e)| {
                        e.as_object().cloned().ok_or_else(|| {
                            EngineError::InvalidArgument(format!(
                                "example {i} is not a dict of fields"
                            ))
                        })
                    })
                    .collect::<Result<_>>()?;
                Subject::Program {
                    program,
                    examples,
                    metric_tool: opt_str(v, "metric_tool")?.ok_or_else(|| {
                        EngineError::InvalidArgument("metric_tool is needed".into())
                    })?,
                }
            }
            _ => Subject::Python {
                space: space_of(v.get("space"))?,
                examples: match v.get("examples") {
                    Some(Value::Array(a)) => a.len(),
                    _ => count(v, "n_examples", 1)? as usize,
                },
                evaluate_tool: opt_str(v, "evaluate_tool")?.ok_or_else(|| {
                    EngineError::InvalidArgument(
                        "a program study needs a program (and metric_tool) or a space and evaluate_tool".into(),
                    )
                })?,
            },
        };
        if subject.examples() == 0 {
            return Err(EngineError::InvalidArgument(
                "there are no examples to score the program on".into(),
            ));
        }
        let failure_score = match v.get("failure_score") {
            None | Some(Value::Null) => 0.0,
            Some(x) => x.as_f64().filter(|f| f.is_finite()).ok_or_else(|| {
                EngineError::InvalidArgument(format!(
                    "failure_score must be a finite number, not {x}"
                ))
            })?,
        };
        let timeout = match v.get("timeout") {
            None | Some(Value::Null) => None,
            Some(x) => Some(
                x.as_f64()
                    .filter(|t| t.is_finite() && *t > 0.0)
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| {
                        EngineError::InvalidArgument(format!(
                            "timeout must be a number of seconds > 0, not {x}"
                        ))
                    })?,
            ),
        };
        let max_errors = match v.get("max_errors") {
            None | Some(Value::Null) => 10,
            Some(x) => x.as_u64().ok_or_else(|| {
                EngineError::InvalidArgument(format!("max_errors must be an int >= 0, not {x}"))
            })? as usize,
        };
        let trial_max_errors = match v.get("trial_max_errors") {
            None | Some(Value::Null) => None,
            Some(x) => Some(x.as_u64().ok_or_else(|| {
                EngineError::InvalidArgument(format!(
                    "trial_max_errors must be an int >= 0, not {x}"
                ))
            })? as usize),
        };
        let baseline = match v.get("baseline") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(
                m.iter()
                    .map(|(k, x)| {
                        ParamValue::from_json(x)
                            .map(|p| (k.clone(), p))
                            .map_err(|e| {
                                EngineError::InvalidArgument(format!("baseline param {k:?}: {e}"))
                            })
                    })
                    .collect::<Result<_>>()?,
            ),
            Some(x) => {
                return Err(EngineError::InvalidArgument(format!(
                    "baseline must be a dict of params, not {x}"
                )))
            }
        };
        Ok(ProgramStudySpec {
            subject,
            trial_max_errors,
            baseline,
            trial_tool: opt_str(v, "trial_tool")?,
            aggregate_tool: opt_str(v, "aggregate_tool")?,
            storage: opt_str(v, "storage")?,
            study_name: opt_str(v, "study_name")?,
            sampler: component(v, "sampler")?.unwrap_or_else(|| ("TPESampler".into(), "{}".into())),
            pruner: component(v, "pruner")?,
            n_trials: match v.get("n_trials") {
                None | Some(Value::Null) => None,
                _ => Some(count(v, "n_trials", 1)?),
            },
            timeout,
            concurrency: count(v, "concurrency", 4)? as usize,
            example_concurrency: count(v, "example_concurrency", 64)? as usize,
            failure_score,
            max_errors,
            minibatch_size: match v.get("minibatch_size") {
                None | Some(Value::Null) | Some(Value::Bool(false)) => None,
                _ => Some(count(v, "minibatch_size", 35)? as usize),
            },
            full_eval_steps: count(v, "full_eval_steps", 5)? as usize,
            objectives: match v.get("objectives") {
                None | Some(Value::Null) => vec![Objective::Score],
                Some(Value::Array(a)) if !a.is_empty() => a
                    .iter()
                    .map(|o| Objective::parse(o.as_str().unwrap_or_default()))
                    .collect::<Result<_>>()?,
                Some(x) => {
                    return Err(EngineError::InvalidArgument(format!(
                        "objectives must be a non-empty list, not {x}"
                    )))
                }
            },
            seed: match v.get("seed") {
                None | Some(Value::Null) => 0,
                Some(x) => x.as_u64().ok_or_else(|| {
                    EngineError::InvalidArgument(format!("seed must be an int >= 0, not {x}"))
                })?,
            },
        })
    }
}

/// The search space of a Python subject: `{name: distribution JSON}`.
fn space_of(v: Option<&Value>) -> Result<Vec<(String, Distribution)>> {
    let Some(Value::Object(m)) = v else {
        return Err(EngineError::InvalidArgument(
            "space must be a dict of parameter name -> distribution".into(),
        ));
    };
    m.iter()
        .map(|(k, d)| {
            let text = match d {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Distribution::from_json(&text)
                .map(|d| (k.clone(), d))
                .map_err(|e| EngineError::InvalidArgument(format!("space[{k:?}]: {e}")))
        })
        .collect()
}

/// Shared state of one program study's evaluators.
struct Evaluation {
    spec: ProgramStudySpec,
    session: Arc<Session>,
    study: Arc<Study>,
    errors: Mutex<Vec<String>>,
    /// Whether an example has scored yet.
    scored: AtomicBool,
    budget_out: AtomicBool,
    /// The trial that scores the baseline configuration (when it runs in this call).
    baseline: Option<u64>,
    /// Trials that scored a minibatch; full-set scores by trial number.
    finished: Mutex<usize>,
    /// Trials scoring examples now.
    active: std::sync::atomic::AtomicUsize,
    full: tokio::sync::Mutex<BTreeMap<u64, f64>>,
}

impl ProgramStudySpec {
    /// The minibatch size when trials score minibatches (single-objective studies only: the
    /// full evaluations pick one best).
    fn minibatching(&self) -> Option<usize> {
        self.minibatch_size
            .filter(|m| *m < self.subject.examples() && self.objectives.len() == 1)
    }
}

/// Runs a program study to its end; returns a summary: `study_name`, `best_number`,
/// `best_value`, `best_params`, `complete`, `pruned`, `failed`, `stop_reason`, `errors`.
pub async fn optimize(session: Arc<Session>, spec: ProgramStudySpec) -> Result<Data> {
    let (study, space, finished, full, baseline) = {
        let spec = spec.clone();
        tokio::task::spawn_blocking(move || -> Result<_> {
            let storage = crate::storage::open_url(spec.storage.as_deref().unwrap_or("memory"))?;
            let sampler = crate::config::sampler_from_component(&spec.sampler.0, &spec.sampler.1)?;
            let pruner = match &spec.pruner {
                Some((k, o)) => Some(crate::config::pruner_from_component(k, o)?),
                None => None,
            };
            let study = Study::create(
                storage,
                spec.study_name.as_deref(),
                spec.objectives.iter().map(|o| o.direction()).collect(),
                Some(sampler),
                pruner,
                true,
            )?;
            // A study continued after its process died: trials left RUNNING are failed (and
            // replaced), finished ones count towards n_trials and are not run again.
            let mut finished = 0u64;
            for t in study.trials(None)? {
                if t.state == TrialState::Running {
                    let why =
                        "interrupted: the process running this program study stopped".to_string();
                    study.tell(t.number, Outcome::Fail(why), false)?;
                } else if t.state != TrialState::Waiting {
                    finished += 1;
                }
            }
            let full: BTreeMap<u64, f64> = study
                .user_attrs()?
                .get("full_scores")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.parse().ok()?, v.as_f64()?)))
                        .collect()
                })
                .unwrap_or_default();
            // the baseline runs first in a study that has no trial yet
            let baseline = match &spec.baseline {
                Some(params) if study.trials(None)?.is_empty() => {
                    study.enqueue(params.clone(), Default::default(), false)?
                }
                _ => None,
            };
            Ok((study, spec.subject.space(), finished, full, baseline))
        })
        .await
        .map_err(|e| EngineError::Internal(format!("the study could not be opened: {e}")))??
    };
    if space.is_empty() {
        return Err(EngineError::InvalidArgument(
            "the program has no tunable argument: give one as a distribution (e.g. k=IntDistribution(1, 20))".into(),
        ));
    }
    let run = Run::start(
        study.clone(),
        RunOptions {
            n_trials: spec.n_trials.map(|n| n.saturating_sub(finished)),
            timeout: spec.timeout,
            concurrency: spec.concurrency,
            ..RunOptions::default()
        },
    )?;
    // the caller may go away (its stream broke): stop the run rather than leave it waiting for
    // evaluators that were dropped with this future
    let _stop_on_drop = InterruptOnDrop(run.clone());
    let ev = Arc::new(Evaluation {
        spec,
        session,
        study: study.clone(),
        errors: Mutex::new(Vec::new()),
        scored: AtomicBool::new(false),
        budget_out: AtomicBool::new(false),
        baseline,
        finished: Mutex::new(0),
        active: Default::default(),
        full: tokio::sync::Mutex::new(full),
    });
    let space = Arc::new(space);
    let mut evaluators = JoinSet::new();
    for _ in 0..ev.spec.concurrency {
        let (ev, run, space) = (ev.clone(), run.clone(), space.clone());
        evaluators.spawn(async move {
            loop {
                let reqs = run.pull_async(1).await;
                if reqs.is_empty() {
                    return;
                }
                for r in reqs {
                    let done = ev.trial(&run, &space, r.number).await;
                    run.done(r.number, done);
                }
            }
        });
    }
    let summary = run.wait_async().await;
    while evaluators.join_next().await.is_some() {}
    // a last full evaluation, unless the last trial to finish was just followed by one
    let last_done = *ev.finished.lock() % ev.spec.full_eval_steps == 0;
    if ev.spec.minibatching().is_some() && !ev.budget_out.load(Ordering::SeqCst) && !last_done {
        ev.full_evaluation().await;
    }
    let full = ev.full.lock().await.clone();
    let errors = ev.errors.lock().clone();
    let trials = {
        let study = study.clone();
        tokio::task::spawn_blocking(move || study.trials(None))
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))??
    };
    let n = |s: TrialState| trials.iter().filter(|t| t.state == s).count() as i64;
    let mut out = BTreeMap::new();
    out.insert(
        "study_name".to_string(),
        Data::Str(study.name().to_string()),
    );
    out.insert("complete".to_string(), Data::Int(n(TrialState::Complete)));
    out.insert("pruned".to_string(), Data::Int(n(TrialState::Pruned)));
    out.insert("failed".to_string(), Data::Int(n(TrialState::Fail)));
    out.insert(
        "stop_reason".to_string(),
        Data::Str(summary.reason.name().to_string()),
    );
    if let Some(d) = summary.reason.detail() {
        out.insert("stop_detail".to_string(), Data::Str(d.to_string()));
    }
    out.insert(
        "budget_exhausted".to_string(),
        Data::Bool(ev.budget_out.load(Ordering::SeqCst)),
    );
    out.insert(
        "errors".to_string(),
        Data::List(
            errors
                .iter()
                .take(ERRORS_SHOWN)
                .cloned()
                .map(Data::Str)
                .collect(),
        ),
    );
    out.insert("error_count".to_string(), Data::Int(errors.len() as i64));
    if let Some(b) = ev.spec.subject.budget() {
        out.insert("budget_spent".to_string(), crate::program::spent_data(b));
    }
    // the best full-set score when there are some, else the best trial value
    let best = match full
        .iter()
        .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(a.0)))
    {
        Some((n, score)) => trials
            .iter()
            .find(|t| t.number == *n)
            .map(|t| (t.clone(), *score)),
        None => {
            let study = study.clone();
            tokio::task::spawn_blocking(move || study.best_trial())
                .await
                .map_err(|e| EngineError::Internal(e.to_string()))?
                .ok()
                .map(|t| {
                    let v = t
                        .values
                        .as_ref()
                        .and_then(|v| v.first().copied())
                        .unwrap_or(f64::NAN);
                    (t, v)
                })
        }
    };
    if let Some((best, score)) = best {
        out.insert("best_number".to_string(), Data::Int(best.number as i64));
        out.insert("best_value".to_string(), Data::Float(score));
        out.insert("best_params".to_string(), params_data(&best.params));
    }
    if ev.spec.objectives.len() > 1 {
        let study = study.clone();
        let pareto = tokio::task::spawn_blocking(move || study.best_trials())
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))??;
        let list = pareto
            .iter()
            .map(|t| {
                let mut m = BTreeMap::new();
                m.insert("number".to_string(), Data::Int(t.number as i64));
                let values = t.values.clone().unwrap_or_default();
                m.insert(
                    "values".to_string(),
                    Data::List(values.into_iter().map(Data::Float).collect()),
                );
                m.insert("params".to_string(), params_data(&t.params));
                Data::Map(m)
            })
            .collect();
        out.insert("best_trials".to_string(), Data::List(list));
    }
    out.insert(
        "full_scores".to_string(),
        Data::Map(
            full.iter()
                .map(|(n, s)| (n.to_string(), Data::Float(*s)))
                .collect(),
        ),
    );
    Ok(Data::Map(out))
}

/// The trials that ran one configuration, for picking the next full evaluation.
struct Group {
    first: u64,
    params: BTreeMap<String, ParamValue>,
    sum: f64,
    trials: usize,
    evaluated: bool,
}

/// Interrupts a run when dropped before it ended.
struct InterruptOnDrop(Arc<Run>);

impl Drop for InterruptOnDrop {
    fn drop(&mut self) {
        if !self.0.is_finished() {
            self.0.interrupt("the program study's caller went away");
            let run = self.0.clone();
            crate::runtime::settle_later(async move {
                run.wait_async().await;
            });
        }
    }
}

fn json_number(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// A trial's params as data.
pub fn params_data(p: &BTreeMap<String, ParamValue>) -> Data {
    Data::Map(
        p.iter()
            .map(|(k, v)| (k.clone(), Data::from_json(&v.to_json())))
            .collect(),
    )
}

impl Evaluation {
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Study) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let study = self.study.clone();
        tokio::task::spawn_blocking(move || f(&study))
            .await
            .map_err(|e| EngineError::Internal(format!("a study call failed: {e}")))?
    }

    /// Records a failed example; true when the study must stop on its errors.
    fn failed(&self, example: usize, e: &EngineError) -> bool {
        if let EngineError::Tool { kind, .. } = e {
            if kind == "BudgetExceeded" {
                self.budget_out.store(true, Ordering::SeqCst);
                return false;
            }
        }
        self.errors.lock().push(format!("example {example}: {e}"));
        self.too_many_errors()
    }

    /// More than `max_errors` examples failed (with `trial_max_errors`: and none scored).
    fn too_many_errors(&self) -> bool {
        self.errors.lock().len() > self.spec.max_errors
            && (self.spec.trial_max_errors.is_none() || !self.scored.load(Ordering::SeqCst))
    }

    async fn trial(
        self: &Arc<Self>,
        run: &Arc<Run>,
        space: &Arc<Vec<(String, Distribution)>>,
        number: u64,
    ) -> Done {
        let params = {
            let space = space.clone();
            self.blocking(move |s| {
                let mut params = BTreeMap::new();
                for (name, d) in space.iter() {
                    params.insert(name.clone(), s.suggest(number, name, d)?.value);
                }
                Ok(params)
            })
            .await
        };
        let (outcome, params) = match params {
            Ok(params) => {
                let params = Arc::new(params);
                self.active.fetch_add(1, Ordering::SeqCst);
                let outcome = if self.baseline == Some(number) && self.spec.minibatching().is_some()
                {
                    self.score_baseline(params.clone(), number).await
                } else {
                    let examples = self.examples_of(number);
                    self.score(params.clone(), Some(number), examples).await.0
                };
                self.active.fetch_sub(1, Ordering::SeqCst);
                (outcome, Some(params))
            }
            Err(e) => (Outcome::Fail(format!("sampling failed: {e}")), None),
        };
        let told = match self.blocking(move |s| s.tell(number, outcome, false)).await {
            Ok(t) => t,
            Err(e) => return Done::Abort(format!("trial {number} could not be told: {e}")),
        };
        if let Some(tool) = &self.spec.trial_tool {
            let mut args = BTreeMap::new();
            args.insert("number".to_string(), Data::Int(number as i64));
            args.insert(
                "state".to_string(),
                Data::Str(told.state.as_str().to_string()),
            );
            let value = match (told.state, told.values.as_ref().and_then(|v| v.first())) {
                (TrialState::Complete, Some(v)) => Data::Float(*v),
                _ => Data::Null,
            };
            args.insert("value".to_string(), value);
            if let Some(p) = &params {
                args.insert("params".to_string(), params_data(p));
            }
            let answer = match tools::call(&self.session, tool, args) {
                tools::Call::Ready(r) => r,
                tools::Call::Pending(f) => f.await,
            };
            match answer {
                Ok(Data::Bool(true)) => run.stop(),
                Ok(_) => {}
                Err(e) => tracing::warn!("the trial callback of a program study failed: {e}"),
            }
        }
        if self.too_many_errors() {
            let errors = self.errors.lock();
            return Done::Abort(format!(
                "{} examples failed (max_errors={}): {}",
                errors.len(),
                self.spec.max_errors,
                errors
                    .iter()
                    .take(ERRORS_SHOWN)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        if self.budget_out.load(Ordering::SeqCst) {
            run.stop();
        } else if self.spec.minibatching().is_some() && self.baseline != Some(number) {
            let due = {
                let mut f = self.finished.lock();
                *f += 1;
                *f % self.spec.full_eval_steps == 0
            };
            if due {
                self.full_evaluation().await;
            }
        }
        Done::Finished
    }

    /// The examples trial `number` scores: a minibatch drawn from the number and the seed, or
    /// all of them.
    fn examples_of(&self, number: u64) -> Arc<Vec<usize>> {
        let n = self.spec.subject.examples();
        Arc::new(match self.spec.minibatching() {
            Some(m) => {
                use rand::SeedableRng;
                let mut rng = rand::rngs::StdRng::seed_from_u64(
                    self.spec.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ number,
                );
                let mut picked = rand::seq::index::sample(&mut rng, n, m).into_vec();
                picked.sort_unstable();
                picked
            }
            None => (0..n).collect(),
        })
    }

    /// Scores the baseline (trial `number`) on every example: that is a full evaluation, and
    /// the trial's value is its score over the trial's own minibatch.
    async fn score_baseline(
        self: &Arc<Self>,
        params: Arc<BTreeMap<String, ParamValue>>,
        number: u64,
    ) -> Outcome {
        let all = Arc::new((0..self.spec.subject.examples()).collect());
        let (outcome, scores) = self.score(params, Some(number), all).await;
        let Outcome::Values(v) = outcome else {
            return outcome;
        };
        let mut full = self.full.lock().await;
        self.record_full(&mut full, number, v[0]).await;
        match self.aggregate(&self.examples_of(number), &scores).await {
            Ok(x) => Outcome::Values(vec![x]),
            Err(e) => Outcome::Fail(e),
        }
    }

    /// Keeps a full-set score (and writes them all to the study's `full_scores` attribute).
    async fn record_full(&self, full: &mut BTreeMap<u64, f64>, number: u64, score: f64) {
        full.insert(number, score);
        let attr = Value::Object(
            full.iter()
                .map(|(n, s)| (n.to_string(), json_number(*s)))
                .collect(),
        );
        let _ = self
            .blocking(move |s| s.set_user_attr("full_scores", attr))
            .await;
    }

    /// Scores the configuration with the best mean minibatch score (over the trials that ran
    /// it) that has not been fully evaluated yet on every example, and records its full-set
    /// score under its first trial's number (study user attribute `full_scores`).
    async fn full_evaluation(self: &Arc<Self>) {
        // one at a time: two evaluators due together would pick the same configuration
        let mut full = self.full.lock().await;
        let done: Vec<u64> = full.keys().copied().collect();
        let pick = self
            .blocking(move |s| {
                let mut groups: BTreeMap<String, Group> = BTreeMap::new();
                for t in s.trials(Some(&[TrialState::Complete]))? {
                    let Some(v) = t.values.as_ref().and_then(|v| v.first().copied()) else {
                        continue;
                    };
                    let key = Value::Object(
                        t.params
                            .iter()
                            .map(|(k, p)| (k.clone(), p.to_json()))
                            .collect(),
                    )
                    .to_string();
                    let g = groups.entry(key).or_insert_with(|| Group {
                        first: t.number,
                        params: t.params.clone(),
                        sum: 0.0,
                        trials: 0,
                        evaluated: false,
                    });
                    g.sum += v;
                    g.trials += 1;
                    g.evaluated |= done.contains(&t.number);
                }
                Ok(groups
                    .into_values()
                    .filter(|g| !g.evaluated)
                    .map(|g| (g.first, g.params, g.sum / g.trials as f64))
                    .max_by(|a, b| a.2.total_cmp(&b.2).then(b.0.cmp(&a.0))))
            })
            .await;
        let Ok(Some((number, params, _))) = pick else {
            return;
        };
        let all = Arc::new((0..self.spec.subject.examples()).collect());
        if let (Outcome::Values(v), _) = self.score(Arc::new(params), None, all).await {
            self.record_full(&mut full, number, v[0]).await;
        }
    }

    /// A trial's score from its example scores (`scores` by example position; those of
    /// `examples` count): their mean, or the aggregate tool's answer.
    async fn aggregate(
        &self,
        examples: &[usize],
        scores: &[f64],
    ) -> std::result::Result<f64, String> {
        let Some(tool) = &self.spec.aggregate_tool else {
            return Ok(examples.iter().map(|i| scores[*i]).sum::<f64>() / examples.len() as f64);
        };
        let picked: Vec<Data> = examples.iter().map(|i| Data::Float(scores[*i])).collect();
        let mut args = BTreeMap::new();
        args.insert("scores".to_string(), Data::List(picked));
        let out = match tools::call(&self.session, tool, args) {
            tools::Call::Ready(r) => r,
            tools::Call::Pending(f) => f.await,
        };
        match out {
            Ok(Data::Float(x)) if x.is_finite() => Ok(x),
            Ok(Data::Int(x)) => Ok(x as f64),
            Ok(other) => Err(format!("aggregate returned {other}, not a finite number")),
            Err(e) => Err(format!("aggregate failed: {e}")),
        }
    }

    /// Runs configuration `params` over `examples`; the outcome and the example scores by
    /// position (NaN where not scored). For a trial (`number`), the running mean is reported
    /// as examples finish and the scores are kept as its `example_scores` attribute (null
    /// where an example was not scored), what they used as its `usage` attribute (`examples`
    /// scored, `seconds`, LM `tokens` and `cost`, summed).
    async fn score(
        self: &Arc<Self>,
        params: Arc<BTreeMap<String, ParamValue>>,
        number: Option<u64>,
        examples: Arc<Vec<usize>>,
    ) -> (Outcome, Vec<f64>) {
        let mut scores = vec![f64::NAN; self.spec.subject.examples()];
        let configured = match &self.spec.subject {
            Subject::Program { program, .. } => match program.configure(&params) {
                Ok(c) => Some(Arc::new(c)),
                Err(e) => {
                    let why = format!("the configuration cannot run: {e}");
                    return (Outcome::Fail(why), scores);
                }
            },
            Subject::Python { .. } => None,
        };
        let n = examples.len();
        let report_every = (n / 20).max(1);
        let mut in_flight = JoinSet::new();
        let mut next = 0usize;
        let (mut done, mut sum, mut trial_errors) = (0usize, 0.0, Vec::new());
        // latency, tokens and cost summed over the examples that ran
        let (mut costs, mut ok) = ([0.0f64; 3], 0usize);
        loop {
            // a trial has `example_concurrency` examples in flight; a full evaluation also takes
            // the capacity of the trials not running (all of it once the trials are done)
            let cap = match number {
                Some(_) => self.spec.example_concurrency,
                None => {
                    let busy = self.active.load(Ordering::SeqCst);
                    self.spec.example_concurrency
                        * self.spec.concurrency.saturating_sub(busy).max(1)
                }
            };
            while next < n && in_flight.len() < cap {
                let (ev, c, p, i) = (
                    self.clone(),
                    configured.clone(),
                    params.clone(),
                    examples[next],
                );
                in_flight.spawn(async move { (i, ev.example(c.as_deref(), &p, number, i).await) });
                next += 1;
            }
            let Some(joined) = in_flight.join_next().await else {
                break;
            };
            let (i, result) = match joined {
                Ok(r) => r,
                Err(e) => {
                    let why = format!("an example's task failed: {e}");
                    return (Outcome::Fail(why), scores);
                }
            };
            let score = match result {
                Ok([score, latency, tokens, cost]) => {
                    self.scored.store(true, Ordering::SeqCst);
                    costs[0] += latency;
                    costs[1] += tokens;
                    costs[2] += cost;
                    ok += 1;
                    score
                }
                Err(e) => {
                    if self.failed(i, &e) || self.budget_out.load(Ordering::SeqCst) {
                        return (
                            Outcome::Fail(format!("stopped at example {i}: {e}")),
                            scores,
                        );
                    }
                    trial_errors.push(format!("example {i}: {e}"));
                    if let Some(m) = self.spec.trial_max_errors {
                        if trial_errors.len() > m {
                            let why = format!(
                                "{} examples failed (max_errors={m}), the first: {}",
                                trial_errors.len(),
                                trial_errors[0]
                            );
                            return (Outcome::Fail(why), scores);
                        }
                    }
                    self.spec.failure_score
                }
            };
            scores[i] = score;
            done += 1;
            sum += score;
            // the baseline is not pruned: it is what the others are measured against
            let Some(number) = number.filter(|n| self.baseline != Some(*n)) else {
                continue;
            };
            // intermediate values are for single-objective studies (as in Optuna)
            if self.spec.objectives.len() == 1 && done % report_every == 0 && done < n {
                let mean = sum / done as f64;
                let prune = self
                    .blocking(move |s| {
                        s.report(number, done as i64, mean)?;
                        s.should_prune(number)
                    })
                    .await;
                if matches!(prune, Ok(true)) {
                    return (Outcome::Pruned, scores);
                }
            }
        }
        let mean = match self.aggregate(&examples, &scores).await {
            Ok(x) => x,
            Err(e) => return (Outcome::Fail(e), scores),
        };
        // latency, tokens and cost: means over the examples that ran
        let per_ok = |x: f64| if ok == 0 { f64::NAN } else { x / ok as f64 };
        let values: Vec<f64> = self
            .spec
            .objectives
            .iter()
            .map(|o| match o {
                Objective::Score => mean,
                Objective::Latency => per_ok(costs[0]),
                Objective::Tokens => per_ok(costs[1]),
                Objective::Cost => per_ok(costs[2]),
            })
            .collect();
        if let Some(number) = number {
            let attr = Value::Array(scores.iter().map(|s| json_number(*s)).collect());
            // what the trial's examples used, summed: seconds, LM tokens, estimated LM cost
            let usage = serde_json::json!({
                "examples": ok,
                "seconds": json_number(costs[0]),
                "tokens": json_number(costs[1]),
                "cost": json_number(costs[2]),
            });
            let _ = self
                .blocking(move |s| {
                    s.storage()
                        .set_trial_user_attr(s.id(), number, "example_scores", attr)?;
                    s.storage()
                        .set_trial_user_attr(s.id(), number, "usage", usage)
                })
                .await;
        }
        (Outcome::Values(values), scores)
    }

    /// Runs configuration `params` on example `i` and scores it: `[score, latency, tokens,
    /// cost]`. A program runs in the engine and its prediction goes to the metric tool; a
    /// Python subject's evaluation tool does both.
    async fn example(
        &self,
        configured: Option<&Configured>,
        params: &BTreeMap<String, ParamValue>,
        number: Option<u64>,
        i: usize,
    ) -> Result<[f64; 4]> {
        let start = std::time::Instant::now();
        let mut args = BTreeMap::new();
        args.insert("example".to_string(), Data::Int(i as i64));
        let (tool, tokens, cost) = match (&self.spec.subject, configured) {
            (
                Subject::Program {
                    program,
                    examples,
                    metric_tool,
                },
                Some(configured),
            ) => {
                let ran = program
                    .run_configured(&self.session, configured, examples[i].clone())
                    .await?;
                args.insert(
                    "prediction".to_string(),
                    Data::from_json(&Value::Object(ran.prediction)),
                );
                args.insert("trace".to_string(), Data::Null);
                (metric_tool, Some(ran.tokens as f64), Some(ran.cost))
            }
            (Subject::Python { evaluate_tool, .. }, _) => {
                args.insert("params".to_string(), params_data(params));
                let trial = number.map_or(Data::Null, |n| Data::Int(n as i64));
                args.insert("trial".to_string(), trial);
                (evaluate_tool, None, None)
            }
            (Subject::Program { .. }, None) => {
                return Err(EngineError::Internal(
                    "a program run without its configuration".into(),
                ))
            }
        };
        // a program's latency is its run's; a Python subject's, its evaluation's
        let ran_for = start.elapsed().as_secs_f64();
        let out = match tools::call(&self.session, tool, args) {
            tools::Call::Ready(r) => r?,
            tools::Call::Pending(f) => f.await?,
        };
        let number_of = |d: &Data, what: &str| match d {
            Data::Float(x) if x.is_finite() => Ok(*x),
            Data::Int(x) => Ok(*x as f64),
            Data::Bool(b) => Ok(f64::from(u8::from(*b))),
            other => Err(EngineError::InvalidArgument(format!(
                "the metric returned {what}{other}, not a finite number"
            ))),
        };
        let (score, tokens, cost) = match (&out, tokens) {
            (Data::Map(m), None) => {
                let score = number_of(m.get("score").unwrap_or(&Data::Null), "score=")?;
                let field = |k: &str| m.get(k).map_or(Ok(0.0), |d| number_of(d, k));
                (score, field("tokens")?, field("cost")?)
            }
            (other, tokens) => (
                number_of(other, "")?,
                tokens.unwrap_or(0.0),
                cost.unwrap_or(0.0),
            ),
        };
        let latency = match self.spec.subject {
            Subject::Program { .. } => ran_for,
            Subject::Python { .. } => start.elapsed().as_secs_f64(),
        };
        Ok([score, latency, tokens, cost])
    }
}
