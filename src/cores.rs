//! The second core: a partner thread that takes one half of a split product, woken by
//! spinning rather than by the OS, so a split pays from a few microseconds of work up.
//!
//! Why not rayon: on this 2-core VM, waking a rayon worker takes ~13 µs (measured: two
//! halves of a 32×32×256 product took 23.7 µs through `rayon::join` against 10.6 µs on one
//! core), which made every split of relu2's and sgd's products slower than none. Here the
//! partner spins for [`SPIN`] after its last job (yielding its core to any other runnable
//! thread while it does), then parks until the next one.
//!
//! Results never depend on the partner: [`join`]'s second half runs on the partner only if
//! the partner takes it before the caller has finished the first half; otherwise the caller
//! takes it back and runs it itself. Either way each half is the same computation, so the
//! bits are the same, and a busy or descheduled partner costs at most the time it already
//! spent on a half it took.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, Ordering};
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
    /// Halves the partner has taken so far, slow halves in a row (see `judge`), the
    /// number of the last one, and until when halves are not offered (ns after `epoch`).
    taken: AtomicU64,
    strikes: AtomicU32,
    last_strike: AtomicU64,
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
                    taken: AtomicU64::new(0),
                    strikes: AtomicU32::new(0),
                    last_strike: AtomicU64::new(0),
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

impl Partner {
    /// Whether halves are not offered now (the other core was found busy).
    fn backing_off(&self) -> bool {
        (self.epoch.elapsed().as_nanos() as u64) < self.off_until.load(Ordering::Relaxed)
    }

    /// After a half the partner took: if the caller then waited longer than its own half
    /// took, the partner ran at under half speed (its core was taken away mid-half), and
    /// the caller stops offering halves for 10 ms, doubling up to 0.64 s with each such
    /// half within 1,000 halves taken of the last. On a machine whose other core is busy,
    /// splitting would otherwise cost more than it saves (relu2 with a busy loop on the
    /// other core: 478–498 µs a step against 438–443 on one core; 437–442 with this rule),
    /// while a quiet one is only rarely interrupted (about once a second here).
    fn judge(&self, own: Duration, waited: Duration) {
        let half = self.taken.fetch_add(1, Ordering::Relaxed);
        if waited <= own {
            return;
        }
        let last = self.last_strike.swap(half, Ordering::Relaxed);
        let strikes = if half.saturating_sub(last) < 1000 {
            (self.strikes.load(Ordering::Relaxed) + 1).min(7)
        } else {
            1
        };
        self.strikes.store(strikes, Ordering::Relaxed);
        let off = Duration::from_millis(10 << (strikes - 1));
        let until = (self.epoch.elapsed() + off).as_nanos() as u64;
        self.off_until.store(until, Ordering::Relaxed);
    }

    /// The partner's loop: take posted jobs; spin for [`SPIN`] after the last, then park.
    fn serve(&self) {
        let mut idle_since = Instant::now();
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
            if idle_since.elapsed() < SPIN {
                for _ in 0..64 {
                    std::hint::spin_loop();
                }
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
