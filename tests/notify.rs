//! The systemd notify protocol as lxgate.service and lxgate-watcher.service speak it
//! (both Type=notify with WatchdogSec= in nix/contract.toml): READY=1, then watchdog
//! pings at half of WATCHDOG_USEC. A real datagram socket stands in for systemd's.
mod common;
use common::*;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// systemd's side: a bound socket and the environment a notify unit with
/// `WatchdogSec=0.4s` gets.
struct Manager {
    sock: UnixDatagram,
    path: String,
}

impl Manager {
    fn new(dir: &std::path::Path) -> Manager {
        let path = dir.join("notify.sock").display().to_string();
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Manager { sock, path }
    }

    fn env(&self) -> [(&str, &str); 2] {
        [("NOTIFY_SOCKET", &self.path), ("WATCHDOG_USEC", "400000")]
    }

    /// Every message received until READY=1 and `pings` watchdog pings arrived, or
    /// the limit passed.
    fn until_ready_and_pinged(&self, pings: usize, limit: Duration) -> Vec<String> {
        let start = Instant::now();
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while start.elapsed() < limit {
            if let Ok(n) = self.sock.recv(&mut buf) {
                got.extend(
                    String::from_utf8_lossy(&buf[..n])
                        .lines()
                        .map(str::to_string),
                );
            }
            let ready = got.iter().any(|m| m == "READY=1");
            if ready && got.iter().filter(|m| *m == "WATCHDOG=1").count() >= pings {
                break;
            }
        }
        got
    }
}

fn assert_ready_then_pings(got: &[String], who: &str) {
    let ready = got.iter().position(|m| m == "READY=1");
    assert!(ready.is_some(), "{who} never sent READY=1: {got:?}");
    let pings = got.iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!(
        pings >= 3,
        "{who} sent {pings} watchdog pings, want ≥3: {got:?}"
    );
}

#[test]
fn the_server_is_ready_and_pings_the_watchdog() {
    let (s, _) = Site::with_center_a("");
    let m = Manager::new(s.dir.path());
    let _srv = Server::start_with(&s, &m.env());
    let got = m.until_ready_and_pinged(3, Duration::from_secs(20));
    assert_ready_then_pings(&got, "lxgate serve");
}

#[test]
fn the_watcher_is_ready_and_pings_the_watchdog() {
    let (s, _) = Site::with_center_a("[watcher]\nrescan_secs = 60\n");
    let m = Manager::new(s.dir.path());
    let mut env = s.env();
    env.extend_from_slice(&m.env());
    let log = s.dir.path().join("watch.log");
    let mut w = Proc::spawn(&["watch"], &env, &log);
    let got = m.until_ready_and_pinged(3, Duration::from_secs(20));
    assert!(
        w.alive(),
        "the watcher died: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // Pings keep coming while the loop waits out a 60 s rescan interval.
    assert_ready_then_pings(&got, "lxgate watch");
}
