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
//!
//! The checker needs each journey's state before the clients began. A history written by
//! [`events_with_initial`] starts with a read of each journey by [`SETUP_PROCESS`] at time 0,
//! before any client operation; [`initial_states`] takes, for each journey of any history, the
//! first read of it that completed before any other operation of it was invoked, so a history
//! recorded elsewhere supplies its starting states the same way.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Answer, Call, Initial, Operation};
use flyrtech_core::ids::JourneyId;

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

/// The process that reads each journey once before the clients start.
pub const SETUP_PROCESS: u64 = u64::MAX;

/// The events of `history`, after a read of each journey of `initial` by [`SETUP_PROCESS`] at
/// time 0 (the clients' times start after it), answered with the journey's starting state.
pub fn events_with_initial(initial: &[Initial], history: &[Operation]) -> Vec<Event> {
    let setup: Vec<Operation> = initial
        .iter()
        .map(|i| Operation {
            process: SETUP_PROCESS,
            invoke: 0,
            complete: Some(0),
            call: Call::Read {
                journey: i.journey.clone(),
            },
            answer: Answer::Observed(i.snapshot.clone()),
        })
        .collect();
    let mut out = events(&setup);
    out.extend(events(history));
    out
}

/// Each journey's starting state: the first read of it that completed before any other
/// operation of it was invoked (module docs). Answers the states found and the journeys without
/// one, which cannot be checked.
pub fn initial_states(history: &[Operation]) -> (Vec<Initial>, Vec<JourneyId>) {
    let mut by_journey: std::collections::BTreeMap<&JourneyId, Vec<&Operation>> =
        std::collections::BTreeMap::new();
    for op in history {
        by_journey.entry(op.journey()).or_default().push(op);
    }
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for (journey, ops) in by_journey {
        let first = ops.iter().find_map(|op| match (&op.answer, op.complete) {
            (Answer::Observed(seen), Some(done))
                if ops
                    .iter()
                    .all(|other| std::ptr::eq(*other, *op) || other.invoke >= done) =>
            {
                Some(seen.clone())
            }
            _ => None,
        });
        match first {
            Some(snapshot) => found.push(Initial {
                journey: journey.clone(),
                snapshot,
            }),
            None => missing.push(journey.clone()),
        }
    }
    (found, missing)
}
