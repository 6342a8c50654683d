//! Where an OAuth access token comes from: an environment variable, a file, or
//! a command run once per check without a shell (its argv split like a shell
//! would, bounded in time and output, its stderr shown when it fails). The
//! token is handed down as a [`Secret`]; it is never taken from argv.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::core::auth::TokenClaims;
use crate::core::secret::Secret;
use crate::core::units::format_duration;
use crate::probe::settings::Settings;

/// `--token-timeout` when none is given.
pub(crate) const DEFAULT_TOKEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Most bytes read from the command's stdout (a token is a few KiB) and stderr.
const MAX_STDOUT: u64 = 64 * 1024;
const MAX_STDERR: u64 = 4 * 1024;

/// Where a token comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum TokenSource {
    Env(String),
    File(PathBuf),
    /// The program and its arguments.
    Command(Vec<String>),
}

/// Split a command line into words like a POSIX shell, without expanding
/// anything: single quotes, double quotes (with `\"`, `\\`, `\$`, `` \` ``) and
/// backslash escapes.
pub(crate) fn split_command(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(unbalanced(line, "'")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(unbalanced(line, "\"")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(unbalanced(line, "\"")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => {
                        return Err(format!("the token command {line:?} ends with a backslash"));
                    }
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    if words.is_empty() {
        return Err("the token command is empty".into());
    }
    Ok(words)
}

fn unbalanced(line: &str, quote: &str) -> String {
    format!("the token command {line:?} has an unclosed {quote} quote")
}

/// Read the token from its source (`timeout` bounds a command).
pub(crate) fn read_token(source: &TokenSource, timeout: Duration) -> Result<Secret, String> {
    let (text, from) = match source {
        TokenSource::Env(var) => match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => (v, format!("the variable {var}")),
            _ => {
                return Err(format!(
                    "the token variable {var} is not set; export it (export {var}=...) or use --token-file or --token-command"
                ));
            }
        },
        TokenSource::File(path) => (
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?,
            format!("the token file {}", path.display()),
        ),
        TokenSource::Command(argv) => (
            run_command(argv, timeout)?,
            format!("the token command {}", argv[0]),
        ),
    };
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("{from} gave an empty token"));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{from} gave more than one word or line; it must print the access token alone"
        ));
    }
    Ok(Secret::new(token.to_string()))
}

/// Run `argv` without a shell; its standard output, or why it failed. The
/// command runs in its own process group so that a timeout kills everything it started.
fn run_command(argv: &[String], timeout: Duration) -> Result<String, String> {
    use std::os::unix::process::CommandExt as _;
    let program = &argv[0];
    let mut child = Command::new(program)
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run the token command {program}: {e}"))?;
    let drain = |pipe: Option<Box<dyn Read + Send>>, cap: u64| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(pipe) = pipe {
                let _ = pipe.take(cap).read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        MAX_STDOUT,
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        MAX_STDERR,
    );
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= timeout => {
                kill_group(child.id());
                let _ = child.wait();
                // The readers end once every process holding the pipes is gone.
                let said = stderr.join().unwrap_or_default();
                return Err(format!(
                    "the token command {program} did not finish within {} and was killed{}; \
                     raise --token-timeout or fix the command",
                    format_duration(timeout),
                    stderr_excerpt(&said)
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("cannot wait for the token command {program}: {e}")),
        }
    };
    // Children it left behind may hold the pipes open: they go with the group.
    kill_group(child.id());
    let out = stdout.join().unwrap_or_default();
    let said = stderr.join().unwrap_or_default();
    if !status.success() {
        return Err(format!(
            "the token command {program} failed ({status}){}",
            stderr_excerpt(&said)
        ));
    }
    String::from_utf8(out)
        .map_err(|_| format!("the token command {program} printed non-UTF-8 output"))
}

fn kill_group(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) with a negative pid signals a process group; it
        // touches no memory of ours. The group is the child's own (process_group(0)).
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

fn stderr_excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(
            "; it said: {}",
            crate::core::reply::truncate(text, 1000).replace('\n', " / ")
        )
    }
}

/// A warning when a token login's JWT expires within `horizon` (e.g. before
/// `verify`'s deadline): later logins will fail.
pub(crate) fn expiry_warning(settings: &Settings, horizon: Duration) -> Option<String> {
    let t = &settings.target;
    let now = SystemTime::now();
    let soonest = [&t.smtp_login, &t.imap_login, &t.pop3_login]
        .into_iter()
        .flatten()
        .filter(|l| l.is_token())
        .filter_map(|l| TokenClaims::read(l.password.expose())?.expires)
        .min()?;
    let left = soonest.duration_since(now).ok()?;
    (left < horizon).then(|| {
        format!(
            "warning: the access token expires at {} (in {}), before this run ends (in up to {}); \
             logins after that fail with expired_token",
            crate::core::time::rfc3339(soonest),
            format_duration(left),
            format_duration(horizon)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_split_like_a_shell_without_expanding() {
        assert_eq!(
            split_command(r#"oauth2 --account 'probe box' "a \"b\" $HOME" c\ d"#).unwrap(),
            vec!["oauth2", "--account", "probe box", "a \"b\" $HOME", "c d"]
        );
        assert_eq!(split_command("  x  ''  ").unwrap(), vec!["x", ""]);
        assert!(split_command("a 'b").is_err());
        assert!(split_command("a \"b").is_err());
        assert!(split_command("a\\").is_err());
        assert!(split_command("   ").is_err());
    }

    fn argv(words: &[&str]) -> TokenSource {
        TokenSource::Command(words.iter().map(|w| w.to_string()).collect())
    }

    #[test]
    fn a_command_gives_the_token_or_says_why_not() {
        let t = Duration::from_secs(5);
        let token = read_token(&argv(&["printf", "tok-123\\n"]), t).unwrap();
        assert_eq!(token.expose(), "tok-123");
        let err =
            read_token(&argv(&["sh", "-c", "echo no refresh token >&2; exit 4"]), t).unwrap_err();
        assert!(err.contains("exit status: 4"), "{err}");
        assert!(err.contains("no refresh token"), "{err}");
        let err = read_token(&argv(&["true"]), t).unwrap_err();
        assert!(err.contains("empty token"), "{err}");
        let err = read_token(&argv(&["printf", "a b"]), t).unwrap_err();
        assert!(err.contains("more than one word"), "{err}");
        let err = read_token(&argv(&["/nonexistent/token-helper"]), t).unwrap_err();
        assert!(err.contains("cannot run"), "{err}");
    }

    #[test]
    fn a_hanging_command_is_killed_with_its_children() {
        let started = Instant::now();
        // The shell leaves a child holding the pipe: the group kill ends both.
        let err = read_token(
            &argv(&["sh", "-c", "sleep 30 & sleep 30"]),
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(err.contains("did not finish within"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
}
