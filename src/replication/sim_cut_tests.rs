//! A divergence cut through the harness in `sim.rs`, with real batches: a
//! follower that kept an old epoch longer than the leader did, then led a
//! newer epoch the leader never saw, is cut at batch boundaries only
//! (found by the cluster simulator, seed 31).

use super::sim::*;
use crate::types::{Epoch, SeqNo};

#[test]
fn a_follower_that_kept_an_old_epoch_longer_is_cut_at_batch_boundaries() {
    // Shared: epoch 1 up to 7. The follower kept epoch 1 to 14 (batches
    // 8..=11 and 12..=14), then led epoch 3 (15..=20). The leader led
    // epoch 2 (8..=12) and epoch 4 (13..=18).
    let follower = log_of(&[(1, &[1, 3, 3, 4, 3]), (3, &[1, 5])]);
    let leader = log_of(&[(1, &[1, 3, 3]), (2, &[1, 4]), (4, &[1, 5])]);
    let mut sim = Sim::new(leader, 4, 1);
    let f = sim.add_follower(follower, 3);
    sim.run();
    // Round one: the answer (2, 12) lies inside the follower's epoch-1
    // batch 12..=14, so only epoch 3 goes (cut to 14). Round two from
    // (1, 14): epoch 1 ends at 7 in the leader. The harness refuses a cut
    // inside a batch, as the log does.
    assert_eq!(sim.followers[f].truncates, vec![SeqNo(14), SeqNo(7)]);
    let cuts: Vec<(Epoch, SeqNo)> = sim.diverged.iter().map(|(e, s, _)| (*e, *s)).collect();
    assert_eq!(cuts, vec![(Epoch(3), SeqNo(15)), (Epoch(1), SeqNo(8))]);
    assert_eq!(bytes_of(&sim.followers[f].log), bytes_of(&sim.log));
    assert_eq!(sim.shipper.hwm(), SeqNo(18));
}
