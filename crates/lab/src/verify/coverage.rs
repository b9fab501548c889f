//! How much of a history the journeys themselves judged: a run whose writes the service mostly
//! turned away (a rate limit, a missing key, an outage) checks almost nothing, and its
//! "linearizable" would say nothing. [`Coverage::of`] sorts every write by who answered it:
//! the journeys (it took effect, changed nothing, or was judged by their rules or versions: a
//! 200, a 409, a 412), or the service before them, by cause. [`Coverage::shortfall`] names the
//! largest cause when too small a share reached the journeys, which `verify` turns into exit 3
//! (undecided).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::history::{Answer, Call, Operation};

/// Why the service turned a write away before it reached the journeys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// 429: the service's rate limit.
    RateLimit,
    /// 401 or 403: no key, a wrong key, or a key without the write scope.
    Authentication,
    /// 503 `replicas-missing`: the journey's primary had too few replicas to confirm a write.
    Unavailable,
    /// The connection could not be made: nothing listened.
    Unreachable,
    /// No definite answer: a timeout, a dropped connection or a 5xx (it may have taken effect).
    NoAnswer,
    /// Any other 4xx (a request the service found malformed, a journey it did not find).
    OtherRefusal,
}

impl Cause {
    /// What the service did, in a sentence's words.
    pub fn describe(self) -> &'static str {
        match self {
            Self::RateLimit => "refused by the service's rate limit (429)",
            Self::Authentication => "refused for their API key (401/403)",
            Self::Unavailable => "refused as unreplicable (503 replicas-missing)",
            Self::Unreachable => "never sent: no connection could be made",
            Self::NoAnswer => "left without a definite answer (timeout, dropped connection, 5xx)",
            Self::OtherRefusal => "refused as invalid (another 4xx)",
        }
    }

    /// What the person running `verify` can do about it.
    pub fn remedy(self) -> &'static str {
        match self {
            Self::RateLimit => {
                "run serve with --rate-limit off, or raise it above what verify's clients send"
            }
            Self::Authentication => {
                "pass a key with the write scope: --api-key or FLYRTECH_VERIFY_API_KEY"
            }
            Self::Unavailable => "give every primary the replicas --wait-replicas asks for",
            Self::Unreachable => "check --target: nothing answered there",
            Self::NoAnswer => "raise --timeout-ms, or look at the service's errors",
            Self::OtherRefusal => "check that --target names this service's API",
        }
    }

    fn of(answer: &Answer) -> Option<Self> {
        match answer {
            Answer::Changed { .. }
            | Answer::Unchanged { .. }
            | Answer::Refused
            | Answer::PreconditionFailed { .. }
            | Answer::Observed(_)
            // A strategy that gave up under contention: the journey's writers were judged.
            | Answer::Failed { status: 409 } => None,
            Answer::Failed { status: 429 } => Some(Self::RateLimit),
            Answer::Failed {
                status: 401 | 403,
            } => Some(Self::Authentication),
            Answer::Failed { status: 503 } => Some(Self::Unavailable),
            Answer::Failed { status: 0 } => Some(Self::Unreachable),
            Answer::Failed { .. } => Some(Self::OtherRefusal),
            Answer::Unknown => Some(Self::NoAnswer),
        }
    }
}

/// Every write of a history, by who answered it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Coverage {
    /// Writes in the history.
    pub writes: u64,
    /// Writes the journeys answered: 200, 409, 412.
    pub reached: u64,
    /// Writes the service turned away, by cause.
    pub turned_away: BTreeMap<Cause, u64>,
}

impl Coverage {
    /// Sorts the writes of `history` (reads are not counted).
    pub fn of(history: &[Operation]) -> Self {
        let mut coverage = Self::default();
        for op in history {
            if matches!(op.call, Call::Read { .. }) {
                continue;
            }
            coverage.writes += 1;
            match Cause::of(&op.answer) {
                None => coverage.reached += 1,
                Some(cause) => *coverage.turned_away.entry(cause).or_insert(0) += 1,
            }
        }
        coverage
    }

    /// The share of writes that reached the journeys (0 for a history without writes).
    pub fn reached_share(&self) -> f64 {
        if self.writes == 0 {
            0.0
        } else {
            self.reached as f64 / self.writes as f64
        }
    }

    /// When less than `minimum` of the writes reached the journeys: why, naming the largest
    /// cause and its remedy.
    pub fn shortfall(&self, minimum: f64) -> Option<String> {
        if self.writes > 0 && self.reached_share() >= minimum {
            return None;
        }
        let Some((cause, count)) = self
            .turned_away
            .iter()
            .max_by_key(|(cause, count)| (**count, std::cmp::Reverse(**cause)))
        else {
            return Some("the run made no write: nothing was checked".to_owned());
        };
        Some(format!(
            "only {:.0} % of writes reached the journeys (at least {:.0} % needed to judge): \
             {:.0} % of writes were {}; {}",
            self.reached_share() * 100.0,
            minimum * 100.0,
            *count as f64 * 100.0 / self.writes as f64,
            cause.describe(),
            cause.remedy(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Call;
    use flyrtech_core::{JourneyId, JourneyVersion, SegmentId, SegmentStatus};

    fn write(answer: Answer) -> Operation {
        Operation {
            process: 0,
            invoke: 0,
            complete: Some(1),
            call: Call::SetSegment {
                journey: JourneyId::parse("VFY-1").expect("an id"),
                segment: SegmentId::parse("S1").expect("a segment"),
                to: SegmentStatus::Delayed,
                if_match: None,
            },
            answer,
        }
    }

    fn read() -> Operation {
        Operation {
            call: Call::Read {
                journey: JourneyId::parse("VFY-1").expect("an id"),
            },
            answer: Answer::Unknown,
            ..write(Answer::Unknown)
        }
    }

    #[test]
    fn the_journeys_answer_200_409_and_412_and_the_service_the_rest_by_cause() {
        let v = JourneyVersion::new(3);
        let history = vec![
            write(Answer::Changed { version: v }),
            write(Answer::Unchanged { version: v }),
            write(Answer::Refused),
            write(Answer::PreconditionFailed { current: v }),
            write(Answer::Failed { status: 409 }),
            write(Answer::Failed { status: 429 }),
            write(Answer::Failed { status: 429 }),
            write(Answer::Failed { status: 401 }),
            write(Answer::Failed { status: 403 }),
            write(Answer::Failed { status: 503 }),
            write(Answer::Failed { status: 0 }),
            write(Answer::Failed { status: 404 }),
            write(Answer::Unknown),
            read(),
        ];
        let coverage = Coverage::of(&history);
        assert_eq!(coverage.writes, 13);
        assert_eq!(coverage.reached, 5);
        assert_eq!(
            coverage.turned_away,
            BTreeMap::from([
                (Cause::RateLimit, 2),
                (Cause::Authentication, 2),
                (Cause::Unavailable, 1),
                (Cause::Unreachable, 1),
                (Cause::NoAnswer, 1),
                (Cause::OtherRefusal, 1),
            ])
        );
    }

    #[test]
    fn a_run_mostly_rate_limited_falls_short_naming_the_rate_limit_and_its_remedy() {
        let mut history = vec![write(Answer::Failed { status: 429 }); 93];
        history.extend(vec![write(Answer::Refused); 6]);
        history.push(write(Answer::Unknown));
        let coverage = Coverage::of(&history);
        let why = coverage
            .shortfall(0.5)
            .expect("too few writes reached the journeys");
        assert!(
            why.contains("93 % of writes were refused by the service's rate limit (429)"),
            "{why}"
        );
        assert!(why.contains("--rate-limit off"), "{why}");
        assert!(why.starts_with("only 6 %"), "{why}");
    }

    #[test]
    fn a_run_whose_writes_mostly_reached_the_journeys_has_no_shortfall() {
        let mut history = vec![
            write(Answer::Changed {
                version: JourneyVersion::new(2)
            });
            60
        ];
        history.extend(vec![write(Answer::Unknown); 40]);
        let coverage = Coverage::of(&history);
        assert_eq!(coverage.shortfall(0.5), None);
        assert!(
            coverage
                .shortfall(0.61)
                .is_some_and(|why| why.contains("timeout"))
        );
    }

    #[test]
    fn a_run_without_writes_checked_nothing() {
        assert_eq!(
            Coverage::of(&[read()]).shortfall(0.0).as_deref(),
            Some("the run made no write: nothing was checked")
        );
    }
}
