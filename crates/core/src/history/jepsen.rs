//! A history as Jepsen writes one: a JSON line per event, an `invoke` and then its completion
//! (`ok`, `fail` when it certainly did not happen, `info` when its outcome is unknown), each with
//! `process`, `type`, `f`, `value` and `time` (nanoseconds, one monotonic clock). An invocation
//! with no completion is an operation still unknown when the history ended.
//!
//! `f` is `set-segment`, `set-journey` or `read`. An invocation's `value` holds the call
//! (`journey`, `segment`, `to`, `if_match`); a completion's holds the call and the answer
//! (`outcome`: `changed`, `unchanged`, `refused`, `precondition-failed`, `observed`,
//! `failed`, `unknown`, with the version, or what the read observed). A 409 invalid-transition is
//! `ok`: the write completed and its answer says what the state was; a 412, or a refusal that
//! says nothing of the state (a strategy that gave up), is `fail`.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Answer, Call, Operation};

/// One line of the history file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub process: u64,
    #[serde(rename = "type")]
    pub kind: Kind,
    pub f: String,
    pub value: Value,
    pub time: u64,
}

/// Jepsen's event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Invoke,
    Ok,
    Fail,
    Info,
}

/// Why a history file cannot be read back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// A line is not an event of this history.
    #[error("event {index}: {reason}")]
    Event { index: usize, reason: String },
}

/// The events of `history`, in time order (an invocation before its completion at equal times).
pub fn events(history: &[Operation]) -> Vec<Event> {
    let mut out = Vec::with_capacity(history.len() * 2);
    for op in history {
        let call = serde_json::to_value(&op.call).unwrap_or(Value::Null);
        let f = call
            .get("f")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let mut value = call;
        if let Value::Object(map) = &mut value {
            map.remove("f");
        }
        out.push(Event {
            process: op.process,
            kind: Kind::Invoke,
            f: f.clone(),
            value: value.clone(),
            time: op.invoke,
        });
        let Some(time) = op.complete else {
            continue;
        };
        let kind = match op.answer {
            Answer::Unknown => Kind::Info,
            Answer::PreconditionFailed { .. } | Answer::Failed { .. } => Kind::Fail,
            _ => Kind::Ok,
        };
        if let (Value::Object(map), Ok(Value::Object(answer))) =
            (&mut value, serde_json::to_value(&op.answer))
        {
            map.extend(answer);
        }
        out.push(Event {
            process: op.process,
            kind,
            f,
            value,
            time,
        });
    }
    out.sort_by_key(|e| (e.time, e.kind != Kind::Invoke));
    out
}

/// The operations of `events` (any order within a process' own sequence is kept).
///
/// # Errors
/// [`HistoryError`] naming the first event that is not well formed: a completion without an
/// invocation, a second invocation before a completion, an unknown `f` or value.
pub fn operations(events: &[Event]) -> Result<Vec<Operation>, HistoryError> {
    let mut open: HashMap<u64, usize> = HashMap::new();
    let mut out: Vec<Operation> = Vec::new();
    for (index, event) in events.iter().enumerate() {
        let bad = |reason: String| HistoryError::Event { index, reason };
        match event.kind {
            Kind::Invoke => {
                if open.contains_key(&event.process) {
                    return Err(bad(format!(
                        "process {} invoked again before its last operation completed",
                        event.process
                    )));
                }
                let mut call = event.value.clone();
                if let Value::Object(map) = &mut call {
                    map.insert("f".into(), Value::String(event.f.clone()));
                }
                let call: Call = serde_json::from_value(call).map_err(|e| bad(e.to_string()))?;
                open.insert(event.process, out.len());
                out.push(Operation {
                    process: event.process,
                    invoke: event.time,
                    complete: None,
                    call,
                    answer: Answer::Unknown,
                });
            }
            Kind::Ok | Kind::Fail | Kind::Info => {
                let at = open.remove(&event.process).ok_or_else(|| {
                    bad(format!(
                        "process {} completed nothing it invoked",
                        event.process
                    ))
                })?;
                let answer = match event.kind {
                    Kind::Info => Answer::Unknown,
                    _ => serde_json::from_value(event.value.clone())
                        .map_err(|e| bad(e.to_string()))?,
                };
                out[at].complete = Some(event.time);
                out[at].answer = answer;
            }
        }
    }
    Ok(out)
}
