//! Real parts for every integration test: one PostgreSQL cluster per test binary
//! (initdb into target/, unix socket only, stopped at exit), a fresh database per test,
//! and the real `lxgate` binary under a guard that terminates it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use lxgate::ops::pgcluster::Cluster;

pub mod edge;
pub mod hub_body;
pub mod reference;
pub mod venv;

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

extern "C" fn stop_cluster() {
    if let Some(c) = CLUSTER.get() {
        c.stop();
        let _ = std::fs::remove_dir_all(&c.dir);
    }
}

pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        let dir = scratch_root().join(format!("pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let c = Cluster::start(&dir).expect("start test PostgreSQL (is `postgresql` installed?)");
        // Test-only: the cluster must stop when the test binary exits, and only
        // atexit runs then (statics are never dropped); neither std nor rustix has it.
        #[allow(unsafe_code)]
        // SAFETY: registers a plain extern "C" fn taking nothing; it runs once at exit
        // and touches only the OnceLock set above.
        unsafe {
            libc::atexit(stop_cluster)
        };
        c
    })
}

/// Short paths: unix socket paths must stay under 108 bytes.
pub fn scratch_root() -> PathBuf {
    let p = PathBuf::from("/tmp/lxgate-test");
    std::fs::create_dir_all(&p).unwrap();
    p
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("t")
        .tempdir_in(scratch_root())
        .unwrap()
}

/// A new empty database; its URL.
pub fn fresh_db() -> String {
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let c = cluster();
    rt().block_on(c.create_database(&name))
        .expect("create database")
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_lxgate")
}

/// The real binary with ARGS and exactly these environment variables (plus PATH).
pub fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(bin());
    c.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

pub fn lxgate(args: &[&str], env: &[(&str, &str)]) -> Output {
    command(args, env).output().expect("run lxgate")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Write under an ignored (dot) name, then rename: how a well-behaved sender drops a
/// file into an import folder.
pub fn drop_file(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// Run a tool the test depends on; its failure fails the test with its stderr.
pub fn run_ok(c: &mut Command, what: &str) -> Output {
    let o = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        o.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Poll `cond` until true or `limit` passes; never a bare sleep.
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A host-like setup: data root, database, env for the binary.
pub struct Site {
    pub dir: tempfile::TempDir,
    pub db: String,
    pub env: Vec<(String, String)>,
}

impl Site {
    pub fn new(role: &str) -> Site {
        let dir = tempdir();
        let db = fresh_db();
        let data = dir.path().join("data");
        for sub in [
            "import/video_import",
            "import/report_import",
            "import/preanonymized_import",
            "import/sap_import",
            "import/sap_import_processed",
            "import/sap_import_failed",
            "quarantine",
            "logs",
            "storage",
        ] {
            std::fs::create_dir_all(data.join(sub)).unwrap();
        }
        // Reports and preanonymized pairs are sealed at rest by default: every site has
        // its master identity, made as lxgate-keys.service makes it.
        let key = Site::default_master_key(dir.path());
        let env = vec![
            ("DATABASE_URL".to_string(), db.clone()),
            (
                "LX_ANNOTATE_ENCRYPTED_DATA_DIR".to_string(),
                data.display().to_string(),
            ),
            ("ENDOREG_DEPLOYMENT_ROLE".to_string(), role.to_string()),
            ("LXGATE_MASTER_KEY".to_string(), key.display().to_string()),
        ];
        let site = Site { dir, db, env };
        site.ensure_master_key(&key);
        site
    }

    /// Where `Site::new` puts the site's master identity.
    pub fn default_master_key(dir: &Path) -> PathBuf {
        dir.join("keys/master.age")
    }

    pub fn master_key(&self) -> PathBuf {
        Site::default_master_key(self.dir.path())
    }

    /// A migrated standalone site with center "A" as the default center, running with
    /// this settings file; returns it and its import subtree.
    pub fn with_center_a(settings: &str) -> (Site, PathBuf) {
        let mut s = Site::new("standalone");
        s.set("LX_ANNOTATE_DEFAULT_CENTER", "A");
        let cfg = s.dir.path().join("lxgate.toml");
        std::fs::write(&cfg, settings).unwrap();
        s.set("LXGATE_CONFIG", cfg.to_str().unwrap());
        s.migrate();
        s.ok(&["center", "add", "A", "--name", "A"]);
        let import = s.data().join("import");
        (s, import)
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn env(&self) -> Vec<(&str, &str)> {
        self.env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    pub fn set(&mut self, k: &str, v: &str) {
        self.env.retain(|(key, _)| key != k);
        self.env.push((k.to_string(), v.to_string()));
    }

    pub fn run(&self, args: &[&str]) -> Output {
        lxgate(args, &self.env())
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "lxgate {args:?} failed: {}", stderr(&o));
        stdout(&o)
    }

    /// `lxgate node add KEY --center CENTER [--cert-fingerprint FP]`: the node's secret.
    pub fn add_node(&self, key: &str, center: &str, fingerprint: Option<&str>) -> String {
        let mut args = vec!["node", "add", key, "--center", center];
        if let Some(fp) = fingerprint {
            args.extend(["--cert-fingerprint", fp]);
        }
        self.ok(&args).trim().to_string()
    }

    pub fn migrate(&self) {
        self.ok(&["migrate"]);
    }

    pub fn token(&self, role: &str, center: Option<&str>, label: &str) -> String {
        let mut args = vec!["token", "create", "--role", role, "--name", label];
        if let Some(c) = center {
            args.extend(["--center", c]);
        }
        self.ok(&args).trim().to_string()
    }

    /// The age master identity at `key`, made as lxgate-keys.service makes it; the
    /// group is root when the tests run as root (as in CI), else nogroup.
    pub fn ensure_master_key(&self, key: &Path) {
        let group = if rustix::process::geteuid().is_root() {
            "root"
        } else {
            "nogroup"
        };
        self.ok(&[
            "keys",
            "ensure",
            "--key",
            key.to_str().unwrap(),
            "--group",
            group,
        ]);
    }

    pub fn sql(&self, q: &str) -> Vec<tokio_postgres::Row> {
        rt().block_on(async {
            let c = lxgate::db::connect(&self.db).await.unwrap();
            c.query(q, &[]).await.unwrap()
        })
    }

    pub fn count(&self, q: &str) -> i64 {
        self.sql(q)[0].get(0)
    }
}

/// The real binary, terminated (TERM, then KILL) when dropped.
pub struct Proc {
    pub child: Child,
}

impl Proc {
    pub fn spawn(args: &[&str], env: &[(&str, &str)], log: &Path) -> Proc {
        let mut c = command(args, env);
        let f = std::fs::File::create(log).unwrap();
        c.stdout(Stdio::null()).stderr(f);
        Proc {
            child: c.spawn().expect("spawn lxgate"),
        }
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn terminate(&mut self) -> Option<i32> {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::TERM,
        );
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.alive() {
            self.terminate();
        }
    }
}

/// `lxgate serve` on a free loopback port, ready.
pub struct Server {
    pub proc: Proc,
    pub base: String,
    pub log: PathBuf,
}

impl Server {
    pub fn start(site: &Site) -> Server {
        Self::start_with(site, &[])
    }

    pub fn start_with(site: &Site, extra: &[(&str, &str)]) -> Server {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut env = site.env();
        env.push(("LXGATE_LISTEN", &listen));
        env.extend_from_slice(extra);
        let log = site.dir.path().join(format!("serve-{port}.log"));
        let mut proc = Proc::spawn(&["serve"], &env, &log);
        let base = format!("http://{listen}");
        let health = format!("{base}/healthz");
        wait_for(
            "lxgate serve to answer /healthz",
            Duration::from_secs(20),
            || {
                assert!(
                    proc.alive(),
                    "lxgate serve died: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                http().get(&health).call().is_ok()
            },
        );
        Server { proc, base, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// HTTP with timeouts, so a hung server fails the test instead of stalling it.
pub fn http() -> &'static ureq::Agent {
    static A: OnceLock<ureq::Agent> = OnceLock::new();
    A.get_or_init(|| {
        ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .timeout(Duration::from_secs(120))
            .build()
    })
}

/// A multipart/form-data body of `(name, filename, value)` parts, in order, and its
/// Content-Type.
pub fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let b = "lxAnnotateBoundary7";
    let mut body = Vec::new();
    for (name, filename, value) in parts {
        let disp = match filename {
            Some(f) => format!("form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream"),
            None => format!("form-data; name=\"{name}\""),
        };
        body.extend(format!("--{b}\r\nContent-Disposition: {disp}\r\n\r\n").as_bytes());
        body.extend(*value);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{b}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={b}"), body)
}

/// Status and JSON body of a response, whatever its status.
pub fn call(r: Result<ureq::Response, ureq::Error>) -> (u16, serde_json::Value) {
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// The database as plain SQL: equal text means equal schema and rows.
pub fn plain_sql(url: &str) -> String {
    let o = run_ok(
        std::process::Command::new(lxgate::db::tools::program("pg_dump").unwrap()).args([
            "--no-owner",
            "--no-privileges",
            "--dbname",
            url,
        ]),
        "pg_dump plain",
    );
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        // pg_dump 15+ prints a random \restrict key per run in newer point releases.
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Entry names of a directory, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Settings files, one per role and switch combination (tests/render-cases/NAME.toml),
/// shared by every test that compares renders (Rust, pure Nix, the evaluated module,
/// nginx -t) and by the flake check nix/render-check.nix. tests/nix/module-eval.nix has
/// the role cases as module options.
pub fn role_cases() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/render-cases");
    files_under(&dir)
        .into_iter()
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

/// The settings of one case of `role_cases`.
pub fn role_case(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/render-cases/{name}.toml"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Two renders agree: the same names, and each entry equal.
pub fn assert_same_entries<V: PartialEq + std::fmt::Debug>(
    what: &str,
    left: &std::collections::BTreeMap<String, V>,
    right: &std::collections::BTreeMap<String, V>,
) {
    assert_eq!(
        left.keys().collect::<Vec<_>>(),
        right.keys().collect::<Vec<_>>(),
        "{what}: different sets of files/units"
    );
    for (name, value) in right {
        assert_eq!(&left[name], value, "{what}: {name} differs");
    }
}

/// `lxgate dev` on a free loopback port, up, with the uploader token it printed.
pub struct Dev {
    pub proc: Proc,
    pub token: String,
    pub base: String,
}

impl Dev {
    /// Start on `state`, stdout to `out` and stderr beside it (`.err`).
    pub fn start(state: &Path, out: &Path) -> Dev {
        let listen = format!("127.0.0.1:{}", free_port());
        let mut c = command(
            &[
                "dev",
                "--state",
                state.to_str().unwrap(),
                "--listen",
                &listen,
            ],
            &[],
        );
        c.stdout(std::fs::File::create(out).unwrap())
            .stderr(std::fs::File::create(out.with_extension("err")).unwrap())
            .stdin(Stdio::null());
        let mut proc = Proc {
            child: c.spawn().unwrap(),
        };
        let mut token = String::new();
        wait_for(
            "lxgate dev to print its token",
            Duration::from_secs(60),
            || {
                assert!(
                    proc.alive(),
                    "lxgate dev died: {}",
                    std::fs::read_to_string(out.with_extension("err")).unwrap_or_default()
                );
                let text = std::fs::read_to_string(out).unwrap_or_default();
                match text
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("token     : "))
                {
                    Some(rest) => {
                        token = rest.split_whitespace().next().unwrap().to_string();
                        true
                    }
                    None => false,
                }
            },
        );
        Dev {
            proc,
            token,
            base: format!("http://{listen}"),
        }
    }
}
