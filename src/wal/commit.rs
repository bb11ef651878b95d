//! Group commit: concurrent writers are packed into one log batch and one
//! sync.
//!
//! The first waiting writer leads the group, as in RocksDB: it takes every
//! queued request (up to the batch limit), runs the committer on them
//! (validate, encode, write, sync, apply) while later writers queue up for
//! the next group, publishes the results, and hands over. Only one group is
//! processed at a time, so under `Durability::Sync` batch N+1 is never
//! written before batch N's sync returns. The queue is bounded: a full
//! queue makes writers wait instead of growing memory.
//!
//! Waiting writers sleep on one of two condvars, by the group they wait
//! for: group `n`'s writers on `groups[n % 2]`. Groups run one at a time,
//! so while group `n` is processed its writers wait on one condvar and the
//! writers queued for group `n + 1` on the other. Publishing a group's
//! results wakes its writers with one `notify_all` (one system call), and
//! the hand-over wakes one writer of the next group with `notify_one`:
//! any writer that finds no group running leads the next one, whoever
//! heads the queue. A writer handed the lead may find that a newcomer took
//! it, and its request with it; it then waits for that group, which is the
//! one running (its ticket is among the group's `unpublished`).
//!
//! History. One condvar for all woke every waiting writer twice per group
//! (at the publish and at the hand-over), most of them to find nothing
//! and sleep again. Parking each writer alone, woken by its own `unpark`,
//! took W2 with 32 writers from 6.0-6.4x to 6.8-7.3x the one-writer rate,
//! but the leader then made one system call per writer of its group before
//! it handed over (a group of 20: 20 wake-ups of about 8 us each on this
//! guest, phase timers in `submit`). With the two condvars, 32 writers of
//! 1,000 writes each (`ingest_probe group`, alternating builds, three runs
//! each): 67.6-76.5k writes/s in groups of 25.5-27.8 before, 76.0-92.4k in
//! groups of 28.9-30.4 after, fsync means 161-190 us (an earlier run on a
//! faster disk, fsync means 102-131 us: 92-115k before, 123-130k after).
//! One writer alone pays nothing for it: a condvar nobody waits on is not
//! notified (`single`, `single-wb`: equal within the runs' spread).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// Which of `GroupCommit::groups` the writers of group `n` wait on.
fn parity(n: u64) -> usize {
    (n % 2) as usize
}

/// A queued request knows how many log records it will take.
pub(crate) trait Weighted {
    /// Records this request will add to a batch.
    fn records(&self) -> usize;
}

/// Tickets name requests between the queue and the waiters.
pub(crate) type Ticket = u64;

/// The committer's work on one group; it publishes a result per ticket.
pub(crate) type ProcessFn<'p, S, Req, Resp> =
    dyn Fn(&mut S, Vec<(Ticket, Req)>, &Publisher<'_, S, Req, Resp>) + 'p;

#[derive(Debug)]
struct Shared<Req, Resp> {
    queue: VecDeque<(Ticket, Req)>,
    results: HashMap<Ticket, Resp>,
    next_ticket: Ticket,
    busy: bool,
    /// Groups taken so far: the group being processed is `taken - 1`, and
    /// a writer queued now waits for group `taken` (or a later one).
    taken: u64,
    /// Writers waiting on each of `GroupCommit::groups`: a condvar with
    /// none is not notified (std's notify is a system call even then, a
    /// cost a lone writer would pay on every write).
    waiting: [usize; 2],
    /// Writers blocked in `space.wait` for room in the queue, counted the
    /// same way. They have their own condvar: freeing queue space when a
    /// group is taken used to wake every writer waiting for a result.
    space_waiting: usize,
    /// Tickets of the group being processed whose result is not published.
    unpublished: HashSet<Ticket>,
}

/// The queue and the committer state `S` it protects.
#[derive(Debug)]
pub(crate) struct GroupCommit<S, Req, Resp> {
    shared: Mutex<Shared<Req, Resp>>,
    /// Writers waiting for group `n` wait on `groups[n % 2]` (module docs).
    groups: [Condvar; 2],
    space: Condvar,
    committer: Mutex<S>,
    depth: usize,
    max_group_records: usize,
}

/// Hands results back to waiting writers (possibly before the committer
/// has finished its bookkeeping for the group).
pub(crate) struct Publisher<'a, S, Req, Resp> {
    gc: &'a GroupCommit<S, Req, Resp>,
    /// The group's number.
    group: u64,
}

impl<S, Req, Resp> Publisher<'_, S, Req, Resp> {
    /// Publishes results and wakes their writers.
    pub(crate) fn publish(&self, results: impl IntoIterator<Item = (Ticket, Resp)>) {
        let mut g = self.gc.lock_shared();
        for (t, r) in results {
            g.unpublished.remove(&t);
            g.results.insert(t, r);
        }
        let waiting = g.waiting[parity(self.group)] > 0;
        drop(g);
        if waiting {
            self.gc.groups[parity(self.group)].notify_all();
        }
    }
}

impl<S, Req, Resp> GroupCommit<S, Req, Resp> {
    fn lock_shared(&self) -> MutexGuard<'_, Shared<Req, Resp>> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until the group of `ticket` publishes, or (while it is
    /// queued) until the next group to be taken ends or is handed over;
    /// or spuriously: callers check again. It waits under the lock it
    /// checked under, so a notification after that check reaches it.
    fn wait<'a>(
        &'a self,
        mut g: MutexGuard<'a, Shared<Req, Resp>>,
        ticket: Ticket,
    ) -> MutexGuard<'a, Shared<Req, Resp>> {
        // Groups run one at a time: a taken ticket is in the last one.
        let group = if g.unpublished.contains(&ticket) {
            g.taken - 1
        } else {
            g.taken
        };
        let p = parity(group);
        g.waiting[p] += 1;
        let mut g = self.groups[p]
            .wait(g)
            .unwrap_or_else(PoisonError::into_inner);
        g.waiting[p] -= 1;
        g
    }
}

impl<S, Req: Weighted, Resp> GroupCommit<S, Req, Resp> {
    /// A queue of at most `depth` waiting requests, groups of at most
    /// `max_group_records` records (a single larger request forms a group
    /// of its own).
    pub(crate) fn new(state: S, depth: usize, max_group_records: usize) -> Self {
        GroupCommit {
            shared: Mutex::new(Shared {
                queue: VecDeque::new(),
                results: HashMap::new(),
                next_ticket: 0,
                busy: false,
                taken: 0,
                waiting: [0; 2],
                space_waiting: 0,
                unpublished: HashSet::new(),
            }),
            groups: [Condvar::new(), Condvar::new()],
            space: Condvar::new(),
            committer: Mutex::new(state),
            depth: depth.max(1),
            max_group_records: max_group_records.max(1),
        }
    }

    /// Requests waiting for a committer.
    pub(crate) fn queue_depth(&self) -> usize {
        self.lock_shared().queue.len()
    }

    /// Whether a writer is leading a group (tests use it to line up groups).
    #[cfg(test)]
    pub(crate) fn busy(&self) -> bool {
        self.lock_shared().busy
    }

    /// Runs `f` on the committer state between groups (flush, checkpoint).
    pub(crate) fn with_committer<T>(&self, f: impl FnOnce(&mut S) -> T) -> T {
        let mut c = self
            .committer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(&mut c)
    }

    /// Queues `req` and returns its result. `process` is called by whichever
    /// writer leads a group; it must publish a result for every ticket it
    /// is given (results not published are filled with `missing()`).
    pub(crate) fn submit(
        &self,
        req: Req,
        process: &ProcessFn<'_, S, Req, Resp>,
        missing: &dyn Fn() -> Resp,
    ) -> Resp {
        let mut g = self.lock_shared();
        while g.queue.len() >= self.depth {
            g.space_waiting += 1;
            g = self.space.wait(g).unwrap_or_else(PoisonError::into_inner);
            g.space_waiting -= 1;
        }
        let ticket = g.next_ticket;
        g.next_ticket += 1;
        g.queue.push_back((ticket, req));
        loop {
            if let Some(r) = g.results.remove(&ticket) {
                return r;
            }
            if !g.busy {
                g.busy = true;
                let number = g.taken;
                g.taken += 1;
                let group = self.take_group(&mut g);
                let room = g.space_waiting > 0;
                drop(g);
                if room {
                    self.space.notify_all();
                }
                let guard = GroupGuard {
                    gc: self,
                    missing,
                    group: number,
                };
                {
                    let mut c = self
                        .committer
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    let publisher = Publisher {
                        gc: self,
                        group: number,
                    };
                    process(&mut c, group, &publisher);
                }
                drop(guard);
                g = self.lock_shared();
                continue;
            }
            g = self.wait(g, ticket);
        }
    }

    fn take_group(&self, g: &mut Shared<Req, Resp>) -> Vec<(Ticket, Req)> {
        let mut total = 0usize;
        let mut group = Vec::new();
        while let Some((_, req)) = g.queue.front() {
            let n = req.records();
            if !group.is_empty() && total + n > self.max_group_records {
                break;
            }
            total += n;
            if let Some(item) = g.queue.pop_front() {
                g.unpublished.insert(item.0);
                group.push(item);
            }
        }
        group
    }
}

/// Hands the committer role back when a group is done, also if the
/// committer panicked: `busy` is cleared and every ticket of the group gets
/// a result, so no other writer waits forever.
struct GroupGuard<'a, S, Req, Resp> {
    gc: &'a GroupCommit<S, Req, Resp>,
    missing: &'a dyn Fn() -> Resp,
    /// The group's number.
    group: u64,
}

impl<S, Req, Resp> Drop for GroupGuard<'_, S, Req, Resp> {
    fn drop(&mut self) {
        let mut g = self.gc.lock_shared();
        g.busy = false;
        // Only tickets never published: a writer that already took its
        // result must not get a second one, which would stay in `results`
        // for good (a leak under concurrency, found by the test below).
        let missing = !g.unpublished.is_empty();
        for t in std::mem::take(&mut g.unpublished) {
            g.results.insert(t, (self.missing)());
        }
        let (this, next) = (parity(self.group), parity(g.taken));
        let wake_this = missing && g.waiting[this] > 0;
        let wake_next = !g.queue.is_empty() && g.waiting[next] > 0;
        drop(g);
        if wake_this {
            self.gc.groups[this].notify_all();
        }
        // One writer waiting for the next group leads it; one that is not
        // waiting sees `busy` cleared when it next looks. Writers of this
        // group that did not fit in it were woken with their group.
        if wake_next {
            self.gc.groups[next].notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    struct Req(usize);
    impl Weighted for Req {
        fn records(&self) -> usize {
            1
        }
    }

    #[test]
    fn concurrent_writers_are_grouped_and_each_gets_its_own_result() {
        let gc = Arc::new(GroupCommit::<Vec<usize>, Req, usize>::new(
            Vec::new(),
            64,
            1000,
        ));
        let mut handles = Vec::new();
        for t in 0..8 {
            let gc = gc.clone();
            handles.push(std::thread::spawn(move || {
                for i in 0..500 {
                    let v = t * 1000 + i;
                    let r = gc.submit(
                        Req(v),
                        &|groups: &mut Vec<usize>, group, p| {
                            groups.push(group.len());
                            p.publish(group.into_iter().map(|(t, r)| (t, r.0 * 2)));
                        },
                        &|| usize::MAX,
                    );
                    assert_eq!(r, v * 2);
                }
            }));
        }
        for h in handles {
            h.join().expect("writer thread");
        }
        let groups = gc.with_committer(|g| g.clone());
        assert_eq!(groups.iter().sum::<usize>(), 4000);
    }

    #[test]
    fn writers_waiting_for_queue_space_and_results_all_finish() {
        // A queue of 2 for 16 writers: most wait for room, then for their
        // result, then some lead; every wake-up path runs many times. No
        // result may be left behind: a group's end used to hand a second
        // ("missing") result to every writer that had already taken its
        // own, and those stayed in the map for good (2,390 of 4,800 with
        // 300 writes per writer).
        let gc = Arc::new(GroupCommit::<usize, Req, usize>::new(0, 2, 3));
        let handles: Vec<_> = (0..16)
            .map(|t| {
                let gc = gc.clone();
                std::thread::spawn(move || {
                    for i in 0..100 {
                        let v = t * 1000 + i;
                        let r = gc.submit(
                            Req(v),
                            &|groups: &mut usize, group, p| {
                                *groups += 1;
                                if (*groups).is_multiple_of(5) {
                                    // A slow group: the others queue up.
                                    std::thread::sleep(std::time::Duration::from_micros(200));
                                }
                                let n = group.len();
                                p.publish(group.into_iter().map(|(t, r)| (t, r.0 + 1)));
                                if n > 1 {
                                    // Let the others take their results
                                    // before the group ends: its end must
                                    // not hand them a second one.
                                    for _ in 0..10_000 {
                                        if gc.lock_shared().results.len() <= 1 {
                                            break;
                                        }
                                        std::thread::yield_now();
                                    }
                                }
                            },
                            &|| usize::MAX,
                        );
                        assert_eq!(r, v + 1);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("writer thread");
        }
        assert_eq!(gc.queue_depth(), 0);
        let g = gc.lock_shared();
        assert!(g.results.is_empty(), "{} results left", g.results.len());
    }

    #[test]
    fn a_writer_whose_request_another_leader_took_is_woken_by_its_group() {
        // Bursts of a few writes each, every burst waited for with a
        // deadline: a writer handed the lead may find that a newcomer
        // took it, and its request with it, before it ran; it must then
        // wait for that group's results, not for the group after, which
        // never comes once the burst's last group is done. Waiting on
        // the wrong group's condvar hung within the first bursts.
        let gc = Arc::new(GroupCommit::<u64, Req, usize>::new(0, 64, 4));
        for burst in 0..300 {
            let (done_tx, done_rx) = std::sync::mpsc::channel();
            for t in 0..4 {
                let (gc, done_tx) = (gc.clone(), done_tx.clone());
                std::thread::spawn(move || {
                    for i in 0..3 {
                        let v = t * 10 + i;
                        let r = gc.submit(
                            Req(v),
                            &|groups: &mut u64, group, p| {
                                *groups += 1;
                                std::thread::yield_now();
                                p.publish(group.into_iter().map(|(t, r)| (t, r.0)));
                                std::thread::yield_now();
                            },
                            &|| usize::MAX,
                        );
                        assert_eq!(r, v);
                    }
                    let _ = done_tx.send(());
                });
            }
            for _ in 0..4 {
                done_rx
                    .recv_timeout(std::time::Duration::from_secs(10))
                    .unwrap_or_else(|_| panic!("burst {burst}: a writer never got its result"));
            }
        }
    }

    #[test]
    fn a_panicking_committer_does_not_strand_the_other_writers() {
        let gc = Arc::new(GroupCommit::<(), Req, u32>::new((), 4, 10));
        let gc2 = gc.clone();
        let panicked = std::thread::spawn(move || {
            gc2.submit(Req(1), &|_, _, _| panic!("committer bug"), &|| 0)
        })
        .join();
        assert!(panicked.is_err());
        // The next writer becomes the committer instead of waiting forever.
        let r = gc.submit(
            Req(2),
            &|_, g, p| p.publish(g.into_iter().map(|(t, _)| (t, 5))),
            &|| 0,
        );
        assert_eq!(r, 5);
    }

    #[test]
    fn an_unpublished_ticket_gets_the_missing_result() {
        let gc = GroupCommit::<(), Req, u32>::new((), 4, 10);
        let r = gc.submit(Req(1), &|_, _, _| {}, &|| 7);
        assert_eq!(r, 7);
    }
}
