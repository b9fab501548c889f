//! The search for a linearization of a history under a sequential model (one register's, or a
//! whole journey's): Wing and Gong's, with Lowe's memoisation of every (linearized set, state)
//! already explored, as Knossos and Porcupine do.
//!
//! An operation may be linearized next when no other operation still to be linearized had
//! completed before it was invoked. Unknown writes may be linearized at any point after their
//! invocation, or never: the search succeeds once every operation with a definite answer is
//! placed. The search is exponential in the worst case (linearizability is NP-complete), so it
//! runs on a budget of steps and answers [`Verdict::Undecided`] when it is spent.

use std::collections::HashMap;
use std::hash::Hash;

use serde::Serialize;

use super::model::{Interval, RegisterOp, Timed, WriteOutcome};
use flyrtech_core::status::Status;

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

/// What the search needs of a sequential model: how an operation steps a state, and which
/// operations may also never take effect (unknown writes), grouped in classes whose members are
/// the same write invoked at different times.
pub trait Model {
    /// The model's state (a register's status, a journey's snapshot).
    type State: Clone + Eq + Hash;
    /// One operation with what it was answered.
    type Op: Copy;
    /// The state after `op` at its linearization point, or `None` when its answer cannot have
    /// come from `state`.
    fn step(&self, op: &Self::Op, state: &Self::State) -> Option<Self::State>;
    /// For an operation that may never take effect (an unknown write), its class: every
    /// operation of a class is the same write. `None` for one that must be linearized.
    fn unknown_class(&self, op: &Self::Op) -> Option<usize>;
    /// How many classes [`Model::unknown_class`] answers from.
    fn classes(&self) -> usize;
}

/// One register of statuses `S`: [`RegisterOp`]s, unknown writes classed by their target status.
#[derive(Debug, Clone, Copy)]
pub struct RegisterModel<S>(std::marker::PhantomData<S>);

impl<S> Default for RegisterModel<S> {
    fn default() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<S: Status + Hash> Model for RegisterModel<S> {
    type State = S;
    type Op = RegisterOp<S>;

    fn step(&self, op: &RegisterOp<S>, state: &S) -> Option<S> {
        op.step(*state)
    }

    fn unknown_class(&self, op: &RegisterOp<S>) -> Option<usize> {
        match op {
            RegisterOp::Write {
                to,
                outcome: WriteOutcome::Unknown,
            } => S::ALL.iter().position(|s| s == to),
            _ => None,
        }
    }

    fn classes(&self) -> usize {
        S::ALL.len()
    }
}

/// Searches for a linearization of one register's `ops` (sorted by invocation) from `initial`,
/// spending at most `budget` steps (what is left is written back): [`search`] with the
/// [`RegisterModel`].
pub fn linearize<S: Status + Hash>(ops: &[Timed<S>], initial: S, budget: &mut u64) -> Verdict {
    search(&RegisterModel::<S>::default(), ops, initial, budget)
}

/// Searches for a linearization of `ops` (sorted by invocation) from `initial` under `model`,
/// spending at most `budget` steps (what is left is written back).
///
/// Unknown writes are not placed one by one: two unknown writes of one class differ only in
/// when they were invoked, so of those invoked by a point the earliest is always the one to use
/// (whatever a later one could do, the earlier one can too). The search therefore counts, per
/// class, how many unknown writes it has used, and only uses one that changes the state; an
/// unknown write that would change nothing is the same as one that never happened. Without this,
/// every unknown write doubles the configurations to explore (a primary restarting under load
/// leaves hundreds).
pub fn search<M: Model>(
    model: &M,
    ops: &[Interval<M::Op>],
    initial: M::State,
    budget: &mut u64,
) -> Verdict {
    debug_assert!(ops.windows(2).all(|w| w[0].invoke <= w[1].invoke));
    let classes = model.classes();
    let required: Vec<&Interval<M::Op>> = ops
        .iter()
        .filter(|o| model.unknown_class(&o.op).is_none())
        .collect();
    // Per class, the invocation times of its unknown writes, in order, and the write itself.
    let mut unknown: Vec<Vec<u64>> = vec![Vec::new(); classes];
    let mut unknown_op: Vec<Option<M::Op>> = vec![None; classes];
    for o in ops {
        if let Some(class) = model.unknown_class(&o.op) {
            unknown[class].push(o.invoke);
            unknown_op[class].get_or_insert(o.op);
        }
    }
    let n = required.len();
    let mut placed = Bits::new(n);
    let mut placed_count = 0;
    let mut used = vec![0usize; classes];
    let mut state = initial;
    // Explored configurations: per (placed set, state), the unknown writes used on the way. A
    // configuration that has used at least as many of each as one already explored can do
    // nothing that one could not (it has fewer left): it is skipped.
    let mut seen: Explored<M::State> = HashMap::new();
    // What was placed, with the state before it and whether it was forced (below): a required
    // operation, or an unknown write of the class of that index (`n + index`).
    let mut stack: Vec<(usize, M::State, bool)> = Vec::new();
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
        // The required operations that may go next are among those invoked by the bound (they
        // are sorted by invocation); after them, the unknown writes' classes.
        let limit = required.partition_point(|op| op.invoke <= bound);
        // An operation that may go next and leaves the state as it is (a read, a no-op, a
        // refusal) goes now, with no alternative tried: placed later it would see the same or a
        // later state, and every operation that must precede it is already placed, so any
        // linearization with it later has one with it here. Only changes branch: without this,
        // the reads of one version alone could be placed in every order.
        if cursor == 0 {
            let forced = (first..limit).find(|&choice| {
                !placed.get(choice)
                    && model.step(&required[choice].op, &state).as_ref() == Some(&state)
            });
            if let Some(choice) = forced {
                apply(choice, n, &mut placed, &mut used, true);
                let explored = seen
                    .entry((placed.words.clone(), state.clone()))
                    .or_default();
                if explored
                    .iter()
                    .any(|earlier| earlier.iter().zip(&used).all(|(e, u)| e <= u))
                {
                    // Explored before from here: nothing new below.
                    apply(choice, n, &mut placed, &mut used, false);
                } else {
                    explored.retain(|earlier| !earlier.iter().zip(&used).all(|(e, u)| u <= e));
                    explored.push(used.clone());
                    stack.push((choice, state.clone(), true));
                    placed_count += 1;
                    continue;
                }
                // Back up past this level.
                cursor = usize::MAX;
            }
        }
        let from = cursor.max(first);
        let mut next = None;
        for choice in (from.min(limit)..limit).chain(from.max(n)..n + classes) {
            let after = if let Some(op) = required.get(choice) {
                if placed.get(choice) {
                    continue;
                }
                model.step(&op.op, &state)
            } else {
                let class = choice - n;
                let available = unknown[class].partition_point(|t| *t <= bound);
                if used[class] >= available {
                    continue;
                }
                unknown_op[class]
                    .and_then(|write| model.step(&write, &state))
                    .filter(|after| *after != state)
            };
            let Some(after) = after else {
                continue;
            };
            apply(choice, n, &mut placed, &mut used, true);
            let explored = seen
                .entry((placed.words.clone(), after.clone()))
                .or_default();
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
                stack.push((choice, std::mem::replace(&mut state, after), false));
                placed_count += usize::from(choice < n);
                cursor = 0;
            }
            None => loop {
                // Back to the last level that chose among alternatives; a forced level has none.
                let Some((choice, before, forced)) = stack.pop() else {
                    return Verdict::NotLinearizable;
                };
                apply(choice, n, &mut placed, &mut used, false);
                state = before;
                placed_count -= usize::from(choice < n);
                if !forced {
                    cursor = choice + 1;
                    break;
                }
            },
        }
    }
}

/// Per (placed set, state) explored, the unknown writes used on the way there.
type Explored<S> = HashMap<(Vec<u64>, S), Vec<Vec<usize>>>;

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
