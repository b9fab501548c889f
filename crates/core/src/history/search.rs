//! The search for a linearization of one register's history: Wing and Gong's, with Lowe's
//! memoisation of every (linearized set, state) already explored, as Knossos and Porcupine do.
//!
//! An operation may be linearized next when no other operation still to be linearized had
//! completed before it was invoked. Unknown writes may be linearized at any point after their
//! invocation, or never: the search succeeds once every operation with a definite answer is
//! placed. The search is exponential in the worst case (linearizability is NP-complete), so it
//! runs on a budget of steps and answers [`Verdict::Undecided`] when it is spent.

use std::collections::HashSet;
use std::hash::Hash;

use serde::Serialize;

use super::model::Timed;
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
pub fn linearize<S: Status + Hash>(ops: &[Timed<S>], initial: S, budget: &mut u64) -> Verdict {
    debug_assert!(ops.windows(2).all(|w| w[0].invoke <= w[1].invoke));
    let n = ops.len();
    let required = ops.iter().filter(|o| o.op.is_required()).count();
    let mut placed = Bits::new(n);
    let mut placed_required = 0;
    let mut state = initial;
    let mut seen: HashSet<(Vec<u64>, S)> = HashSet::new();
    // The operations placed so far, with the state before each.
    let mut stack: Vec<(usize, S)> = Vec::new();
    let mut cursor = 0;
    loop {
        if placed_required == required {
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
        for (i, op) in ops.iter().enumerate().skip(first) {
            if op.invoke > bound {
                break;
            }
            if !placed.get(i) {
                bound = bound.min(op.deadline);
            }
        }
        let mut next = None;
        for (i, op) in ops.iter().enumerate().skip(cursor.max(first)) {
            if op.invoke > bound {
                break;
            }
            if placed.get(i) {
                continue;
            }
            let Some(after) = op.op.step(state) else {
                continue;
            };
            placed.set(i, true);
            if seen.insert((placed.words.clone(), after)) {
                next = Some((i, after));
                break;
            }
            placed.set(i, false);
        }
        match next {
            Some((i, after)) => {
                stack.push((i, state));
                state = after;
                placed_required += usize::from(ops[i].op.is_required());
                cursor = 0;
            }
            None => {
                let Some((i, before)) = stack.pop() else {
                    return Verdict::NotLinearizable;
                };
                placed.set(i, false);
                state = before;
                placed_required -= usize::from(ops[i].op.is_required());
                cursor = i + 1;
            }
        }
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
