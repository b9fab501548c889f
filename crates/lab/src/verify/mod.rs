//! `flyrtech-lab verify`'s client: it creates journeys of its own on running instances, drives
//! status changes and reads at them from several clients, and records every operation with its
//! invocation and completion on one monotonic clock, for [`crate::history`] to judge.
//!
//! # What it records, and why that is enough
//! Each client is a Jepsen process: one operation at a time; an operation without a definite
//! answer (a 503, a 5xx, a timeout, a dropped connection) is recorded as unknown and the process
//! retires, a fresh one taking its place, so that an unknown operation never precedes another of
//! its own process. A 200, a 409 (invalid transition, or a strategy that gave up: nothing
//! written), a 412, a 503 `replicas-missing` (refused before it was sent: nothing written) and a
//! connection that could not be made (nothing was sent: a failure with status 0) are definite. The journeys are this run's alone (ids `VFY-<run>-<n>`), so
//! nothing but the recorded clients changes them while it runs, and their state before the first
//! operation is read back once they are created.
//!
//! # What it may import
//! The core crate (the history types, the statuses); nothing of the other rooms.

pub mod coverage;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::history::{Answer, Call, Initial, Operation, Snapshot};
use flyrtech_core::{JourneyId, JourneyStatus, JourneyVersion, SegmentId, SegmentStatus, Status};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use reqwest::StatusCode;
use serde::Deserialize;

/// What to drive, and for how long.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The instances' base URLs (`http://host:port`); clients are spread over them.
    pub targets: Vec<String>,
    /// A key with the write scope, for instances that need one.
    pub api_key: Option<String>,
    /// How long the clients run.
    pub duration: Duration,
    /// Journeys created for the run (fewer: more contention).
    pub journeys: usize,
    /// Segments per journey.
    pub segments: usize,
    /// Clients running at once.
    pub clients: usize,
    /// Longest a request may take before its outcome is unknown.
    pub timeout: Duration,
    /// The random choices' seed.
    pub seed: u64,
}

/// What the run recorded.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The journeys as created, before the first operation.
    pub initial: Vec<Initial>,
    /// Every operation, in invocation order.
    pub history: Vec<Operation>,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A target refused or could not be reached while the run's journeys were created.
    #[error("cannot create the run's journeys on {target}: {reason}")]
    Setup { target: String, reason: String },
    /// The plan cannot run (no target, no client, no journey).
    #[error("{0}")]
    Plan(String),
}

/// Creates the run's journeys, runs the clients for the plan's duration, and returns what they
/// recorded; `progress` is told the operations recorded so far, every few milliseconds.
///
/// # Errors
/// [`VerifyError`] when the journeys cannot be created.
pub async fn record(plan: &Plan, progress: impl Fn(u64) + Send) -> Result<Recorded, VerifyError> {
    if plan.targets.is_empty() || plan.clients == 0 || plan.journeys == 0 || plan.segments == 0 {
        return Err(VerifyError::Plan(
            "a run needs a target, a client, a journey and a segment".into(),
        ));
    }
    let http = reqwest::Client::builder()
        .timeout(plan.timeout)
        .no_proxy()
        .build()
        .map_err(|e| VerifyError::Plan(e.to_string()))?;
    let client = Client {
        http,
        key: plan.api_key.clone(),
    };
    let run = format!("{:06x}", rand::rng().random::<u32>() & 0xff_ffff);
    let mut initial = Vec::with_capacity(plan.journeys);
    for n in 0..plan.journeys {
        let id = format!("VFY-{run}-{n}");
        initial.push(client.create(&plan.targets[0], &id, plan.segments).await?);
    }
    let journeys: Arc<Vec<Initial>> = Arc::new(initial.clone());
    let clock = Instant::now();
    let deadline = clock + plan.duration;
    let recorded = Arc::new(AtomicU64::new(0));
    let processes = Arc::new(AtomicUsize::new(plan.clients));
    let mut tasks = tokio::task::JoinSet::new();
    for slot in 0..plan.clients {
        let worker = Worker {
            client: client.clone(),
            target: plan.targets[slot % plan.targets.len()].clone(),
            journeys: Arc::clone(&journeys),
            rng: StdRng::seed_from_u64(plan.seed.wrapping_add(slot as u64)),
            process: slot as u64,
            processes: Arc::clone(&processes),
            recorded: Arc::clone(&recorded),
            clock,
            deadline,
            versions: BTreeMap::new(),
        };
        tasks.spawn(worker.run());
    }
    let mut history = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            done = tasks.join_next() => match done {
                Some(Ok(ops)) => history.extend(ops),
                Some(Err(e)) => return Err(VerifyError::Plan(format!("a client failed: {e}"))),
                None => break,
            },
            _ = tick.tick() => progress(recorded.load(Ordering::Relaxed)),
        }
    }
    progress(recorded.load(Ordering::Relaxed));
    history.sort_by_key(|o: &Operation| (o.invoke, o.process));
    Ok(Recorded { initial, history })
}

/// The HTTP client, with the key when there is one.
#[derive(Debug, Clone)]
struct Client {
    http: reqwest::Client,
    key: Option<String>,
}

impl Client {
    fn request(&self, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
        let request = self.http.request(method, url);
        match &self.key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// Creates journey `id` with `segments` segments, all Scheduled, and reads it back.
    async fn create(
        &self,
        target: &str,
        id: &str,
        segments: usize,
    ) -> Result<Initial, VerifyError> {
        let setup = |reason: String| VerifyError::Setup {
            target: target.to_owned(),
            reason,
        };
        let body = serde_json::json!({
            "id": id,
            "passengerName": "flyrtech verify",
            "passengerEmail": "verify@example.invalid",
            "bookingDate": "2026-01-01T00:00:00Z",
            "status": "Confirmed",
            "totalPrice": serde_json::Number::from(10 * segments),
            "segments": (1..=segments).map(|n| serde_json::json!({
                "segmentId": format!("S{n}"),
                "origin": "MAD",
                "destination": "BCN",
                "departureTime": "2026-02-01T08:00:00Z",
                "arrivalTime": "2026-02-01T09:30:00Z",
                "flightNumber": format!("FT{n}"),
                "carrier": "FlyrTech",
                "status": "Scheduled",
                "price": 10,
            })).collect::<Vec<_>>(),
            "metadata": {"createdBy": "flyrtech verify"},
        });
        let response = self
            .request(reqwest::Method::POST, format!("{target}/api/journeys"))
            .json(&body)
            .send()
            .await
            .map_err(|e| setup(e.to_string()))?;
        if response.status() != StatusCode::CREATED {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            return Err(setup(format!("POST answered {status}: {text}")));
        }
        let journey = JourneyId::parse(id).map_err(|e| setup(e.to_string()))?;
        match self.read(target, &journey).await {
            Answer::Observed(snapshot) => Ok(Initial { journey, snapshot }),
            other => Err(setup(format!("the created journey reads as {other:?}"))),
        }
    }

    async fn read(&self, target: &str, journey: &JourneyId) -> Answer {
        let Ok(response) = self
            .request(
                reqwest::Method::GET,
                format!("{target}/api/journeys/{journey}"),
            )
            .send()
            .await
        else {
            return Answer::Unknown;
        };
        match response.status() {
            StatusCode::OK => match response.json::<WireJourney>().await {
                Ok(seen) => seen.snapshot(),
                Err(_) => Answer::Unknown,
            },
            status => definite_failure(status),
        }
    }

    async fn write(&self, target: &str, call: &Call) -> Answer {
        let (path, status, if_match) = match call {
            Call::SetSegment {
                journey,
                segment,
                to,
                if_match,
            } => (
                format!("/api/journeys/{journey}/segments/{segment}/status"),
                to.as_str(),
                if_match,
            ),
            Call::SetJourney {
                journey,
                to,
                if_match,
            } => (
                format!("/api/journeys/{journey}/status"),
                to.as_str(),
                if_match,
            ),
            Call::Read { .. } => return Answer::Unknown,
        };
        let mut request = self
            .request(reqwest::Method::PUT, format!("{target}{path}"))
            .json(&serde_json::json!({ "status": status }));
        if let Some(version) = if_match {
            request = request.header("If-Match", format!("\"{version}\""));
        }
        match request.send().await {
            Ok(response) => answer_to_write(response).await,
            Err(e) => unsent_or_unknown(&e),
        }
    }
}

/// A request that got no answer: never sent when the connection could not even be made (the
/// service was down: a definite failure, code 0), else unknown (it may have reached the
/// service before the connection failed or the time ran out).
fn unsent_or_unknown(error: &reqwest::Error) -> Answer {
    if error.is_connect() {
        Answer::Failed { status: 0 }
    } else {
        Answer::Unknown
    }
}

/// What the answer to a write says happened (module docs, "What each answer says").
async fn answer_to_write(response: reqwest::Response) -> Answer {
    match response.status() {
        StatusCode::OK => match response.json::<WireUpdate>().await {
            Ok(WireUpdate {
                version,
                changed: true,
            }) => Answer::Changed { version },
            Ok(WireUpdate { version, .. }) => Answer::Unchanged { version },
            Err(_) => Answer::Unknown,
        },
        StatusCode::CONFLICT | StatusCode::PRECONDITION_FAILED => {
            match response.json::<WireProblem>().await {
                Ok(problem) if problem.kind.ends_with("/invalid-transition") => Answer::Refused,
                Ok(WireProblem {
                    current_version: Some(current),
                    ..
                }) => Answer::PreconditionFailed { current },
                // The strategy gave up under contention: nothing was written.
                Ok(_) => Answer::Failed { status: 409 },
                Err(_) => Answer::Unknown,
            }
        }
        // Refused before it was sent: nothing was written, so the model may rely on it.
        StatusCode::SERVICE_UNAVAILABLE => match response.json::<WireProblem>().await {
            Ok(problem) if problem.kind.ends_with("/replicas-missing") => {
                Answer::Failed { status: 503 }
            }
            _ => Answer::Unknown,
        },
        status => definite_failure(status),
    }
}

/// A status with no 2xx answer: a 5xx (a 503 included, but for `replicas-missing`: its write
/// may be in place) is unknown; anything else said nothing changed.
fn definite_failure(status: StatusCode) -> Answer {
    if status.is_server_error() {
        Answer::Unknown
    } else {
        Answer::Failed {
            status: status.as_u16(),
        }
    }
}

/// The segment statuses the clients write: each can be left for another of them.
const LIVE_SEGMENT: [SegmentStatus; 3] = [
    SegmentStatus::Scheduled,
    SegmentStatus::Delayed,
    SegmentStatus::Boarding,
];

/// The journey statuses the clients write (Confirmed to InProgress, once; back is refused).
const LIVE_JOURNEY: [JourneyStatus; 2] = [JourneyStatus::Confirmed, JourneyStatus::InProgress];

/// One client process (and the processes that replace it after an unknown answer).
struct Worker {
    client: Client,
    target: String,
    journeys: Arc<Vec<Initial>>,
    rng: StdRng,
    process: u64,
    processes: Arc<AtomicUsize>,
    recorded: Arc<AtomicU64>,
    clock: Instant,
    deadline: Instant,
    /// The last version this client saw of each journey, for its `If-Match` writes.
    versions: BTreeMap<JourneyId, JourneyVersion>,
}

impl Worker {
    async fn run(mut self) -> Vec<Operation> {
        let mut ops = Vec::new();
        while Instant::now() < self.deadline {
            let call = self.next_call();
            let invoke = self.now();
            let answer = match &call {
                Call::Read { journey } => self.client.read(&self.target, journey).await,
                write => self.client.write(&self.target, write).await,
            };
            let complete = self.now();
            if let Some(version) = answer.version() {
                self.versions.insert(call.journey().clone(), version);
            }
            let unknown = answer == Answer::Unknown;
            ops.push(Operation {
                process: self.process,
                invoke,
                complete: Some(complete),
                call,
                answer,
            });
            self.recorded.fetch_add(1, Ordering::Relaxed);
            if unknown {
                // Jepsen's rule: a process with an unknown operation makes no other.
                self.process = self.processes.fetch_add(1, Ordering::Relaxed) as u64;
            }
        }
        ops
    }

    fn now(&self) -> u64 {
        u64::try_from(self.clock.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Half the operations change a segment, one in fifty the journey's status, the rest read;
    /// a fifth of the writes carry the last version this client saw as `If-Match`. Segments
    /// move among the statuses that can go back and forth (Scheduled, Delayed, Boarding), so the
    /// registers stay busy with changes, no-ops and refusals (Boarding to Scheduled is refused)
    /// for the whole run instead of ending in a terminal status within a second.
    fn next_call(&mut self) -> Call {
        let at = self.rng.random_range(0..self.journeys.len());
        let initial = &self.journeys[at];
        let journey = initial.journey.clone();
        let roll = self.rng.random_range(0..50);
        let if_match = if self.rng.random_range(0..5) == 0 {
            self.versions.get(&journey).copied()
        } else {
            None
        };
        match roll {
            0..25 => {
                let segments: Vec<&SegmentId> = initial.snapshot.segments.keys().collect();
                let segment = segments[self.rng.random_range(0..segments.len())].clone();
                let to = LIVE_SEGMENT[self.rng.random_range(0..LIVE_SEGMENT.len())];
                Call::SetSegment {
                    journey,
                    segment,
                    to,
                    if_match,
                }
            }
            25 => Call::SetJourney {
                journey,
                to: LIVE_JOURNEY[self.rng.random_range(0..LIVE_JOURNEY.len())],
                if_match,
            },
            _ => Call::Read { journey },
        }
    }
}

/// A journey as the API answers it: what the model reads of it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireJourney {
    #[serde(default)]
    version: JourneyVersion,
    status: JourneyStatus,
    segments: Vec<WireSegment>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireSegment {
    segment_id: SegmentId,
    status: SegmentStatus,
}

impl WireJourney {
    fn snapshot(self) -> Answer {
        Answer::Observed(Snapshot {
            version: self.version,
            status: self.status,
            segments: self
                .segments
                .into_iter()
                .map(|s| (s.segment_id, s.status))
                .collect(),
        })
    }
}

#[derive(Deserialize)]
struct WireUpdate {
    version: JourneyVersion,
    changed: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireProblem {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    current_version: Option<JourneyVersion>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, body: serde_json::Value) -> reqwest::Response {
        let http = axum::http::Response::builder()
            .status(status)
            .header("content-type", "application/problem+json")
            .body(body.to_string())
            .expect("a response");
        reqwest::Response::from(http)
    }

    /// A 503 says nothing was written only when its problem says so: a refusal before the
    /// write was sent is a definite failure, a write its replicas did not confirm is unknown.
    #[tokio::test]
    async fn a_refusal_that_wrote_nothing_is_definite_and_an_unconfirmed_write_is_unknown() {
        let problem = |kind: &str| serde_json::json!({ "type": kind, "status": 503 });
        assert_eq!(
            answer_to_write(response(503, problem("/problems/replicas-missing"))).await,
            Answer::Failed { status: 503 }
        );
        for unknown in ["/problems/not-replicated", "/problems/unavailable"] {
            assert_eq!(
                answer_to_write(response(503, problem(unknown))).await,
                Answer::Unknown,
                "{unknown}"
            );
        }
        assert_eq!(
            answer_to_write(response(503, serde_json::json!("not a problem"))).await,
            Answer::Unknown
        );
        assert_eq!(
            answer_to_write(response(429, problem("/problems/rate-limited"))).await,
            Answer::Failed { status: 429 }
        );
    }
}
