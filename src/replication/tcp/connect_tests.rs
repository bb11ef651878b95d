//! TCP connection setup: reconnect with backoff, the connect deadline, misuse.

use std::time::Duration;

use super::tests::{SECRET, frame, opts};
use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn connect_retries_with_backoff_until_the_leader_listens() {
    // A free port, released so the leader can bind it later.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let follower = TcpTransport::connector(addr.to_string(), SECRET, opts()).unwrap();
    let connecting = tokio::spawn(async move { follower.connect().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!connecting.is_finished());

    let leader = TcpTransport::listener(addr.to_string(), SECRET, opts()).unwrap();
    let mut listener = leader.listen().await.unwrap();
    let l = listener.accept().await.unwrap();
    let f = connecting.await.unwrap().unwrap();
    let (mut f_tx, _f_rx) = f.split();
    let (_l_tx, mut l_rx) = l.split();
    f_tx.send(frame(1)).await.unwrap();
    assert_eq!(l_rx.recv().await.unwrap().unwrap(), frame(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_gives_up_at_its_deadline() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let options = TcpOptions {
        connect_deadline: Duration::from_millis(300),
        ..opts()
    };
    let follower = TcpTransport::connector(addr.to_string(), SECRET, options).unwrap();
    let started = Instant::now();
    let err = follower.connect().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(
        matches!(&err, TidalError::Transport { reason, .. } if reason.contains("gave up after")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn misuse_is_refused_with_a_clear_error() {
    let err = TcpTransport::listener("127.0.0.1:0", b"short", opts()).unwrap_err();
    assert!(
        matches!(
            err,
            TidalError::InvalidConfig {
                field: "secret",
                ..
            }
        ),
        "{err}"
    );
    let bad = TcpOptions {
        max_frame_bytes: 0,
        ..opts()
    };
    let err = TcpTransport::connector("127.0.0.1:1", SECRET, bad).unwrap_err();
    assert!(
        matches!(
            err,
            TidalError::InvalidConfig {
                field: "max_frame_bytes",
                ..
            }
        ),
        "{err}"
    );

    let leader = TcpTransport::listener("127.0.0.1:0", SECRET, opts()).unwrap();
    let err = leader.connect().await.unwrap_err();
    assert!(err.to_string().contains("connector"), "{err}");
    let follower = TcpTransport::connector("127.0.0.1:1", SECRET, opts()).unwrap();
    let err = follower.listen().await.unwrap_err();
    assert!(err.to_string().contains("listener"), "{err}");
    assert!(!format!("{leader:?}").contains("cluster-secret"));
}
