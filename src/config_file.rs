//! Loading a [`Config`] from a TOML file and from `TIDAL_*` environment
//! variables.
//!
//! # The file
//!
//! `examples/node.toml` lists every key with its default. Keys mirror the
//! fields of [`Config`]: top-level scalars, a `[cluster]` table, a `[limits]`
//! table, a `[vector_index]` table (`min_vectors`, `probes`) and one `[[signal_types]]` table per signal type (`name`,
//! `half_life`). A key that is absent keeps its default; an unknown key is
//! refused.
//!
//! - **Durations** are strings of a whole number and one unit: `"250ms"`,
//!   `"30s"`, `"5m"`, `"24h"`, `"7d"` (no fractions, no sums, a unit is
//!   required).
//! - **Durability** is a string: `"sync"`, `"periodic:100ms"` or
//!   `"replicated:ACKS:TIMEOUT"` (e.g. `"replicated:1:500ms"`).
//! - **`recovery_mode`** is `"strict"` or `"point_in_time"`.
//! - **`cluster.role`** is `"single"`, `"leader"` or `"follower"`.
//! - **`data_dir`**, when relative, is resolved against the file's
//!   directory (`from_toml_file`) or the `base_dir` given to
//!   `from_toml_str`.
//!
//! Every error is [`TidalError::InvalidConfig`] whose `field` is the key
//! path (`cluster.role`, `limits.max_results`, `signal_types.half_life`) and
//! whose `reason` starts with the line (`line 7: ...`). An unknown key has
//! no static path of its own: its `field` is the table holding it (`config`
//! for the top level) and its `reason` names the full key.
//!
//! # Environment
//!
//! [`ConfigBuilder::env_overrides`] applies these variables over whatever
//! the builder holds (file values or defaults); values use the file syntax:
//!
//! | variable | key |
//! |---|---|
//! | `TIDAL_DATA_DIR` | `data_dir` |
//! | `TIDAL_NODE_ID` | `node_id` |
//! | `TIDAL_ROLE` | `cluster.role` |
//! | `TIDAL_SHARD_ID` | `cluster.shard_id` |
//! | `TIDAL_SHARD_COUNT` | `cluster.shard_count` |
//! | `TIDAL_SIGNAL_TYPES` | `signal_types`, as `view=1h,like=1d` (replaces the list) |
//! | `TIDAL_DIMENSION` | `dimension` |
//! | `TIDAL_DURABILITY` | `durability` |
//! | `TIDAL_SEGMENT_BYTES` | `segment_bytes` |
//! | `TIDAL_RETENTION_BYTES` | `retention_bytes` |
//! | `TIDAL_SNAPSHOT_EVERY_BYTES` | `snapshot_every_bytes` |
//! | `TIDAL_RECOVERY_MODE` | `recovery_mode` |
//! | `TIDAL_MAX_FUTURE_SKEW` | `max_future_skew` |
//! | `TIDAL_SCORE_FLOOR` | `score_floor` |
//! | `TIDAL_SESSION_RETENTION` | `session_retention` |
//! | `TIDAL_LANDMARK_HALF_LIVES` | `landmark_half_lives` |
//! | `TIDAL_MAX_CLOCK_DRIFT` | `max_clock_drift` |
//! | `TIDAL_IDEMPOTENCY_TTL` | `idempotency_ttl` |
//! | `TIDAL_IDEMPOTENCY_CAPACITY` | `idempotency_capacity` |
//! | `TIDAL_LIMITS_<NAME>` | `limits.<name>`, e.g. `TIDAL_LIMITS_MAX_RESULTS` |
//! | `TIDAL_VECTOR_INDEX_MIN_VECTORS` | `vector_index.min_vectors` |
//! | `TIDAL_VECTOR_INDEX_PROBES` | `vector_index.probes` |
//!
//! Other `TIDAL_*` variables are ignored (the prefix is shared, e.g. with
//! `TIDAL_BENCH_DIR`). An empty value counts as unset. A bad value is
//! `InvalidConfig` naming the key, with the variable in the reason.

use std::time::Duration;

use crate::config::{Config, ConfigBuilder, Durability, NodeRole, RecoveryMode, SignalTypeConfig};
use crate::error::{Result, TidalError};
use crate::types::{NodeId, ShardId};

/// Every key path of the file; `field` of an error is one of these (or
/// `config`, the top level).
pub const CONFIG_KEYS: &[&str] = &[
    "data_dir",
    "node_id",
    "dimension",
    "durability",
    "segment_bytes",
    "retention_bytes",
    "snapshot_every_bytes",
    "recovery_mode",
    "max_future_skew",
    "score_floor",
    "session_retention",
    "landmark_half_lives",
    "max_clock_drift",
    "idempotency_ttl",
    "idempotency_capacity",
    "cluster",
    "cluster.role",
    "cluster.shard_id",
    "cluster.shard_count",
    "signal_types",
    "signal_types.name",
    "signal_types.half_life",
    "limits",
    "limits.max_name_bytes",
    "limits.max_key_bytes",
    "limits.max_value_bytes",
    "limits.max_metadata_fields",
    "limits.max_batch_records",
    "limits.commit_queue_depth",
    "limits.max_session_events",
    "limits.max_results",
    "limits.max_idempotency_key_bytes",
    "vector_index",
    "vector_index.min_vectors",
    "vector_index.probes",
];

fn invalid(field: &'static str, reason: impl Into<String>) -> TidalError {
    TidalError::InvalidConfig {
        field,
        reason: reason.into(),
    }
}

/// Parses a duration: a whole number followed by one unit of `ms`, `s`,
/// `m`, `h` or `d` (`"100ms"`, `"24h"`, `"7d"`).
///
/// ```
/// use std::time::Duration;
/// assert_eq!(tidal::config_file::parse_duration("7d").unwrap(), Duration::from_secs(7 * 86_400));
/// assert!(tidal::config_file::parse_duration("7").is_err());
/// ```
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!(
            "{s:?} is not a duration: expected a whole number and a unit (ms, s, m, h, d), e.g. \"100ms\""
        ));
    }
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration: {num} is too large"))?;
    let ms_per = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "" => {
            return Err(format!(
                "{s:?} has no unit: write e.g. \"{n}ms\" or \"{n}s\" (units ms, s, m, h, d)"
            ));
        }
        other => {
            return Err(format!(
                "{s:?} has unit {other:?}: expected one of ms, s, m, h, d"
            ));
        }
    };
    let ms = n
        .checked_mul(ms_per)
        .ok_or_else(|| format!("{s:?} is too long"))?;
    Ok(Duration::from_millis(ms))
}

/// Parses a durability: `sync`, `periodic:INTERVAL` or
/// `replicated:ACKS:TIMEOUT`.
///
/// ```
/// use std::time::Duration;
/// use tidal::Durability;
/// assert_eq!(
///     tidal::config_file::parse_durability("replicated:1:500ms").unwrap(),
///     Durability::Replicated { acks: 1, timeout: Duration::from_millis(500) },
/// );
/// ```
pub fn parse_durability(s: &str) -> std::result::Result<Durability, String> {
    let t = s.trim();
    let mut parts = t.split(':');
    let kind = parts.next().unwrap_or("").to_ascii_lowercase();
    let rest: Vec<&str> = parts.collect();
    match (kind.as_str(), rest.as_slice()) {
        ("sync", []) => Ok(Durability::Sync),
        ("periodic", [interval]) => Ok(Durability::Periodic(parse_duration(interval)?)),
        ("replicated", [acks, timeout]) => {
            let acks: usize = acks
                .trim()
                .parse()
                .map_err(|_| format!("{s:?}: acks {acks:?} is not a whole number"))?;
            Ok(Durability::Replicated {
                acks,
                timeout: parse_duration(timeout)?,
            })
        }
        _ => Err(format!(
            "{s:?} is not one of \"sync\", \"periodic:INTERVAL\" (e.g. \"periodic:100ms\"), \
             \"replicated:ACKS:TIMEOUT\" (e.g. \"replicated:1:500ms\")"
        )),
    }
}

/// Parses a recovery mode: `strict` or `point_in_time`.
pub fn parse_recovery_mode(s: &str) -> std::result::Result<RecoveryMode, String> {
    match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
        "strict" => Ok(RecoveryMode::Strict),
        "point_in_time" => Ok(RecoveryMode::PointInTime),
        _ => Err(format!("{s:?} is not one of strict, point_in_time")),
    }
}

fn parse_role(s: &str) -> std::result::Result<NodeRole, String> {
    s.parse::<NodeRole>().map_err(|e| match e {
        TidalError::InvalidConfig { reason, .. } => reason,
        other => other.to_string(),
    })
}

#[cfg(feature = "toml-config")]
fn duration_ms(field: &'static str, d: Duration) -> Result<u64> {
    u64::try_from(d.as_millis()).map_err(|_| invalid(field, "is too long"))
}

// ----- environment -----

type Setter = fn(&mut Config, &str) -> std::result::Result<(), String>;

fn parse_num<T: std::str::FromStr>(v: &str) -> std::result::Result<T, String> {
    v.trim()
        .replace('_', "")
        .parse()
        .map_err(|_| format!("{v:?} is not a valid number here"))
}

/// The environment variables, their key paths and how each applies.
const ENV_VARS: &[(&str, &str, Setter)] = &[
    ("TIDAL_DATA_DIR", "data_dir", |c, v| {
        c.data_dir = v.into();
        Ok(())
    }),
    ("TIDAL_NODE_ID", "node_id", |c, v| {
        c.node_id = NodeId(parse_num(v)?);
        Ok(())
    }),
    ("TIDAL_ROLE", "cluster.role", |c, v| {
        c.cluster.role = parse_role(v)?;
        Ok(())
    }),
    ("TIDAL_SHARD_ID", "cluster.shard_id", |c, v| {
        c.cluster.shard_id = ShardId(parse_num(v)?);
        Ok(())
    }),
    ("TIDAL_SHARD_COUNT", "cluster.shard_count", |c, v| {
        c.cluster.shard_count = parse_num(v)?;
        Ok(())
    }),
    ("TIDAL_SIGNAL_TYPES", "signal_types", |c, v| {
        c.signal_types = parse_signal_types(v)?;
        Ok(())
    }),
    ("TIDAL_DIMENSION", "dimension", |c, v| {
        c.dimension = parse_num(v)?;
        Ok(())
    }),
    ("TIDAL_DURABILITY", "durability", |c, v| {
        c.durability = parse_durability(v)?;
        Ok(())
    }),
    ("TIDAL_SEGMENT_BYTES", "segment_bytes", |c, v| {
        c.segment_bytes = parse_num(v)?;
        Ok(())
    }),
    ("TIDAL_RETENTION_BYTES", "retention_bytes", |c, v| {
        c.retention_bytes = parse_num(v)?;
        Ok(())
    }),
    (
        "TIDAL_SNAPSHOT_EVERY_BYTES",
        "snapshot_every_bytes",
        |c, v| {
            c.snapshot_every_bytes = parse_num(v)?;
            Ok(())
        },
    ),
    ("TIDAL_RECOVERY_MODE", "recovery_mode", |c, v| {
        c.recovery_mode = parse_recovery_mode(v)?;
        Ok(())
    }),
    ("TIDAL_MAX_FUTURE_SKEW", "max_future_skew", |c, v| {
        c.max_future_skew = parse_duration(v)?;
        Ok(())
    }),
    ("TIDAL_SCORE_FLOOR", "score_floor", |c, v| {
        c.score_floor = v
            .trim()
            .parse()
            .map_err(|_| format!("{v:?} is not a number"))?;
        Ok(())
    }),
    ("TIDAL_SESSION_RETENTION", "session_retention", |c, v| {
        c.session_retention = parse_duration(v)?;
        Ok(())
    }),
    (
        "TIDAL_LANDMARK_HALF_LIVES",
        "landmark_half_lives",
        |c, v| {
            c.landmark_half_lives = parse_num(v)?;
            Ok(())
        },
    ),
    ("TIDAL_MAX_CLOCK_DRIFT", "max_clock_drift", |c, v| {
        c.max_clock_drift = parse_duration(v)?;
        Ok(())
    }),
    ("TIDAL_IDEMPOTENCY_TTL", "idempotency_ttl", |c, v| {
        c.idempotency_ttl = parse_duration(v)?;
        Ok(())
    }),
    (
        "TIDAL_IDEMPOTENCY_CAPACITY",
        "idempotency_capacity",
        |c, v| {
            c.idempotency_capacity = parse_num(v)?;
            Ok(())
        },
    ),
    (
        "TIDAL_VECTOR_INDEX_MIN_VECTORS",
        "vector_index.min_vectors",
        |c, v| {
            c.vector_index.min_vectors = parse_num(v)?;
            Ok(())
        },
    ),
    (
        "TIDAL_VECTOR_INDEX_PROBES",
        "vector_index.probes",
        |c, v| {
            c.vector_index.probes = parse_num(v)?;
            Ok(())
        },
    ),
    (
        "TIDAL_LIMITS_MAX_NAME_BYTES",
        "limits.max_name_bytes",
        |c, v| {
            c.limits.max_name_bytes = parse_num(v)?;
            Ok(())
        },
    ),
    (
        "TIDAL_LIMITS_MAX_KEY_BYTES",
        "limits.max_key_bytes",
        |c, v| {
            c.limits.max_key_bytes = parse_num(v)?;
            Ok(())
        },
    ),
    (
        "TIDAL_LIMITS_MAX_VALUE_BYTES",
        "limits.max_value_bytes",
        |c, v| {
            c.limits.max_value_bytes = parse_num(v)?;
            Ok(())
        },
    ),
    (
        "TIDAL_LIMITS_MAX_METADATA_FIELDS",
        "limits.max_metadata_fields",
        |c, v| {
            c.limits.max_metadata_fields = parse_num(v)?;
            Ok(())
        },
    ),
    (
        "TIDAL_LIMITS_MAX_BATCH_RECORDS",
        "limits.max_batch_records",
        |c, v| {
            c.limits.max_batch_records = parse_num(v)?;
            Ok(())
        },
    ),
    (
        "TIDAL_LIMITS_COMMIT_QUEUE_DEPTH",
        "limits.commit_queue_depth",
        |c, v| {
            c.limits.commit_queue_depth = parse_num(v)?;
            Ok(())
        },
    ),
    (
        "TIDAL_LIMITS_MAX_SESSION_EVENTS",
        "limits.max_session_events",
        |c, v| {
            c.limits.max_session_events = parse_num(v)?;
            Ok(())
        },
    ),
    ("TIDAL_LIMITS_MAX_RESULTS", "limits.max_results", |c, v| {
        c.limits.max_results = parse_num(v)?;
        Ok(())
    }),
    (
        "TIDAL_LIMITS_MAX_IDEMPOTENCY_KEY_BYTES",
        "limits.max_idempotency_key_bytes",
        |c, v| {
            c.limits.max_idempotency_key_bytes = parse_num(v)?;
            Ok(())
        },
    ),
];

/// The environment variables [`ConfigBuilder::env_overrides`] reads, each
/// with the key path it sets.
pub fn env_variables() -> impl Iterator<Item = (&'static str, &'static str)> {
    ENV_VARS.iter().map(|(var, key, _)| (*var, *key))
}

/// `name=duration,name=duration`, in registration order.
fn parse_signal_types(v: &str) -> std::result::Result<Vec<SignalTypeConfig>, String> {
    let mut out = Vec::new();
    for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, half_life) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not NAME=HALF_LIFE (e.g. like=1d)"))?;
        let d = parse_duration(half_life)?;
        out.push(SignalTypeConfig {
            name: name.trim().to_string(),
            half_life_ms: u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
        });
    }
    Ok(out)
}

impl ConfigBuilder {
    /// Applies the `TIDAL_*` variables of this process's environment over
    /// the builder (see the [module docs](crate::config_file) for the list).
    pub fn env_overrides(self) -> Result<ConfigBuilder> {
        self.overrides_from(std::env::vars_os().filter_map(|(k, v)| {
            let k = k.into_string().ok()?;
            k.starts_with("TIDAL_")
                .then(|| (k, v.to_string_lossy().into_owned()))
        }))
    }

    /// Applies `TIDAL_*` variables given as pairs (the testable form of
    /// [`env_overrides`](Self::env_overrides)). Unknown names and empty
    /// values are skipped.
    pub fn overrides_from<K, V>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Result<ConfigBuilder>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        for (k, v) in vars {
            let (k, v) = (k.as_ref(), v.as_ref());
            if v.trim().is_empty() {
                continue;
            }
            if let Some((var, key, set)) = ENV_VARS.iter().find(|(var, _, _)| *var == k) {
                set(&mut self.config, v).map_err(|e| invalid(key, format!("{var}: {e}")))?;
            }
        }
        Ok(self)
    }
}

impl Config {
    /// This config with the `TIDAL_*` environment variables applied over
    /// it, checked again.
    pub fn from_env(self) -> Result<Config> {
        ConfigBuilder { config: self }.env_overrides()?.build()
    }
}

// ----- TOML -----

#[cfg(feature = "toml-config")]
#[path = "config_file_toml.rs"]
mod file;

#[cfg(test)]
#[path = "config_file_tests.rs"]
mod tests;
