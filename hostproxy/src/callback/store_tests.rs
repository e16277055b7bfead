//! The session store's tests (beside it, so `store.rs` stays its own size).

use super::*;
use crate::backends::LoopbackBinder;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A store persisted to `file`, on loopback, room for 100 sessions.
fn persisted(file: PathBuf) -> SessionStore {
    SessionStore::persisted(
        100,
        18374,
        Arc::new(LoopbackBinder),
        CancellationToken::new(),
        file,
    )
}

fn reg(port: u16, state: &str, ttl: Duration) -> Registration {
    Registration {
        port,
        path: "/cb".into(),
        ttl,
        state: Some(Secret::new(state.into())),
        owner: "container:a".into(),
        owner_cap: None,
    }
}

#[tokio::test]
async fn sessions_survive_a_restart_and_expired_ones_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sessions.json");
    let open = || persisted(file.clone());
    let (live_port, short_port) = (free_port(), free_port());
    let first = open();
    let (live, _) = first
        .register(reg(live_port, "s1", Duration::from_secs(300)))
        .unwrap();
    let (short, _) = first
        .register(reg(short_port, "s2", Duration::from_secs(1)))
        .unwrap();
    first.saved().await;
    #[cfg(unix)]
    assert_eq!(
        crate::platform::fs::mode(&std::fs::metadata(&file).unwrap()),
        Some(0o600)
    );
    // The daemon dies without cleaning up: its listeners go with it.
    first.0.shutdown.cancel();
    drop(first);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = open();
    assert_eq!(second.restore(), 1);
    second.saved().await;
    let s = second.get_owned(&live, "container:a").unwrap();
    assert!(s.waits_for("/cb", Some(&Secret::new("s1".into()))));
    assert!(second.get(&short).is_none());
    // Its port is listened on again.
    assert!(std::net::TcpListener::bind(("127.0.0.1", live_port)).is_err());
    // What is on disk follows: the expired one is gone from the file too.
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains(&live) && !text.contains(&short));
    second.remove(&live);
    second.saved().await;
    assert!(!std::fs::read_to_string(&file).unwrap().contains(&live));
}

/// A store made outside a runtime has no writer task: a change made later inside one is
/// written at once, not left waiting for a task that was never started.
#[test]
fn a_store_made_outside_a_runtime_writes_each_change_itself() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sessions.json");
    let store = persisted(file.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let id = rt.block_on(async {
        store
            .register(reg(free_port(), "s", Duration::from_secs(300)))
            .unwrap()
            .0
    });
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .contains(id.as_str())
    );
}

#[tokio::test]
async fn a_burst_of_changes_shares_writes_and_each_is_on_disk_when_saved_returns() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sessions.json");
    let store = persisted(file.clone());
    let port = free_port();
    let ids: Vec<String> = (0..64)
        .map(|i| {
            store
                .register(reg(port, &format!("s{i}"), Duration::from_secs(300)))
                .unwrap()
                .0
        })
        .collect();
    // Nothing was written on the registering thread: the writer task has not run yet.
    assert!(!file.exists());
    store.saved().await;
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(ids.iter().all(|id| text.contains(id.as_str())));
    let writes = store
        .0
        .persist
        .as_ref()
        .unwrap()
        .writes
        .load(Ordering::Relaxed);
    assert!(writes < 4, "64 changes took {writes} writes");
    // A change nobody waits for lands too, and `flush` writes what is pending at once.
    store.remove(&ids[0]);
    store.flush();
    assert!(
        !std::fs::read_to_string(&file)
            .unwrap()
            .contains(ids[0].as_str())
    );
}

#[tokio::test]
async fn an_unreadable_file_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sessions.json");
    std::fs::write(&file, b"{not json").unwrap();
    let s = persisted(file);
    assert_eq!(s.restore(), 0);
    assert!(s.is_empty());
}
