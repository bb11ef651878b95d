//! Plain identifiers and positions.

use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl From<$inner> for $name {
            fn from(v: $inner) -> Self {
                $name(v)
            }
        }
    };
}

id_type!(
    /// An item or a creator. Items and creators share one id space.
    ///
    /// ```
    /// let id = tidal::EntityId(42);
    /// assert_eq!(id.to_string(), "42");
    /// ```
    EntityId(u64)
);
id_type!(
    /// A partition of the entity space, served by one leader.
    ///
    /// ```
    /// assert!(tidal::ShardId(0) < tidal::ShardId(1));
    /// ```
    ShardId(u32)
);
id_type!(
    /// Position of a record in a shard's log, contiguous from 1.
    ///
    /// ```
    /// assert_eq!(tidal::SeqNo(7).next(), tidal::SeqNo(8));
    /// ```
    SeqNo(u64)
);
id_type!(
    /// A leader's term. A new database starts at epoch 1.
    ///
    /// ```
    /// assert_eq!(tidal::Epoch::FIRST, tidal::Epoch(1));
    /// ```
    Epoch(u64)
);
id_type!(
    /// A node of the cluster (part of every record's stamp).
    ///
    /// ```
    /// let n = tidal::NodeId(3);
    /// assert_eq!(n.0, 3);
    /// ```
    NodeId(u64)
);
id_type!(
    /// One user's visit.
    ///
    /// ```
    /// let s = tidal::SessionId(9);
    /// assert_eq!(s.to_string(), "9");
    /// ```
    SessionId(u64)
);
id_type!(
    /// A user; a session lives on the shard of its user.
    ///
    /// ```
    /// let u = tidal::UserId(5);
    /// assert_eq!(u.0, 5);
    /// ```
    UserId(u64)
);

impl SeqNo {
    /// The SeqNo after this one.
    pub const fn next(self) -> SeqNo {
        SeqNo(self.0 + 1)
    }
}

impl Epoch {
    /// The epoch of a new database.
    pub const FIRST: Epoch = Epoch(1);
}

/// Milliseconds since the Unix epoch.
///
/// Every read that depends on time takes it as an argument, so results are
/// deterministic; [`Timestamp::now`] is there for callers.
///
/// ```
/// use tidal::Timestamp;
/// let t = Timestamp(1_000);
/// assert_eq!(t.plus_ms(500), Timestamp(1_500));
/// assert!(Timestamp::now() > t);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The wall clock now.
    pub fn now() -> Timestamp {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// This time plus `ms` milliseconds (saturating).
    pub const fn plus_ms(self, ms: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(ms))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// `(epoch, SeqNo)`: names one record unambiguously, also across failovers.
/// Every write returns the `Position` of its last record: the
/// read-your-writes token.
///
/// ```
/// use tidal::{Epoch, Position, SeqNo};
/// let p = Position::new(Epoch(1), SeqNo(10));
/// assert!(p < Position::new(Epoch(2), SeqNo(3)));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    /// The epoch of the leader that logged the record.
    pub epoch: Epoch,
    /// The record's place in the log.
    pub seqno: SeqNo,
}

impl Position {
    /// A position.
    pub const fn new(epoch: Epoch, seqno: SeqNo) -> Position {
        Position { epoch, seqno }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.seqno)
    }
}

/// The two kinds of entity. They share one id space: an id written as one
/// kind cannot be written as the other.
///
/// ```
/// use tidal::EntityKind;
/// assert_ne!(EntityKind::Item, EntityKind::Creator);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntityKind {
    /// Something recommended (a video, a post).
    Item,
    /// Who made items.
    Creator,
}

impl EntityKind {
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            EntityKind::Item => 0,
            EntityKind::Creator => 1,
        }
    }

    pub(crate) fn from_byte(b: u8) -> Option<EntityKind> {
        match b {
            0 => Some(EntityKind::Item),
            1 => Some(EntityKind::Creator),
            _ => None,
        }
    }
}
