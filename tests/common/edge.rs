//! The hub's edge as it runs in production: real nginx with TLS and client-certificate
//! checks in front of `lxgate serve`, and a small PKI made with the openssl CLI.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{free_port, run_ok, wait_for, Proc, Server, Site};

/// A hub CA with a server certificate for localhost, a sites' CA with a site client
/// certificate, and a rogue CA with a certificate nginx must refuse. All X.509 v3, as
/// rustls requires.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let p = Pki {
            dir: dir.to_path_buf(),
        };
        for ca in ["hub-ca", "client-ca", "rogue-ca"] {
            p.key_and(
                ca,
                &[
                    "-x509",
                    "-days",
                    "2",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                    "-out",
                    &p.s(&format!("{ca}.crt")),
                ],
            );
        }
        let server = "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n";
        p.leaf("server", "hub-ca", Some(server));
        p.leaf("site", "client-ca", Some("extendedKeyUsage=clientAuth\n"));
        p.leaf("rogue", "rogue-ca", Some("extendedKeyUsage=clientAuth\n"));
        // What `openssl x509 -req` makes without -extfile: X.509 v1, which rustls refuses.
        p.leaf("site-v1", "client-ca", None);
        p
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn s(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// A new P-256 key `name.key`, then `openssl req` with `rest`.
    fn key_and(&self, name: &str, rest: &[&str]) {
        let subject = format!("/CN={name}");
        let key = self.s(&format!("{name}.key"));
        let mut args = vec![
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &subject,
            "-keyout",
            &key,
        ];
        args.extend_from_slice(rest);
        self.openssl(&args);
    }

    /// `name.crt` signed by `ca`; X.509 v3 with these extensions, v1 without.
    fn leaf(&self, name: &str, ca: &str, ext: Option<&str>) {
        let csr = self.s(&format!("{name}.csr"));
        self.key_and(name, &["-out", &csr]);
        let (ca_crt, ca_key, out) = (
            self.s(&format!("{ca}.crt")),
            self.s(&format!("{ca}.key")),
            self.s(&format!("{name}.crt")),
        );
        let mut args = vec![
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &out,
        ];
        let extfile = self.s(&format!("{name}.ext"));
        if let Some(ext) = ext {
            std::fs::write(&extfile, format!("basicConstraints=CA:FALSE\n{ext}")).unwrap();
            args.extend_from_slice(&["-extfile", &extfile]);
        }
        self.openssl(&args);
    }

    fn openssl(&self, args: &[&str]) {
        run_ok(
            Command::new("openssl").args(args).stdin(Stdio::null()),
            "openssl",
        );
    }

    /// The `[host]` and `[hub]` settings of a hub whose nginx serves this PKI's server
    /// certificate and checks clients against its sites' CA.
    pub fn hub_settings(&self) -> String {
        format!(
            "{}[hub]\ntransfer_api = true\nclient_ca_file = \"{}\"\n",
            self.host_settings(),
            self.path("client-ca.crt").display()
        )
    }

    /// The `[host]` table of a site whose nginx serves this PKI's server certificate.
    pub fn host_settings(&self) -> String {
        format!(
            "[host]\nserver_name = \"localhost\"\ntls_certificate = \"{}\"\ntls_certificate_key = \"{}\"\n",
            self.path("server.crt").display(),
            self.path("server.key").display(),
        )
    }

    /// SHA-1 fingerprint as nginx's $ssl_client_fingerprint reports it (hex, no colons).
    pub fn fingerprint(&self, name: &str) -> String {
        let o = run_ok(
            Command::new("openssl")
                .args(["x509", "-noout", "-fingerprint", "-sha1", "-in"])
                .arg(self.path(&format!("{name}.crt"))),
            "openssl fingerprint",
        );
        let text = String::from_utf8(o.stdout).unwrap();
        text.trim()
            .rsplit('=')
            .next()
            .unwrap()
            .replace(':', "")
            .to_ascii_lowercase()
    }
}

/// A private nginx (own prefix, pid, logs, temp paths) serving the given server blocks;
/// `{port}` in them is replaced by the port it listens on.
pub struct Nginx {
    pub proc: Proc,
    pub port: u16,
    pub dir: PathBuf,
}

impl Nginx {
    /// `site`'s own server block, as `lxgate render nginx` writes it, in front of `srv`:
    /// only the listen port and the upstream's server differ from a host's.
    pub fn rendered(site: &Site, srv: &Server) -> Nginx {
        let block = site.ok(&["render", "nginx"]);
        let server = "\n    server 127.0.0.1:8080;\n";
        assert!(
            block.contains("listen 443 ssl;")
                && block.contains(server)
                && block.contains("proxy_pass http://lxgate;")
        );
        let app = srv.base.strip_prefix("http://").expect("the app on tcp");
        let block = block
            .replace("listen 443 ssl;", "listen 127.0.0.1:{port} ssl;")
            .replace(server, &format!("\n    server {app};\n"));
        Nginx::start(&site.dir.path().join("nginx"), &block)
    }

    /// curl over TLS to this nginx, trusting `ca`: status and body. Sent as a plain
    /// client sends (no `Expect: 100-continue`, the path as given). With `zeros`, that
    /// many zero bytes are written to curl's stdin: the body when `args` name `@-`.
    pub fn curl(
        &self,
        ca: &Path,
        path: &str,
        args: &[&str],
        zeros: Option<usize>,
    ) -> (u16, String) {
        let mut c = Command::new("curl");
        c.args([
            "-s",
            "--path-as-is",
            "--max-time",
            "300",
            "-w",
            "\n%{http_code}",
        ])
        .arg("--cacert")
        .arg(ca)
        .args(["-H", "Expect:"])
        .args(args)
        .arg(format!("https://localhost:{}{path}", self.port))
        .stdin(if zeros.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = c.spawn().expect("curl (apt-get install curl)");
        let writer = zeros.map(|n| {
            let mut stdin = child.stdin.take().unwrap();
            std::thread::spawn(move || {
                use std::io::Write;
                let piece = vec![0u8; 1 << 20];
                let mut left = n;
                while left > 0 {
                    let k = left.min(piece.len());
                    // curl stops reading once nginx has answered: a broken pipe is expected.
                    if stdin.write_all(&piece[..k]).is_err() {
                        return;
                    }
                    left -= k;
                }
            })
        });
        let o = child.wait_with_output().unwrap();
        if let Some(w) = writer {
            w.join().unwrap();
        }
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
        let status = code.trim().parse().unwrap_or_else(|_| {
            panic!(
                "curl {path}: no status: {}",
                String::from_utf8_lossy(&o.stderr)
            )
        });
        (status, body.to_string())
    }

    pub fn start(dir: &Path, servers: &str) -> Nginx {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let d = dir.display();
        // As root the workers would otherwise run as nobody, who cannot enter the test's
        // temp dirs.
        let user = if rustix::process::geteuid().is_root() {
            "user root root;\n"
        } else {
            ""
        };
        let conf = format!(
            "{user}worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n    log_format lx '\"$request\" $status verify=$ssl_client_verify fp=$ssl_client_fingerprint';\n    access_log {d}/access.log lx;\n    client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n    fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n{}\n}}\n",
            servers.replace("{port}", &port.to_string())
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let mut c = Command::new(nginx_bin());
        c.arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&path)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut proc = Proc {
            child: c.spawn().expect("spawn nginx"),
        };
        let log = dir.join("error.log");
        wait_for("nginx to listen", Duration::from_secs(20), || {
            assert!(
                proc.alive(),
                "nginx died: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Nginx {
            proc,
            port,
            dir: dir.to_path_buf(),
        }
    }
}

pub fn nginx_bin() -> &'static str {
    if Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    }
}
