//! Shell completions and the man page come from the clap definition.

use std::process::{Command, Stdio};

fn run(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mailprobe"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run mailprobe");
    assert!(
        out.status.success(),
        "mailprobe {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

#[test]
fn bash_completion_knows_the_subcommands_and_flags() {
    let script = run(&["completions", "bash"]);
    for word in [
        "mailprobe",
        "check",
        "cleanup",
        "serve",
        "--smtp",
        "--profile",
        "--format",
    ] {
        assert!(script.contains(word), "bash completion lacks {word}");
    }
    for shell in ["zsh", "fish"] {
        let script = run(&["completions", shell]);
        assert!(script.contains("--smtp"), "{shell} completion lacks --smtp");
    }
}

#[test]
fn man_page_is_roff() {
    let page = run(&["man"]);
    assert!(
        page.starts_with(".ie") || page.contains("\n.TH "),
        "no .TH:\n{page}"
    );
    assert!(page.contains(".TH mailprobe"), "{page}");
    assert!(page.contains(".SH NAME"));
    assert!(page.contains("MAILPROBE CHECK"), "no section for check");
    assert!(page.contains("smtp"), "check's options are missing");
}
