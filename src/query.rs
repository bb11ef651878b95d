//! Queries: trending retrieval and embedding search, with their filters.

use crate::types::{EntityId, EntityKind, SessionId, Timestamp, UserId};

/// One result of [`Retrieve`] or [`Search`]: best first, ties broken by id.
///
/// ```
/// use tidal::{EntityId, Scored};
/// let best = Scored { id: EntityId(3), score: 0.9 };
/// assert!(best.score > 0.5);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scored {
    /// The entity.
    pub id: EntityId,
    /// Its decay score (or blend), or its cosine similarity.
    pub score: f64,
}

/// Filters and exclusions shared by [`Retrieve`] and [`Search`].
///
/// ```
/// use tidal::{EntityKind, Filter, SessionId};
/// let f = Filter { kind: Some(EntityKind::Item), exclude_seen: Some(SessionId(4)), ..Filter::default() };
/// assert!(f.metadata.is_empty());
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    /// Only entities of this kind. An entity whose kind is not known yet
    /// (signals arrived, metadata did not) matches no kind filter.
    pub kind: Option<EntityKind>,
    /// Only entities whose metadata holds every one of these `(key, value)`.
    pub metadata: Vec<(String, String)>,
    /// Only items made by this creator.
    pub creator: Option<EntityId>,
    /// Never these ids.
    pub exclude_ids: Vec<EntityId>,
    /// Never what this session already saw (an entity of any of its events).
    pub exclude_seen: Option<SessionId>,
    /// Never this user's hard negatives (entities of their negative events).
    pub exclude_hard_negatives: Option<UserId>,
}

macro_rules! filter_builders {
    () => {
        /// Only entities of this kind.
        pub fn kind(mut self, kind: EntityKind) -> Self {
            self.filter.kind = Some(kind);
            self
        }
        /// Only entities whose metadata field `key` equals `value`.
        pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
            self.filter.metadata.push((key.into(), value.into()));
            self
        }
        /// Only items made by `creator`.
        pub fn creator(mut self, creator: EntityId) -> Self {
            self.filter.creator = Some(creator);
            self
        }
        /// Never these ids.
        pub fn exclude(mut self, ids: impl IntoIterator<Item = EntityId>) -> Self {
            self.filter.exclude_ids.extend(ids);
            self
        }
        /// Never what `session` already saw.
        pub fn exclude_seen(mut self, session: SessionId) -> Self {
            self.filter.exclude_seen = Some(session);
            self
        }
        /// Never `user`'s hard negatives.
        pub fn exclude_hard_negatives(mut self, user: UserId) -> Self {
            self.filter.exclude_hard_negatives = Some(user);
            self
        }
    };
}

/// Top-k by decay score of one signal type, or a weighted blend of several,
/// at a given time.
///
/// ```
/// use tidal::{EntityKind, Retrieve, Timestamp, UserId};
/// let q = Retrieve::top(10, "like", Timestamp(1_000))
///     .kind(EntityKind::Item)
///     .metadata("lang", "en")
///     .exclude_hard_negatives(UserId(7));
/// assert_eq!(q.k, 10);
/// let blend = Retrieve::blend(5, &[("like", 1.0), ("view", 0.1)], Timestamp(1_000));
/// assert_eq!(blend.blend.len(), 2);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Retrieve {
    /// How many results at most.
    pub k: usize,
    /// `(signal type, weight)`: the score is `sum weight * decay score`.
    pub blend: Vec<(String, f64)>,
    /// The time the scores are read at.
    pub at: Timestamp,
    /// Filters and exclusions.
    pub filter: Filter,
}

impl Retrieve {
    /// Top `k` entities by decay score of `signal_type` at `at`.
    pub fn top(k: usize, signal_type: impl Into<String>, at: Timestamp) -> Retrieve {
        Retrieve {
            k,
            blend: vec![(signal_type.into(), 1.0)],
            at,
            filter: Filter::default(),
        }
    }

    /// Top `k` entities by a weighted blend of decay scores at `at`.
    pub fn blend(k: usize, blend: &[(&str, f64)], at: Timestamp) -> Retrieve {
        Retrieve {
            k,
            blend: blend.iter().map(|(n, w)| (n.to_string(), *w)).collect(),
            at,
            filter: Filter::default(),
        }
    }

    filter_builders!();
}

/// Top-k cosine similarity over item (or creator) embeddings.
///
/// ```
/// use tidal::{EntityKind, Search};
/// let q = Search::new(vec![0.1, 0.9], 10).kind(EntityKind::Creator);
/// assert_eq!(q.filter.kind, Some(EntityKind::Creator));
/// assert_eq!(Search::new(vec![1.0], 3).filter.kind, None);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Search {
    /// The query vector (any length-nonzero vector of the database's dimension).
    pub vector: Vec<f32>,
    /// How many results at most.
    pub k: usize,
    /// Filters; `filter.kind` picks creator embeddings, items otherwise.
    pub filter: Filter,
}

impl Search {
    /// The `k` items most similar to `vector`.
    pub fn new(vector: Vec<f32>, k: usize) -> Search {
        Search {
            vector,
            k,
            filter: Filter::default(),
        }
    }

    filter_builders!();
}
