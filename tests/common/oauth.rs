//! A private test server (its own MAILPROBE_TEST_DIR and ports) whose Dovecot
//! takes OAuth bearer tokens: an `oauth2` passdb asks a token introspection
//! endpoint that this harness serves on loopback, and Postfix's submission
//! port authenticates through Dovecot SASL, so SMTP, IMAP and POP3 all offer
//! XOAUTH2 and OAUTHBEARER. Tokens are HS256 JWTs signed with a test key; the
//! endpoint says `active` only for a good signature and an `exp` in the future,
//! and names the token's `sub` (Dovecot compares it with the login).
//!
//! [`OauthServer::start`] takes a file lock (one user of the instance at a
//! time, across test binaries), starts and configures the instance, and stops
//! it when dropped. Every wait is bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use sha2::{Digest, Sha256};

const DIR: &str = "/var/lib/mailprobe-oauth";
const LOCK: &str = "/var/lib/mailprobe-oauth.lock";
const INTROSPECTION_PORT: u16 = 5780;
const PORTS: [(&str, u16); 7] = [
    ("MAILPROBE_TEST_SMTP_PORT", 5725),
    ("MAILPROBE_TEST_SUBMISSION_PORT", 5787),
    ("MAILPROBE_TEST_SMTPS_PORT", 5765),
    ("MAILPROBE_TEST_IMAP_PORT", 5743),
    ("MAILPROBE_TEST_IMAPS_PORT", 5793),
    ("MAILPROBE_TEST_POP3_PORT", 5710),
    ("MAILPROBE_TEST_POP3S_PORT", 5795),
];
/// The key the test tokens are signed with (and the endpoint checks).
const KEY: &[u8] = b"mailprobe-oauth-test-key-0123456789";
pub const DOMAIN: &str = "mailprobe.test";

pub struct OauthServer {
    _lock: std::fs::File,
    stop: Arc<AtomicBool>,
    pub ca_file: PathBuf,
    pub maildir_root: PathBuf,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/testserver.sh")
}

fn run_script(args: &[&str]) -> Result<(), String> {
    let log = std::fs::File::create(format!("{DIR}.script.log")).map_err(|e| e.to_string())?;
    // Daemons inherit stdout/stderr: a file, never a pipe we would wait on.
    let status = Command::new(script())
        .args(args)
        .env("MAILPROBE_TEST_DIR", DIR)
        .envs(PORTS.iter().map(|(k, v)| (*k, v.to_string())))
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .status()
        .map_err(|e| format!("cannot run {}: {e}", script().display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "scripts/testserver.sh {args:?} failed ({status}); see {DIR}.script.log:\n{}",
            std::fs::read_to_string(format!("{DIR}.script.log")).unwrap_or_default()
        ))
    }
}

impl OauthServer {
    /// Start (or reuse) the private instance with OAuth on. Panics saying what
    /// to do when it cannot (these tests never skip).
    pub fn start() -> OauthServer {
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK)
            .unwrap_or_else(|e| panic!("cannot open {LOCK} (run the tests as root): {e}"));
        // SAFETY: flock(2) on a descriptor we own; released when the file closes.
        let locked = unsafe {
            use std::os::fd::AsRawFd as _;
            libc::flock(lock.as_raw_fd(), libc::LOCK_EX)
        };
        assert_eq!(locked, 0, "cannot lock {LOCK}");
        run_script(&["start"]).unwrap_or_else(|e| {
            panic!("the private OAuth test server did not start (needs root and Debian's postfix/dovecot): {e}")
        });
        configure_oauth();
        let stop = Arc::new(AtomicBool::new(false));
        serve_introspection(Arc::clone(&stop));
        let conf = format!("{DIR}/etc/dovecot/dovecot.conf");
        let reload = Command::new("dovecot")
            .args(["-c", &conf, "reload"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("dovecot reload");
        assert!(reload.success(), "dovecot reload failed");
        wait_for_offer();
        OauthServer {
            _lock: lock,
            stop,
            ca_file: PathBuf::from(format!("{DIR}/tls/ca.pem")),
            maildir_root: PathBuf::from(format!("{DIR}/mail")),
        }
    }

    pub fn url(&self, scheme: &str) -> String {
        let key = match scheme {
            "smtp" => "MAILPROBE_TEST_SUBMISSION_PORT",
            "smtps" => "MAILPROBE_TEST_SMTPS_PORT",
            "imap" => "MAILPROBE_TEST_IMAP_PORT",
            "imaps" => "MAILPROBE_TEST_IMAPS_PORT",
            "pop3" => "MAILPROBE_TEST_POP3_PORT",
            "pop3s" => "MAILPROBE_TEST_POP3S_PORT",
            other => panic!("no {other} port"),
        };
        let port = PORTS.iter().find(|(k, _)| *k == key).unwrap().1;
        format!("{scheme}://127.0.0.1:{port}")
    }

    pub fn user(&self, local: &str) -> String {
        format!("{local}@{DOMAIN}")
    }
}

impl OauthServer {
    /// A successful IMAP login with a valid token for `local`: Dovecot's auth
    /// penalty (failures slow later logins from this address) starts over.
    pub fn reset_auth_penalty(&self, local: &str) {
        let user = self.user(local);
        let blob = base64::engine::general_purpose::STANDARD.encode(format!(
            "user={user}\x01auth=Bearer {}\x01\x01",
            token(&user, 300, true)
        ));
        let stream = TcpStream::connect(("127.0.0.1", 5743)).expect("IMAP on the OAuth server");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).expect("IMAP greeting");
        write!(&stream, "a AUTHENTICATE XOAUTH2 {blob}\r\n").unwrap();
        for _ in 0..20 {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            if line.starts_with("a ") {
                assert!(line.starts_with("a OK"), "a valid token is refused: {line}");
                let _ = write!(&stream, "b LOGOUT\r\n");
                return;
            }
        }
        panic!("no answer to AUTHENTICATE: {line}");
    }
}

impl Drop for OauthServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = run_script(&["stop"]);
    }
}

/// Add the oauth2 passdb to the instance's Dovecot configuration (idempotent).
fn configure_oauth() {
    let conf_path = format!("{DIR}/etc/dovecot/dovecot.conf");
    let ext = format!("{DIR}/etc/dovecot/oauth2.conf.ext");
    std::fs::write(
        &ext,
        format!(
            "introspection_mode = get\n\
             introspection_url = http://127.0.0.1:{INTROSPECTION_PORT}/introspect?token=\n\
             force_introspection = yes\n\
             username_attribute = sub\n\
             active_attribute = active\n\
             active_value = true\n\
             scope = mail\n"
        ),
    )
    .expect("write oauth2.conf.ext");
    let conf = std::fs::read_to_string(&conf_path).expect("read dovecot.conf");
    if conf.contains("driver = oauth2") {
        return;
    }
    let conf = conf
        .replace(
            "auth_mechanisms = plain login",
            "auth_mechanisms = plain login xoauth2 oauthbearer",
        )
        .replacen(
            "passdb {\n  driver = passwd-file\n",
            &format!(
                "passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = {ext}\n}}\n\
                 passdb {{\n  driver = passwd-file\n  mechanisms = plain login\n"
            ),
            1,
        );
    assert!(
        conf.contains("driver = oauth2"),
        "dovecot.conf has an unexpected layout"
    );
    std::fs::write(&conf_path, conf).expect("write dovecot.conf");
}

/// Wait (bounded) until the IMAP greeting offers AUTH=XOAUTH2.
fn wait_for_offer() {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < Duration::from_secs(20) {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", 5743)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut line = String::new();
            let _ = BufReader::new(&s).read_line(&mut line);
            if line.contains("AUTH=XOAUTH2") && line.contains("AUTH=OAUTHBEARER") {
                return;
            }
            last = line;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("Dovecot does not offer XOAUTH2/OAUTHBEARER after the reload: {last:?}");
}

fn b64url(raw: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    block[..key.len()].copy_from_slice(key);
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(data)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A JWT for `sub` expiring `exp_in` seconds from now (negative: already
/// expired), signed with the test key or, when `good` is false, another one.
pub fn token(sub: &str, exp_in: i64, good: bool) -> String {
    let header = b64url(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = b64url(
        format!(
            r#"{{"sub":"{sub}","iss":"mailprobe-test","scope":"mail","exp":{},"n":"{}"}}"#,
            now() + exp_in,
            rand_suffix()
        )
        .as_bytes(),
    );
    let signing_input = format!("{header}.{payload}");
    let key: &[u8] = if good { KEY } else { b"some-other-key" };
    format!(
        "{signing_input}.{}",
        b64url(&hmac_sha256(key, signing_input.as_bytes()))
    )
}

fn rand_suffix() -> String {
    format!(
        "{:x}",
        Instant::now().elapsed().as_nanos() ^ (now() as u128) << 20
    )
}

/// What the introspection endpoint answers for `token`.
fn introspect(token: &str) -> String {
    let inactive = r#"{"active":false}"#.to_string();
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return inactive;
    };
    let expected = b64url(&hmac_sha256(KEY, format!("{h}.{p}").as_bytes()));
    if expected != sig {
        return inactive;
    }
    let Ok(raw) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p) else {
        return inactive;
    };
    let Ok(claims) = serde_json::from_slice::<serde_json::Value>(&raw) else {
        return inactive;
    };
    let exp = claims["exp"].as_i64().unwrap_or(0);
    if exp <= now() {
        return inactive;
    }
    serde_json::json!({
        "active": true,
        "sub": claims["sub"],
        "scope": claims["scope"],
        "exp": exp,
    })
    .to_string()
}

fn serve_introspection(stop: Arc<AtomicBool>) {
    // The previous harness's listener may still be closing: retry briefly.
    let mut bound = None;
    for _ in 0..100 {
        match TcpListener::bind(("127.0.0.1", INTROSPECTION_PORT)) {
            Ok(l) => {
                bound = Some(l);
                break;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    let listener = bound.unwrap_or_else(|| {
        panic!("cannot listen on 127.0.0.1:{INTROSPECTION_PORT} for token introspection")
    });
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        // Bounded: at most 10 minutes, then the harness is surely gone.
        let started = Instant::now();
        while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(600) {
            match listener.accept() {
                Ok((stream, _)) => {
                    std::thread::spawn(move || answer(stream));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
}

fn answer(stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(stream.take(64 * 1024));
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    // Skip the headers (bounded by the 64 KiB take).
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {}
        }
    }
    let target = request.split_whitespace().nth(1).unwrap_or_default();
    // Dovecot appends `&client_id=&client_secret=` to the URL.
    let token = target
        .split_once("token=")
        .map(|(_, t)| t.split('&').next().unwrap_or_default())
        .unwrap_or_default();
    let body = introspect(token);
    if std::env::var_os("OAUTH_DEBUG").is_some() {
        eprintln!("introspection: {} -> {body}", request.trim_end());
    }
    let mut stream = reader.into_inner().into_inner();
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.flush();
}
