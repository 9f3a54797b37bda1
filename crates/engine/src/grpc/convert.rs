//! Conversions between engine types and the wire types of `proto/dspex/v1`. Everything that
//! comes from the wire is checked: a bad value is an `InvalidArgument`, never a panic.

use std::collections::{BTreeMap, HashMap};

use dspex_optimizer::{
    CategoricalDistribution, Distribution, FloatDistribution, IntDistribution, ParamValue,
    StudyDirection, TrialState,
};

use super::pb;
use crate::error::{EngineError, ErrorCode, Result};
use crate::model::{from_unix_seconds, unix_seconds, AttrMap, AttrValue, TrialRecord};
use crate::scheduler::RunSummary;
use crate::study::{Outcome, Told};

fn bad(msg: impl Into<String>) -> EngineError {
    EngineError::InvalidArgument(msg.into())
}

/// A parameter value (external, or a categorical choice) on the wire.
pub fn param_to_pb(v: &ParamValue) -> pb::ParamValue {
    use pb::param_value::Kind;
    pb::ParamValue {
        kind: Some(match v {
            ParamValue::None => Kind::None(true),
            ParamValue::Bool(b) => Kind::BoolValue(*b),
            ParamValue::Int(i) => Kind::IntValue(*i),
            ParamValue::Float(f) => Kind::FloatValue(*f),
            ParamValue::Str(s) => Kind::StrValue(s.clone()),
        }),
    }
}

/// A parameter value from the wire; one without a kind is an error.
pub fn param_from_pb(v: &pb::ParamValue) -> Result<ParamValue> {
    use pb::param_value::Kind;
    Ok(match &v.kind {
        None => return Err(bad("a parameter value has no kind")),
        Some(Kind::None(_)) => ParamValue::None,
        Some(Kind::BoolValue(b)) => ParamValue::Bool(*b),
        Some(Kind::IntValue(i)) => ParamValue::Int(*i),
        Some(Kind::FloatValue(f)) => ParamValue::Float(*f),
        Some(Kind::StrValue(s)) => ParamValue::Str(s.clone()),
    })
}

/// Parameter name -> value, on the wire.
pub fn params_to_pb(p: &BTreeMap<String, ParamValue>) -> HashMap<String, pb::ParamValue> {
    p.iter().map(|(k, v)| (k.clone(), param_to_pb(v))).collect()
}

/// Parameter name -> value, from the wire (see [`param_from_pb`]).
pub fn params_from_pb(p: &HashMap<String, pb::ParamValue>) -> Result<BTreeMap<String, ParamValue>> {
    p.iter()
        .map(|(k, v)| Ok((k.clone(), param_from_pb(v)?)))
        .collect()
}

/// A distribution on the wire.
pub fn dist_to_pb(d: &Distribution) -> pb::Distribution {
    use pb::distribution::Kind;
    pb::Distribution {
        kind: Some(match d {
            Distribution::Float(f) => Kind::FloatDist(pb::FloatDistribution {
                low: f.low,
                high: f.high,
                log: f.log,
                step: f.step,
            }),
            Distribution::Int(i) => Kind::IntDist(pb::IntDistribution {
                low: i.low,
                high: i.high,
                log: i.log,
                step: i.step,
            }),
            Distribution::Categorical(c) => Kind::Categorical(pb::CategoricalDistribution {
                choices: c.choices.iter().map(param_to_pb).collect(),
            }),
        }),
    }
}

/// A distribution from the wire, validated as if built in Python (an inverted range, a bad
/// step or duplicate choices are errors).
pub fn dist_from_pb(d: &pb::Distribution) -> Result<Distribution> {
    use pb::distribution::Kind;
    Ok(match &d.kind {
        None => return Err(bad("a distribution has no kind")),
        Some(Kind::FloatDist(f)) => {
            Distribution::Float(FloatDistribution::new(f.low, f.high, f.log, f.step)?)
        }
        Some(Kind::IntDist(i)) => {
            Distribution::Int(IntDistribution::new(i.low, i.high, i.log, i.step)?)
        }
        Some(Kind::Categorical(c)) => Distribution::Categorical(CategoricalDistribution::new(
            c.choices.iter().map(param_from_pb).collect::<Result<_>>()?,
        )?),
    })
}

/// A trial state on the wire.
pub fn state_to_pb(s: TrialState) -> pb::TrialState {
    match s {
        TrialState::Running => pb::TrialState::Running,
        TrialState::Complete => pb::TrialState::Complete,
        TrialState::Pruned => pb::TrialState::Pruned,
        TrialState::Fail => pb::TrialState::Fail,
        TrialState::Waiting => pb::TrialState::Waiting,
    }
}

/// A trial state from its wire number; an unknown number is an error.
pub fn state_from_i32(v: i32) -> Result<TrialState> {
    Ok(match pb::TrialState::try_from(v) {
        Ok(pb::TrialState::Running) => TrialState::Running,
        Ok(pb::TrialState::Complete) => TrialState::Complete,
        Ok(pb::TrialState::Pruned) => TrialState::Pruned,
        Ok(pb::TrialState::Fail) => TrialState::Fail,
        Ok(pb::TrialState::Waiting) => TrialState::Waiting,
        Err(_) => return Err(bad(format!("unknown trial state {v}"))),
    })
}

/// A state filter from the wire: empty means every state (None).
pub fn states_from_pb(v: &[i32]) -> Result<Option<Vec<TrialState>>> {
    if v.is_empty() {
        return Ok(None);
    }
    v.iter()
        .map(|s| state_from_i32(*s))
        .collect::<Result<_>>()
        .map(Some)
}

/// A study direction as its wire number.
pub fn direction_to_pb(d: StudyDirection) -> i32 {
    match d {
        StudyDirection::Minimize => pb::Direction::Minimize as i32,
        StudyDirection::Maximize => pb::Direction::Maximize as i32,
    }
}

/// A study direction from its wire number; an unknown number is an error.
pub fn direction_from_i32(v: i32) -> Result<StudyDirection> {
    match pb::Direction::try_from(v) {
        Ok(pb::Direction::Minimize) => Ok(StudyDirection::Minimize),
        Ok(pb::Direction::Maximize) => Ok(StudyDirection::Maximize),
        Err(_) => Err(bad(format!("unknown direction {v}"))),
    }
}

/// Attributes as the JSON object the wire carries them in.
pub fn attrs_to_json(a: &AttrMap) -> String {
    serde_json::to_string(a).unwrap_or_else(|_| "{}".into())
}

/// Attributes from a wire JSON object (an empty string is no attribute).
pub fn attrs_from_json(s: &str) -> Result<AttrMap> {
    if s.trim().is_empty() {
        return Ok(AttrMap::new());
    }
    serde_json::from_str(s).map_err(|e| bad(format!("attributes must be a JSON object: {e}")))
}

/// One attribute value from its wire JSON text.
pub fn value_from_json(s: &str) -> Result<AttrValue> {
    serde_json::from_str(s).map_err(|e| bad(format!("an attribute value must be JSON: {e}")))
}

/// A trial on the wire: external params with their distributions, attributes as JSON,
/// timestamps as Unix seconds.
pub fn trial_to_pb(t: &TrialRecord) -> pb::Trial {
    pb::Trial {
        number: t.number,
        state: state_to_pb(t.state) as i32,
        params: params_to_pb(&t.params),
        distributions: t
            .distributions
            .iter()
            .map(|(k, d)| (k.clone(), dist_to_pb(d)))
            .collect(),
        values: t.values.clone().unwrap_or_default(),
        has_values: t.values.is_some(),
        intermediate_values: t
            .intermediate_values
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect(),
        user_attrs_json: attrs_to_json(&t.user_attrs),
        system_attrs_json: attrs_to_json(&t.system_attrs),
        datetime_start: t.datetime_start.map(unix_seconds),
        datetime_complete: t.datetime_complete.map(unix_seconds),
        fail_reason: t.fail_reason.clone(),
        fixed_params_json: t.fixed_params.as_ref().map(|f| {
            let m: serde_json::Map<String, AttrValue> =
                f.iter().map(|(k, v)| (k.clone(), v.to_json())).collect();
            AttrValue::Object(m).to_string()
        }),
    }
}

/// A wire trial as a record (a trial the engine sent, or one for `add_trial`, which assigns
/// the number): params must match their distributions.
pub fn trial_from_pb(t: &pb::Trial) -> Result<TrialRecord> {
    let mut r = TrialRecord::new(t.number, state_from_i32(t.state)?);
    for (k, d) in &t.distributions {
        r.distributions.insert(k.clone(), dist_from_pb(d)?);
    }
    for (k, v) in &t.params {
        let dist = r
            .distributions
            .get(k)
            .ok_or_else(|| bad(format!("parameter {k:?} has no distribution")))?;
        let internal = dist
            .to_internal(&param_from_pb(v)?)
            .map_err(|e| bad(format!("parameter {k:?}: {e}")))?;
        r.internal_params.insert(k.clone(), internal);
        r.params.insert(k.clone(), param_from_pb(v)?);
    }
    if let Some(extra) = r
        .distributions
        .keys()
        .find(|k| !r.internal_params.contains_key(*k))
    {
        return Err(bad(format!(
            "distribution {extra:?} has no parameter value"
        )));
    }
    r.values = t.has_values.then(|| t.values.clone());
    r.intermediate_values = t
        .intermediate_values
        .iter()
        .map(|(k, v)| (*k, *v))
        .collect();
    r.user_attrs = attrs_from_json(&t.user_attrs_json)?;
    r.system_attrs = attrs_from_json(&t.system_attrs_json)?;
    r.fail_reason = t.fail_reason.clone();
    r.datetime_start = t.datetime_start.and_then(from_unix_seconds);
    r.datetime_complete = t.datetime_complete.and_then(from_unix_seconds);
    if let Some(f) = &t.fixed_params_json {
        let fixed = attrs_from_json(f)?
            .iter()
            .map(|(k, v)| {
                ParamValue::from_json(v)
                    .map(|p| (k.clone(), p))
                    .map_err(|e| bad(format!("fixed parameter {k:?}: {e}")))
            })
            .collect::<Result<BTreeMap<_, _>>>()?;
        r.fixed_params = Some(fixed);
    }
    Ok(r)
}

/// How an evaluator says a trial ended (values, pruned, or failed with a reason), from the
/// wire.
pub fn outcome_from_pb(o: &pb::Outcome) -> Result<Outcome> {
    use pb::outcome::Kind;
    match &o.kind {
        Some(Kind::Values(v)) => Ok(Outcome::Values(v.values.clone())),
        Some(Kind::Pruned(_)) => Ok(Outcome::Pruned),
        Some(Kind::FailReason(r)) => Ok(Outcome::Fail(r.clone())),
        None => Err(bad("an outcome has no kind")),
    }
}

/// A trial's outcome on the wire.
pub fn outcome_to_pb(o: Outcome) -> pb::Outcome {
    use pb::outcome::Kind;
    let kind = match o {
        Outcome::Pruned => Kind::Pruned(pb::Empty {}),
        Outcome::Fail(reason) => Kind::FailReason(reason),
        Outcome::Values(values) => Kind::Values(pb::Values { values }),
    };
    pb::Outcome { kind: Some(kind) }
}

/// The result of a tell (the state the trial ended in, its values, its fail reason) on the
/// wire.
pub fn told_to_pb(t: &Told) -> pb::Told {
    pb::Told {
        state: state_to_pb(t.state) as i32,
        values: t.values.clone().unwrap_or_default(),
        has_values: t.values.is_some(),
        fail_reason: t.fail_reason.clone(),
        trial: None,
    }
}

/// The wire code of `c`.
pub fn code_to_pb(c: ErrorCode) -> pb::error::Code {
    use pb::error::Code;
    match c {
        ErrorCode::InvalidArgument => Code::InvalidArgument,
        ErrorCode::NotFound => Code::NotFound,
        ErrorCode::AlreadyExists => Code::AlreadyExists,
        ErrorCode::FailedPrecondition => Code::FailedPrecondition,
        ErrorCode::InvalidOperation => Code::InvalidOperation,
        ErrorCode::Unimplemented => Code::Unimplemented,
        ErrorCode::Storage => Code::Storage,
        ErrorCode::ResourceExhausted => Code::ResourceExhausted,
        ErrorCode::ToolError => Code::ToolError,
        ErrorCode::ToolTimeout => Code::ToolTimeout,
        ErrorCode::ToolUnavailable => Code::ToolUnavailable,
        ErrorCode::Internal => Code::Internal,
    }
}

/// The code of a wire `Error` (an unknown number is an internal error).
pub fn code_from_pb(code: i32) -> ErrorCode {
    use pb::error::Code;
    match Code::try_from(code) {
        Ok(Code::InvalidArgument) => ErrorCode::InvalidArgument,
        Ok(Code::NotFound) => ErrorCode::NotFound,
        Ok(Code::AlreadyExists) => ErrorCode::AlreadyExists,
        Ok(Code::FailedPrecondition) => ErrorCode::FailedPrecondition,
        Ok(Code::InvalidOperation) => ErrorCode::InvalidOperation,
        Ok(Code::Unimplemented) => ErrorCode::Unimplemented,
        Ok(Code::Storage) => ErrorCode::Storage,
        Ok(Code::ResourceExhausted) => ErrorCode::ResourceExhausted,
        Ok(Code::ToolError) => ErrorCode::ToolError,
        Ok(Code::ToolTimeout) => ErrorCode::ToolTimeout,
        Ok(Code::ToolUnavailable) => ErrorCode::ToolUnavailable,
        Ok(Code::Internal) | Err(_) => ErrorCode::Internal,
    }
}

/// The gRPC status code `c` travels under.
pub fn code_to_grpc(c: ErrorCode) -> tonic::Code {
    use tonic::Code;
    match c {
        ErrorCode::InvalidArgument => Code::InvalidArgument,
        ErrorCode::NotFound => Code::NotFound,
        ErrorCode::AlreadyExists => Code::AlreadyExists,
        ErrorCode::FailedPrecondition | ErrorCode::InvalidOperation => Code::FailedPrecondition,
        ErrorCode::Unimplemented => Code::Unimplemented,
        ErrorCode::Storage => Code::Unavailable,
        ErrorCode::ResourceExhausted => Code::ResourceExhausted,
        ErrorCode::ToolError => Code::Aborted,
        ErrorCode::ToolTimeout => Code::DeadlineExceeded,
        ErrorCode::ToolUnavailable => Code::Unavailable,
        ErrorCode::Internal => Code::Internal,
    }
}

/// Metadata key of the [`ErrorCode`] of an engine error in a gRPC status.
pub const ERROR_CODE_KEY: &str = "dspex-error";

/// An engine error as the wire `Error` of define-by-run replies (code and message).
pub fn error_to_pb(e: &EngineError) -> pb::Error {
    let (kind, traceback) = match e {
        EngineError::Tool {
            kind, traceback, ..
        } => (kind.clone(), traceback.clone()),
        _ => Default::default(),
    };
    pb::Error {
        code: code_to_pb(e.code()) as i32,
        message: e.to_string(),
        kind,
        traceback,
    }
}

/// An engine error as a gRPC status: the matching gRPC code, the message, and the
/// [`ErrorCode`] in the `dspex-error` metadata (read back by [`status_code`]).
pub fn error_to_status(e: &EngineError) -> tonic::Status {
    let code = e.code();
    let mut status = tonic::Status::new(code_to_grpc(code), e.to_string());
    status.metadata_mut().insert(
        ERROR_CODE_KEY,
        tonic::metadata::MetadataValue::from_static(code.as_str()),
    );
    status
}

/// The engine error code of a status: the `dspex-error` metadata the engine sets, else (a
/// status the service built itself for a malformed request) the codes that mean the same;
/// None for transport failures (UNAVAILABLE, UNAUTHENTICATED, ...).
pub fn status_code(s: &tonic::Status) -> Option<ErrorCode> {
    if let Some(c) = s
        .metadata()
        .get(ERROR_CODE_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(ErrorCode::parse)
    {
        return Some(c);
    }
    match s.code() {
        tonic::Code::InvalidArgument | tonic::Code::OutOfRange => Some(ErrorCode::InvalidArgument),
        tonic::Code::FailedPrecondition => Some(ErrorCode::FailedPrecondition),
        tonic::Code::NotFound => Some(ErrorCode::NotFound),
        tonic::Code::AlreadyExists => Some(ErrorCode::AlreadyExists),
        tonic::Code::Unimplemented => Some(ErrorCode::Unimplemented),
        _ => None,
    }
}

/// A run's summary (trials started and finished, why it stopped, the trials that timed
/// out) on the wire.
pub fn summary_to_pb(s: &RunSummary) -> pb::RunSummary {
    pb::RunSummary {
        started: s.started,
        finished: s.finished,
        reason: s.reason.name().into(),
        detail: s.reason.detail().map(str::to_string),
        timed_out: s.timed_out.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_and_distributions_round_trip() {
        let d = Distribution::Categorical(
            CategoricalDistribution::new(vec![
                ParamValue::None,
                ParamValue::Bool(true),
                ParamValue::Int(-3),
                ParamValue::Float(0.5),
                ParamValue::Str("a".into()),
            ])
            .unwrap(),
        );
        assert_eq!(dist_from_pb(&dist_to_pb(&d)).unwrap(), d);
        let f = Distribution::Float(FloatDistribution::new(1e-3, 1.0, true, None).unwrap());
        assert_eq!(dist_from_pb(&dist_to_pb(&f)).unwrap(), f);
    }

    #[test]
    fn every_error_code_survives_the_wire() {
        for c in ErrorCode::ALL {
            assert_eq!(code_from_pb(code_to_pb(c) as i32), c);
            let e = match c {
                ErrorCode::InvalidArgument => EngineError::InvalidArgument("x".into()),
                ErrorCode::NotFound => EngineError::TrialNotFound(3),
                ErrorCode::AlreadyExists => EngineError::DuplicatedStudy("s".into()),
                ErrorCode::FailedPrecondition => EngineError::NoData("none".into()),
                ErrorCode::InvalidOperation => EngineError::InvalidOperation("no".into()),
                ErrorCode::Unimplemented => EngineError::Unsupported("u".into()),
                ErrorCode::Storage => EngineError::Storage("disk".into()),
                ErrorCode::ResourceExhausted => EngineError::ResourceExhausted("full".into()),
                ErrorCode::ToolError => EngineError::tool_raised("t", "KeyError", "k", "tb"),
                ErrorCode::ToolTimeout => EngineError::tool_timeout("t", 1.5),
                ErrorCode::ToolUnavailable => EngineError::tool_unavailable("t", "gone"),
                ErrorCode::Internal => EngineError::Internal("bug".into()),
            };
            assert_eq!(e.code(), c);
            let st = error_to_status(&e);
            assert_eq!(status_code(&st), Some(c));
            assert_eq!(st.message(), e.to_string());
        }
        assert_eq!(status_code(&tonic::Status::unavailable("down")), None);
        assert_eq!(code_from_pb(99), ErrorCode::Internal);
    }

    #[test]
    fn bad_wire_values_are_errors() {
        assert!(param_from_pb(&pb::ParamValue { kind: None }).is_err());
        assert!(dist_from_pb(&pb::Distribution { kind: None }).is_err());
        let inverted = pb::Distribution {
            kind: Some(pb::distribution::Kind::FloatDist(pb::FloatDistribution {
                low: 2.0,
                high: 1.0,
                log: false,
                step: None,
            })),
        };
        assert!(dist_from_pb(&inverted).is_err());
        assert!(state_from_i32(42).is_err());
        assert!(attrs_from_json("[1").is_err());
    }
}
