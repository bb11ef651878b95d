//! `ShardedDb` over 4 shards: every write lands on exactly the shard that
//! owns it, and every read (point reads, sessions, merged top-k with
//! filters and exclusions) equals a single node fed the same writes, also
//! after closing and reopening.

use std::path::Path;
use std::time::Duration;

use tidal::{
    Config, EntityId, EntityKind, Retrieve, Scored, Search, SessionId, ShardId, ShardedDb, TidalDb,
    TidalError, Timestamp, UserId, WriteBatch,
};

const SHARDS: u32 = 4;
const ENTITIES: u64 = 300;
const USERS: u64 = 12;

fn config(dir: &Path) -> Config {
    Config::builder(dir)
        .signal_type("like", Duration::from_secs(3_600))
        .signal_type("view", Duration::from_secs(600))
        .dimension(4)
        .build()
        .unwrap()
}

/// A small deterministic generator (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Feeds the same writes to the sharded database and the single node.
fn feed(sharded: &ShardedDb, single: &TidalDb, t0: Timestamp) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    // Creators 1000.., items 0..ENTITIES with metadata, creators and embeddings.
    for c in 0..8u64 {
        let id = EntityId(1_000 + c);
        let name = format!("c{c}");
        sharded.write_creator(id, &[("name", &name)]).unwrap();
        single.write_creator(id, &[("name", &name)]).unwrap();
        let v = [c as f32 + 1.0, 1.0, 0.5, (c % 3) as f32];
        sharded.write_creator_embedding(id, &v).unwrap();
        single.write_creator_embedding(id, &v).unwrap();
    }
    for i in 0..ENTITIES {
        let id = EntityId(i);
        let lang = if i % 3 == 0 { "fr" } else { "en" };
        let creator = Some(EntityId(1_000 + i % 8));
        sharded.write_item(id, creator, &[("lang", lang)]).unwrap();
        single.write_item(id, creator, &[("lang", lang)]).unwrap();
        if i % 2 == 0 {
            let v = [
                (i % 7) as f32 - 3.0,
                (i % 5) as f32 + 0.5,
                (i % 11) as f32 - 5.0,
                1.0,
            ];
            sharded.write_item_embedding(id, &v).unwrap();
            single.write_item_embedding(id, &v).unwrap();
        }
    }
    // Signals over many entities, some negative, timestamps spread out.
    for n in 0..3_000u64 {
        let id = EntityId(rng.below(ENTITIES));
        let ty = if rng.below(3) == 0 { "view" } else { "like" };
        let weight = if rng.below(10) == 0 {
            -1.0
        } else {
            (rng.below(4) + 1) as f64
        };
        let at = t0.plus_ms(n * 37);
        sharded.signal(ty, id, weight, at).unwrap();
        single.signal(ty, id, weight, at).unwrap();
    }
    // Sessions: every user opens one and touches entities of every shard.
    for u in 0..USERS {
        let (s, user) = (SessionId(500 + u), UserId(u));
        let at = t0.plus_ms(200_000 + u);
        sharded.open_session(s, user, at).unwrap();
        single.open_session(s, user, at).unwrap();
        for _ in 0..10 {
            let id = EntityId(rng.below(ENTITIES));
            let weight = if rng.below(4) == 0 { -1.0 } else { 1.0 };
            sharded
                .record_session_event(s, id, "like", weight, at)
                .unwrap();
            single
                .record_session_event(s, id, "like", weight, at)
                .unwrap();
        }
        if u % 2 == 0 {
            sharded.close_session(s, at.plus_ms(1)).unwrap();
            single.close_session(s, at.plus_ms(1)).unwrap();
        }
    }
    // A few deletes.
    for i in (0..ENTITIES).step_by(29) {
        sharded.delete_item(EntityId(i)).unwrap();
        single.delete_item(EntityId(i)).unwrap();
    }
}

fn ids(v: &[Scored]) -> Vec<u64> {
    v.iter().map(|s| s.id.0).collect()
}

fn queries(t: Timestamp) -> (Vec<Retrieve>, Vec<Search>) {
    let retrieves = vec![
        Retrieve::top(25, "like", t),
        Retrieve::top(1_000, "like", t),
        Retrieve::top(10, "view", t),
        Retrieve::blend(20, &[("like", 1.0), ("view", 0.25)], t),
        Retrieve::blend(15, &[("like", 1.0), ("view", -2.0)], t),
        Retrieve::top(20, "like", t)
            .kind(EntityKind::Item)
            .metadata("lang", "fr"),
        Retrieve::top(20, "like", t).creator(EntityId(1_003)),
        Retrieve::top(30, "like", t).exclude([EntityId(1), EntityId(2), EntityId(3)]),
        Retrieve::top(40, "like", t).exclude_seen(SessionId(503)),
        Retrieve::top(40, "like", t).exclude_seen(SessionId(504)),
        Retrieve::top(40, "like", t).exclude_hard_negatives(UserId(5)),
        Retrieve::top(40, "like", t)
            .exclude_seen(SessionId(507))
            .exclude_hard_negatives(UserId(2)),
        Retrieve::top(10, "like", t).exclude_seen(SessionId(99_999)),
        Retrieve::top(0, "like", t),
    ];
    let searches = vec![
        Search::new(vec![1.0, 0.0, 0.0, 0.0], 10),
        Search::new(vec![-1.0, 2.0, 0.5, 1.0], 200),
        Search::new(vec![0.3, 0.3, -1.0, 0.2], 12).metadata("lang", "en"),
        Search::new(vec![1.0, 1.0, 1.0, 1.0], 5).kind(EntityKind::Creator),
        Search::new(vec![0.0, 1.0, 0.0, 0.0], 20).exclude_hard_negatives(UserId(3)),
    ];
    (retrieves, searches)
}

/// Every read of the sharded database equals the single node's.
fn assert_same_answers(sharded: &ShardedDb, single: &TidalDb, t: Timestamp) {
    for i in 0..ENTITIES + 1_010 {
        let id = EntityId(i);
        for ty in ["like", "view"] {
            assert_eq!(
                sharded.read_decay_score(id, ty, t).unwrap(),
                single.read_decay_score(id, ty, t).unwrap(),
                "score of {id} {ty}"
            );
            assert_eq!(
                sharded.read_count(id, ty).unwrap(),
                single.read_count(id, ty).unwrap()
            );
        }
        assert_eq!(sharded.get_item(id), single.get_item(id));
        assert_eq!(sharded.get_creator(id), single.get_creator(id));
    }
    for u in 0..USERS {
        let s = SessionId(500 + u);
        assert_eq!(sharded.session(s), single.session(s));
        assert_eq!(
            sharded.session_events(s, 1, 100),
            single.session_events(s, 1, 100)
        );
    }
    let (retrieves, searches) = queries(t);
    for q in &retrieves {
        let (a, b) = (sharded.retrieve(q).unwrap(), single.retrieve(q).unwrap());
        assert_eq!(ids(&a), ids(&b), "{q:?}");
        assert_eq!(a, b, "{q:?}"); // scores too, bit for bit
    }
    for q in &searches {
        let (a, b) = (sharded.search(q).unwrap(), single.search(q).unwrap());
        assert_eq!(ids(&a), ids(&b), "{q:?}");
        assert_eq!(a, b, "{q:?}");
    }
    // The filters did something: exclusions change the answer.
    let plain = sharded.retrieve(&Retrieve::top(40, "like", t)).unwrap();
    let unseen = sharded
        .retrieve(&Retrieve::top(40, "like", t).exclude_seen(SessionId(503)))
        .unwrap();
    assert_ne!(ids(&plain), ids(&unseen));
}

#[test]
fn sharded_db_routes_writes_and_merges_top_k() {
    let dir = tempfile::tempdir().unwrap();
    let (sdir, single_dir) = (dir.path().join("sharded"), dir.path().join("single"));
    let t0 = Timestamp(Timestamp::now().0 - 400_000);
    let t = Timestamp::now();
    {
        let sharded = ShardedDb::open(config(&sdir), SHARDS).unwrap();
        let single = TidalDb::open(config(&single_dir)).unwrap();
        assert_eq!(sharded.shard_count(), SHARDS);
        feed(&sharded, &single, t0);

        // Every entity's data lands on exactly its shard, and every shard
        // holds some.
        let mut per_shard = [0u32; SHARDS as usize];
        for i in 0..ENTITIES {
            let id = EntityId(i);
            let owner = sharded.shard_of(id);
            for (n, db) in sharded.shards().iter().enumerate() {
                let here = ShardId(n as u32) == owner;
                let count = db.read_count(id, "like").unwrap();
                let item = db.get_item(id);
                if !here {
                    assert_eq!(count, 0, "{id} counted on shard {n}, owner {owner}");
                    assert!(item.is_none(), "{id} stored on shard {n}, owner {owner}");
                    assert_eq!(db.read_decay_score(id, "like", t).unwrap(), 0.0);
                } else if item.is_some() {
                    per_shard[n] += 1;
                }
            }
        }
        assert!(per_shard.iter().all(|&c| c > 30), "{per_shard:?}");
        // Sessions live on their user's shard only.
        for u in 0..USERS {
            let s = SessionId(500 + u);
            let home = sharded.shard_of_user(UserId(u));
            assert_eq!(sharded.session_shard(s), Some(home));
            for (n, db) in sharded.shards().iter().enumerate() {
                assert_eq!(db.session(s).is_some(), ShardId(n as u32) == home);
            }
        }
        assert_same_answers(&sharded, &single, t);
        sharded.close().unwrap();
        single.close().unwrap();
    }
    // Close and reopen: the same answers.
    let sharded = ShardedDb::open(config(&sdir), SHARDS).unwrap();
    let single = TidalDb::open(config(&single_dir)).unwrap();
    assert_same_answers(&sharded, &single, t);
    sharded.close().unwrap();
    single.close().unwrap();
    // Another shard count is refused: moving data is future work.
    let err = ShardedDb::open(config(&sdir), SHARDS + 1).unwrap_err();
    assert!(matches!(err, TidalError::ConfigMismatch { .. }), "{err}");
}

/// A user and an entity on different shards.
fn foreign_pair(db: &ShardedDb) -> (UserId, EntityId) {
    let user = UserId(1);
    let home = db.shard_of_user(user);
    let entity = (0..)
        .map(EntityId)
        .find(|e| db.shard_of(*e) != home)
        .unwrap();
    (user, entity)
}

#[test]
fn session_events_on_foreign_shard_entities_count_on_the_entitys_shard() {
    let dir = tempfile::tempdir().unwrap();
    let db = ShardedDb::open(config(dir.path()), SHARDS).unwrap();
    let now = Timestamp::now();
    let (user, entity) = foreign_pair(&db);
    let (home, owner) = (db.shard_of_user(user), db.shard_of(entity));
    let s = SessionId(42);
    db.open_session(s, user, now).unwrap();
    db.record_session_event(s, entity, "like", 1.0, now)
        .unwrap();
    db.record_session_event(s, entity, "like", -1.0, now)
        .unwrap();
    db.record_session_event(s, entity, "view", 1.0, now)
        .unwrap();

    let owner_db = db.shard(owner).unwrap();
    let home_db = db.shard(home).unwrap();
    assert_eq!(owner_db.read_count(entity, "like").unwrap(), 0); // +1 - 1
    assert_eq!(owner_db.read_count(entity, "view").unwrap(), 1);
    assert!(owner_db.read_decay_score(entity, "view", now).unwrap() > 0.99);
    assert_eq!(home_db.read_count(entity, "view").unwrap(), 0);
    assert_eq!(home_db.session(s).unwrap().event_count, 3);
    assert!(owner_db.session(s).is_none());
    assert_eq!(db.read_count(entity, "view").unwrap(), 1);

    // The hard negative lives on the user's shard; the exclusion reaches
    // the entity's shard.
    let q = Retrieve::top(10, "view", now);
    assert_eq!(ids(&db.retrieve(&q).unwrap()), vec![entity.0]);
    let q = q.exclude_hard_negatives(user);
    assert!(db.retrieve(&q).unwrap().is_empty());

    // A session id names one session across shards.
    let other = (2..)
        .map(UserId)
        .find(|u| db.shard_of_user(*u) != home)
        .unwrap();
    let err = db.open_session(s, other, now).unwrap_err();
    assert!(matches!(err, TidalError::SessionExists { .. }), "{err}");
    let err = db
        .record_session_event(SessionId(7), entity, "like", 1.0, now)
        .unwrap_err();
    assert!(matches!(err, TidalError::UnknownSession { .. }), "{err}");

    db.close_session(s, now).unwrap();
    assert!(db.session(s).unwrap().closed_at.is_some());
    db.delete_user(user).unwrap();
    assert!(db.session(s).is_none());
    db.close().unwrap();
}

#[test]
fn a_batch_is_split_per_shard_and_each_part_is_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let db = ShardedDb::open(config(dir.path()), SHARDS).unwrap();
    let now = Timestamp::now();
    let (user, entity) = foreign_pair(&db);
    let s = SessionId(9);
    let mut batch = WriteBatch::new()
        .open_session(s, user, now)
        .record_session_event(s, entity, "like", 1.0, now);
    for i in 0..40u64 {
        batch = batch
            .write_item(EntityId(i), None, &[("lang", "en")])
            .signal("like", EntityId(i), 1.0, now);
    }
    let written = db.write(batch).unwrap();
    let shards: Vec<ShardId> = written.iter().map(|(s, _)| *s).collect();
    assert_eq!(shards, (0..SHARDS).map(ShardId).collect::<Vec<_>>());
    for i in 0..40u64 {
        let expected = if EntityId(i) == entity { 2 } else { 1 };
        assert_eq!(db.read_count(EntityId(i), "like").unwrap(), expected);
        assert!(db.get_item(EntityId(i)).is_some());
    }
    assert_eq!(db.session(s).unwrap().event_count, 1);

    // A part refused on its shard leaves that shard unchanged.
    let item_id = (100..)
        .map(EntityId)
        .find(|e| db.shard_of(*e) == db.shard_of(entity))
        .unwrap();
    let before = db.read_count(item_id, "like").unwrap();
    let bad =
        WriteBatch::new()
            .signal("like", item_id, 1.0, now)
            .signal("like", item_id, f64::NAN, now);
    assert!(db.write(bad).is_err());
    assert_eq!(db.read_count(item_id, "like").unwrap(), before);
    // Unknown sessions are refused before anything is written.
    let unknown = WriteBatch::new()
        .signal("like", item_id, 1.0, now)
        .close_session(SessionId(1_234), now);
    let err = db.write(unknown).unwrap_err();
    assert!(matches!(err, TidalError::UnknownSession { .. }), "{err}");
    assert_eq!(db.read_count(item_id, "like").unwrap(), before);
    assert!(db.write(WriteBatch::new()).is_err());
    db.close().unwrap();
}

#[test]
fn from_shards_checks_the_shard_layout() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&dir.path().join("a"));
    c.cluster.shard_count = 2;
    c.cluster.shard_id = ShardId(1);
    let one = TidalDb::open(c).unwrap();
    let err = ShardedDb::from_shards(vec![one]).unwrap_err();
    assert!(matches!(err, TidalError::InvalidConfig { .. }), "{err}");
}

/// One leader per shard in one process, wrapped with `from_shards`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_per_shard_in_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let mut leaders = Vec::new();
    for n in 0..2u32 {
        let mut c = config(&dir.path().join(format!("shard-{n}")));
        c.cluster.role = tidal::NodeRole::Leader;
        c.cluster.shard_id = ShardId(n);
        c.cluster.shard_count = 2;
        leaders.push(TidalDb::open_leader(c, tidal::InProcessTransport::new()).unwrap());
    }
    let db = ShardedDb::from_shards(leaders).unwrap();
    let now = Timestamp::now();
    for i in 0..50u64 {
        db.signal("like", EntityId(i), (i + 1) as f64, now).unwrap();
    }
    for (n, shard) in db.shards().iter().enumerate() {
        for i in 0..50u64 {
            let here = db.shard_of(EntityId(i)) == ShardId(n as u32);
            assert_eq!(
                shard.read_count(EntityId(i), "like").unwrap(),
                i64::from(here)
            );
        }
    }
    let top = db.retrieve(&Retrieve::top(3, "like", now)).unwrap();
    assert_eq!(ids(&top), vec![49, 48, 47]);
    db.close().unwrap();
}
