//! `log` records (rustls, ureq) reach lxgate's log output through the bridge that
//! `lxgate::logging` installs. Its own binary: the subscriber is process-wide.
use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn log_crate_records_reach_the_output() {
    let out = Captured::default();
    let writer = out.clone();
    lxgate::logging::init_with(move || writer.clone());
    log::warn!(target: "rustls::common_state", "Sending fatal alert BadCertificate");
    tracing::info!("a tracing event, for comparison");
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("a tracing event"), "{text}");
    assert!(
        text.contains("WARN") && text.contains("Sending fatal alert BadCertificate"),
        "the log record is missing:\n{text}"
    );
}
