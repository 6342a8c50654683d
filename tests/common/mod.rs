//! Shared harness for the tests that run against the real test mail server
//! (Postfix + Dovecot on loopback, started by `scripts/testserver.sh start`).
//!
//! * [`TestServer::get`] finds the server (environment variables printed by
//!   `scripts/testserver.sh env`, or the script itself) and panics with what to do
//!   when it is not running: these tests never skip silently.
//! * [`TestServer::args`] / [`TestServer::cli`] build a check for one mailbox;
//!   [`run_in_process`] and [`run_binary`] run it.
//! * Maildir helpers look at (and plant "foreign" mail into) a user's Maildir.
//!
//! Mailboxes: every test uses its own `testNN@mailprobe.test` so that tests running
//! in parallel never see each other's mail. `tests/e2e.rs` uses test01..test11;
//! other test files should take test12..test16 (or `probe`).
//!
//! Every wait and loop here is bounded in count and time.

#![allow(dead_code)]

pub mod tls;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub mod oauth;

use mailprobe::app::cli::{CheckArgs, MailboxArgs};
use mailprobe::model::report::Report;

/// What to tell the developer when the server does not answer.
pub const NOT_RUNNING: &str =
    "the test mail server is not running: start it with `scripts/testserver.sh start` (as root)";

/// The header every probe message carries.
pub const PROBE_MARKER: &[u8] = b"X-Mailprobe-Id: mailprobe-";

/// Endpoints and files of the running test server.
#[derive(Debug, Clone)]
pub struct TestServer {
    pub host: String,
    pub smtp_port: u16,
    pub submission_port: u16,
    pub smtps_port: u16,
    pub imap_port: u16,
    pub imaps_port: u16,
    pub pop3_port: u16,
    pub pop3s_port: u16,
    pub password_file: PathBuf,
    pub ca_file: PathBuf,
    pub maildir_root: PathBuf,
    pub domain: String,
}

const KEYS: [&str; 12] = [
    "MAILPROBE_TEST_HOST",
    "MAILPROBE_TEST_SMTP_PORT",
    "MAILPROBE_TEST_SUBMISSION_PORT",
    "MAILPROBE_TEST_SMTPS_PORT",
    "MAILPROBE_TEST_IMAP_PORT",
    "MAILPROBE_TEST_IMAPS_PORT",
    "MAILPROBE_TEST_POP3_PORT",
    "MAILPROBE_TEST_POP3S_PORT",
    "MAILPROBE_TEST_PASSWORD_FILE",
    "MAILPROBE_TEST_CA_FILE",
    "MAILPROBE_TEST_MAILDIR_ROOT",
    "MAILPROBE_TEST_DOMAIN",
];

impl TestServer {
    /// The running test server. Panics (never skips) when it does not answer.
    pub fn get() -> &'static TestServer {
        static SERVER: OnceLock<TestServer> = OnceLock::new();
        let server = SERVER.get_or_init(TestServer::discover);
        server.check_reachable();
        server
    }

    fn discover() -> TestServer {
        let mut values: HashMap<String, String> = HashMap::new();
        for key in KEYS {
            if let Ok(v) = std::env::var(key)
                && !v.is_empty()
            {
                values.insert(key.to_string(), v);
            }
        }
        if KEYS.iter().any(|k| !values.contains_key(*k)) {
            for (k, v) in script_env() {
                values.entry(k).or_insert(v);
            }
        }
        let get = |key: &str| -> String {
            values.get(key).cloned().unwrap_or_else(|| {
                panic!("{key} is not set and `scripts/testserver.sh env` did not print it; {NOT_RUNNING}")
            })
        };
        let port = |key: &str| -> u16 {
            let v = get(key);
            v.parse()
                .unwrap_or_else(|_| panic!("{key}={v:?} is not a port number"))
        };
        TestServer {
            host: get("MAILPROBE_TEST_HOST"),
            smtp_port: port("MAILPROBE_TEST_SMTP_PORT"),
            submission_port: port("MAILPROBE_TEST_SUBMISSION_PORT"),
            smtps_port: port("MAILPROBE_TEST_SMTPS_PORT"),
            imap_port: port("MAILPROBE_TEST_IMAP_PORT"),
            imaps_port: port("MAILPROBE_TEST_IMAPS_PORT"),
            pop3_port: port("MAILPROBE_TEST_POP3_PORT"),
            pop3s_port: port("MAILPROBE_TEST_POP3S_PORT"),
            password_file: PathBuf::from(get("MAILPROBE_TEST_PASSWORD_FILE")),
            ca_file: PathBuf::from(get("MAILPROBE_TEST_CA_FILE")),
            maildir_root: PathBuf::from(get("MAILPROBE_TEST_MAILDIR_ROOT")),
            domain: get("MAILPROBE_TEST_DOMAIN"),
        }
    }

    /// Every port the tests use must accept a TCP connection within 2 s.
    fn check_reachable(&self) {
        let ports = [
            ("SMTP", self.smtp_port),
            ("SMTP submission", self.submission_port),
            ("SMTPS", self.smtps_port),
            ("IMAP", self.imap_port),
            ("IMAPS", self.imaps_port),
            ("POP3", self.pop3_port),
            ("POP3S", self.pop3s_port),
        ];
        for (name, port) in ports {
            let addrs: Vec<SocketAddr> = (self.host.as_str(), port)
                .to_socket_addrs()
                .map(|a| a.collect())
                .unwrap_or_default();
            let ok = addrs
                .iter()
                .any(|a| TcpStream::connect_timeout(a, Duration::from_secs(2)).is_ok());
            if !ok {
                panic!(
                    "{NOT_RUNNING} ({name} on {}:{port} does not accept connections)",
                    self.host
                );
            }
        }
        for file in [&self.password_file, &self.ca_file] {
            if !file.is_file() {
                panic!("{} does not exist; {NOT_RUNNING}", file.display());
            }
        }
    }

    /// The test password (first line of the password file).
    pub fn password(&self) -> String {
        let text = std::fs::read_to_string(&self.password_file).unwrap_or_else(|e| {
            panic!(
                "cannot read the test password file {}: {e} (run the tests as root)",
                self.password_file.display()
            )
        });
        text.lines().next().unwrap_or("").to_string()
    }

    /// `local@mailprobe.test`.
    pub fn user(&self, local: &str) -> String {
        format!("{local}@{}", self.domain)
    }

    pub fn url(&self, scheme: &str, port: u16) -> String {
        format!("{scheme}://{}:{port}", self.host)
    }
    /// Submission (587-style): STARTTLS + AUTH.
    pub fn submission_url(&self) -> String {
        self.url("smtp", self.submission_port)
    }
    /// SMTPS: implicit TLS + AUTH.
    pub fn smtps_url(&self) -> String {
        self.url("smtps", self.smtps_port)
    }
    /// Port-25-style SMTP: no AUTH needed for local recipients.
    pub fn smtp_url(&self) -> String {
        self.url("smtp", self.smtp_port)
    }
    pub fn imap_url(&self) -> String {
        self.url("imap", self.imap_port)
    }
    pub fn imaps_url(&self) -> String {
        self.url("imaps", self.imaps_port)
    }
    pub fn pop3_url(&self) -> String {
        self.url("pop3", self.pop3_port)
    }
    pub fn pop3s_url(&self) -> String {
        self.url("pop3s", self.pop3s_port)
    }

    /// A check for mailbox `local`: login and recipient `local@domain`, the test
    /// password file and CA, timeouts like `probes/local.toml`. Endpoints and sizes
    /// are left for the test to set.
    pub fn args(&self, local: &str) -> CheckArgs {
        CheckArgs {
            mailbox: MailboxArgs {
                user: Some(self.user(local)),
                password_file: Some(self.password_file.clone()),
                ca_file: Some(self.ca_file.clone()),
                connect_timeout: Some("5s".into()),
                greeting_timeout: Some("10s".into()),
                command_timeout: Some("15s".into()),
                data_timeout: Some("60s".into()),
                ..Default::default()
            },
            delivery_timeout: Some("30s".into()),
            ..Default::default()
        }
    }

    /// The same as [`TestServer::args`] as command-line arguments (starting with `check`).
    pub fn cli(&self, local: &str) -> Vec<String> {
        [
            "check",
            "--user",
            &self.user(local),
            "--password-file",
            &self.password_file.to_string_lossy(),
            "--ca-file",
            &self.ca_file.to_string_lossy(),
            "--connect-timeout",
            "5s",
            "--greeting-timeout",
            "10s",
            "--command-timeout",
            "15s",
            "--data-timeout",
            "60s",
            "--delivery-timeout",
            "30s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// [`TestServer::cli`] for `cleanup` (which takes no delivery timeout: it sends nothing).
    pub fn cleanup_cli(&self, local: &str) -> Vec<String> {
        let mut args = self.cli(local);
        args[0] = "cleanup".into();
        if let Some(i) = args.iter().position(|a| a == "--delivery-timeout") {
            args.drain(i..i + 2);
        }
        args
    }

    // ---------------------------------------------------------------- Maildir

    /// `<root>/<local>/Maildir`.
    pub fn maildir(&self, local: &str) -> PathBuf {
        self.maildir_root.join(local).join("Maildir")
    }

    /// Every message file in `new/` and `cur/` with its bytes.
    pub fn maildir_files(&self, local: &str) -> Vec<MaildirFile> {
        let dir = self.maildir(local);
        let mut files = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
                continue;
            };
            for entry in entries.flatten().take(100_000) {
                let path = entry.path();
                if !path.is_file() {
                    continue;
                }
                // A file may be renamed (new/ -> cur/, flags) between listing and reading.
                if let Ok(bytes) = std::fs::read(&path) {
                    files.push(MaildirFile { path, bytes });
                }
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        files
    }

    /// Files of the Maildir whose content contains `needle`.
    pub fn files_containing(&self, local: &str, needle: &[u8]) -> Vec<MaildirFile> {
        self.maildir_files(local)
            .into_iter()
            .filter(|f| contains(&f.bytes, needle))
            .collect()
    }

    /// Probe messages (any run) in the Maildir.
    pub fn count_probe_messages(&self, local: &str) -> usize {
        self.files_containing(local, PROBE_MARKER).len()
    }

    /// Remove every message file of the mailbox (start a test from an empty mailbox).
    /// Dovecot notices on its next scan.
    pub fn clear_maildir(&self, local: &str) {
        for f in self.maildir_files(local) {
            let _ = std::fs::remove_file(&f.path);
        }
    }

    /// Deliver a "foreign" message (not the probe's) straight into `new/`: written
    /// to `tmp/` then renamed, owned like the Maildir so Dovecot can handle it.
    /// Returns the path in `new/`.
    pub fn drop_foreign(&self, local: &str, content: &[u8]) -> PathBuf {
        use std::os::unix::fs::MetadataExt;
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = self.maildir(local);
        let meta = std::fs::metadata(&dir)
            .unwrap_or_else(|e| panic!("no Maildir {} ({e}); {NOT_RUNNING}", dir.display()));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let name = format!(
            "{}.M{}P{}Q{}.mailprobe-tests,S={}",
            now.as_secs(),
            now.subsec_micros(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            content.len()
        );
        let tmp = dir.join("tmp").join(&name);
        let new = dir.join("new").join(&name);
        std::fs::write(&tmp, content)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", tmp.display()));
        std::os::unix::fs::chown(&tmp, Some(meta.uid()), Some(meta.gid()))
            .unwrap_or_else(|e| panic!("cannot chown {}: {e} (run as root)", tmp.display()));
        std::fs::rename(&tmp, &new)
            .unwrap_or_else(|e| panic!("cannot move {} to new/: {e}", tmp.display()));
        new
    }

    /// Log in once over plain IMAP with the right password. Dovecot's auth penalty
    /// (per client IP) delays the next login after failed ones by seconds, which the
    /// probe would rightly report as `slow`; a successful login resets it.
    pub fn reset_auth_penalty(&self, local: &str) {
        // A configuration reload by a concurrent test may drop the connection: retry a little.
        let mut last = String::new();
        for _ in 0..3 {
            match self.imap_login_once(local) {
                Ok(()) => return,
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("IMAP LOGIN with the test password failed: {last}");
    }

    fn imap_login_once(&self, local: &str) -> Result<(), String> {
        let addr = (self.host.as_str(), self.imap_port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or("no IMAP address")?;
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("{NOT_RUNNING} (IMAP: {e})"))?;
        let io = |e: std::io::Error| format!("IMAP: {e}");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(io)?;
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .map_err(io)?;
        let mut writer = stream.try_clone().map_err(io)?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).map_err(io)?;
        if !line.starts_with("* OK") {
            return Err(format!("IMAP greeting: {line:?}"));
        }
        let password = self.password();
        write!(
            writer,
            "a1 LOGIN \"{}\" \"{}\"\r\n",
            self.user(local),
            password.replace('\\', "\\\\").replace('"', "\\\"")
        )
        .map_err(io)?;
        for _ in 0..50 {
            line.clear();
            if reader.read_line(&mut line).map_err(io)? == 0 {
                return Err("IMAP closed the connection after LOGIN".into());
            }
            if line.starts_with("a1 ") {
                let _ = writer.write_all(b"a2 LOGOUT\r\n");
                return if line.starts_with("a1 OK") {
                    Ok(())
                } else {
                    Err(format!("IMAP LOGIN: {}", line.trim_end()))
                };
            }
        }
        Err("no tagged answer to LOGIN".into())
    }
}

/// One message file of a Maildir.
#[derive(Debug, Clone)]
pub struct MaildirFile {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// `scripts/testserver.sh env`, parsed (`export K=V` lines, shell-quoted values).
fn script_env() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("bash")
        .arg(root.join("scripts/testserver.sh"))
        .arg("env")
        .current_dir(root)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run scripts/testserver.sh env: {e}; {NOT_RUNNING}"));
    if !output.status.success() {
        panic!(
            "scripts/testserver.sh env failed: {}; {NOT_RUNNING}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("export "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), shell_unquote(v)))
        .collect()
}

/// Undo the quoting of `printf %q` / `declare -p` style values.
fn shell_unquote(v: &str) -> String {
    let mut out = String::new();
    let mut chars = v.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => out.push(c),
            (_, '\\') => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            (_, c) => out.push(c),
        }
    }
    out
}

// -------------------------------------------------------------------- running

/// Resolve the arguments and run one check in this process.
pub fn run_in_process(args: CheckArgs) -> Report {
    let settings = mailprobe::app::profile::resolve(&args)
        .unwrap_or_else(|e| panic!("the test's arguments do not resolve: {e}"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime
        .block_on(mailprobe::probe::check::run_check(settings))
        .unwrap_or_else(|e| panic!("run_check failed: {e}"))
}

/// What a run of the binary did.
#[derive(Debug, Clone)]
pub struct BinOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Run the `mailprobe` binary with a 120 s limit. The environment is inherited
/// except `MAILPROBE_PASSWORD`, which is removed (tests are hermetic); `envs` is set on top.
pub fn run_binary<S: AsRef<str>>(args: &[S], envs: &[(&str, &str)]) -> BinOutput {
    run_binary_timeout(args, envs, Duration::from_secs(120))
}

pub fn run_binary_timeout<S: AsRef<str>>(
    args: &[S],
    envs: &[(&str, &str)],
    limit: Duration,
) -> BinOutput {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let mut command = Command::new(env!("CARGO_BIN_EXE_mailprobe"));
    command
        .args(&args)
        .env_remove("MAILPROBE_PASSWORD")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        command.env(k, v);
    }
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start mailprobe: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("waiting for mailprobe failed: {e}"),
        }
    };
    let stdout = String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
    let Some(status) = status else {
        panic!(
            "mailprobe {args:?} did not finish within {limit:?} and was killed\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
    };
    BinOutput {
        code: status.code().unwrap_or(-1),
        stdout,
        stderr,
    }
}

/// Poll `condition` every `interval` until it holds or `limit` passes (bounded both
/// in time and in count). Returns whether it held.
pub fn eventually(
    limit: Duration,
    interval: Duration,
    mut condition: impl FnMut() -> bool,
) -> bool {
    let deadline = Instant::now() + limit;
    let max_polls = (limit.as_millis() / interval.as_millis().max(1)) as usize + 2;
    for _ in 0..max_polls {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(interval);
    }
    condition()
}

// ---------------------------------------------------- sharing the one server

/// How long a test waits for its turn on the server before giving up.
pub const SERVER_LOCK_WAIT: Duration = Duration::from_secs(20 * 60);

/// A turn on the test server: a `flock` on one lock file shared by every test
/// process (`cargo test` of different test files, or several engineers at once).
/// Released when dropped.
pub struct ServerTurn {
    _file: std::fs::File,
}

/// The lock file all test processes use (`$TMPDIR/mailprobe-testserver.lock`).
pub fn server_lock_path() -> PathBuf {
    std::env::temp_dir().join("mailprobe-testserver.lock")
}

fn take_turn(exclusive: bool) -> ServerTurn {
    let path = server_lock_path();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot open the lock file {}: {e}", path.display()));
    let deadline = Instant::now() + SERVER_LOCK_WAIT;
    let polls = (SERVER_LOCK_WAIT.as_millis() / 100) as usize + 1;
    for _ in 0..polls {
        let attempt = if exclusive {
            file.try_lock()
        } else {
            file.try_lock_shared()
        };
        match attempt {
            Ok(()) => return ServerTurn { _file: file },
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(std::fs::TryLockError::WouldBlock) => break,
            Err(std::fs::TryLockError::Error(e)) => {
                panic!("cannot lock {}: {e}", path.display())
            }
        }
    }
    panic!(
        "waited {SERVER_LOCK_WAIT:?} for the test server: another test holds {} \
         (a test that reconfigures the server or fails logins on purpose)",
        path.display()
    );
}

/// A turn shared with other ordinary tests: hold it while talking to the server.
/// Ordinary tests (a healthy server, each on its own mailbox) run in parallel.
pub fn shared_server() -> ServerTurn {
    take_turn(false)
}

/// The server to yourself, for tests that change it for everyone: reconfigure
/// Postfix/Dovecot (`scripts/testserver.sh postconf`, size limits, header checks,
/// restarts) or fail logins on purpose (Dovecot's auth penalty then slows down every
/// following login from 127.0.0.1 by seconds, which a parallel healthy run would
/// rightly report as `slow`). Restore the server before dropping the guard.
pub fn exclusive_server() -> ServerTurn {
    take_turn(true)
}

/// Every field path of a JSON value (`messages[].smtp.phases_ms.data`), sorted.
pub fn json_field_paths(value: &serde_json::Value) -> Vec<String> {
    fn walk(v: &serde_json::Value, path: &str, out: &mut std::collections::BTreeSet<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, child) in map {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    out.insert(p.clone());
                    walk(child, &p, out);
                }
            }
            serde_json::Value::Array(items) => {
                for child in items {
                    walk(child, &format!("{path}[]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = std::collections::BTreeSet::new();
    walk(value, "", &mut out);
    out.into_iter().collect()
}

/// The report's field paths equal the reviewed list in `tests/snapshots/NAME`
/// (the JSON report only ever gains fields); `MAILPROBE_BLESS=1` rewrites it.
pub fn assert_json_fields(value: &serde_json::Value, name: &str) {
    let got = json_field_paths(value).join("\n") + "\n";
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name);
    if std::env::var_os("MAILPROBE_BLESS").is_some() {
        std::fs::write(&path, &got).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    assert_eq!(
        got,
        expected,
        "the report's fields differ from {}",
        path.display()
    );
}
