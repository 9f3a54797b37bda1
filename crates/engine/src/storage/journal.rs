//! The journal storage: Optuna's `JournalStorage` over a `JournalFileBackend`, in its file
//! format, so Optuna reads the files dspex writes and the reverse (several processes of either
//! may share one file).
//!
//! The file is a log of operations, one JSON object per line (`op_code`, `worker_id` and the
//! operation's fields, as Optuna writes them). The state is the log replayed, in order, into an
//! [`InMemoryStorage`]; an operation the state refuses at its place in the log (a second process
//! starting the same WAITING trial, a write to a finished trial) changes nothing, for every
//! reader alike. Before each call the storage reads what other processes appended. A write takes
//! the file lock Optuna takes (`<file>.lock`, a symlink by default or a file made with
//! `O_EXCL`, released by a rename; a lock not released within the grace period is broken),
//! reads the log to its end, appends its lines, fsyncs, and then applies them: the caller gets
//! the error a refused operation raises, as in Optuna.
//!
//! Relative parameters (sampled jointly when a trial starts) stay in this process, as in the
//! SQL backend; fixed parameters travel as the trial system attribute `fixed_params`, and a
//! failure's reason as `fail_reason`, both as Optuna keeps them.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Local, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use dspex_optimizer::{Distribution, History, ParamValue, SearchSpace, StudyDirection, TrialState};
use parking_lot::Mutex;
use serde_json::{json, Map, Value};

use super::state::unique_name;
use super::{InMemoryStorage, ParamContext, Storage, StudyId};
use crate::error::{EngineError, Result};
use crate::model::{AttrMap, AttrValue, StudySummary, TrialRecord};

/// How processes sharing a journal file take turns appending (Optuna's lock classes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalLock {
    /// `JournalFileSymlinkLock`: a symlink `<file>.lock` (works on NFSv2 and later).
    Symlink,
    /// `JournalFileOpenLock`: a file `<file>.lock` created with `O_EXCL` (NFSv3 and later).
    Open,
}

/// Options of a [`JournalStorage`].
#[derive(Debug, Clone, PartialEq)]
pub struct JournalOptions {
    /// The lock kind.
    pub lock: JournalLock,
    /// A lock file left unchanged this long is taken to be abandoned and removed (None: wait
    /// for ever). Optuna's default: 30 s.
    pub grace_period: Option<Duration>,
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions {
            lock: JournalLock::Symlink,
            grace_period: Some(Duration::from_secs(30)),
        }
    }
}

impl JournalOptions {
    /// Parses `journal://PATH[?lock=symlink|open&grace_period=SECONDS|none]`: the path after
    /// `journal://` as written (`journal:///tmp/x.log` is `/tmp/x.log`, `journal://x.log` is
    /// relative to the working directory).
    pub fn from_url(url: &str) -> Result<(PathBuf, JournalOptions)> {
        let bad = |why: String| EngineError::InvalidArgument(format!("journal URL {url:?}: {why}"));
        let rest = url
            .strip_prefix("journal://")
            .ok_or_else(|| bad("it starts with journal://".into()))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        if path.is_empty() {
            return Err(bad("no file path after journal://".into()));
        }
        let mut options = JournalOptions::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("lock", "symlink")) => options.lock = JournalLock::Symlink,
                Some(("lock", "open")) => options.lock = JournalLock::Open,
                Some(("grace_period", "none")) => options.grace_period = None,
                Some(("grace_period", s)) => match s.parse::<f64>() {
                    Ok(secs) if secs.is_finite() && secs > 0.0 => {
                        options.grace_period = Some(Duration::from_secs_f64(secs))
                    }
                    _ => {
                        return Err(bad(format!(
                            "grace_period is a positive number of seconds or none, got {s:?}"
                        )))
                    }
                },
                _ => {
                    return Err(bad(format!(
                    "unknown option {pair:?} (known: lock=symlink|open, grace_period=SECONDS|none)"
                )))
                }
            }
        }
        Ok((PathBuf::from(path), options))
    }
}

/// Optuna's operation codes.
mod op {
    pub const CREATE_STUDY: u64 = 0;
    pub const DELETE_STUDY: u64 = 1;
    pub const SET_STUDY_USER_ATTR: u64 = 2;
    pub const SET_STUDY_SYSTEM_ATTR: u64 = 3;
    pub const CREATE_TRIAL: u64 = 4;
    pub const SET_TRIAL_PARAM: u64 = 5;
    pub const SET_TRIAL_STATE_VALUES: u64 = 6;
    pub const SET_TRIAL_INTERMEDIATE_VALUE: u64 = 7;
    pub const SET_TRIAL_USER_ATTR: u64 = 8;
    pub const SET_TRIAL_SYSTEM_ATTR: u64 = 9;
    /// rustuna's; Optuna skips it, and so does dspex.
    pub const DISCARD_TRIALS: u64 = 10;
}

/// A study and trial store in an Optuna journal file. Cheap to clone (clones share the file's
/// replayed state).
#[derive(Debug, Clone)]
pub struct JournalStorage {
    inner: Arc<Mutex<Journal>>,
}

#[derive(Debug)]
struct Journal {
    path: PathBuf,
    options: JournalOptions,
    /// Read and appended through the same handle (opened for appending).
    file: File,
    /// `uuid4-pid`, written with each operation (Optuna tells its own operations by it).
    worker_id: String,
    replay: Replay,
    /// A failed append left the file in doubt: replay it from the start before the next call.
    stale: bool,
}

/// The log replayed so far.
#[derive(Debug, Default)]
struct Replay {
    mem: InMemoryStorage,
    /// Bytes and lines of the file applied.
    offset: u64,
    lines: u64,
    /// Journal study ids (in order of creation, never reused) to this storage's ids, and back.
    studies: HashMap<u64, StudyId>,
    study_jids: HashMap<StudyId, u64>,
    next_study: u64,
    /// Journal trial ids (global, in order of creation) to (study, number), and back.
    trials: Vec<(StudyId, u64)>,
    trial_ids: HashMap<(StudyId, u64), u64>,
}

impl JournalStorage {
    /// Opens (creating it when missing) the journal file at `path` and replays it.
    pub fn open(path: impl AsRef<Path>, options: JournalOptions) -> Result<JournalStorage> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .map_err(|e| io_error(&path, "open", e))?;
        let worker_id = format!("{}-{}", uuid4(), std::process::id());
        let mut journal = Journal {
            path,
            options,
            file,
            worker_id,
            replay: Replay::default(),
            stale: false,
        };
        journal.sync()?;
        Ok(JournalStorage {
            inner: Arc::new(Mutex::new(journal)),
        })
    }

    /// Opens a `journal://` URL (see [`JournalOptions::from_url`]).
    pub fn open_url(url: &str) -> Result<JournalStorage> {
        let (path, options) = JournalOptions::from_url(url)?;
        Self::open(path, options)
    }

    /// The file's path.
    pub fn path(&self) -> PathBuf {
        self.inner.lock().path.clone()
    }

    /// The replayed state, after reading what other processes appended.
    fn synced(&self) -> Result<InMemoryStorage> {
        let mut j = self.inner.lock();
        j.sync()?;
        Ok(j.replay.mem.clone())
    }

    /// Appends the operations `build` makes from the state read to the end of the file (under
    /// the file lock), then applies them; the last one's result.
    fn write(&self, build: impl FnOnce(&Replay) -> Result<Vec<Value>>) -> Result<Option<u64>> {
        let mut j = self.inner.lock();
        let j = &mut *j;
        let lock = FileLock::acquire(&j.path, &j.options)?;
        j.sync()?;
        let mut ops = build(&j.replay)?;
        if ops.is_empty() {
            return Ok(None);
        }
        let mut text = String::new();
        for o in &mut ops {
            if let Value::Object(m) = o {
                m.insert("worker_id".into(), Value::String(j.worker_id.clone()));
            }
            text.push_str(&to_line(o));
            text.push('\n');
        }
        let written = j
            .file
            .write_all(text.as_bytes())
            .and_then(|()| j.file.sync_data());
        if let Err(e) = written {
            // Take back a partial line if there is one; either way, read the file again.
            let _ = j.file.set_len(j.replay.offset);
            j.stale = true;
            drop(lock);
            return Err(io_error(&j.path, "append to", e));
        }
        drop(lock);
        j.replay.offset += text.len() as u64;
        let mut last = None;
        for o in &ops {
            j.replay.lines += 1;
            last = j.replay.apply(o)?;
        }
        Ok(last)
    }

    fn study_jid(r: &Replay, study: StudyId) -> Result<u64> {
        r.study_jids
            .get(&study)
            .copied()
            .ok_or_else(|| EngineError::StudyNotFound(format!("id {study}")))
    }

    fn trial_id(r: &Replay, study: StudyId, number: u64) -> Result<u64> {
        Self::study_jid(r, study)?;
        r.trial_ids
            .get(&(study, number))
            .copied()
            .ok_or(EngineError::TrialNotFound(number))
    }

    fn trial_op(&self, study: StudyId, number: u64, code: u64, fields: Value) -> Result<()> {
        self.write(|r| {
            let mut o = fields;
            o["op_code"] = json!(code);
            o["trial_id"] = json!(Self::trial_id(r, study, number)?);
            Ok(vec![o])
        })
        .map(drop)
    }
}

impl Journal {
    /// Applies the lines other processes appended since the last call.
    fn sync(&mut self) -> Result<()> {
        if self.stale {
            self.replay = Replay::default();
            self.stale = false;
        }
        let len = self
            .file
            .metadata()
            .map_err(|e| io_error(&self.path, "read", e))?
            .len();
        if len == self.replay.offset {
            return Ok(());
        }
        if len < self.replay.offset {
            return Err(EngineError::Storage(format!(
                "journal file {} shrank from {} to {len} bytes while in use",
                self.path.display(),
                self.replay.offset
            )));
        }
        let mut buf = Vec::with_capacity((len - self.replay.offset) as usize);
        self.file
            .seek(SeekFrom::Start(self.replay.offset))
            .and_then(|_| {
                (&self.file)
                    .take(len - self.replay.offset)
                    .read_to_end(&mut buf)
            })
            .map_err(|e| io_error(&self.path, "read", e))?;
        let mut start = 0;
        // Only whole lines: a line being written by another process is read next time.
        while let Some(end) = buf[start..].iter().position(|&b| b == b'\n') {
            let line = &buf[start..start + end];
            let number = self.replay.lines + 1;
            let op = parse_line(line).map_err(|why| {
                EngineError::Storage(format!(
                    "journal file {} line {number}: {why}",
                    self.path.display()
                ))
            })?;
            self.replay.offset += (end + 1) as u64;
            self.replay.lines = number;
            if let Err(e) = self.replay.apply(&op) {
                // Refused at its place in the log (by every reader alike): it changes nothing.
                tracing::debug!(
                    "journal file {} line {number} changes nothing: {e}",
                    self.path.display()
                );
            }
            start += end + 1;
        }
        Ok(())
    }
}

impl Replay {
    /// Applies one operation; the study id or trial number it created, if any.
    fn apply(&mut self, o: &Value) -> Result<Option<u64>> {
        let code = u64_field(o, "op_code")?;
        match code {
            op::CREATE_STUDY => {
                let name = str_field(o, "study_name")?;
                let directions = o
                    .get("directions")
                    .and_then(Value::as_array)
                    .ok_or_else(|| malformed("directions is not a list"))?
                    .iter()
                    .map(|d| match d.as_u64() {
                        Some(1) => Ok(StudyDirection::Minimize),
                        Some(2) => Ok(StudyDirection::Maximize),
                        _ => Err(malformed(format!("unknown study direction {d}"))),
                    })
                    .collect::<Result<Vec<_>>>()?;
                if self.mem.get_study_id_from_name(name).is_ok() {
                    return Err(EngineError::DuplicatedStudy(name.to_string()));
                }
                let jid = self.next_study;
                self.next_study += 1;
                let id = self.mem.create_new_study(&directions, Some(name))?;
                self.studies.insert(jid, id);
                self.study_jids.insert(id, jid);
                Ok(Some(id))
            }
            op::DELETE_STUDY => {
                let (jid, id) = self.study(o)?;
                self.mem.delete_study(id)?;
                self.studies.remove(&jid);
                self.study_jids.remove(&id);
                Ok(None)
            }
            op::SET_STUDY_USER_ATTR | op::SET_STUDY_SYSTEM_ATTR => {
                let (_, id) = self.study(o)?;
                let field = if code == op::SET_STUDY_USER_ATTR {
                    "user_attr"
                } else {
                    "system_attr"
                };
                for (k, v) in object_field(o, field)? {
                    if code == op::SET_STUDY_USER_ATTR {
                        self.mem.set_study_user_attr(id, k, attr(v))?;
                    } else {
                        self.mem.set_study_system_attr(id, k, attr(v))?;
                    }
                }
                Ok(None)
            }
            op::CREATE_TRIAL => {
                let (_, id) = self.study(o)?;
                let template = trial_template(o)?;
                let number = match self.mem.create_new_trial(id, Some(&template)) {
                    Ok(n) => n,
                    Err(e) => {
                        // Optuna counts the trial whatever its content; keep the numbering.
                        let n = self.mem.create_new_trial(id, None)?;
                        self.mem.set_trial_state_values(
                            id,
                            n,
                            TrialState::Fail,
                            None,
                            Some(format!("its journal record was refused: {e}")),
                        )?;
                        tracing::warn!("journal: trial {n} of study {id} refused: {e}");
                        n
                    }
                };
                let tid = self.trials.len() as u64;
                self.trials.push((id, number));
                self.trial_ids.insert((id, number), tid);
                Ok(Some(number))
            }
            op::SET_TRIAL_PARAM => {
                let (id, n) = self.trial(o)?;
                let name = str_field(o, "param_name")?;
                let internal = num_field(o, "param_value_internal")?;
                let dist = Distribution::from_json(str_field(o, "distribution")?)
                    .map_err(|e| malformed(format!("distribution: {e}")))?;
                self.mem.set_trial_param(id, n, name, internal, &dist)?;
                Ok(None)
            }
            op::SET_TRIAL_STATE_VALUES => {
                let (id, n) = self.trial(o)?;
                let state = trial_state(o.get("state"))?;
                let values = values_field(o, "values")?;
                let current = self.mem.get_trial_state(id, n)?;
                match state {
                    TrialState::Running => {
                        if current != TrialState::Waiting {
                            return Err(EngineError::FailedPrecondition(format!(
                                "trial {n} is {}, not WAITING: another process started it",
                                current.as_str()
                            )));
                        }
                        self.mem.set_trial_state_values(id, n, state, None, None)?;
                        let start = time_field(o, "datetime_start")?;
                        self.mem.set_trial_times(id, n, start, None)?;
                    }
                    _ => {
                        let reason = match state {
                            TrialState::Fail => self
                                .mem
                                .get_trial(id, n)?
                                .system_attrs
                                .get("fail_reason")
                                .and_then(|v| v.as_str().map(str::to_string)),
                            _ => None,
                        };
                        self.mem
                            .set_trial_state_values(id, n, state, values, reason)?;
                        if state.is_finished() {
                            let complete = time_field(o, "datetime_complete")?;
                            self.mem.set_trial_times(id, n, None, complete)?;
                        }
                    }
                }
                Ok(None)
            }
            op::SET_TRIAL_INTERMEDIATE_VALUE => {
                let (id, n) = self.trial(o)?;
                let step = o
                    .get("step")
                    .and_then(Value::as_i64)
                    .ok_or_else(|| malformed("step is not an integer"))?;
                let value = num_field(o, "intermediate_value")?;
                self.mem.set_trial_intermediate_value(id, n, step, value)?;
                Ok(None)
            }
            op::SET_TRIAL_USER_ATTR | op::SET_TRIAL_SYSTEM_ATTR => {
                // A finished trial takes attributes too, as in the other backends (Optuna's
                // readers skip them).
                let (id, n) = self.trial(o)?;
                if code == op::SET_TRIAL_USER_ATTR {
                    for (k, v) in object_field(o, "user_attr")? {
                        self.mem.set_trial_user_attr(id, n, k, attr(v))?;
                    }
                } else {
                    for (k, v) in object_field(o, "system_attr")? {
                        if k == "fixed_params" {
                            self.mem.set_trial_fixed_params(id, n, fixed_params(v)?)?;
                        }
                        self.mem.set_trial_system_attr(id, n, k, attr(v))?;
                    }
                }
                Ok(None)
            }
            op::DISCARD_TRIALS => Ok(None),
            other => Err(malformed(format!("unknown op_code {other}"))),
        }
    }

    /// The journal and storage ids of the operation's study.
    fn study(&self, o: &Value) -> Result<(u64, StudyId)> {
        let jid = u64_field(o, "study_id")?;
        let id = self
            .studies
            .get(&jid)
            .copied()
            .ok_or_else(|| EngineError::StudyNotFound(format!("journal study id {jid}")))?;
        Ok((jid, id))
    }

    /// The (study, number) of the operation's trial; a trial of a deleted study is not found.
    fn trial(&self, o: &Value) -> Result<(StudyId, u64)> {
        let tid = u64_field(o, "trial_id")?;
        let (id, n) = self
            .trials
            .get(tid as usize)
            .copied()
            .ok_or_else(|| malformed(format!("no trial with trial_id {tid}")))?;
        if !self.study_jids.contains_key(&id) {
            return Err(EngineError::StudyNotFound(format!("id {id}")));
        }
        Ok((id, n))
    }
}

// ------------------------------------------------------------------ the Storage trait

impl Storage for JournalStorage {
    fn create_new_study(
        &self,
        directions: &[StudyDirection],
        name: Option<&str>,
    ) -> Result<StudyId> {
        if directions.is_empty() {
            return Err(EngineError::InvalidArgument(
                "a study needs at least one direction".into(),
            ));
        }
        let name = name.map_or_else(unique_name, str::to_string);
        let dirs: Vec<u64> = directions
            .iter()
            .map(|d| match d {
                StudyDirection::Minimize => 1,
                StudyDirection::Maximize => 2,
            })
            .collect();
        let created = self.write(|r| {
            if r.mem.get_study_id_from_name(&name).is_ok() {
                return Err(EngineError::DuplicatedStudy(name.clone()));
            }
            Ok(vec![
                json!({"op_code": op::CREATE_STUDY, "study_name": name, "directions": dirs}),
            ])
        })?;
        created.ok_or_else(|| EngineError::Internal("journal: no study created".into()))
    }

    fn delete_study(&self, study: StudyId) -> Result<()> {
        self.write(|r| {
            Ok(vec![
                json!({"op_code": op::DELETE_STUDY, "study_id": Self::study_jid(r, study)?}),
            ])
        })?;
        Ok(())
    }

    fn get_study_id_from_name(&self, name: &str) -> Result<StudyId> {
        self.synced()?.get_study_id_from_name(name)
    }

    fn get_study_name(&self, study: StudyId) -> Result<String> {
        self.synced()?.get_study_name(study)
    }

    fn get_study_directions(&self, study: StudyId) -> Result<Vec<StudyDirection>> {
        self.synced()?.get_study_directions(study)
    }

    fn get_all_studies(&self) -> Result<Vec<StudySummary>> {
        self.synced()?.get_all_studies()
    }

    fn set_study_user_attr(&self, study: StudyId, key: &str, value: AttrValue) -> Result<()> {
        self.write(|r| {
            Ok(vec![json!({"op_code": op::SET_STUDY_USER_ATTR,
                "study_id": Self::study_jid(r, study)?, "user_attr": {key: value}})])
        })?;
        Ok(())
    }

    fn set_study_system_attr(&self, study: StudyId, key: &str, value: AttrValue) -> Result<()> {
        self.write(|r| {
            Ok(vec![json!({"op_code": op::SET_STUDY_SYSTEM_ATTR,
                "study_id": Self::study_jid(r, study)?, "system_attr": {key: value}})])
        })?;
        Ok(())
    }

    fn get_study_user_attrs(&self, study: StudyId) -> Result<AttrMap> {
        self.synced()?.get_study_user_attrs(study)
    }

    fn get_study_system_attrs(&self, study: StudyId) -> Result<AttrMap> {
        self.synced()?.get_study_system_attrs(study)
    }

    fn create_new_trial(&self, study: StudyId, template: Option<&TrialRecord>) -> Result<u64> {
        let mut o = match template {
            None => json!({"datetime_start": iso(SystemTime::now())}),
            Some(t) => template_op(t),
        };
        o["op_code"] = json!(op::CREATE_TRIAL);
        let created = self.write(|r| {
            o["study_id"] = json!(Self::study_jid(r, study)?);
            // A refused template is not written (Optuna's readers would count its trial).
            if let Some(t) = template {
                r.mem.check_template(study, t)?;
            }
            Ok(vec![o])
        })?;
        created.ok_or_else(|| EngineError::Internal("journal: no trial created".into()))
    }

    fn pop_waiting_trial(&self, study: StudyId) -> Result<Option<u64>> {
        // Most trials start with nothing enqueued: no lock, no write then.
        if self
            .synced()?
            .get_n_trials(study, Some(&[TrialState::Waiting]))?
            == 0
        {
            return Ok(None);
        }
        let mut popped = None;
        self.write(|r| {
            let waiting = r.mem.get_all_trials(study, Some(&[TrialState::Waiting]))?;
            let Some(first) = waiting.first() else {
                return Ok(Vec::new());
            };
            popped = Some(first.number);
            Ok(vec![json!({"op_code": op::SET_TRIAL_STATE_VALUES,
                "trial_id": Self::trial_id(r, study, first.number)?,
                "state": state_code(TrialState::Running), "values": null,
                "datetime_start": iso(SystemTime::now())})])
        })?;
        Ok(popped)
    }

    fn set_trial_param(
        &self,
        study: StudyId,
        number: u64,
        name: &str,
        internal: f64,
        dist: &Distribution,
    ) -> Result<()> {
        self.trial_op(
            study,
            number,
            op::SET_TRIAL_PARAM,
            json!({"param_name": name, "param_value_internal": py_float(internal),
                "distribution": dist.to_json()}),
        )
    }

    fn set_trial_relative_params(
        &self,
        study: StudyId,
        number: u64,
        params: &BTreeMap<String, f64>,
        space: &SearchSpace,
    ) -> Result<()> {
        // Kept in this process only, as the SQL backend does.
        self.synced()?
            .set_trial_relative_params(study, number, params, space)
    }

    fn set_trial_fixed_params(
        &self,
        study: StudyId,
        number: u64,
        params: BTreeMap<String, ParamValue>,
    ) -> Result<()> {
        let value: Map<String, Value> = params
            .iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect();
        self.trial_op(
            study,
            number,
            op::SET_TRIAL_SYSTEM_ATTR,
            json!({"system_attr": {"fixed_params": value}}),
        )
    }

    fn set_trial_state_values(
        &self,
        study: StudyId,
        number: u64,
        state: TrialState,
        values: Option<Vec<f64>>,
        fail_reason: Option<String>,
    ) -> Result<()> {
        let now = iso(SystemTime::now());
        self.write(|r| {
            let tid = Self::trial_id(r, study, number)?;
            let current = r.mem.get_trial_state(study, number)?;
            if current.is_finished() {
                return Err(EngineError::TrialNotRunning {
                    op: "finish",
                    number,
                    state: current,
                });
            }
            let starts = state == TrialState::Running && current == TrialState::Waiting;
            if !state.is_finished() && !starts {
                return Err(EngineError::InvalidArgument(format!(
                    "cannot move trial {number} from {} to {}",
                    current.as_str(),
                    state.as_str()
                )));
            }
            let mut ops = Vec::new();
            if let (TrialState::Fail, Some(reason)) = (state, &fail_reason) {
                ops.push(json!({"op_code": op::SET_TRIAL_SYSTEM_ATTR, "trial_id": tid,
                    "system_attr": {"fail_reason": reason}}));
            }
            let mut o = json!({"op_code": op::SET_TRIAL_STATE_VALUES, "trial_id": tid,
                "state": state_code(state),
                "values": values.as_ref().map(|vs| vs.iter().map(|v| py_float(*v)).collect::<Vec<_>>())});
            match state {
                TrialState::Running => o["datetime_start"] = json!(now),
                s if s.is_finished() => o["datetime_complete"] = json!(now),
                _ => {}
            }
            ops.push(o);
            Ok(ops)
        })?;
        Ok(())
    }

    fn set_trial_intermediate_value(
        &self,
        study: StudyId,
        number: u64,
        step: i64,
        value: f64,
    ) -> Result<bool> {
        let mut fresh = true;
        self.write(|r| {
            let t = r.mem.get_trial(study, number)?;
            if t.state == TrialState::Running && t.intermediate_values.contains_key(&step) {
                fresh = false;
                return Ok(Vec::new());
            }
            Ok(vec![json!({"op_code": op::SET_TRIAL_INTERMEDIATE_VALUE,
                "trial_id": Self::trial_id(r, study, number)?, "step": step,
                "intermediate_value": py_float(value)})])
        })?;
        Ok(fresh)
    }

    fn set_trial_user_attr(
        &self,
        study: StudyId,
        number: u64,
        key: &str,
        value: AttrValue,
    ) -> Result<()> {
        self.trial_op(
            study,
            number,
            op::SET_TRIAL_USER_ATTR,
            json!({"user_attr": {key: value}}),
        )
    }

    fn set_trial_system_attr(
        &self,
        study: StudyId,
        number: u64,
        key: &str,
        value: AttrValue,
    ) -> Result<()> {
        self.trial_op(
            study,
            number,
            op::SET_TRIAL_SYSTEM_ATTR,
            json!({"system_attr": {key: value}}),
        )
    }

    fn get_trial(&self, study: StudyId, number: u64) -> Result<TrialRecord> {
        self.synced()?.get_trial(study, number)
    }

    fn get_trial_state(&self, study: StudyId, number: u64) -> Result<TrialState> {
        self.synced()?.get_trial_state(study, number)
    }

    fn get_all_trials(
        &self,
        study: StudyId,
        states: Option<&[TrialState]>,
    ) -> Result<Vec<TrialRecord>> {
        self.synced()?.get_all_trials(study, states)
    }

    fn get_n_trials(&self, study: StudyId, states: Option<&[TrialState]>) -> Result<usize> {
        self.synced()?.get_n_trials(study, states)
    }

    fn param_context(&self, study: StudyId, number: u64, name: &str) -> Result<ParamContext> {
        self.synced()?.param_context(study, number, name)
    }

    fn read_history(&self, study: StudyId, f: &mut dyn FnMut(&History)) -> Result<()> {
        self.synced()?.read_history(study, f)
    }
}

// ------------------------------------------------------------------ the file lock

/// The lock on `<file>.lock`, released on drop.
struct FileLock {
    path: PathBuf,
}

impl FileLock {
    /// Waits for the lock (sleeping 1 ms, doubling to 1 s), breaking one whose file has not
    /// changed for the grace period, as Optuna does.
    fn acquire(target: &Path, options: &JournalOptions) -> Result<FileLock> {
        let mut path = target.as_os_str().to_owned();
        path.push(".lock");
        let path = PathBuf::from(path);
        let mut sleep = Duration::from_millis(1);
        let mut seen: Option<(SystemTime, Instant)> = None;
        let mut warned = Instant::now();
        loop {
            let made = match options.lock {
                JournalLock::Symlink => std::os::unix::fs::symlink(target, &path),
                JournalLock::Open => OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map(drop),
            };
            match made {
                Ok(()) => return Ok(FileLock { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_error(&path, "create the lock file", e)),
            }
            if warned.elapsed() > Duration::from_secs(10) {
                tracing::warn!(
                    "waiting for more than 10 s for the journal lock {}",
                    path.display()
                );
                warned = Instant::now();
            }
            if let Some(grace) = options.grace_period {
                // Optuna reads the mtime through the link (the journal file's, for a symlink).
                if let Ok(mtime) = std::fs::metadata(&path).and_then(|m| m.modified()) {
                    match seen {
                        Some((m, since)) if m == mtime => {
                            if since.elapsed() > grace {
                                tracing::warn!(
                                    "the journal lock {} was not released for {:?}: breaking it",
                                    path.display(),
                                    grace
                                );
                                let _ = release(&path);
                                seen = None;
                                sleep = Duration::from_millis(1);
                                continue;
                            }
                        }
                        _ => seen = Some((mtime, Instant::now())),
                    }
                }
            }
            std::thread::sleep(sleep);
            sleep = (sleep * 2).min(Duration::from_secs(1));
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        if let Err(e) = release(&self.path) {
            tracing::warn!("releasing the journal lock {}: {e}", self.path.display());
        }
    }
}

/// Removes a lock file by renaming it to a unique name first (so two processes breaking the
/// same stale lock cannot remove a fresh one).
fn release(path: &Path) -> std::io::Result<()> {
    let mut renamed = path.as_os_str().to_owned();
    renamed.push(format!("{}.rename", uuid4()));
    std::fs::rename(path, &renamed)?;
    std::fs::remove_file(&renamed)
}

// ------------------------------------------------------------------ the line format

fn io_error(path: &Path, what: &str, e: std::io::Error) -> EngineError {
    EngineError::Storage(format!(
        "cannot {what} journal file {}: {e}",
        path.display()
    ))
}

fn malformed(why: impl std::fmt::Display) -> EngineError {
    EngineError::Storage(format!("malformed journal operation: {why}"))
}

/// A random UUID (version 4) in its usual text form.
fn uuid4() -> String {
    let b: u128 = rand::random();
    let b = (b & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let h = format!("{b:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// A time as Optuna writes it: ISO 8601 in UTC with microseconds.
fn iso(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::Micros, false)
}

fn parse_time(s: &str) -> Option<SystemTime> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.into());
    }
    // A time without an offset is local time (Python's `fromisoformat(...).astimezone()`).
    let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok()?;
    Local
        .from_local_datetime(&naive)
        .earliest()
        .map(SystemTime::from)
}

// Python's json writes NaN and ±infinity as the bare words NaN, Infinity and -Infinity, which
// JSON lacks: a line's bare words become these strings for the parser, and back when writing.
const NAN: &str = "\u{0}NaN";
const INF: &str = "\u{0}Infinity";
const NEG_INF: &str = "\u{0}-Infinity";

/// One log line as a JSON value (Python's non-finite numbers as the strings above).
fn parse_line(line: &[u8]) -> std::result::Result<Value, String> {
    let text = std::str::from_utf8(line).map_err(|e| format!("not UTF-8: {e}"))?;
    let text = text.strip_suffix('\r').unwrap_or(text);
    let value: Value = serde_json::from_str(&python_words(text))
        .map_err(|e| format!("not JSON ({e}): {}", preview(text)))?;
    if !value.is_object() {
        return Err(format!("not a JSON object: {}", preview(text)));
    }
    Ok(value)
}

fn preview(text: &str) -> String {
    let mut end = text.len().min(120);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{:?}{}",
        &text[..end],
        if end < text.len() { "..." } else { "" }
    )
}

/// `text` with Python's bare NaN/Infinity/-Infinity outside strings replaced by quoted markers.
fn python_words(text: &str) -> Cow<'_, str> {
    if !text.contains("NaN") && !text.contains("Infinity") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    let (mut in_string, mut escaped) = (false, false);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else {
            let word = [("NaN", NAN), ("Infinity", INF), ("-Infinity", NEG_INF)]
                .into_iter()
                .find(|(w, _)| rest.starts_with(w));
            if let Some((w, marker)) = word {
                out.push_str(&serde_json::to_string(marker).unwrap_or_default());
                rest = &rest[w.len()..];
                continue;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    Cow::Owned(out)
}

/// A float for a log line (non-finite ones as the markers [`to_line`] turns into Python's words).
fn py_float(v: f64) -> Value {
    if v.is_nan() {
        json!(NAN)
    } else if v == f64::INFINITY {
        json!(INF)
    } else if v == f64::NEG_INFINITY {
        json!(NEG_INF)
    } else {
        json!(v)
    }
}

/// An operation as one line, written as Python's json does (compact, non-finite as bare words).
fn to_line(o: &Value) -> String {
    let mut text = o.to_string();
    for (marker, word) in [(NAN, "NaN"), (INF, "Infinity"), (NEG_INF, "-Infinity")] {
        let quoted = serde_json::to_string(marker).unwrap_or_default();
        if text.contains(&quoted) {
            text = text.replace(&quoted, word);
        }
    }
    text
}

/// A number (or one of Python's non-finite words).
fn as_num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) if s == NAN => Some(f64::NAN),
        Value::String(s) if s == INF => Some(f64::INFINITY),
        Value::String(s) if s == NEG_INF => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// An attribute value: JSON as it is, a non-finite number as null (attributes hold JSON).
fn attr(v: &Value) -> AttrValue {
    match v {
        Value::String(s) if s == NAN || s == INF || s == NEG_INF => Value::Null,
        Value::Array(xs) => Value::Array(xs.iter().map(attr).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), attr(v))).collect()),
        other => other.clone(),
    }
}

fn u64_field(o: &Value, key: &str) -> Result<u64> {
    o.get(key)
        .and_then(Value::as_u64)
        .ok_or_else(|| malformed(format!("{key} is not a non-negative integer")))
}

fn str_field<'a>(o: &'a Value, key: &str) -> Result<&'a str> {
    o.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| malformed(format!("{key} is not a string")))
}

fn num_field(o: &Value, key: &str) -> Result<f64> {
    o.get(key)
        .and_then(as_num)
        .ok_or_else(|| malformed(format!("{key} is not a number")))
}

fn object_field<'a>(o: &'a Value, key: &str) -> Result<&'a Map<String, Value>> {
    o.get(key)
        .and_then(Value::as_object)
        .ok_or_else(|| malformed(format!("{key} is not an object")))
}

/// A list of numbers, or None when missing or null.
fn values_field(o: &Value, key: &str) -> Result<Option<Vec<f64>>> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(xs)) => xs
            .iter()
            .map(|x| as_num(x).ok_or_else(|| malformed(format!("{key} holds {x}, not a number"))))
            .collect::<Result<Vec<_>>>()
            .map(Some),
        Some(other) => Err(malformed(format!("{key} is {other}, not a list"))),
    }
}

/// A time field; None when missing or null.
fn time_field(o: &Value, key: &str) -> Result<Option<SystemTime>> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse_time(s)
            .map(Some)
            .ok_or_else(|| malformed(format!("{key} {s:?} is not an ISO 8601 time"))),
        Some(other) => Err(malformed(format!("{key} is {other}, not a time"))),
    }
}

fn state_code(s: TrialState) -> u64 {
    match s {
        TrialState::Running => 0,
        TrialState::Complete => 1,
        TrialState::Pruned => 2,
        TrialState::Fail => 3,
        TrialState::Waiting => 4,
    }
}

fn trial_state(v: Option<&Value>) -> Result<TrialState> {
    match v.and_then(Value::as_u64) {
        Some(0) => Ok(TrialState::Running),
        Some(1) => Ok(TrialState::Complete),
        Some(2) => Ok(TrialState::Pruned),
        Some(3) => Ok(TrialState::Fail),
        Some(4) => Ok(TrialState::Waiting),
        _ => Err(malformed(format!(
            "state {} is not a trial state (0-4)",
            v.unwrap_or(&Value::Null)
        ))),
    }
}

fn fixed_params(v: &Value) -> Result<BTreeMap<String, ParamValue>> {
    v.as_object()
        .ok_or_else(|| malformed("fixed_params is not an object"))?
        .iter()
        .map(|(k, v)| {
            ParamValue::from_json(v)
                .map(|p| (k.clone(), p))
                .map_err(|e| malformed(format!("fixed_params[{k:?}]: {e}")))
        })
        .collect()
}

/// The trial a CREATE_TRIAL operation describes (a RUNNING one started at `datetime_start`
/// when it carries no state).
fn trial_template(o: &Value) -> Result<TrialRecord> {
    let state = match o.get("state") {
        None => TrialState::Running,
        s => trial_state(s)?,
    };
    let mut t = TrialRecord::new(0, state);
    t.datetime_start = time_field(o, "datetime_start")?;
    t.datetime_complete = time_field(o, "datetime_complete")?;
    if let Some(dists) = o.get("distributions").and_then(Value::as_object) {
        for (name, d) in dists {
            let d = d
                .as_str()
                .ok_or_else(|| malformed(format!("distribution of {name:?} is not a string")))?;
            let dist = Distribution::from_json(d)
                .map_err(|e| malformed(format!("distribution of {name:?}: {e}")))?;
            t.distributions.insert(name.clone(), dist);
        }
    }
    if let Some(params) = o.get("params").and_then(Value::as_object) {
        for (name, v) in params {
            let v =
                as_num(v).ok_or_else(|| malformed(format!("param {name:?} is not a number")))?;
            let dist = t
                .distributions
                .get(name)
                .ok_or_else(|| malformed(format!("param {name:?} has no distribution")))?;
            t.params.insert(name.clone(), dist.to_external(v));
            t.internal_params.insert(name.clone(), v);
        }
    }
    t.values = match values_field(o, "values")? {
        Some(vs) => Some(vs),
        None => match o.get("value") {
            None | Some(Value::Null) => None,
            Some(v) => Some(vec![
                as_num(v).ok_or_else(|| malformed("value is not a number"))?
            ]),
        },
    };
    if let Some(iv) = o.get("intermediate_values").and_then(Value::as_object) {
        for (step, v) in iv {
            let step: i64 = step
                .parse()
                .map_err(|_| malformed(format!("intermediate step {step:?} is not an integer")))?;
            let v = as_num(v).ok_or_else(|| malformed("an intermediate value is not a number"))?;
            t.intermediate_values.insert(step, v);
        }
    }
    for (field, attrs) in [
        ("user_attrs", &mut t.user_attrs),
        ("system_attrs", &mut t.system_attrs),
    ] {
        if let Some(m) = o.get(field).and_then(Value::as_object) {
            attrs.extend(m.iter().map(|(k, v)| (k.clone(), attr(v))));
        }
    }
    if let Some(f) = t.system_attrs.get("fixed_params") {
        t.fixed_params = Some(fixed_params(f)?);
    }
    if state == TrialState::Fail {
        t.fail_reason = t
            .system_attrs
            .get("fail_reason")
            .and_then(|v| v.as_str().map(str::to_string));
    }
    Ok(t)
}

/// The CREATE_TRIAL fields of a template trial, as Optuna writes them.
fn template_op(t: &TrialRecord) -> Value {
    let mut system_attrs = t.system_attrs.clone();
    if let Some(fixed) = &t.fixed_params {
        system_attrs.insert(
            "fixed_params".into(),
            Value::Object(
                fixed
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect(),
            ),
        );
    }
    if let (TrialState::Fail, Some(reason)) = (t.state, &t.fail_reason) {
        system_attrs.insert("fail_reason".into(), json!(reason));
    }
    let floats = |vs: &[f64]| vs.iter().map(|v| py_float(*v)).collect::<Vec<_>>();
    let (value, values) = match &t.values {
        Some(vs) if vs.len() > 1 => (Value::Null, json!(floats(vs))),
        Some(vs) => (
            vs.first().map_or(Value::Null, |v| py_float(*v)),
            Value::Null,
        ),
        None => (Value::Null, Value::Null),
    };
    let mut o = json!({
        "state": state_code(t.state),
        "value": value,
        "values": values,
        // A trial that starts now is written with its start time, so every reader has the same.
        "datetime_start": match (t.datetime_start, t.state) {
            (None, TrialState::Waiting) => None,
            (start, _) => Some(iso(start.unwrap_or_else(SystemTime::now))),
        },
        "distributions": t.distributions.iter().map(|(k, d)| (k.clone(), json!(d.to_json()))).collect::<Map<_, _>>(),
        "params": t.internal_params.iter().map(|(k, v)| (k.clone(), py_float(*v))).collect::<Map<_, _>>(),
        "user_attrs": t.user_attrs,
        "system_attrs": system_attrs,
        "intermediate_values": t.intermediate_values.iter().map(|(k, v)| (k.to_string(), py_float(*v))).collect::<Map<_, _>>(),
    });
    if let Some(c) = t.datetime_complete {
        o["datetime_complete"] = json!(iso(c));
    } else if t.state.is_finished() {
        o["datetime_complete"] = json!(iso(SystemTime::now()));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_words_round_trip_outside_strings_only() {
        let line = br#"{"a":NaN,"b":[Infinity,-Infinity,1.5],"s":"NaN and -Infinity"}"#;
        let v = parse_line(line).unwrap();
        assert!(as_num(&v["a"]).unwrap().is_nan());
        assert_eq!(as_num(&v["b"][0]), Some(f64::INFINITY));
        assert_eq!(as_num(&v["b"][1]), Some(f64::NEG_INFINITY));
        assert_eq!(v["s"], json!("NaN and -Infinity"));
        // Floats are read exactly (Python writes the shortest repr that round-trips).
        let x = parse_line(br#"{"x":-2.3452669425811234}"#).unwrap();
        assert_eq!(as_num(&x["x"]), Some(-2.345_266_942_581_123_4));
        assert_eq!(to_line(&v), std::str::from_utf8(line).unwrap());
    }

    #[test]
    fn bad_lines_and_urls_say_what_is_wrong() {
        assert!(parse_line(b"{\"a\":").unwrap_err().contains("not JSON"));
        assert!(parse_line(b"[1]")
            .unwrap_err()
            .contains("not a JSON object"));
        let e = JournalOptions::from_url("journal://x.log?lock=nfs").unwrap_err();
        assert!(e.to_string().contains("unknown option"), "{e}");
        let e = JournalOptions::from_url("journal://x.log?grace_period=-1").unwrap_err();
        assert!(e.to_string().contains("positive"), "{e}");
        let (p, o) =
            JournalOptions::from_url("journal:///tmp/a.log?lock=open&grace_period=none").unwrap();
        assert_eq!(p, PathBuf::from("/tmp/a.log"));
        assert_eq!((o.lock, o.grace_period), (JournalLock::Open, None));
    }

    #[test]
    fn times_are_optunas_iso_form() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        let s = iso(t);
        assert_eq!(s, "2023-11-14T22:13:20.123456+00:00");
        assert_eq!(parse_time(&s), Some(t));
        assert!(parse_time("2023-11-14T22:13:20.123456").is_some());
        assert!(parse_time("yesterday").is_none());
    }

    #[test]
    fn uuid4_has_the_version_and_variant_bits() {
        let u = uuid4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "{u}");
    }
}
