//! Loading a [`Config`] from a TOML file and from `TIDAL_*` environment
//! variables.
//!
//! # The file
//!
//! `examples/node.toml` lists every key with its default. Keys mirror the
//! fields of [`Config`]: top-level scalars, a `[cluster]` table, a `[limits]`
//! table and one `[[signal_types]]` table per signal type (`name`,
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
//! | `TIDAL_LIMITS_<NAME>` | `limits.<name>`, e.g. `TIDAL_LIMITS_MAX_RESULTS` |
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
mod file {
    use std::ops::Range;
    use std::path::Path;

    use serde::Deserialize;
    use toml::Spanned;
    use toml::de::{DeTable, DeValue};

    use super::{
        CONFIG_KEYS, duration_ms, invalid, parse_durability, parse_duration, parse_recovery_mode,
        parse_role,
    };
    use crate::config::{Config, ConfigBuilder, SignalTypeConfig};
    use crate::error::{Result, TidalError};
    use crate::types::{NodeId, ShardId};

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawConfig {
        data_dir: Option<Spanned<String>>,
        node_id: Option<Spanned<u64>>,
        dimension: Option<Spanned<usize>>,
        durability: Option<Spanned<String>>,
        segment_bytes: Option<Spanned<u64>>,
        retention_bytes: Option<Spanned<u64>>,
        snapshot_every_bytes: Option<Spanned<u64>>,
        recovery_mode: Option<Spanned<String>>,
        max_future_skew: Option<Spanned<String>>,
        score_floor: Option<Spanned<f64>>,
        session_retention: Option<Spanned<String>>,
        landmark_half_lives: Option<Spanned<u32>>,
        max_clock_drift: Option<Spanned<String>>,
        cluster: Option<RawCluster>,
        limits: Option<RawLimits>,
        signal_types: Option<Spanned<Vec<RawSignalType>>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawCluster {
        role: Option<Spanned<String>>,
        shard_id: Option<Spanned<u32>>,
        shard_count: Option<Spanned<u32>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawLimits {
        max_name_bytes: Option<Spanned<usize>>,
        max_key_bytes: Option<Spanned<usize>>,
        max_value_bytes: Option<Spanned<usize>>,
        max_metadata_fields: Option<Spanned<usize>>,
        max_batch_records: Option<Spanned<usize>>,
        commit_queue_depth: Option<Spanned<usize>>,
        max_session_events: Option<Spanned<u32>>,
        max_results: Option<Spanned<usize>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawSignalType {
        name: Spanned<String>,
        half_life: Spanned<String>,
    }

    /// 1-based line of a byte offset.
    fn line_of(text: &str, offset: usize) -> usize {
        let end = offset.min(text.len());
        text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    /// The static key path for a dynamic one: itself if known, else the
    /// nearest known table holding it, else `config`.
    fn static_key(path: &str) -> &'static str {
        let mut p = path;
        loop {
            if let Some(k) = CONFIG_KEYS.iter().find(|k| **k == p) {
                return k;
            }
            match p.rfind('.') {
                Some(i) => p = &p[..i],
                None => return "config",
            }
        }
    }

    fn contains(span: &Range<usize>, at: usize) -> bool {
        span.start <= at && at < span.end.max(span.start + 1)
    }

    /// The deepest key path whose key or value covers `at`, with array
    /// indexes dropped (and the first index reported separately).
    fn locate(
        table: &DeTable<'_>,
        at: usize,
        prefix: &str,
        index: &mut Option<usize>,
    ) -> Option<String> {
        for (k, v) in table {
            let path = if prefix.is_empty() {
                k.get_ref().to_string()
            } else {
                format!("{prefix}.{}", k.get_ref())
            };
            let in_key = contains(&k.span(), at);
            let in_value = contains(&v.span(), at);
            let deeper = match v.get_ref() {
                DeValue::Table(t) => locate(t, at, &path, index),
                DeValue::Array(a) => a.iter().enumerate().find_map(|(i, e)| match e.get_ref() {
                    DeValue::Table(t) => {
                        let found = locate(t, at, &path, index);
                        if found.is_some() && index.is_none() {
                            *index = Some(i);
                        }
                        found
                    }
                    _ => None,
                }),
                _ => None,
            };
            if deeper.is_some() {
                return deeper;
            }
            if in_key || in_value {
                return Some(path);
            }
        }
        None
    }

    /// Converts a toml error into `InvalidConfig` naming key and line.
    fn toml_error(text: &str, e: &toml::de::Error) -> TidalError {
        let msg = e.message().trim().to_string();
        let Some(span) = e.span() else {
            return invalid("config", msg);
        };
        let line = line_of(text, span.start);
        let mut index = None;
        let path = DeTable::parse(text)
            .ok()
            .and_then(|doc| locate(doc.get_ref(), span.start, "", &mut index));
        match path {
            Some(path) => {
                let field = static_key(&path);
                let at = match index {
                    Some(i) => format!("{path} (entry {})", i + 1),
                    None => path.clone(),
                };
                let reason = if msg.starts_with("unknown field") {
                    format!("line {line}: unknown key `{at}`: {msg}")
                } else {
                    format!("line {line}: `{at}`: {msg}")
                };
                invalid(field, reason)
            }
            None => invalid("config", format!("line {line}: {msg}")),
        }
    }

    /// Lines of the keys a file set, so validation errors can name them.
    struct Lines<'a> {
        text: &'a str,
        seen: Vec<(&'static str, usize)>,
    }

    impl Lines<'_> {
        fn at<T>(&mut self, field: &'static str, v: &Spanned<T>) -> usize {
            let line = line_of(self.text, v.span().start);
            if !self.seen.iter().any(|(f, _)| *f == field) {
                self.seen.push((field, line));
            }
            line
        }
        fn bad<T>(&mut self, field: &'static str, v: &Spanned<T>, reason: String) -> TidalError {
            let line = self.at(field, v);
            invalid(field, format!("line {line}: {reason}"))
        }
    }

    impl ConfigBuilder {
        /// Applies a TOML document over the builder: keys present replace
        /// the builder's values (a present `signal_types` replaces the
        /// list), absent keys keep them. A relative `data_dir` is resolved
        /// against `base_dir` when given. Not validated until `build`.
        pub fn apply_toml(self, text: &str, base_dir: Option<&Path>) -> Result<ConfigBuilder> {
            self.apply_toml_lines(text, base_dir).map(|(b, _)| b)
        }

        fn apply_toml_lines(
            mut self,
            text: &str,
            base_dir: Option<&Path>,
        ) -> Result<(ConfigBuilder, Vec<(&'static str, usize)>)> {
            let raw: RawConfig = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
            let mut l = Lines {
                text,
                seen: Vec::new(),
            };
            let c = &mut self.config;
            if let Some(v) = &raw.data_dir {
                l.at("data_dir", v);
                let p = Path::new(v.get_ref());
                c.data_dir = match base_dir {
                    Some(base) if p.is_relative() => base.join(p),
                    _ => p.to_path_buf(),
                };
            }
            macro_rules! plain {
                ($raw:expr, $key:literal, $dst:expr) => {
                    if let Some(v) = &$raw {
                        l.at($key, v);
                        $dst = *v.get_ref();
                    }
                };
            }
            macro_rules! parsed {
                ($raw:expr, $key:literal, $dst:expr, $parse:expr) => {
                    if let Some(v) = &$raw {
                        $dst = $parse(v.get_ref()).map_err(|e| l.bad($key, v, e))?;
                        l.at($key, v);
                    }
                };
            }
            if let Some(v) = &raw.node_id {
                l.at("node_id", v);
                c.node_id = NodeId(*v.get_ref());
            }
            plain!(raw.dimension, "dimension", c.dimension);
            parsed!(raw.durability, "durability", c.durability, |s: &str| {
                parse_durability(s)
            });
            plain!(raw.segment_bytes, "segment_bytes", c.segment_bytes);
            plain!(raw.retention_bytes, "retention_bytes", c.retention_bytes);
            plain!(
                raw.snapshot_every_bytes,
                "snapshot_every_bytes",
                c.snapshot_every_bytes
            );
            parsed!(
                raw.recovery_mode,
                "recovery_mode",
                c.recovery_mode,
                |s: &str| { parse_recovery_mode(s) }
            );
            parsed!(
                raw.max_future_skew,
                "max_future_skew",
                c.max_future_skew,
                |s: &str| { parse_duration(s) }
            );
            plain!(raw.score_floor, "score_floor", c.score_floor);
            parsed!(
                raw.session_retention,
                "session_retention",
                c.session_retention,
                |s: &str| parse_duration(s)
            );
            plain!(
                raw.landmark_half_lives,
                "landmark_half_lives",
                c.landmark_half_lives
            );
            parsed!(
                raw.max_clock_drift,
                "max_clock_drift",
                c.max_clock_drift,
                |s: &str| { parse_duration(s) }
            );
            if let Some(cl) = &raw.cluster {
                parsed!(cl.role, "cluster.role", c.cluster.role, |s: &str| {
                    parse_role(s)
                });
                if let Some(v) = &cl.shard_id {
                    l.at("cluster.shard_id", v);
                    c.cluster.shard_id = ShardId(*v.get_ref());
                }
                plain!(cl.shard_count, "cluster.shard_count", c.cluster.shard_count);
            }
            if let Some(li) = &raw.limits {
                plain!(
                    li.max_name_bytes,
                    "limits.max_name_bytes",
                    c.limits.max_name_bytes
                );
                plain!(
                    li.max_key_bytes,
                    "limits.max_key_bytes",
                    c.limits.max_key_bytes
                );
                plain!(
                    li.max_value_bytes,
                    "limits.max_value_bytes",
                    c.limits.max_value_bytes
                );
                plain!(
                    li.max_metadata_fields,
                    "limits.max_metadata_fields",
                    c.limits.max_metadata_fields
                );
                plain!(
                    li.max_batch_records,
                    "limits.max_batch_records",
                    c.limits.max_batch_records
                );
                plain!(
                    li.commit_queue_depth,
                    "limits.commit_queue_depth",
                    c.limits.commit_queue_depth
                );
                plain!(
                    li.max_session_events,
                    "limits.max_session_events",
                    c.limits.max_session_events
                );
                plain!(li.max_results, "limits.max_results", c.limits.max_results);
            }
            if let Some(list) = &raw.signal_types {
                l.at("signal_types", list);
                let mut types = Vec::with_capacity(list.get_ref().len());
                for (i, t) in list.get_ref().iter().enumerate() {
                    let d = parse_duration(t.half_life.get_ref()).map_err(|e| {
                        l.bad(
                            "signal_types.half_life",
                            &t.half_life,
                            format!("signal_types entry {}: {e}", i + 1),
                        )
                    })?;
                    types.push(SignalTypeConfig {
                        name: t.name.get_ref().clone(),
                        half_life_ms: duration_ms("signal_types.half_life", d)?,
                    });
                }
                c.signal_types = types;
            }
            Ok((self, l.seen))
        }
    }

    /// Adds the line of the key a validation error names, if the file set it.
    fn with_line(e: TidalError, seen: &[(&'static str, usize)]) -> TidalError {
        match e {
            TidalError::InvalidConfig { field, reason } => {
                match seen.iter().find(|(f, _)| *f == field) {
                    Some((_, line)) => invalid(field, format!("line {line}: {reason}")),
                    None => TidalError::InvalidConfig { field, reason },
                }
            }
            other => other,
        }
    }

    fn check_data_dir(c: &Config) -> Result<()> {
        if c.data_dir.as_os_str().is_empty() {
            return Err(invalid(
                "data_dir",
                "not set: give data_dir in the file or TIDAL_DATA_DIR",
            ));
        }
        Ok(())
    }

    impl Config {
        /// Parses and checks a TOML document (see [`crate::config_file`]).
        /// A relative `data_dir` is resolved against `base_dir` when given.
        ///
        /// ```
        /// let c = tidal::Config::from_toml_str(
        ///     "data_dir = \"/tmp/tidal-doc-toml\"\n[[signal_types]]\nname = \"like\"\nhalf_life = \"1d\"\n",
        ///     None,
        /// ).unwrap();
        /// assert_eq!(c.signal_types[0].half_life_ms, 86_400_000);
        /// ```
        pub fn from_toml_str(text: &str, base_dir: Option<&Path>) -> Result<Config> {
            let (b, seen) = Config::builder("").apply_toml_lines(text, base_dir)?;
            check_data_dir(&b.config)?;
            b.build().map_err(|e| with_line(e, &seen))
        }

        /// Reads, parses and checks a TOML file; a relative `data_dir` is
        /// resolved against the file's directory.
        pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Config> {
            let path = path.as_ref();
            let text = std::fs::read_to_string(path)
                .map_err(|e| TidalError::io("read config", path, e))?;
            Config::from_toml_str(&text, path.parent())
        }

        /// The file (if any), then the `TIDAL_*` environment over it, then
        /// the checks. Without a file every key starts at its default and
        /// `TIDAL_DATA_DIR` and `TIDAL_SIGNAL_TYPES` are needed.
        pub fn load(path: Option<&Path>) -> Result<Config> {
            let mut b = Config::builder("");
            let mut seen = Vec::new();
            if let Some(path) = path {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| TidalError::io("read config", path, e))?;
                (b, seen) = b.apply_toml_lines(&text, path.parent())?;
            }
            let b = b.env_overrides()?;
            check_data_dir(&b.config)?;
            b.build().map_err(|e| with_line(e, &seen))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn field_reason(e: TidalError) -> (&'static str, String) {
        match e {
            TidalError::InvalidConfig { field, reason } => (field, reason),
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn config_durations_parse() {
        assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        for bad in [
            "",
            "ms",
            "10",
            "1.5s",
            "10 parsecs",
            "-1s",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_duration("10").unwrap_err().contains("no unit"));
    }

    #[test]
    fn config_durability_parse() {
        assert_eq!(parse_durability("sync").unwrap(), Durability::Sync);
        assert_eq!(
            parse_durability("periodic:100ms").unwrap(),
            Durability::Periodic(Duration::from_millis(100))
        );
        assert_eq!(
            parse_durability("replicated:2:1s").unwrap(),
            Durability::Replicated {
                acks: 2,
                timeout: Duration::from_secs(1)
            }
        );
        for bad in [
            "",
            "periodic",
            "sync:1s",
            "replicated:1",
            "replicated:x:1s",
            "async",
        ] {
            assert!(parse_durability(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn config_role_parse() {
        assert_eq!("single".parse::<NodeRole>().unwrap(), NodeRole::Single);
        assert_eq!("leader".parse::<NodeRole>().unwrap(), NodeRole::Leader);
        assert_eq!(
            " Follower ".parse::<NodeRole>().unwrap(),
            NodeRole::Follower
        );
        let (field, _) = field_reason("primary".parse::<NodeRole>().unwrap_err());
        assert_eq!(field, "cluster.role");
    }

    #[test]
    fn config_env_overrides_apply_and_name_their_key() {
        let b = Config::builder("/tmp/a")
            .signal_type("view", Duration::from_secs(60))
            .overrides_from([
                ("TIDAL_DATA_DIR", "/tmp/b"),
                ("TIDAL_NODE_ID", "9"),
                ("TIDAL_ROLE", "leader"),
                ("TIDAL_SHARD_ID", "2"),
                ("TIDAL_SHARD_COUNT", "4"),
                ("TIDAL_DURABILITY", "replicated:1:500ms"),
                ("TIDAL_DIMENSION", "8"),
                ("TIDAL_SEGMENT_BYTES", "1_048_576"),
                ("TIDAL_SIGNAL_TYPES", "view=1h, like=1d"),
                ("TIDAL_LIMITS_MAX_RESULTS", "50"),
                ("TIDAL_RECOVERY_MODE", "point_in_time"),
                ("TIDAL_BENCH_DIR", "ignored"),
                ("TIDAL_SCORE_FLOOR", ""),
            ])
            .unwrap();
        let c = b.build().unwrap();
        assert_eq!(c.data_dir, Path::new("/tmp/b"));
        assert_eq!(c.node_id, NodeId(9));
        assert_eq!(c.cluster.role, NodeRole::Leader);
        assert_eq!(c.cluster.shard_id, ShardId(2));
        assert_eq!(c.cluster.shard_count, 4);
        assert_eq!(
            c.durability,
            Durability::Replicated {
                acks: 1,
                timeout: Duration::from_millis(500)
            }
        );
        assert_eq!(c.dimension, 8);
        assert_eq!(c.segment_bytes, 1 << 20);
        assert_eq!(c.signal_types.len(), 2);
        assert_eq!(c.signal_types[1].half_life_ms, 86_400_000);
        assert_eq!(c.limits.max_results, 50);
        assert_eq!(c.recovery_mode, RecoveryMode::PointInTime);
        assert_eq!(c.score_floor, 0.0);

        for (var, val, key) in [
            ("TIDAL_ROLE", "boss", "cluster.role"),
            ("TIDAL_NODE_ID", "-1", "node_id"),
            ("TIDAL_DURABILITY", "periodic:1", "durability"),
            ("TIDAL_MAX_CLOCK_DRIFT", "1y", "max_clock_drift"),
            ("TIDAL_SIGNAL_TYPES", "like", "signal_types"),
            ("TIDAL_LIMITS_MAX_KEY_BYTES", "lots", "limits.max_key_bytes"),
        ] {
            let e = Config::builder("/tmp/a")
                .overrides_from([(var, val)])
                .unwrap_err();
            let (field, reason) = field_reason(e);
            assert_eq!(field, key, "{var}");
            assert!(reason.contains(var), "{reason}");
        }
        // Every variable maps to a documented key.
        for (_, key) in env_variables() {
            assert!(CONFIG_KEYS.contains(&key), "{key}");
        }
    }

    #[cfg(feature = "toml-config")]
    mod toml_file {
        use super::*;

        const FULL: &str = r#"
data_dir = "data"
node_id = 7
dimension = 32
durability = "periodic:250ms"
segment_bytes = 8_388_608
retention_bytes = 100_000_000
snapshot_every_bytes = 50_000_000
recovery_mode = "point_in_time"
max_future_skew = "30s"
score_floor = 0.001
session_retention = "2d"
landmark_half_lives = 32
max_clock_drift = "5s"

[cluster]
role = "follower"
shard_id = 1
shard_count = 3

[limits]
max_name_bytes = 32
max_key_bytes = 64
max_value_bytes = 512
max_metadata_fields = 16
max_batch_records = 1000
commit_queue_depth = 128
max_session_events = 500
max_results = 100

[[signal_types]]
name = "view"
half_life = "1h"

[[signal_types]]
name = "like"
half_life = "7d"
"#;

        #[test]
        fn config_full_file_round_trips() {
            let c = Config::from_toml_str(FULL, Some(Path::new("/etc/tidal"))).unwrap();
            let expected = Config::builder("/etc/tidal/data")
                .node_id(NodeId(7))
                .dimension(32)
                .durability(Durability::Periodic(Duration::from_millis(250)))
                .segment_bytes(8 << 20)
                .retention_bytes(100_000_000)
                .snapshot_every_bytes(50_000_000)
                .recovery_mode(RecoveryMode::PointInTime)
                .max_future_skew(Duration::from_secs(30))
                .score_floor(0.001)
                .session_retention(Duration::from_secs(2 * 86_400))
                .landmark_half_lives(32)
                .max_clock_drift(Duration::from_secs(5))
                .cluster(crate::ClusterConfig {
                    role: NodeRole::Follower,
                    shard_id: ShardId(1),
                    shard_count: 3,
                })
                .limits(crate::Limits {
                    max_name_bytes: 32,
                    max_key_bytes: 64,
                    max_value_bytes: 512,
                    max_metadata_fields: 16,
                    max_batch_records: 1000,
                    commit_queue_depth: 128,
                    max_session_events: 500,
                    max_results: 100,
                })
                .signal_type("view", Duration::from_secs(3_600))
                .signal_type("like", Duration::from_secs(7 * 86_400))
                .build()
                .unwrap();
            assert_same(&c, &expected);
        }

        fn assert_same(a: &Config, b: &Config) {
            assert_eq!(a.data_dir, b.data_dir);
            assert_eq!(a.node_id, b.node_id);
            assert_eq!(a.cluster, b.cluster);
            assert_eq!(a.signal_types, b.signal_types);
            assert_eq!(a.dimension, b.dimension);
            assert_eq!(a.durability, b.durability);
            assert_eq!(a.segment_bytes, b.segment_bytes);
            assert_eq!(a.retention_bytes, b.retention_bytes);
            assert_eq!(a.snapshot_every_bytes, b.snapshot_every_bytes);
            assert_eq!(a.recovery_mode, b.recovery_mode);
            assert_eq!(a.limits, b.limits);
            assert_eq!(a.max_future_skew, b.max_future_skew);
            assert_eq!(a.score_floor, b.score_floor);
            assert_eq!(a.session_retention, b.session_retention);
            assert_eq!(a.landmark_half_lives, b.landmark_half_lives);
            assert_eq!(a.max_clock_drift, b.max_clock_drift);
        }

        #[test]
        fn config_example_file_parses_to_the_defaults() {
            let text = include_str!("../examples/node.toml");
            let c = Config::from_toml_str(text, Some(Path::new("/srv"))).unwrap();
            let d = Config::builder("/srv/tidal-data")
                .signal_type("view", Duration::from_secs(3_600))
                .signal_type("like", Duration::from_secs(86_400))
                .build()
                .unwrap();
            assert_same(&c, &d);
        }

        fn err(text: &str) -> (&'static str, String) {
            field_reason(Config::from_toml_str(text, None).unwrap_err())
        }

        const HEAD: &str =
            "data_dir = \"/tmp/x\"\n[[signal_types]]\nname = \"like\"\nhalf_life = \"1d\"\n";

        #[test]
        fn config_bad_values_name_key_and_line() {
            // (text after HEAD (lines 1-4), key, line)
            let cases: &[(&str, &str, usize)] = &[
                ("[cluster]\nrole = \"boss\"\n", "cluster.role", 6),
                (
                    "[cluster]\n\nshard_count = \"three\"\n",
                    "cluster.shard_count",
                    7,
                ),
                ("[cluster]\nshard_id = -1\n", "cluster.shard_id", 6),
                ("[limits]\nmax_results = 1.5\n", "limits.max_results", 6),
                ("[limits]\nmax_results = 0\n", "limits.max_results", 6),
                ("[cluster]\nshard_id = 5\n", "cluster.shard_id", 6),
                (
                    "[[signal_types]]\nname = \"view\"\nhalf_life = \"1y\"\n",
                    "signal_types.half_life",
                    7,
                ),
                (
                    "[[signal_types]]\nname = \"view\"\nhalf_life = 60\n",
                    "signal_types.half_life",
                    7,
                ),
            ];
            for (tail, key, line) in cases {
                let (field, reason) = err(&format!("{HEAD}{tail}"));
                assert_eq!(field, *key, "{tail}: {reason}");
                assert!(reason.contains(&format!("line {line}")), "{tail}: {reason}");
            }
            // Top-level keys must come before the first table.
            let top: &[(&str, &str, usize)] = &[
                ("durability = \"eventually\"\n", "durability", 2),
                ("max_future_skew = \"10\"\n", "max_future_skew", 2),
                ("session_retention = 3\n", "session_retention", 2),
                ("dimension = 0\n", "dimension", 2),
                ("node_id = \"one\"\n", "node_id", 2),
                ("recovery_mode = \"lenient\"\n", "recovery_mode", 2),
                ("segment_bytes = 100\n", "segment_bytes", 2),
                ("durability = \"replicated:1:1s\"\n", "durability", 2),
            ];
            for (head, key, line) in top {
                let (field, reason) = err(&format!("data_dir = \"/tmp/x\"\n{head}{}", &HEAD[20..]));
                assert_eq!(field, *key, "{head}: {reason}");
                assert!(reason.contains(&format!("line {line}")), "{head}: {reason}");
            }
        }

        #[test]
        fn config_unknown_keys_refused() {
            let (field, reason) = err(&format!("{HEAD}[cluster]\nrol = \"leader\"\n"));
            assert_eq!(field, "cluster");
            assert!(
                reason.contains("line 6") && reason.contains("cluster.rol"),
                "{reason}"
            );
            let (field, reason) = err(&format!("colour = 1\n{HEAD}"));
            assert_eq!(field, "config");
            assert!(
                reason.contains("line 1") && reason.contains("colour"),
                "{reason}"
            );
            let (field, reason) = err(&format!("{HEAD}weight = 2\n"));
            assert_eq!(field, "signal_types");
            assert!(
                reason.contains("line 5") && reason.contains("signal_types.weight"),
                "{reason}"
            );
            let (field, reason) = err(&format!("{HEAD}[storage]\nkind = \"sim\"\n"));
            assert_eq!(field, "config");
            assert!(
                reason.contains("line 5") && reason.contains("storage"),
                "{reason}"
            );
        }

        #[test]
        fn config_syntax_error_names_the_line() {
            let (_, reason) = err(&format!("{HEAD}[cluster\n"));
            assert!(reason.contains("line 5"), "{reason}");
            let (field, reason) = err("data_dir = \"/tmp/x\"\ndata_dir = \"/tmp/y\"\n");
            assert!(reason.contains("line 2"), "{field}: {reason}");
        }

        #[test]
        fn config_missing_data_dir_and_types() {
            let (field, _) = err("[[signal_types]]\nname = \"like\"\nhalf_life = \"1d\"\n");
            assert_eq!(field, "data_dir");
            let (field, _) = err("data_dir = \"x\"\n");
            assert_eq!(field, "signal_types");
        }

        #[test]
        fn config_env_overrides_file() {
            let b = Config::builder("")
                .apply_toml(FULL, Some(Path::new("/etc/tidal")))
                .unwrap()
                .overrides_from([
                    ("TIDAL_ROLE", "leader"),
                    ("TIDAL_DURABILITY", "replicated:1:500ms"),
                    ("TIDAL_DIMENSION", "16"),
                    ("TIDAL_DATA_DIR", "/var/lib/tidal"),
                ])
                .unwrap();
            let c = b.build().unwrap();
            assert_eq!(c.cluster.role, NodeRole::Leader);
            assert_eq!(c.cluster.shard_id, ShardId(1)); // from the file
            assert_eq!(c.dimension, 16);
            assert_eq!(c.data_dir, Path::new("/var/lib/tidal"));
            assert_eq!(c.node_id, NodeId(7)); // from the file
            assert_eq!(
                c.durability,
                Durability::Replicated {
                    acks: 1,
                    timeout: Duration::from_millis(500)
                }
            );
        }

        #[test]
        fn config_from_file_and_load() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("node.toml");
            std::fs::write(&path, FULL).unwrap();
            let c = Config::from_toml_file(&path).unwrap();
            assert_eq!(c.data_dir, dir.path().join("data"));
            let c = Config::load(Some(&path)).unwrap();
            assert_eq!(c.node_id, NodeId(7));
            let e = Config::from_toml_file(dir.path().join("missing.toml")).unwrap_err();
            assert!(matches!(e, TidalError::Io { .. }), "{e:?}");
        }
    }
}
