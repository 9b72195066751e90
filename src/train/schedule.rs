//! When each `record` clause is due (LANGUAGE.md 3.10), answered per step in O(log count):
//! never a list of planned rows, so `steps 10^15` or `record log 4294967296` cost nothing.

use std::cell::Cell;

use crate::plan::RecordClause;

/// The record steps of every clause of a run of `steps` steps.
pub struct RecordSchedule {
    clauses: Vec<Due>,
    steps: u64,
    /// `(from, next)`: the first step ≥ `from` at which some clause is due (`None`: none
    /// is, up to `steps`). Every step of `from..next` is not due, so the answer holds for
    /// any later `from` up to `next`.
    cached: Cell<Option<(u64, Option<u64>)>>,
}

#[derive(Clone, Copy)]
enum Due {
    /// Steps 0, k, 2k, ...
    Every(u64),
    /// Steps {round(S^(i/(n−1))) : i < n} ∪ {0}, S the run's steps.
    Log(u64),
    Never,
}

impl RecordSchedule {
    pub fn new(clauses: &[RecordClause], steps: u64) -> RecordSchedule {
        let clauses = clauses
            .iter()
            .map(|c| match (c.every, c.log_count) {
                (Some(k), _) => Due::Every(k.max(1)),
                (_, Some(n)) => Due::Log(n.max(1)),
                _ => Due::Never,
            })
            .collect();
        RecordSchedule {
            clauses,
            steps,
            cached: Cell::new(None),
        }
    }

    /// Whether `clause` records at step `k`.
    pub fn clause_due(&self, clause: usize, k: u64) -> bool {
        self.next_of(self.clauses[clause], k) == Some(k)
    }

    /// Whether some clause records at step `k`.
    pub fn due(&self, k: u64) -> bool {
        self.next_due(k) == Some(k)
    }

    /// The first step ≥ `from` (and ≤ the run's steps) at which some clause is due.
    pub fn next_due(&self, from: u64) -> Option<u64> {
        if let Some((f, next)) = self.cached.get()
            && f <= from
            && next.is_none_or(|n| from <= n)
        {
            return next;
        }
        let next = self
            .clauses
            .iter()
            .filter_map(|c| self.next_of(*c, from))
            .min();
        self.cached.set(Some((from, next)));
        next
    }

    /// The first step ≥ `from`, up to the run's steps, at which a clause is due.
    fn next_of(&self, due: Due, from: u64) -> Option<u64> {
        let next = match due {
            Due::Every(k) => from.div_ceil(k).checked_mul(k)?,
            Due::Log(_) if from == 0 => 0,
            Due::Log(n) => {
                // The smallest i whose step reaches `from` (steps grow with i).
                let (mut lo, mut hi) = (0, n - 1);
                if log_step(self.steps, n, hi) < from {
                    return None;
                }
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    if log_step(self.steps, n, mid) >= from {
                        hi = mid;
                    } else {
                        lo = mid + 1;
                    }
                }
                log_step(self.steps, n, lo)
            }
            Due::Never => return None,
        };
        (next <= self.steps).then_some(next)
    }
}

/// Step i of `record log n` over `steps` steps: round(steps^(i/(n−1))), or `steps` for n = 1.
fn log_step(steps: u64, n: u64, i: u64) -> u64 {
    let e = if n > 1 {
        i as f64 / (n - 1) as f64
    } else {
        1.0
    };
    (steps as f64).powf(e).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clause(every: Option<u64>, log_count: Option<u64>) -> RecordClause {
        RecordClause { every, log_count }
    }

    /// The steps of LANGUAGE.md 3.10 listed one by one, as the rule states them.
    fn listed(c: &RecordClause, steps: u64) -> Vec<u64> {
        let mut s = std::collections::BTreeSet::from([0]);
        match (c.every, c.log_count) {
            (Some(k), _) => s.extend((0..=steps).step_by(k.max(1) as usize)),
            (_, Some(n)) => s.extend((0..n.max(1)).map(|i| log_step(steps, n.max(1), i))),
            _ => return vec![],
        }
        s.into_iter().filter(|k| *k <= steps).collect()
    }

    #[test]
    fn steps_match_the_rule_listed_one_by_one() {
        for steps in [0, 1, 2, 5, 7, 100, 1000, 12345] {
            for c in [
                clause(Some(1), None),
                clause(Some(3), None),
                clause(Some(100_000), None),
                clause(None, Some(1)),
                clause(None, Some(2)),
                clause(None, Some(5)),
                clause(None, Some(200)),
                clause(None, Some(5000)),
                clause(None, None),
            ] {
                let s = RecordSchedule::new(std::slice::from_ref(&c), steps);
                let by_schedule: Vec<u64> = (0..=steps).filter(|k| s.due(*k)).collect();
                let want = listed(&c, steps);
                assert_eq!(by_schedule, want, "{c:?} over {steps} steps");
                // next_due walks the same steps, whatever step it is asked from.
                let mut walked = vec![];
                let mut k = 0;
                while let Some(n) = s.next_due(k) {
                    walked.push(n);
                    k = n + 1;
                }
                assert_eq!(walked, want, "{c:?} over {steps} steps, walked");
                assert!((0..=steps).all(|k| s.clause_due(0, k) == want.contains(&k)));
            }
        }
    }

    #[test]
    fn huge_counts_and_steps_take_no_time() {
        // `record log 4294967296` over 5 steps: each of steps 0..=5.
        let s = RecordSchedule::new(&[clause(None, Some(1 << 32))], 5);
        assert_eq!((0..=6).filter(|k| s.due(*k)).count(), 6);
        let s = RecordSchedule::new(&[clause(None, Some(u64::MAX))], u64::MAX);
        assert_eq!(s.next_due(1), Some(1));
        assert!(s.next_due(u64::MAX - 10).is_some());
        let s = RecordSchedule::new(
            &[clause(Some(1), None), clause(None, Some(200))],
            1e15 as u64,
        );
        assert_eq!(s.next_due(123_456_789_012), Some(123_456_789_012));
        let s = RecordSchedule::new(&[clause(Some(u64::MAX), None)], u64::MAX);
        assert_eq!(s.next_due(1), Some(u64::MAX));
        assert_eq!(s.next_due(0), Some(0));
    }
}
