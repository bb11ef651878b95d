//! A config-driven TidalDb node over authenticated TCP, opened through
//! `AnyDb`, answering commands from standard input, one line each.
//!
//! ```text
//! cargo run --example node -- --role leader   --dir /tmp/l --listen 127.0.0.1:7400 --secret S
//! cargo run --example node -- --role follower --dir /tmp/f --leader 127.0.0.1:7400 --secret S
//! ```
//!
//! Options: `--role single|leader|follower`, `--dir D`, `--listen ADDR`
//! (leader), `--leader ADDR` (follower), `--secret S` (at least 16 bytes),
//! `--node N` (default 1 for a leader or single node, 2 for a follower).
//!
//! Commands, one per line, each answered with one line:
//! `signal TYPE ENTITY WEIGHT` (the SeqNo, or the error on a follower),
//! `score TYPE ENTITY`, `top TYPE K`, `wait SEQNO MS` (until that SeqNo is
//! applied here), `status`, `quit`. Signal types: `like` (half-life 1 day),
//! `view` (1 hour), `share` (7 days).

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidal::{
    AnyDb, ClusterConfig, Config, EntityId, NodeId, NodeRole, Retrieve, TcpOptions, TcpTransport,
    Timestamp, Transport,
};

const DAY: Duration = Duration::from_secs(24 * 3_600);

struct Args {
    role: NodeRole,
    dir: String,
    listen: Option<String>,
    leader: Option<String>,
    secret: Option<String>,
    node: Option<u64>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        role: NodeRole::Single,
        dir: String::new(),
        listen: None,
        leader: None,
        secret: None,
        node: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--role" => args.role = value()?.parse().map_err(|e| format!("--role: {e}"))?,
            "--dir" => args.dir = value()?,
            "--listen" => args.listen = Some(value()?),
            "--leader" => args.leader = Some(value()?),
            "--secret" => args.secret = Some(value()?),
            "--node" => args.node = Some(value()?.parse().map_err(|e| format!("--node: {e}"))?),
            other => return Err(format!("unknown option {other}")),
        }
    }
    if args.dir.is_empty() {
        return Err("--dir is required".into());
    }
    Ok(args)
}

fn transport(args: &Args) -> Result<Option<Arc<dyn Transport>>, String> {
    let secret = || {
        args.secret
            .clone()
            .ok_or("--secret is required for a replicated role")
    };
    Ok(match args.role {
        NodeRole::Single => None,
        NodeRole::Leader => {
            let listen = args.listen.clone().ok_or("a leader needs --listen ADDR")?;
            let t = TcpTransport::bind(listen, secret()?, TcpOptions::default())
                .map_err(|e| e.to_string())?;
            Some(t)
        }
        NodeRole::Follower => {
            let leader = args
                .leader
                .clone()
                .ok_or("a follower needs --leader ADDR")?;
            let t = TcpTransport::connector(leader, secret()?, TcpOptions::default())
                .map_err(|e| e.to_string())?;
            Some(t)
        }
    })
}

/// Answers one command line; `None` for `quit`.
fn answer(db: &AnyDb, line: &str) -> Option<String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let now = Timestamp::now();
    let reply = match words.as_slice() {
        ["quit"] => return None,
        ["signal", ty, entity, weight] => match (entity.parse(), weight.parse()) {
            (Ok(e), Ok(w)) => match db.signal(ty, EntityId(e), w, now) {
                Ok(pos) => pos.seqno.0.to_string(),
                Err(e) => format!("error: {e}"),
            },
            _ => "error: usage: signal TYPE ENTITY WEIGHT".into(),
        },
        ["score", ty, entity] => match entity.parse() {
            Ok(e) => match db.read_decay_score(EntityId(e), ty, now) {
                Ok(s) => format!("{s:.6}"),
                Err(e) => format!("error: {e}"),
            },
            Err(_) => "error: usage: score TYPE ENTITY".into(),
        },
        ["top", ty, k] => match k.parse() {
            Ok(k) => match db.retrieve(&Retrieve::top(k, *ty, now)) {
                Ok(top) => top
                    .iter()
                    .map(|s| format!("{}:{:.6}", s.id.0, s.score))
                    .collect::<Vec<_>>()
                    .join(" "),
                Err(e) => format!("error: {e}"),
            },
            Err(_) => "error: usage: top TYPE K".into(),
        },
        ["wait", seqno, ms] => match (seqno.parse::<u64>(), ms.parse()) {
            (Ok(seqno), Ok(ms)) => {
                let deadline = Instant::now() + Duration::from_millis(ms);
                loop {
                    let applied = db.status().applied;
                    if applied.seqno.0 >= seqno {
                        break format!("ok {applied}");
                    }
                    if Instant::now() >= deadline {
                        break format!("timeout: applied {applied}");
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            _ => "error: usage: wait SEQNO MS".into(),
        },
        ["status"] => {
            let s = db.status();
            format!(
                "role={:?} node={} epoch={} applied={} hwm={} records={}",
                s.role, s.node, s.epoch, s.applied, s.hwm, s.records
            )
        }
        [] => String::new(),
        _ => format!("error: unknown command {line:?}"),
    };
    Some(reply)
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let node = args.node.unwrap_or(match args.role {
        NodeRole::Follower => 2,
        _ => 1,
    });
    let config = Config::builder(&args.dir)
        .signal_type("like", DAY)
        .signal_type("view", Duration::from_secs(3_600))
        .signal_type("share", 7 * DAY)
        .node_id(NodeId(node))
        .cluster(ClusterConfig {
            role: args.role,
            ..ClusterConfig::default()
        })
        .build()
        .map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let _entered = runtime.enter();
    let db = AnyDb::open(config, transport(&args)?).map_err(|e| e.to_string())?;
    let stdout = std::io::stdout();
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        let Some(reply) = answer(&db, line.trim()) else {
            break;
        };
        let mut out = stdout.lock();
        writeln!(out, "{reply}")
            .and_then(|()| out.flush())
            .map_err(|e| e.to_string())?;
    }
    db.close().map_err(|e| e.to_string())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("node: {e}");
        std::process::exit(2);
    }
}
