//! A private test server (its own MAILPROBE_TEST_DIR and ports) whose Dovecot
//! takes OAuth bearer tokens (`scripts/testserver.sh oauth on`: an `oauth2`
//! passdb validating HS256 JWTs locally; Postfix's submission port
//! authenticates through Dovecot SASL), so SMTP, IMAP and POP3 all offer
//! XOAUTH2 and OAUTHBEARER. Tokens are signed here with the instance's key; a
//! good one needs `sub` (compared with the login) and `exp` in the future.
//! The auth penalty is off (`auth-penalty off`), so refused tokens do not slow
//! later logins.
//!
//! [`OauthServer::start`] takes a file lock (one user of the instance at a
//! time, across test binaries), starts and configures the instance, and stops
//! it when dropped. Every wait is bounded.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use sha2::{Digest, Sha256};

const DIR: &str = "/var/lib/mailprobe-oauth";
const LOCK: &str = "/var/lib/mailprobe-oauth.lock";
const PORTS: [(&str, u16); 7] = [
    ("MAILPROBE_TEST_SMTP_PORT", 5725),
    ("MAILPROBE_TEST_SUBMISSION_PORT", 5787),
    ("MAILPROBE_TEST_SMTPS_PORT", 5765),
    ("MAILPROBE_TEST_IMAP_PORT", 5743),
    ("MAILPROBE_TEST_IMAPS_PORT", 5793),
    ("MAILPROBE_TEST_POP3_PORT", 5710),
    ("MAILPROBE_TEST_POP3S_PORT", 5795),
];
pub const DOMAIN: &str = "mailprobe.test";

pub struct OauthServer {
    _lock: std::fs::File,
    pub ca_file: PathBuf,
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
    /// Start the private instance with OAuth on. Panics saying what to do when
    /// it cannot (these tests never skip).
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
        for step in [&["start"][..], &["oauth", "on"], &["auth-penalty", "off"]] {
            run_script(step).unwrap_or_else(|e| {
                panic!("the private OAuth test server is not ready (needs root, Debian's postfix/dovecot): {e}")
            });
        }
        OauthServer {
            _lock: lock,
            ca_file: PathBuf::from(format!("{DIR}/tls/ca.pem")),
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

impl Drop for OauthServer {
    fn drop(&mut self) {
        let _ = run_script(&["stop"]);
    }
}

/// The instance's HS256 key: the decoded bytes of its base64 key file.
fn key() -> Vec<u8> {
    let path = format!("{DIR}/oauth/hs256.key");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {path} (made by `oauth on`): {e}"));
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .unwrap_or_else(|e| panic!("{path} is not base64: {e}"))
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
    let key = if good {
        key()
    } else {
        b"some-other-key".to_vec()
    };
    format!(
        "{signing_input}.{}",
        b64url(&hmac_sha256(&key, signing_input.as_bytes()))
    )
}

fn rand_suffix() -> String {
    format!(
        "{:x}",
        Instant::now().elapsed().as_nanos() ^ (now() as u128) << 20
    )
}
