//! Loading a `Config` from TOML (behind the `toml-config` feature).

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
    idempotency_ttl: Option<Spanned<String>>,
    idempotency_capacity: Option<Spanned<usize>>,
    cluster: Option<RawCluster>,
    limits: Option<RawLimits>,
    vector_index: Option<RawVectorIndex>,
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
    max_idempotency_key_bytes: Option<Spanned<usize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVectorIndex {
    min_vectors: Option<Spanned<u64>>,
    probes: Option<Spanned<u32>>,
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
        parsed!(
            raw.idempotency_ttl,
            "idempotency_ttl",
            c.idempotency_ttl,
            |s: &str| { parse_duration(s) }
        );
        plain!(
            raw.idempotency_capacity,
            "idempotency_capacity",
            c.idempotency_capacity
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
        if let Some(vi) = &raw.vector_index {
            plain!(
                vi.min_vectors,
                "vector_index.min_vectors",
                c.vector_index.min_vectors
            );
            plain!(vi.probes, "vector_index.probes", c.vector_index.probes);
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
            plain!(
                li.max_idempotency_key_bytes,
                "limits.max_idempotency_key_bytes",
                c.limits.max_idempotency_key_bytes
            );
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
        let text =
            std::fs::read_to_string(path).map_err(|e| TidalError::io("read config", path, e))?;
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
