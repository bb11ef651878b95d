//! The versioned read view: readers see whole batches only and never wait
//! for a batch being applied.
//!
//! This is the left-right scheme (as in Jon Gjengset's `left-right` and
//! `evmap`): two copies of the state. The one writer (the group committer)
//! applies a batch to the copy readers are *not* using, publishes it with
//! one atomic store, then applies the same batch to the other copy once the
//! readers still in it have left. Readers take a `try_read` on the
//! published copy; if that fails, a writer holds or waits for it, which only
//! happens after it stopped being the published copy, so the reader takes
//! the other copy (the newest one) instead. A reader therefore never blocks
//! on an apply; the writer pays by bringing each copy up to date in turn,
//! and the state takes twice the memory.
//!
//! The second copy does not always apply the batch again: a [`Change`]
//! knows how to bring it up from the copy it was just applied to. Logged
//! batches of signals only (`state::mirror`) copy the score-table slots the
//! first apply wrote, at 9-13M signals/s against 3-4.5M for the apply
//! itself (`state::apply_measure`, 1,000 uniform signals per batch over
//! 1M x 3); any other batch applies twice.
//!
//! The second apply is off the writer's path for large batches (at least
//! [`CATCH_UP_MIN_RECORDS`] records): a catch-up thread brings the replaced
//! copy up to date while the writer is acknowledged and goes on to the next
//! batch's validation, encoding and sync; the next apply waits for it, as
//! that copy is the one it writes. Writes are acknowledged when they were
//! before (after the sync and the first apply) and readers see the same
//! copies; only the moment the replaced copy catches up moves. Single
//! writes apply both copies inline: handing one over (a futex wake) costs
//! more than applying it. Measured on W1's shape (`examples/ingest_probe
//! sync 3000`, alternating binaries, a second process compiling):
//! 1.09-1.24M -> 1.32-1.70M signals/s.
//!
//! The apply and the catch-up of a stream of batches are serial all the
//! same: a copy is written only while unpublished, so batch N's catch-up
//! (copy X) must end before batch N+1's apply (also X) starts, and the
//! latter before N+1's catch-up (copy Y). Large batches therefore go at
//! most one per apply plus catch-up, whatever the cores (before the
//! mirror, one per two applies: about 2.5M signals/s here); the catch-up
//! thread only takes the rest of the writer's work (validation, encoding,
//! sync) off that chain. Both
//! sides spin briefly ([`SPIN`]) before they sleep, since a sleeping
//! thread's wake-up, not the work, was a fifth of that chain.
//!
//! A read holds its copy only for its closure. `TidalDb::read_view` runs a
//! caller's closure of several reads the same way: the writer's second
//! apply (and so the next batch) waits while such a closure still holds
//! the copy it just replaced, which is why that API is a closure and its
//! docs ask for short ones.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock, RwLockReadGuard, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::state::State;
use crate::state::mirror::Batches;

/// A batch's change, made to each state copy once: applied to the copy
/// about to be published, then brought to the other.
pub(crate) trait Change: Send + Sync {
    /// Applies the change to the copy about to be published.
    fn apply(&self, state: &mut State);

    /// Brings the other copy, equal to `published` before [`Change::apply`]
    /// ran on it, up to `published`; by default applies the change again.
    fn catch_up(&self, state: &mut State, published: &State) {
        let _ = published;
        self.apply(state);
    }
}

/// A change that applies the same way to both copies.
impl<F: Fn(&mut State) + Send + Sync> Change for F {
    fn apply(&self, state: &mut State) {
        self(state)
    }
}

/// Logged batches: the second copy mirrors the first (`state::mirror`).
impl Change for Batches {
    fn apply(&self, state: &mut State) {
        Batches::apply(self, state)
    }

    fn catch_up(&self, state: &mut State, published: &State) {
        self.mirror(state, published)
    }
}

/// A change as the view passes it around.
pub(crate) type SharedChange = Arc<dyn Change>;

/// Batches of at least this many records bring the replaced copy up to
/// date on the catch-up thread; smaller ones inline, where handing over
/// would cost more (a futex wake) than the apply itself.
pub(crate) const CATCH_UP_MIN_RECORDS: usize = 256;

/// Two copies of the state and the index of the published one.
#[derive(Debug)]
pub(crate) struct View {
    copies: Arc<[RwLock<State>; 2]>,
    published: AtomicUsize,
    catch_up: CatchUp,
}

/// The thread that applies a batch to the replaced copy while the writer
/// goes on: to the next batch's validation, encoding and sync, which then
/// overlap that apply instead of waiting for it. At most one job is in
/// flight; the next apply waits for it, as that copy is the one it writes.
#[derive(Debug)]
struct CatchUp {
    /// None when the thread could not be started.
    jobs: Option<Sender<(Job, SharedChange)>>,
    /// Jobs sent and not finished: what the writer spins on, then sleeps
    /// on `panicked`'s condvar for (the thread lowers it under that lock).
    busy: Arc<AtomicUsize>,
    /// Whether a job panicked.
    panicked: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl CatchUp {
    fn new(copies: &Arc<[RwLock<State>; 2]>) -> CatchUp {
        let (tx, rx) = channel::<(Job, SharedChange)>();
        let panicked = Arc::new((Mutex::new(false), Condvar::new()));
        let busy = Arc::new(AtomicUsize::new(0));
        let (copies, done, left) = (Arc::clone(copies), Arc::clone(&panicked), Arc::clone(&busy));
        let spawned = std::thread::Builder::new()
            .name("tidal-catch-up".into())
            .spawn(move || {
                while let Some((job, change)) = spin_recv(&rx) {
                    // A panicking apply is a bug: the thread lives on and
                    // the writer's next apply panics in its place, as it
                    // would have if it had run this apply inline.
                    let ran =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match job {
                            Job::CatchUp(idx) => catch_up(&copies, idx, &*change),
                            Job::Apply(idx) => change.apply(
                                &mut copies[idx].write().unwrap_or_else(PoisonError::into_inner),
                            ),
                        }));
                    let (flag, cv) = &*done;
                    let mut panicked = flag.lock().unwrap_or_else(PoisonError::into_inner);
                    *panicked |= ran.is_err();
                    left.fetch_sub(1, Ordering::Release);
                    cv.notify_all();
                }
            });
        match spawned {
            Ok(handle) => CatchUp {
                jobs: Some(tx),
                busy,
                panicked,
                thread: Some(handle),
            },
            // No thread (the process is out of them): every apply inline.
            Err(e) => {
                tracing::warn!(error = %e, "no catch-up thread; applies run inline");
                CatchUp {
                    jobs: None,
                    busy,
                    panicked,
                    thread: None,
                }
            }
        }
    }

    /// Waits until no job is in flight (spinning first, see [`SPIN`]);
    /// panics if one panicked.
    fn wait(&self) {
        let idle = || self.busy.load(Ordering::Acquire) == 0;
        spin_until(idle);
        let (flag, cv) = &*self.panicked;
        let mut panicked = flag.lock().unwrap_or_else(PoisonError::into_inner);
        while !idle() {
            panicked = cv.wait(panicked).unwrap_or_else(PoisonError::into_inner);
        }
        assert!(
            !*panicked,
            "applying a batch to the replaced state copy panicked"
        );
    }

    /// Hands `job` with `change` to the thread; gives the change back when
    /// there is no thread.
    fn send(&self, job: Job, change: SharedChange) -> Option<SharedChange> {
        let Some(tx) = &self.jobs else {
            return Some(change);
        };
        self.busy.fetch_add(1, Ordering::Relaxed);
        match tx.send((job, change)) {
            Ok(()) => None,
            Err(back) => {
                self.busy.fetch_sub(1, Ordering::Relaxed);
                Some(back.0.1)
            }
        }
    }
}

impl Drop for CatchUp {
    fn drop(&mut self) {
        // Closing the channel ends the thread once its last job is done.
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the catch-up thread does with a change, to copy `idx`.
#[derive(Clone, Copy, Debug)]
enum Job {
    /// Brings the copy up to the other (published) one.
    CatchUp(usize),
    /// Applies the change to the copy, unpublished (`View::apply_early`).
    Apply(usize),
}

/// Brings copy `idx` up to the other (published) copy with `change`.
/// Only the writer's side calls this, after `change` was applied to the
/// other copy and before the next apply, so nothing holds or waits for the
/// published copy's write lock meanwhile.
fn catch_up(copies: &[RwLock<State>; 2], idx: usize, change: &dyn Change) {
    let published = copies[1 - idx]
        .read()
        .unwrap_or_else(PoisonError::into_inner);
    change.catch_up(
        &mut copies[idx].write().unwrap_or_else(PoisonError::into_inner),
        &published,
    );
}

/// How long each side of the hand-off spins before it sleeps: the writer
/// waiting for a catch-up to finish, and the catch-up thread waiting for the
/// next job. About one large batch's apply (1,000 signals: ~200 us here), so
/// that under steady ingest neither side sleeps: waking a sleeping thread
/// cost 50-100 us per hand-off on these VMs (`examples/ingest_probe periodic
/// 3000`: the writer waited 221-236 us per batch for a catch-up that took
/// 262-271 us, after a 90-120 us head start). Spinning is bounded, so an
/// idle database costs no CPU.
const SPIN: Duration = Duration::from_micros(200);

/// Spins until `done` returns true (then true) or [`SPIN`] has passed
/// (then false).
fn spin_until(mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            if done() {
                return true;
            }
            std::hint::spin_loop();
        }
        if start.elapsed() >= SPIN {
            return false;
        }
    }
}

/// The next job, spinning for up to [`SPIN`] before sleeping; None once the
/// channel is closed and empty.
fn spin_recv<T>(rx: &Receiver<T>) -> Option<T> {
    let mut got = Err(TryRecvError::Empty);
    if spin_until(|| {
        got = rx.try_recv();
        !matches!(got, Err(TryRecvError::Empty))
    }) {
        got.ok()
    } else {
        rx.recv().ok()
    }
}

impl View {
    /// A view publishing `state`.
    pub(crate) fn new(state: State) -> View {
        let other = state.clone_on_threads();
        let copies = Arc::new([RwLock::new(state), RwLock::new(other)]);
        View {
            catch_up: CatchUp::new(&copies),
            copies,
            published: AtomicUsize::new(0),
        }
    }

    /// Runs `f` on the newest whole-batch state without waiting for an apply.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.read_guard())
    }

    /// The index of the published copy, for [`View::read_copy`].
    pub(crate) fn published(&self) -> usize {
        self.published.load(Ordering::Acquire)
    }

    /// Runs `f` on copy `idx` (0 or 1), waiting while the writer holds
    /// it. Only for a checkpoint, which reads one copy in several short
    /// steps (`state::score_slots`); never on a read path, which must not
    /// wait for an apply.
    pub(crate) fn read_copy<T>(&self, idx: usize, f: impl FnOnce(&State) -> T) -> T {
        f(&self.copies[idx & 1]
            .read()
            .unwrap_or_else(PoisonError::into_inner))
    }

    /// The read side of the newest whole-batch copy, as `read` picks it,
    /// for a crate-internal caller that holds several views at once (a
    /// sharded read view). Never handed to users: a guard could be held
    /// across an `.await` and stall the writer (see `db::read_view`).
    pub(crate) fn read_guard(&self) -> RwLockReadGuard<'_, State> {
        loop {
            let i = self.published.load(Ordering::Acquire);
            for idx in [i, 1 - i] {
                match self.copies[idx].try_read() {
                    Ok(guard) => return guard,
                    Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                    Err(TryLockError::WouldBlock) => {}
                }
            }
            // Both copies busy: the writer flipped twice while we looked.
            // Never waits on an apply, only retries.
            std::hint::spin_loop();
        }
    }

    /// Applies one batch of `records` records: to the unpublished copy,
    /// publishes it, calls `published` (acknowledging writers), then brings
    /// the other copy up to date, on the catch-up thread for a large batch
    /// (the next apply waits for it). Only the group committer calls this,
    /// one batch at a time.
    pub(crate) fn apply(&self, records: usize, change: SharedChange, published: impl FnOnce()) {
        self.catch_up.wait();
        let old = self.published.load(Ordering::Acquire);
        let new = 1 - old;
        change.apply(
            &mut self.copies[new]
                .write()
                .unwrap_or_else(PoisonError::into_inner),
        );
        self.publish(old, records, change, published);
    }

    /// Publishes the copy other than `old` (which holds `change`), calls
    /// `published`, then brings copy `old` up to date: on the catch-up
    /// thread for a large change, else inline.
    fn publish(&self, old: usize, records: usize, change: SharedChange, published: impl FnOnce()) {
        self.published.store(1 - old, Ordering::Release);
        published();
        let change = if records >= CATCH_UP_MIN_RECORDS {
            self.catch_up.send(Job::CatchUp(old), change)
        } else {
            Some(change)
        };
        if let Some(change) = change {
            catch_up(&self.copies, old, &*change);
        }
    }

    /// Starts applying `change` to the unpublished copy on the catch-up
    /// thread (after the catch-up in flight, which writes the same copy),
    /// while the writer encodes, writes and syncs the batch;
    /// [`View::publish_early`] publishes it once the sync returned,
    /// [`View::discard_early`] undoes it if the write or the sync failed.
    /// Readers never see the copy before it is published. False (nothing
    /// started) when there is no catch-up thread; the caller then syncs and
    /// calls [`View::apply`].
    pub(crate) fn apply_early(&self, change: &SharedChange) -> bool {
        let new = 1 - self.published.load(Ordering::Acquire);
        self.catch_up
            .send(Job::Apply(new), Arc::clone(change))
            .is_none()
    }

    /// Publishes the copy [`View::apply_early`] applied `change` to, once
    /// that apply is done, calls `published`, then brings the other copy
    /// up as [`View::apply`] does.
    pub(crate) fn publish_early(
        &self,
        records: usize,
        change: SharedChange,
        published: impl FnOnce(),
    ) {
        self.catch_up.wait();
        let old = self.published.load(Ordering::Acquire);
        self.publish(old, records, change, published);
    }

    /// Undoes [`View::apply_early`] (its batch's write or sync failed):
    /// once that apply is done, the unpublished copy becomes a clone of the
    /// published one again, as it was before. Slow (a whole copy) and only
    /// on a failed write or sync, after which the log refuses writes anyway.
    pub(crate) fn discard_early(&self) {
        self.catch_up.wait();
        let old = self.published.load(Ordering::Acquire);
        let published = self.copies[old]
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        *self.copies[1 - old]
            .write()
            .unwrap_or_else(PoisonError::into_inner) = published.clone();
    }

    /// Replaces the whole state (a divergence cut rebuilt it): the
    /// unpublished copy first, which is then published, then the other.
    /// Readers never see a mix. Only the group committer's holder calls this.
    pub(crate) fn replace(&self, state: State) {
        self.catch_up.wait();
        let old = self.published.load(Ordering::Acquire);
        let new = 1 - old;
        *self.copies[new]
            .write()
            .unwrap_or_else(PoisonError::into_inner) = state.clone();
        self.published.store(new, Ordering::Release);
        *self.copies[old]
            .write()
            .unwrap_or_else(PoisonError::into_inner) = state;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateParams;
    use crate::types::{EntityId, Timestamp};

    fn state() -> State {
        State::new(StateParams {
            half_lives_ms: vec![3_600_000],
            landmark_half_lives: 64,
            score_floor: 0.0,
            session_retention_ms: 3_600_000,
            dimension: 4,
            idempotency_ttl_ms: 3_600_000,
            vector_index: Default::default(),
        })
    }

    /// Adds `n` signals of weight 1 to entity `e` (one change, one batch).
    fn add(e: u64, n: u32) -> SharedChange {
        Arc::new(move |s: &mut State| {
            for _ in 0..n {
                s.signals.add(0, EntityId(e), 1.0, Timestamp(0));
            }
        })
    }

    fn counts(v: &View, e: u64) -> [i64; 2] {
        [0, 1].map(|i| v.copies[i].read().unwrap().signals.count(0, EntityId(e)))
    }

    #[test]
    fn both_copies_take_every_batch_large_ones_on_the_catch_up_thread() {
        let v = View::new(state());
        let mut expected = 0;
        for round in 0..50u32 {
            // Alternate large (handed over) and small (inline) batches.
            let n = if round % 3 == 0 {
                1
            } else {
                CATCH_UP_MIN_RECORDS as u32
            };
            let mut acked = false;
            v.apply(n as usize, add(7, n), || acked = true);
            expected += i64::from(n);
            assert!(acked);
            // Read-your-writes: the acknowledged batch is visible at once.
            assert_eq!(v.read(|s| s.signals.count(0, EntityId(7))), expected);
        }
        v.catch_up.wait();
        assert_eq!(counts(&v, 7), [expected, expected]);
    }

    #[test]
    fn a_large_batch_catches_up_off_the_writers_thread() {
        let v = View::new(state());
        let writer = std::thread::current().id();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let change: SharedChange = Arc::new(move |s: &mut State| {
            record.lock().unwrap().push(std::thread::current().id());
            s.signals.add(0, EntityId(1), 1.0, Timestamp(0));
        });
        v.apply(CATCH_UP_MIN_RECORDS, change, || {});
        v.catch_up.wait();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0], writer);
        assert_ne!(seen[1], writer, "the second apply ran inline");
        assert_eq!(counts(&v, 1), [1, 1]);
    }

    #[test]
    fn an_early_apply_is_seen_only_once_published() {
        let v = View::new(state());
        v.apply(1, add(7, 1), || {});
        let (go, wait) = std::sync::mpsc::sync_channel::<()>(0);
        let wait = Mutex::new(wait);
        let applied = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&applied);
        let change: SharedChange = Arc::new(move |s: &mut State| {
            // The first run (the early apply) waits to be let go.
            if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                wait.lock().unwrap().recv().unwrap();
            }
            s.signals.add(0, EntityId(7), 1.0, Timestamp(0));
        });
        assert!(v.apply_early(&change));
        assert_eq!(v.read(|s| s.signals.count(0, EntityId(7))), 1);
        go.send(()).unwrap();
        while applied.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        // Applied or not, the copy is not published before its sync.
        assert_eq!(v.read(|s| s.signals.count(0, EntityId(7))), 1);
        let mut acked = false;
        v.publish_early(CATCH_UP_MIN_RECORDS, change, || acked = true);
        assert!(acked);
        assert_eq!(v.read(|s| s.signals.count(0, EntityId(7))), 2);
        v.catch_up.wait();
        assert_eq!(counts(&v, 7), [2, 2]);
        assert_eq!(applied.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_discarded_early_apply_leaves_both_copies_as_published() {
        let v = View::new(state());
        v.apply(1, add(7, 3), || {});
        assert!(v.apply_early(&add(7, 300)));
        v.discard_early();
        assert_eq!(counts(&v, 7), [3, 3]);
        // The view goes on as if the batch had never been.
        v.apply(CATCH_UP_MIN_RECORDS, add(7, 2), || {});
        v.catch_up.wait();
        assert_eq!(counts(&v, 7), [5, 5]);
        assert_eq!(v.read(|s| s.signals.count(0, EntityId(7))), 5);
    }

    #[test]
    fn a_panicking_catch_up_panics_the_next_apply_instead_of_hanging_it() {
        let v = View::new(state());
        let calls = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&calls);
        // Panics on its second call: the catch-up thread's.
        let change: SharedChange = Arc::new(move |_: &mut State| {
            if c.fetch_add(1, Ordering::SeqCst) == 1 {
                panic!("injected");
            }
        });
        v.apply(CATCH_UP_MIN_RECORDS, change, || {});
        let next = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            v.apply(CATCH_UP_MIN_RECORDS, add(2, 3), || {})
        }));
        assert!(next.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
