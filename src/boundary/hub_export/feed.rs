//! A sealed video read by ffprobe with no plaintext on disk. ffprobe must seek: an MP4
//! whose index (the moov box) follows the media is read from its end, and from a pipe
//! it yields no facts. A video may be many GB, so it is not decrypted into memory
//! either. Instead the opened object is served over HTTP on 127.0.0.1 with single byte
//! ranges, each decrypting only the age chunks it touches (as `GET /api/media/{id}`
//! serves a sealed object), for as long as that one ffprobe runs.
//!
//! The URL is in ffprobe's argv, which every local user can read, so it is no secret:
//! a connection is answered only when the socket at its other end is one of that
//! ffprobe process's own file descriptors (its inode, from `/proc/self/net/tcp`, among
//! the links in `/proc/<pid>/fd`; both stay readable under the unit's `ProcSubset=pid`
//! and `ProtectProc=invisible`). Anything else, another user's process or another of
//! ours, is closed unanswered. The listener closes when ffprobe exits; its pid is
//! reaped only after that, so it cannot name another process meanwhile.

use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::byte_range::{wanted, Wanted};
use crate::ingest::at_rest::{Object, OpenError};

/// Connections served at once. ffmpeg opens the connection for a seek before it closes
/// the one it leaves, so two are normal; each holds one read buffer.
const MAX_CONNECTIONS: usize = 4;

/// A request head larger than this is no ffprobe request.
const HEAD_LIMIT: usize = 8 * 1024;

/// Plaintext written per send: one sealed age chunk.
const CHUNK: usize = 64 * 1024;

/// ffprobe stalled this long on an open connection has hung; its connection is dropped.
const STALL: Duration = Duration::from_secs(120);

/// Run `command(url)`, serving the object `open` opens at `url` to that process alone
/// until it exits; its output, as `Command::output` gives it.
pub fn run_with_feed(
    open: &(dyn Fn() -> Result<Object, OpenError> + Sync),
    command: impl FnOnce(&str) -> Command,
) -> io::Result<Output> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let port = listener.local_addr()?.port();
    let mut child = command(&format!("http://127.0.0.1:{port}/media"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let stop = AtomicBool::new(false);
    let serving = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let mut out = child.stdout.take().expect("piped");
        let mut err = child.stderr.take().expect("piped");
        let stdout = s.spawn(move || {
            let mut v = Vec::new();
            out.read_to_end(&mut v).map(|_| v)
        });
        let stderr = s.spawn(move || {
            let mut v = Vec::new();
            err.read_to_end(&mut v).map(|_| v)
        });
        let (stop, serving, listener) = (&stop, &serving, &listener);
        let server = s.spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let stream = match conn {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!("the ffprobe feed stopped accepting ({e}); video facts may be sent empty");
                        break;
                    }
                };
                match peer(pid, &stream) {
                    Ok(Peer::Child) => {}
                    Ok(Peer::Stranger { uid }) => {
                        let principal = uid.map(|u| format!("uid {u}"));
                        // Another local process tried to read a sealed video's plaintext.
                        crate::audit::Event {
                            event: "sealed_video_feed",
                            outcome: "refused",
                            principal: principal.as_deref(),
                            source: Some("127.0.0.1"),
                            reason: Some("the connection does not come from the ffprobe lxgate started"),
                            ..Default::default()
                        }
                        .emit();
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!("the ffprobe feed cannot tell who connected ({e}), so it refuses: /proc/self/net/tcp and /proc/{pid}/fd must be readable");
                        continue;
                    }
                }
                if serving.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                    serving.fetch_sub(1, Ordering::SeqCst);
                    tracing::warn!("ffprobe opened more than {MAX_CONNECTIONS} connections to the feed at once; the extra one is closed");
                    continue;
                }
                s.spawn(move || {
                    serve(stream, open);
                    serving.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        let exited = wait_exited(pid);
        stop.store(true, Ordering::SeqCst);
        // Wakes the accept above, which then sees `stop`.
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, port));
        let _ = server.join();
        let status = child.wait()?;
        exited?;
        let stdout = stdout.join().expect("the reader does not panic")?;
        let stderr = stderr.join().expect("the reader does not panic")?;
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    })
}

/// Block until the child `pid` has exited, leaving it unreaped.
fn wait_exited(pid: u32) -> io::Result<()> {
    use rustix::process::{waitid, Pid, WaitId, WaitIdOptions};
    let pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| io::Error::other("a child without a valid pid"))?;
    loop {
        match waitid(
            WaitId::Pid(pid),
            WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(_) => return Ok(()),
        }
    }
}

enum Peer {
    /// The process the feed is for.
    Child,
    /// Anyone else; the uid owning the connecting socket, when it was found.
    Stranger { uid: Option<u32> },
}

/// Who holds the other end of a loopback connection: its socket's inode from the
/// kernel's TCP table, looked for among the child's open files.
fn peer(pid: u32, stream: &TcpStream) -> io::Result<Peer> {
    let (SocketAddr::V4(theirs), SocketAddr::V4(ours)) =
        (stream.peer_addr()?, stream.local_addr()?)
    else {
        return Ok(Peer::Stranger { uid: None });
    };
    let table = std::fs::read_to_string("/proc/self/net/tcp")?;
    let Some((uid, inode)) = socket_of(&table, theirs, ours) else {
        return Ok(Peer::Stranger { uid: None });
    };
    let link = format!("socket:[{inode}]");
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        if std::fs::read_link(fd?.path()).is_ok_and(|l| l.as_os_str() == link.as_str()) {
            return Ok(Peer::Child);
        }
    }
    Ok(Peer::Stranger { uid })
}

/// The owner's uid and the inode of the socket bound to `local` and connected to
/// `remote`, from a `/proc/net/tcp` table.
fn socket_of(table: &str, local: SocketAddrV4, remote: SocketAddrV4) -> Option<(Option<u32>, u64)> {
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 || address(f[1])? != local || address(f[2])? != remote {
            return None;
        }
        // 0: a socket no process holds any more (closing).
        let inode = f[9].parse::<u64>().ok().filter(|i| *i != 0)?;
        Some((f[7].parse().ok(), inode))
    })
}

/// `0100007F:1F90` → 127.0.0.1:8080: the kernel prints the address as the native-endian
/// word of its network-order bytes, the port as a number.
fn address(s: &str) -> Option<SocketAddrV4> {
    let (ip, port) = s.split_once(':')?;
    let ip = u32::from_str_radix(ip, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(SocketAddrV4::new(Ipv4Addr::from(ip.to_ne_bytes()), port))
}

/// Answer one request (the connection then closes). A client that goes away mid-body
/// is ffmpeg seeking elsewhere, not an error.
fn serve(stream: TcpStream, open: &(dyn Fn() -> Result<Object, OpenError> + Sync)) {
    let _ = stream.set_read_timeout(Some(STALL));
    let _ = stream.set_write_timeout(Some(STALL));
    let Ok((method, range)) = request(&stream) else {
        return;
    };
    let mut out = &stream;
    if method != "GET" && method != "HEAD" {
        let _ = out.write_all(
            b"HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        return;
    }
    let opened = open().and_then(|mut o| Ok((o.plaintext_len()?, o)));
    let (len, mut object) = match opened {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!("the sealed video does not open for ffprobe ({e}); run `lxgate storage audit --verify`");
            let _ = out.write_all(
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            return;
        }
    };
    let (status, start, count, range_header) = match wanted(range.as_deref(), len) {
        Wanted::Whole => ("200 OK", 0, len, String::new()),
        Wanted::Part(a, b) => (
            "206 Partial Content",
            a,
            b - a + 1,
            format!("Content-Range: bytes {a}-{b}/{len}\r\n"),
        ),
        Wanted::Unsatisfiable => {
            let _ = write!(
                out,
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            return;
        }
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nAccept-Ranges: bytes\r\nContent-Type: application/octet-stream\r\nContent-Length: {count}\r\n{range_header}Cache-Control: no-store\r\nConnection: close\r\n\r\n"
    );
    if out.write_all(head.as_bytes()).is_err() || method == "HEAD" {
        return;
    }
    if object.seek(SeekFrom::Start(start)).is_err() {
        return;
    }
    let mut buf = vec![0u8; CHUNK];
    let mut left = count;
    while left > 0 {
        let want = CHUNK.min(usize::try_from(left).unwrap_or(CHUNK));
        match object.read(&mut buf[..want]) {
            Ok(0) => return,
            Ok(n) => {
                if out.write_all(&buf[..n]).is_err() {
                    return;
                }
                left -= n as u64;
            }
            Err(e) => {
                tracing::warn!("a sealed video failed to open mid-stream for ffprobe ({e}): run `lxgate storage audit --verify`");
                return;
            }
        }
    }
}

/// The method and Range header of a request head.
fn request(stream: &TcpStream) -> io::Result<(String, Option<String>)> {
    let mut reader = BufReader::new(stream).take(HEAD_LIMIT as u64);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let method = line.split(' ').next().unwrap_or("").to_string();
    let mut range = None;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the request head ended early or is too long",
            ));
        }
        let l = line.trim_end();
        if l.is_empty() {
            return Ok((method, range));
        }
        if let Some((name, value)) = l.split_once(':') {
            if name.trim().eq_ignore_ascii_case("range") {
                range = Some(value.trim().to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_table_addresses_read_as_the_kernel_prints_them() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:A1B2 0100007F:1F90 01 00000000:00000000 00:00000000 00000000    65534        0 4242 1 0 20 4 30 10 -1\n   1: 0100007F:A1B3 0100007F:1F90 06 00000000:00000000 03:00000000 00000000     0        0 0 3 0\n";
        let local = |p| SocketAddrV4::new(Ipv4Addr::LOCALHOST, p);
        assert_eq!(
            socket_of(table, local(0xA1B2), local(8080)),
            Some((Some(65534), 4242))
        );
        assert_eq!(socket_of(table, local(0xA1B2), local(8081)), None);
        assert_eq!(
            socket_of(table, local(0xA1B3), local(8080)),
            None,
            "closing"
        );
    }

    /// The feed's URL is visible to anyone: a client of another uid (`nobody`) and
    /// another process of our own uid get the connection closed unanswered; only the
    /// process the feed was started for is served, with ranges.
    #[test]
    fn only_the_process_the_feed_is_for_is_served() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("object");
        std::fs::write(&path, b"0123456789").unwrap();
        let script = r#"
import http.client, json, subprocess, sys, urllib.request
url = sys.argv[1]
fetch = '''
import http.client, sys, urllib.request
try:
    r = urllib.request.urlopen(sys.argv[1], timeout=30)
    print("served:" + r.read().decode())
except (ConnectionError, http.client.HTTPException) as e:
    print("closed:" + type(e).__name__)
except Exception as e:
    print("other:" + repr(e))
'''
def other(*prefix):
    # The system's python: nobody may not reach a python under root's home.
    p = subprocess.run([*prefix, "/usr/bin/python3", "-c", fetch, url], capture_output=True, text=True)
    return (p.stdout + p.stderr).strip()
nobody = other("runuser", "-u", "nobody", "--")
same_uid = other()
own = urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=2-5"}), timeout=30)
print(json.dumps({"nobody": nobody, "same_uid": same_uid, "own": [own.status, own.headers["Content-Range"], own.read().decode()]}))
"#;
        let open = || {
            Object::open(
                &path,
                crate::config::AtRest::Plain,
                &crate::crypto::keyring::MasterKeys::new("/nonexistent"),
            )
        };
        let out = run_with_feed(&open, |url| {
            let mut c = Command::new("python3");
            c.args(["-c", script, url]);
            c
        })
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stdout)));
        let nobody = v["nobody"].as_str().unwrap();
        assert!(nobody.starts_with("closed:"), "another uid: {nobody}");
        let same = v["same_uid"].as_str().unwrap();
        assert!(
            same.starts_with("closed:"),
            "another process of our uid: {same}"
        );
        assert_eq!(v["own"], serde_json::json!([206, "bytes 2-5/10", "2345"]));
    }
}
