//! A leader and two followers in one process over `InProcessTransport`:
//! writes on the leader, `wait_for` on the followers (read-your-writes
//! across nodes), reads that agree, a follower write refused at run time
//! through `AnyDb`, then the leader goes away and a follower is promoted.
//!
//! Run with `cargo run --example replicated`.

use std::time::Duration;

use tidal::{
    AnyDb, ClusterConfig, Config, EntityId, Epoch, InProcessTransport, NodeId, NodeRole, Retrieve,
    TidalDb, TidalError, Timestamp, WriteBatch,
};

fn config(dir: &std::path::Path, node: u64, role: NodeRole) -> tidal::Result<Config> {
    Config::builder(dir)
        .signal_type("like", Duration::from_secs(24 * 3_600))
        .node_id(NodeId(node))
        .cluster(ClusterConfig {
            role,
            ..ClusterConfig::default()
        })
        .build()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = tempfile::tempdir()?;
    let dir = |name: &str| base.path().join(name);
    let transport = InProcessTransport::new();

    let leader = TidalDb::open_leader(
        config(&dir("leader"), 1, NodeRole::Leader)?,
        transport.clone(),
    )?;
    let f1 = TidalDb::open_follower(
        config(&dir("f1"), 2, NodeRole::Follower)?,
        transport.clone(),
    )?;
    let f2 = TidalDb::open_follower(
        config(&dir("f2"), 3, NodeRole::Follower)?,
        transport.clone(),
    )?;

    // Writes on the leader; each returns its Position, the read-your-writes token.
    let now = Timestamp::now();
    let mut batch = WriteBatch::new();
    for i in 0..1_000u64 {
        batch = batch.signal("like", EntityId(i % 10), 1.0, now);
    }
    let last = leader.write_async(batch).await?;
    println!("leader wrote 1,000 likes up to {last}");

    // The followers apply them; wait_for is read-your-writes across nodes.
    for (name, f) in [("f1", &f1), ("f2", &f2)] {
        f.wait_for(last, Duration::from_secs(10)).await?;
        let top = f.retrieve(&Retrieve::top(3, "like", now))?;
        println!(
            "{name} applied {}; top 3: {:?}",
            f.last_position(),
            top.iter().map(|s| (s.id.0, s.score)).collect::<Vec<_>>()
        );
        assert_eq!(
            f.read_count(EntityId(3), "like")?,
            leader.read_count(EntityId(3), "like")?
        );
    }

    // A follower opened through AnyDb refuses writes at run time.
    let any: AnyDb = f1.into();
    match any.signal("like", EntityId(1), 1.0, now) {
        Err(TidalError::ReadOnly) => println!("f1 refused a write: {}", TidalError::ReadOnly),
        other => return Err(format!("expected ReadOnly, got {other:?}").into()),
    }
    let f1 = any.into_follower().map_err(|_| "f1 is a follower")?;

    // The leader goes away; the coordinator hands f1 epoch 2.
    drop(leader);
    let new_leader = f1.promote(Epoch(2))?;
    let pos = new_leader.signal("like", EntityId(42), 1.0, Timestamp::now())?;
    println!(
        "f1 promoted: it wrote {pos} in epoch {}",
        new_leader.status().epoch
    );
    f2.close()?;
    new_leader.close()?;
    Ok(())
}
