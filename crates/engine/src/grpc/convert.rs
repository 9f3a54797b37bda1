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
use crate::session::{Data, VarType};
use crate::session_ops::{SessionOp, SessionOut};
use crate::study::{Outcome, Told};
use crate::tools::{ToolParam, ToolSpec};
use std::time::Duration;

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

// ------------------------------------------------------------------ sessions

/// Session data on the wire.
pub fn value_to_pb(d: &Data) -> pb::Value {
    use pb::value::Kind;
    pb::Value {
        kind: Some(match d {
            Data::Null => Kind::None(true),
            Data::Bool(b) => Kind::BoolValue(*b),
            Data::Int(i) => Kind::IntValue(*i),
            Data::Float(f) => Kind::FloatValue(*f),
            Data::Str(s) => Kind::StrValue(s.clone()),
            Data::Bytes(b) => Kind::BytesValue(b.clone()),
            Data::List(l) => Kind::ListValue(pb::ValueList {
                items: l.iter().map(value_to_pb).collect(),
            }),
            Data::Map(m) => Kind::MapValue(pb::ValueMap {
                entries: m.iter().map(|(k, v)| (k.clone(), value_to_pb(v))).collect(),
            }),
        }),
    }
}

/// Session data from the wire; a value without a kind is an error.
pub fn value_from_pb(v: pb::Value) -> Result<Data> {
    use pb::value::Kind;
    Ok(match v.kind {
        None => return Err(bad("a value has no kind")),
        Some(Kind::None(_)) => Data::Null,
        Some(Kind::BoolValue(b)) => Data::Bool(b),
        Some(Kind::IntValue(i)) => Data::Int(i),
        Some(Kind::FloatValue(f)) => Data::Float(f),
        Some(Kind::StrValue(s)) => Data::Str(s),
        Some(Kind::BytesValue(b)) => Data::Bytes(b),
        Some(Kind::ListValue(l)) => Data::List(
            l.items
                .into_iter()
                .map(value_from_pb)
                .collect::<Result<_>>()?,
        ),
        Some(Kind::MapValue(m)) => Data::Map(map_from_pb(m.entries)?),
    })
}

/// Named values from the wire.
pub fn map_from_pb(m: HashMap<String, pb::Value>) -> Result<BTreeMap<String, Data>> {
    m.into_iter()
        .map(|(k, v)| Ok((k, value_from_pb(v)?)))
        .collect()
}

/// Named values on the wire.
pub fn map_to_pb(m: &BTreeMap<String, Data>) -> HashMap<String, pb::Value> {
    m.iter().map(|(k, v)| (k.clone(), value_to_pb(v))).collect()
}

/// A tool spec on the wire (`timeout`: what a registration asks for).
pub fn tool_spec_to_pb(s: &ToolSpec, timeout: Option<Duration>) -> pb::ToolSpec {
    pb::ToolSpec {
        name: s.name.clone(),
        description: s.description.clone(),
        params: s
            .params
            .iter()
            .map(|p| pb::ToolParam {
                name: p.name.clone(),
                r#type: p.ty.clone(),
                required: p.required,
                default: p.default.as_ref().map(value_to_pb),
                description: p.description.clone(),
            })
            .collect(),
        extra_args: s.extra_args,
        returns: s.returns.clone(),
        timeout_seconds: timeout.map_or(0.0, |t| t.as_secs_f64()),
        shared: s.shared,
    }
}

/// A tool spec from the wire, and the timeout it asks for.
pub fn tool_spec_from_pb(s: pb::ToolSpec) -> Result<(ToolSpec, Duration)> {
    let timeout = Duration::try_from_secs_f64(s.timeout_seconds).map_err(|_| {
        bad(format!(
            "tool {:?}: timeout_seconds must be >= 0, got {}",
            s.name, s.timeout_seconds
        ))
    })?;
    let params = s
        .params
        .into_iter()
        .map(|p| {
            Ok(ToolParam {
                name: p.name,
                ty: p.r#type,
                required: p.required,
                default: p.default.map(value_from_pb).transpose()?,
                description: p.description,
            })
        })
        .collect::<Result<_>>()?;
    Ok((
        ToolSpec {
            name: s.name,
            description: s.description,
            params,
            extra_args: s.extra_args,
            returns: s.returns,
            shared: s.shared,
        },
        timeout,
    ))
}

/// An error from the wire, as the engine error it was (its code, message, and a tool error's
/// kind and traceback).
pub fn error_from_pb(e: pb::Error) -> EngineError {
    let failure = match code_from_pb(e.code) {
        ErrorCode::ToolError => crate::error::ToolFailure::Raised,
        ErrorCode::ToolTimeout => crate::error::ToolFailure::Timeout,
        ErrorCode::ToolUnavailable => crate::error::ToolFailure::Unavailable,
        code => {
            return EngineError::Remote {
                code,
                message: e.message,
            }
        }
    };
    EngineError::Tool {
        failure,
        message: e.message,
        kind: e.kind,
        traceback: e.traceback,
    }
}

/// A session operation on the wire.
pub fn session_op_to_pb(op: &SessionOp) -> pb::session_request::Op {
    use pb::session_request::Op;
    match op {
        SessionOp::Define {
            name,
            ty,
            value,
            tunable,
        } => Op::Define(pb::DefineVariable {
            name: name.clone(),
            r#type: ty.name().to_string(),
            value: Some(value_to_pb(value)),
            constraints: Some(pb::ValueMap {
                entries: map_to_pb(&ty.constraints()),
            }),
            tunable: *tunable,
        }),
        SessionOp::Get(n) => Op::Get(n.clone()),
        SessionOp::Set(changes) => Op::Set(pb::SetVariables {
            changes: changes
                .iter()
                .map(|(n, v, e)| pb::VariableChange {
                    name: n.clone(),
                    value: Some(value_to_pb(v)),
                    expected_version: *e,
                })
                .collect(),
        }),
        SessionOp::Delete(n) => Op::Delete(n.clone()),
        SessionOp::List(p) => Op::List(pb::ListVariables { pattern: p.clone() }),
        SessionOp::Spec(n) => Op::Spec(n.clone()),
        SessionOp::Index {
            name,
            texts,
            ids,
            stop_words,
            stem,
        } => Op::Index(pb::IndexDocuments {
            name: name.clone(),
            texts: texts.clone(),
            ids: ids
                .as_ref()
                .map(|ids| ids.iter().map(value_to_pb).collect())
                .unwrap_or_default(),
            stop_words: *stop_words,
            stem: *stem,
        }),
        SessionOp::ToolSpecs => Op::ToolSpecs(pb::Empty {}),
        SessionOp::Call { tool, args } => Op::Call(pb::CallTool {
            tool: tool.clone(),
            args: map_to_pb(args),
        }),
        SessionOp::Register { spec, timeout } => {
            Op::RegisterTool(tool_spec_to_pb(spec, Some(*timeout)))
        }
        SessionOp::Unregister(n) => Op::UnregisterTool(n.clone()),
        SessionOp::AddLm { name, config } => Op::AddLm(pb::AddLm {
            name: name.clone(),
            config_json: config.clone(),
        }),
        SessionOp::Program { action, spec } => Op::Program(pb::ProgramOp {
            action: action.name().to_string(),
            spec_json: spec.clone(),
        }),
    }
}

fn need<T>(v: Option<T>, what: &str) -> Result<T> {
    v.ok_or_else(|| bad(format!("{what} is missing")))
}

/// A session operation from the wire (None: not an operation on variables, indexes or tools).
pub fn session_op_from_pb(op: pb::session_request::Op) -> Result<Option<SessionOp>> {
    use pb::session_request::Op;
    Ok(Some(match op {
        Op::Define(d) => {
            let constraints = map_from_pb(d.constraints.unwrap_or_default().entries)?;
            SessionOp::Define {
                ty: VarType::from_constraints(&d.r#type, &constraints)?,
                value: value_from_pb(need(d.value, "define.value")?)?,
                name: d.name,
                tunable: d.tunable,
            }
        }
        Op::Get(n) => SessionOp::Get(n),
        Op::Set(s) => SessionOp::Set(
            s.changes
                .into_iter()
                .map(|c| {
                    Ok((
                        c.name,
                        value_from_pb(need(c.value, "set.changes.value")?)?,
                        c.expected_version,
                    ))
                })
                .collect::<Result<_>>()?,
        ),
        Op::Delete(n) => SessionOp::Delete(n),
        Op::List(l) => SessionOp::List(l.pattern),
        Op::Spec(n) => SessionOp::Spec(n),
        Op::Index(i) => SessionOp::Index {
            name: i.name,
            texts: i.texts,
            ids: if i.ids.is_empty() {
                None
            } else {
                Some(
                    i.ids
                        .into_iter()
                        .map(value_from_pb)
                        .collect::<Result<_>>()?,
                )
            },
            stop_words: i.stop_words,
            stem: i.stem,
        },
        Op::ToolSpecs(_) => SessionOp::ToolSpecs,
        Op::Call(c) => SessionOp::Call {
            tool: c.tool,
            args: map_from_pb(c.args)?,
        },
        Op::RegisterTool(t) => {
            let (spec, timeout) = tool_spec_from_pb(t)?;
            SessionOp::Register { spec, timeout }
        }
        Op::UnregisterTool(n) => SessionOp::Unregister(n),
        Op::AddLm(l) => SessionOp::AddLm {
            name: l.name,
            config: l.config_json,
        },
        Op::Program(p) => SessionOp::Program {
            action: crate::session_ops::ProgramAction::parse(&p.action)?,
            spec: p.spec_json,
        },
        Op::Open(_) | Op::Answer(_) | Op::Watch(_) | Op::Close(_) | Op::Cancel(_) => {
            return Ok(None)
        }
    }))
}

/// What a session operation gave back, on the wire.
pub fn session_out_to_pb(out: &SessionOut) -> pb::session_reply::Kind {
    use pb::session_reply::Kind;
    match out {
        SessionOut::Version(v) => Kind::Version(*v),
        SessionOut::Variable(d, v) => Kind::Variable(pb::Variable {
            value: Some(value_to_pb(d)),
            version: *v,
        }),
        SessionOut::Versions(v) => Kind::Versions(pb::Versions {
            versions: v.clone(),
        }),
        SessionOut::Names(n) => Kind::Names(pb::Names { names: n.clone() }),
        SessionOut::Spec(ty, tunable, dist) => Kind::Spec(pb::VariableSpec {
            r#type: ty.clone(),
            tunable: *tunable,
            distribution: dist.as_ref().map(dist_to_pb),
        }),
        SessionOut::Count(n) => Kind::Count(*n),
        SessionOut::Tools(t) => Kind::Tools(pb::ToolSpecs {
            tools: t.iter().map(|s| tool_spec_to_pb(s, None)).collect(),
        }),
        SessionOut::Value(d) => Kind::Value(value_to_pb(d)),
        SessionOut::Done => Kind::Done(pb::Empty {}),
    }
}

/// What a session operation gave back, from the wire (an `error` reply is the error).
pub fn session_out_from_pb(kind: Option<pb::session_reply::Kind>) -> Result<SessionOut> {
    use pb::session_reply::Kind;
    Ok(match need(kind, "a reply's kind")? {
        Kind::Version(v) => SessionOut::Version(v),
        Kind::Variable(v) => {
            SessionOut::Variable(value_from_pb(need(v.value, "variable.value")?)?, v.version)
        }
        Kind::Versions(v) => SessionOut::Versions(v.versions),
        Kind::Names(n) => SessionOut::Names(n.names),
        Kind::Spec(s) => SessionOut::Spec(
            s.r#type,
            s.tunable,
            s.distribution.as_ref().map(dist_from_pb).transpose()?,
        ),
        Kind::Count(n) => SessionOut::Count(n),
        Kind::Tools(t) => SessionOut::Tools(
            t.tools
                .into_iter()
                .map(|s| tool_spec_from_pb(s).map(|(s, _)| s))
                .collect::<Result<_>>()?,
        ),
        Kind::Value(v) => SessionOut::Value(value_from_pb(v)?),
        Kind::Done(_) => SessionOut::Done,
        Kind::Error(e) => return Err(error_from_pb(e)),
        Kind::Opened(_) | Kind::Call(_) | Kind::Event(_) => {
            return Err(bad("an unexpected reply to a session operation"))
        }
    })
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
    fn session_values_and_operations_survive_the_wire() {
        let mut m = BTreeMap::new();
        m.insert("b".to_string(), Data::Bytes(vec![0, 255]));
        m.insert("n".to_string(), Data::Null);
        let v = Data::List(vec![
            Data::Bool(true),
            Data::Int(i64::MIN),
            Data::Float(-0.5),
            Data::Str("é".into()),
            Data::Map(m),
        ]);
        assert_eq!(value_from_pb(value_to_pb(&v)).unwrap(), v);
        assert!(value_from_pb(pb::Value { kind: None }).is_err());
        let mut c = BTreeMap::new();
        c.insert("pattern".to_string(), Data::Str("[a-z]+".into()));
        c.insert("max_length".to_string(), Data::Int(5));
        let ty = VarType::from_constraints("str", &c).unwrap();
        assert_eq!(ty.constraints(), c);
        let op = SessionOp::Define {
            name: "s".into(),
            ty,
            value: Data::Str("ab".into()),
            tunable: false,
        };
        let back = session_op_from_pb(session_op_to_pb(&op)).unwrap().unwrap();
        assert_eq!(format!("{back:?}"), format!("{op:?}"));
        let spec = &crate::tools::native_specs()[1];
        let out = SessionOut::Tools(vec![spec.clone()]);
        assert_eq!(
            session_out_from_pb(Some(session_out_to_pb(&out))).unwrap(),
            out
        );
        // A tool error keeps its kind and traceback; other errors their code and message.
        let e = EngineError::tool_raised("t", "KeyError", "k", "Traceback...");
        assert_eq!(error_from_pb(error_to_pb(&e)), e);
        let e = EngineError::NotFoundIn {
            what: "variable",
            name: "x".into(),
        };
        let back = error_from_pb(error_to_pb(&e));
        assert_eq!((back.code(), back.to_string()), (e.code(), e.to_string()));
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
