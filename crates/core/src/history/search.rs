//! The search for a linearization of one register's history: Wing and Gong's, with Lowe's
//! memoisation of every (linearized set, state) already explored, as Knossos and Porcupine do.
//!
//! An operation may be linearized next when no other operation still to be linearized had
//! completed before it was invoked. Unknown writes may be linearized at any point after their
//! invocation, or never: the search succeeds once every operation with a definite answer is
//! placed. The search is exponential in the worst case (linearizability is NP-complete), so it
//! runs on a budget of steps and answers [`Verdict::Undecided`] when it is spent.

use std::collections::HashMap;
use std::hash::Hash;

use serde::Serialize;

use super::model::{RegisterOp, Timed, WriteOutcome};
use crate::status::Status;

/// What the search concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// An order exists that explains every answer.
    Linearizable,
    /// No order explains the answers.
    NotLinearizable,
    /// The budget ran out first.
    Undecided,
}

/// Searches for a linearization of `ops` (sorted by invocation) from `initial`, spending at most
/// `budget` steps (what is left is written back).
///
/// Unknown writes are not placed one by one: two unknown writes to the same status differ only
/// in when they were invoked, so of those invoked by a point the earliest is always the one to
/// use (whatever a later one could do, the earlier one can too). The search therefore counts, per
/// status, how many unknown writes it has used, and only uses one that changes the state; an
/// unknown write that would change nothing is the same as one that never happened. Without this,
/// every unknown write doubles the configurations to explore (a primary restarting under load
/// leaves hundreds).
pub fn linearize<S: Status + Hash>(ops: &[Timed<S>], initial: S, budget: &mut u64) -> Verdict {
    debug_assert!(ops.windows(2).all(|w| w[0].invoke <= w[1].invoke));
    let required: Vec<&Timed<S>> = ops.iter().filter(|o| o.op.is_required()).collect();
    // Per status, the invocation times of the unknown writes to it, in order.
    let unknown: Vec<Vec<u64>> = S::ALL
        .iter()
        .map(|target| {
            ops.iter()
                .filter(|o| {
                    matches!(o.op, RegisterOp::Write { to, outcome: WriteOutcome::Unknown } if to == *target)
                })
                .map(|o| o.invoke)
                .collect()
        })
        .collect();
    let n = required.len();
    let mut placed = Bits::new(n);
    let mut placed_count = 0;
    let mut used = vec![0usize; S::ALL.len()];
    let mut state = initial;
    // Explored configurations: per (placed set, state), the unknown writes used on the way. A
    // configuration that has used at least as many of each as one already explored can do
    // nothing that one could not (it has fewer left): it is skipped.
    let mut seen: HashMap<(Vec<u64>, S), Vec<Vec<usize>>> = HashMap::new();
    // What was placed, with the state before it: a required operation, or an unknown write to
    // the status of that index (`n + index`).
    let mut stack: Vec<(usize, S)> = Vec::new();
    let mut cursor = 0;
    loop {
        if placed_count == n {
            return Verdict::Linearizable;
        }
        if *budget == 0 {
            return Verdict::Undecided;
        }
        *budget -= 1;
        let first = placed.first_clear();
        // The earliest deadline of what is left bounds what may go next; operations are sorted
        // by invocation and end no earlier than they start, so the scan stops early.
        let mut bound = u64::MAX;
        for (i, op) in required.iter().enumerate().skip(first) {
            if op.invoke > bound {
                break;
            }
            if !placed.get(i) {
                bound = bound.min(op.deadline);
            }
        }
        let mut next = None;
        for choice in cursor.max(first)..n + S::ALL.len() {
            let after = if let Some(op) = required.get(choice) {
                if op.invoke > bound {
                    // Nothing later among the required may go next either: on to the unknown.
                    continue;
                }
                if placed.get(choice) {
                    continue;
                }
                op.op.step(state)
            } else {
                let target = choice - n;
                let available = unknown[target].iter().take_while(|t| **t <= bound).count();
                if used[target] >= available {
                    continue;
                }
                let write = RegisterOp::Write {
                    to: S::ALL[target],
                    outcome: WriteOutcome::Unknown,
                };
                write.step(state).filter(|after| *after != state)
            };
            let Some(after) = after else {
                continue;
            };
            apply(choice, n, &mut placed, &mut used, true);
            let explored = seen.entry((placed.words.clone(), after)).or_default();
            let dominated = explored
                .iter()
                .any(|earlier| earlier.iter().zip(&used).all(|(e, u)| e <= u));
            if !dominated {
                explored.retain(|earlier| !earlier.iter().zip(&used).all(|(e, u)| u <= e));
                explored.push(used.clone());
                next = Some((choice, after));
                break;
            }
            apply(choice, n, &mut placed, &mut used, false);
        }
        match next {
            Some((choice, after)) => {
                stack.push((choice, state));
                state = after;
                placed_count += usize::from(choice < n);
                cursor = 0;
            }
            None => {
                let Some((choice, before)) = stack.pop() else {
                    return Verdict::NotLinearizable;
                };
                apply(choice, n, &mut placed, &mut used, false);
                state = before;
                placed_count -= usize::from(choice < n);
                cursor = choice + 1;
            }
        }
    }
}

/// Places (`on`) or takes back a choice: a required operation's bit, or one more (or one less)
/// unknown write to a status.
fn apply(choice: usize, n: usize, placed: &mut Bits, used: &mut [usize], on: bool) {
    if choice < n {
        placed.set(choice, on);
    } else if on {
        used[choice - n] += 1;
    } else {
        used[choice - n] -= 1;
    }
}

/// A fixed-size set of operation indices.
#[derive(Debug, Clone)]
struct Bits {
    words: Vec<u64>,
}

impl Bits {
    fn new(n: usize) -> Self {
        Self {
            words: vec![0; n.div_ceil(64)],
        }
    }

    fn get(&self, i: usize) -> bool {
        self.words[i / 64] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, i: usize, on: bool) {
        if on {
            self.words[i / 64] |= 1 << (i % 64);
        } else {
            self.words[i / 64] &= !(1 << (i % 64));
        }
    }

    /// The lowest index not in the set (the length when all are).
    fn first_clear(&self) -> usize {
        self.words
            .iter()
            .enumerate()
            .find(|(_, w)| **w != u64::MAX)
            .map_or(self.words.len() * 64, |(i, w)| {
                i * 64 + w.trailing_ones() as usize
            })
    }
}
