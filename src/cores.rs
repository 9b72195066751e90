//! The second core: a partner thread that takes one half of a split product, woken by
//! spinning rather than by the OS, so a split pays from a few microseconds of work up.
//!
//! Why not rayon: on this 2-core VM, waking a rayon worker takes ~13 µs (measured: two
//! halves of a 32×32×256 product took 23.7 µs through `rayon::join` against 10.6 µs on one
//! core), which made every split of relu2's and sgd's products slower than none. Here the
//! partner spins for [`SPIN`] after its last job (yielding its core to any other runnable
//! thread while it does), then parks until the next one. It checks for a job at every
//! `pause` and reads the clock (and yields) every 256: checking only after 64 pauses and a
//! `sched_yield` left a posted half waiting 1.2–1.3 µs on average before the partner took
//! it, ~0.1 µs so (sgd's split products, halves of ~2.5 µs).
//!
//! Results never depend on the partner: [`join`]'s second half runs on the partner only if
//! the partner takes it before the caller has finished the first half; otherwise the caller
//! takes it back and runs it itself. Either way each half is the same computation, so the
//! bits are the same, and a busy or descheduled partner costs at most the time it already
//! spent on a half it took.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicU64, Ordering};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// How long the partner keeps spinning after its last job before it parks: longer than the
/// gaps between the products of one training step (relu2's ~0.1 ms, wide's few ms).
const SPIN: Duration = Duration::from_millis(20);

/// The slot's states.
const EMPTY: u8 = 0;
const WRITING: u8 = 1;
const POSTED: u8 = 2;
const TAKEN: u8 = 3;
const DONE: u8 = 4;

/// A job: the address of a `&(dyn Fn() + Sync)` on the caller's stack. The caller does not
/// return from [`join`] until the slot is back to `EMPTY`, so the address stays valid while
/// the partner can read it.
type JobRef<'a> = &'a (dyn Fn() + Sync);

struct Partner {
    /// Whether splitting pays here lately ([`Judge`]), and until when halves are not
    /// offered (ns after `epoch`).
    judge: std::sync::Mutex<Judge>,
    off_until: AtomicU64,
    epoch: Instant,
    state: AtomicU8,
    job: AtomicPtr<()>,
    panicked: AtomicBool,
    parked: AtomicBool,
    thread: Thread,
}

fn partner() -> Option<&'static Partner> {
    static PARTNER: OnceLock<Option<&'static Partner>> = OnceLock::new();
    *PARTNER.get_or_init(|| {
        if thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
            return None;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = thread::Builder::new()
            .name("traj-partner".into())
            .spawn(move || {
                let me: &'static Partner = Box::leak(Box::new(Partner {
                    judge: std::sync::Mutex::new(Judge::default()),
                    off_until: AtomicU64::new(0),
                    epoch: Instant::now(),
                    state: AtomicU8::new(EMPTY),
                    job: AtomicPtr::new(std::ptr::null_mut()),
                    panicked: AtomicBool::new(false),
                    parked: AtomicBool::new(false),
                    thread: thread::current(),
                }));
                let _ = tx.send(me);
                me.serve();
            });
        spawned.ok().and_then(|_| rx.recv().ok())
    })
}

/// Whether handing halves to the partner pays: after each half the partner took, the
/// time it saved, `own - waited` (both halves on the caller would have taken `2 own`; split
/// they took `own + waited`), added to a balance that forgets a 64th of itself a half.
/// When the balance falls below zero, the partner has cost more than it saved over the
/// last few dozen halves (its core taken by another process: every half waits for the
/// other's time slice), and halves are not offered for 10 ms, doubling up to 0.64 s each
/// time the balance falls below zero again within 64 halves of the last time. A partner
/// that is now and then slowed or interrupted (this VM's second core changes speed
/// within seconds) still saves time on the balance, and keeps its halves: the previous
/// rule, 10 ms doubling with each slow half within 1,000 halves of the last, kept the
/// partner off for most of a run on such a host (tanh: ~5,700 of ~8,000 halves run on
/// one core).
#[derive(Default)]
struct Judge {
    /// Saved time (ns), forgetting a 64th of itself a half.
    balance: f64,
    halves: u64,
    /// Back-offs in a row (each within 64 halves of the last), and the half of the last.
    strikes: u32,
    last_strike: u64,
}

impl Judge {
    /// After a half the partner took: how long not to offer halves, if at all.
    fn after_half(&mut self, own: Duration, waited: Duration) -> Option<Duration> {
        self.halves += 1;
        let saved = own.as_secs_f64() - waited.as_secs_f64();
        self.balance = self.balance * (63.0 / 64.0) + saved * 1e9;
        if self.balance >= 0.0 {
            return None;
        }
        self.balance = 0.0;
        self.strikes = if self.halves - self.last_strike <= 64 {
            (self.strikes + 1).min(7)
        } else {
            1
        };
        self.last_strike = self.halves;
        Some(Duration::from_millis(10 << (self.strikes - 1)))
    }
}

impl Partner {
    /// Whether halves are not offered now (the other core was found busy).
    fn backing_off(&self) -> bool {
        (self.epoch.elapsed().as_nanos() as u64) < self.off_until.load(Ordering::Relaxed)
    }

    /// After a half the partner took ([`Judge`]).
    fn judge(&self, own: Duration, waited: Duration) {
        let off = match self.judge.lock() {
            Ok(mut judge) => judge.after_half(own, waited),
            Err(_) => None,
        };
        if let Some(off) = off {
            let until = (self.epoch.elapsed() + off).as_nanos() as u64;
            self.off_until.store(until, Ordering::Relaxed);
        }
    }

    /// The partner's loop: take posted jobs; spin for [`SPIN`] after the last, then park.
    fn serve(&self) {
        let mut idle_since = Instant::now();
        let mut spins = 0u32;
        loop {
            if self.state.load(Ordering::Acquire) == POSTED
                && self
                    .state
                    .compare_exchange(POSTED, TAKEN, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                // SAFETY: the poster wrote a valid `JobRef` address before publishing
                // POSTED, and keeps it alive until it sees DONE (it cannot take back a
                // TAKEN job).
                let job = unsafe { *(self.job.load(Ordering::Relaxed) as *const JobRef) };
                let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_ok();
                self.panicked.store(!ok, Ordering::Relaxed);
                self.state.store(DONE, Ordering::Release);
                idle_since = Instant::now();
                continue;
            }
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(256) {
                std::hint::spin_loop();
                continue;
            }
            if idle_since.elapsed() < SPIN {
                thread::yield_now();
                continue;
            }
            self.parked.store(true, Ordering::SeqCst);
            // A job posted before `parked` was set is seen here; one posted after it
            // unparks this thread (an unpark before the park makes the park return).
            if self.state.load(Ordering::SeqCst) != POSTED {
                thread::park();
            }
            self.parked.store(false, Ordering::SeqCst);
            idle_since = Instant::now();
        }
    }
}

/// Runs `first` here and `second` on the partner thread when the partner takes it before
/// `first` is done (else here too); both have finished when this returns.
pub fn join(first: impl FnOnce(), second: impl FnOnce() + Send) {
    // No second core, the other core found busy elsewhere, or another thread's job in
    // the slot: both halves here.
    let Some(p) = partner().filter(|p| {
        !p.backing_off()
            && p.state
                .compare_exchange(EMPTY, WRITING, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
    }) else {
        first();
        return second();
    };
    let second = std::sync::Mutex::new(Some(second));
    let run_second = || {
        if let Some(f) = second.lock().map(|mut s| s.take()).ok().flatten() {
            f()
        }
    };
    let job: JobRef = &run_second;
    p.job
        .store(&job as *const JobRef as *mut (), Ordering::Relaxed);
    p.state.store(POSTED, Ordering::SeqCst);
    if p.parked.load(Ordering::SeqCst) {
        p.thread.unpark();
    }
    let posted = Instant::now();
    first();
    let finished = Instant::now();
    if p.state
        .compare_exchange(POSTED, WRITING, Ordering::Acquire, Ordering::Acquire)
        .is_ok()
    {
        // Not taken: run it here.
        p.state.store(EMPTY, Ordering::Release);
        return run_second();
    }
    let mut spins = 0u32;
    while p.state.load(Ordering::Acquire) != DONE {
        spins += 1;
        if spins.is_multiple_of(256) {
            thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
    let panicked = p.panicked.load(Ordering::Relaxed);
    p.state.store(EMPTY, Ordering::Release);
    p.judge(finished - posted, finished.elapsed());
    if panicked {
        panic!("the partner thread's half of a split computation panicked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// The back-offs a judge gives over halves of `own` that waited `waited(i)`.
    fn back_offs(n: u64, own: Duration, waited: impl Fn(u64) -> Duration) -> Vec<(u64, u64)> {
        let mut judge = Judge::default();
        (0..n)
            .filter_map(|i| {
                judge
                    .after_half(own, waited(i))
                    .map(|off| (i, off.as_millis() as u64))
            })
            .collect()
    }

    #[test]
    fn a_partner_now_and_then_slowed_keeps_its_halves() {
        let us = Duration::from_micros;
        // A 40 µs half waited 5 µs, one in 50 waited 150 µs (this VM's second core).
        let offs = back_offs(
            10_000,
            us(40),
            |i| if i % 50 == 7 { us(150) } else { us(5) },
        );
        assert_eq!(offs, []);
        // Even two slow halves in a row, now and then (after a few that saved time: the
        // first half of a run is judged like any other).
        let offs = back_offs(
            10_000,
            us(40),
            |i| if i % 200 >= 198 { us(200) } else { us(5) },
        );
        assert_eq!(offs, []);
    }

    #[test]
    fn a_partner_that_costs_more_than_it_saves_is_not_offered_halves() {
        let us = Duration::from_micros;
        // Every half waits longer than the caller's own: off from the first.
        let offs = back_offs(5, us(40), |_| us(60));
        assert_eq!(offs, [(0, 10), (1, 20), (2, 40), (3, 80), (4, 160)]);
        // Its core taken by another process: one half in 20 waits a 3 ms time slice.
        let offs = back_offs(
            400,
            us(40),
            |i| if i % 20 == 19 { us(3_000) } else { us(5) },
        );
        assert_eq!(offs.len(), 20);
        assert_eq!(offs[0], (19, 10));
        // Each within 64 halves of the last: doubled, up to 0.64 s.
        let ms: Vec<u64> = offs.iter().map(|o| o.1).collect();
        assert_eq!(ms[..8], [10, 20, 40, 80, 160, 320, 640, 640]);
        // Back-offs far apart start again from 10 ms.
        let offs = back_offs(1_000, us(40), |i| {
            if i % 300 == 299 { us(3_000) } else { us(5) }
        });
        assert_eq!(offs, [(299, 10), (599, 10), (899, 10)]);
    }

    #[test]
    fn both_halves_run_exactly_once_and_the_partner_takes_some() {
        let on_partner = AtomicUsize::new(0);
        for round in 0..400u64 {
            let mut out = [0u64; 2];
            let (a, b) = out.split_at_mut(1);
            let started = AtomicBool::new(false);
            join(
                || {
                    // Give the partner up to 10 ms to take the second half.
                    let t = Instant::now();
                    while !started.load(Ordering::Acquire) && t.elapsed().as_millis() < 10 {
                        std::hint::spin_loop();
                    }
                    a[0] += round;
                },
                || {
                    started.store(true, Ordering::Release);
                    if thread::current().name() == Some("traj-partner") {
                        on_partner.fetch_add(1, Ordering::Relaxed);
                    }
                    b[0] += round + 1;
                },
            );
            assert_eq!(out, [round, round + 1]);
            if round % 100 == 0 {
                // Let the partner park now and then, so its wake-up path runs too.
                thread::sleep(SPIN + Duration::from_millis(5));
            }
        }
        assert!(on_partner.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn concurrent_callers_share_one_partner() {
        let total = AtomicUsize::new(0);
        thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        join(
                            || {
                                total.fetch_add(1, Ordering::Relaxed);
                            },
                            || {
                                total.fetch_add(10, Ordering::Relaxed);
                            },
                        );
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 3 * 1000 * 11);
    }
}
