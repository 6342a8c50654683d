//! The Prometheus and Grafana files in contrib/ work with the real tools: the
//! scrape config, the alert rules and their unit tests pass promtool, a real
//! Prometheus on loopback relabels the scrape targets as the rules and the
//! dashboard expect, and the dashboard passes Grafana's schema (@grafana/schema,
//! through TypeScript) and promtool's PromQL parser. Each check is also shown
//! rejecting a broken copy.
//!
//! Needs Debian's `prometheus` package (promtool and the server) and node with
//! `npm ci --prefix contrib/grafana/schema-check`; a missing tool fails the test
//! saying how to install it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{Read, Seek, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Metric names the contrib files may use: what `mailprobe serve` exposes on
/// /probe and /metrics (issue 17), and the exporter's scrape job name.
const KNOWN_NAMES: &[&str] = &[
    "probe_success",
    "probe_duration_seconds",
    "probe_ssl_earliest_cert_expiry",
    "mailprobe_phase_duration_seconds",
    "mailprobe_delivery_seconds",
    "mailprobe_message_ok",
    "mailprobe_verdict",
    "mailprobe_diagnosis",
    "mailprobe_restarts",
    "mailprobe_tls_cert_expiry_seconds",
    "mailprobe_exporter_probes_total",
    "mailprobe_exporter_probes_failed_total",
    "mailprobe_exporter_probe_errors_total",
    "mailprobe_exporter_probes_in_flight",
    "mailprobe_exporter_probe_duration_seconds",
    // Job names in prometheus.yml, not metrics.
    "mailprobe_exporter",
];

const TOOL_TIMEOUT: Duration = Duration::from_secs(120);
const DASHBOARD: &str = "contrib/grafana/mailprobe-dashboard.json";
const SCHEMA_CHECK: &str = "contrib/grafana/schema-check";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// `text` with `from` replaced by `to`; `from` must occur exactly `count` times,
/// so that a broken copy is really broken the way the test says.
fn replaced(text: &str, from: &str, to: &str, count: usize) -> String {
    assert_eq!(
        text.matches(from).count(),
        count,
        "expected {count} occurrence(s) of {from:?} to replace"
    );
    text.replace(from, to)
}

/// What a finished tool said.
struct Outcome {
    ok: bool,
    output: String,
}

/// Runs `cmd` to its end (at most TOOL_TIMEOUT), stdout and stderr together.
/// A tool that cannot be started fails the test with `install`.
fn run(cmd: &mut Command, install: &str) -> Outcome {
    let mut log = tempfile::tempfile().expect("temp file");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("temp file"))
        .stderr(log.try_clone().expect("temp file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {:?} ({e}): {install}", cmd.get_program()));
    let deadline = Instant::now() + TOOL_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for tool") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {TOOL_TIMEOUT:?}");
        }
        sleep(Duration::from_millis(50));
    };
    let mut output = String::new();
    log.rewind().expect("rewind log");
    log.take(1 << 20)
        .read_to_string(&mut output)
        .expect("read tool output");
    Outcome {
        ok: status.success(),
        output,
    }
}

const PROMETHEUS_HINT: &str = "install it with `apt-get install prometheus` (Debian's package \
     brings promtool and the server; scripts/test.sh installs it)";

fn promtool(args: &[&str], dir: &Path) -> Outcome {
    run(
        Command::new("promtool").args(args).current_dir(dir),
        PROMETHEUS_HINT,
    )
}

/// A temporary copy of contrib/prometheus/, with `edit` applied to one file.
fn prometheus_dir_with(file: &str, edit: impl Fn(String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for name in ["prometheus.yml", "alerts.yml", "alerts_test.yml"] {
        let text = read(&format!("contrib/prometheus/{name}"));
        let text = if name == file { edit(text) } else { text };
        fs::write(dir.path().join(name), text).expect("write copy");
    }
    dir
}

#[test]
fn scrape_config_passes_promtool() {
    let good = promtool(
        &["check", "config", "prometheus.yml"],
        &repo("contrib/prometheus"),
    );
    assert!(good.ok, "promtool check config failed:\n{}", good.output);
    assert!(
        good.output.contains("1 rule files found"),
        "{}",
        good.output
    );

    // A scrape that may outlast its interval is refused.
    let dir = prometheus_dir_with("prometheus.yml", |t| {
        replaced(&t, "scrape_timeout: 90s", "scrape_timeout: 10m", 1)
    });
    let bad = promtool(&["check", "config", "prometheus.yml"], dir.path());
    assert!(
        !bad.ok,
        "a timeout above the interval passed:\n{}",
        bad.output
    );
    assert!(
        bad.output
            .contains("scrape timeout greater than scrape interval"),
        "{}",
        bad.output
    );
}

#[test]
fn alert_rules_pass_promtool() {
    let good = promtool(
        &["check", "rules", "alerts.yml"],
        &repo("contrib/prometheus"),
    );
    assert!(good.ok, "promtool check rules failed:\n{}", good.output);
    assert!(
        good.output.contains("SUCCESS: 8 rules found"),
        "{}",
        good.output
    );

    let dir = prometheus_dir_with("alerts.yml", |t| {
        replaced(
            &t,
            "mailprobe_delivery_seconds[10m]",
            "mailprobe_delivery_seconds[10m",
            1,
        )
    });
    let bad = promtool(&["check", "rules", "alerts.yml"], dir.path());
    assert!(
        !bad.ok,
        "a rule that does not parse passed:\n{}",
        bad.output
    );
    assert!(
        bad.output.contains("MailprobeDeliverySlow")
            && bad.output.contains("could not parse expression"),
        "{}",
        bad.output
    );
}

#[test]
fn alert_rule_unit_tests_pass() {
    let good = promtool(
        &["test", "rules", "alerts_test.yml"],
        &repo("contrib/prometheus"),
    );
    assert!(good.ok, "promtool test rules failed:\n{}", good.output);
    assert!(good.output.contains("SUCCESS"), "{}", good.output);

    // The unit tests pin the rules down: a changed threshold no longer fires
    // where alerts_test.yml expects it.
    let dir = prometheus_dir_with("alerts.yml", |t| {
        replaced(
            &t,
            "mailprobe_delivery_seconds[10m]) > 60",
            "mailprobe_delivery_seconds[10m]) > 600",
            1,
        )
    });
    let bad = promtool(&["test", "rules", "alerts_test.yml"], dir.path());
    assert!(
        !bad.ok,
        "a changed rule still passed its tests:\n{}",
        bad.output
    );
    assert!(
        bad.output.contains("alertname: MailprobeDeliverySlow"),
        "{}",
        bad.output
    );
}

/// A Prometheus server started by a test; killed when dropped.
struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port on loopback that nothing listened on a moment ago.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// GET `path` from 127.0.0.1:`port` over HTTP/1.0: the status and the body.
fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = String::new();
    stream.take(4 << 20).read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

/// The labels and scrape URL of each active target.
fn active_targets(port: u16) -> Option<Vec<(BTreeMap<String, String>, String)>> {
    let (status, body) = http_get(port, "/api/v1/targets?state=active").ok()?;
    if status != 200 {
        return None;
    }
    let json: Value = serde_json::from_str(&body).ok()?;
    let mut targets = Vec::new();
    for t in json["data"]["activeTargets"].as_array()? {
        let labels: BTreeMap<String, String> = t["labels"]
            .as_object()?
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        targets.push((labels, t["scrapeUrl"].as_str()?.to_string()));
    }
    Some(targets)
}

#[test]
fn prometheus_relabels_the_scrape_targets() {
    // Our own listener stands where mailprobe serve would: Prometheus's scrapes
    // (if any start during the test) reach it and no real exporter.
    let exporter = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind exporter port");
    let exporter_addr = exporter.local_addr().expect("exporter address").to_string();
    let dir = prometheus_dir_with("prometheus.yml", |t| {
        replaced(&t, "127.0.0.1:9465", &exporter_addr, 2)
    });
    let web_port = free_port();
    let log = File::create(dir.path().join("prometheus.log")).expect("log file");
    let child = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{web_port}"))
        .arg("--log.level=warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run prometheus ({e}): {PROMETHEUS_HINT}"));
    let mut server = Server { child };
    let server_log = || fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();

    // Discovery hands targets to the scrape manager within a few seconds.
    let deadline = Instant::now() + Duration::from_secs(60);
    let targets = loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("Prometheus exited ({status}); its log:\n{}", server_log());
        }
        match active_targets(web_port) {
            Some(t) if t.len() == 5 => break t,
            _ if Instant::now() > deadline => panic!(
                "Prometheus showed no 5 targets within 60 s; its log:\n{}",
                server_log()
            ),
            _ => sleep(Duration::from_millis(250)),
        }
    };

    let target = |instance: &str| {
        targets
            .iter()
            .find(|(labels, _)| labels.get("instance").map(String::as_str) == Some(instance))
            .unwrap_or_else(|| panic!("no target with instance {instance} in {targets:#?}"))
    };
    let probe = |instance: &str, profile: &str, site: &str, query: &str| {
        let (labels, url) = target(instance);
        let expected: BTreeMap<String, String> = [
            ("instance", instance),
            ("job", "mailprobe"),
            ("profile", profile),
            ("site", site),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(labels, &expected, "labels of {instance}");
        assert_eq!(url, &format!("http://{exporter_addr}/probe?{query}"));
    };
    probe("local", "local", "lab", "profile=local");
    probe("submission", "submission", "lab", "profile=submission");
    probe(
        "relay@mx1.example.org",
        "relay",
        "edge",
        "profile=relay&target=mx1.example.org",
    );
    probe(
        "relay@mx2.example.org",
        "relay",
        "edge",
        "profile=relay&target=mx2.example.org",
    );
    let (labels, url) = target(&exporter_addr);
    assert_eq!(labels["job"], "mailprobe_exporter");
    assert_eq!(url, &format!("http://{exporter_addr}/metrics"));

    // The server loaded the alert rules the config names.
    let (status, body) = http_get(web_port, "/api/v1/rules").expect("GET /api/v1/rules");
    assert_eq!(status, 200, "{body}");
    let rules: Value = serde_json::from_str(&body).expect("rules JSON");
    let groups = rules["data"]["groups"].as_array().expect("rule groups");
    assert_eq!(groups.len(), 1, "{body}");
    assert_eq!(groups[0]["name"], "mailprobe");
    assert_eq!(groups[0]["rules"].as_array().map(Vec::len), Some(8));
    drop(exporter); // held until here, so that no real exporter takes its port
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON")
}

/// Runs the schema check on `files`: its verdict and report.
fn schema_check(files: &[&Path]) -> Outcome {
    let dir = repo(SCHEMA_CHECK);
    if !dir.join("node_modules/@grafana/schema").is_dir() {
        panic!(
            "the dashboard's schema check is not installed: run `npm ci --prefix {SCHEMA_CHECK}` \
             (needs node and npm: `apt-get install nodejs npm`)"
        );
    }
    run(
        Command::new("node")
            .arg(dir.join("check-dashboard.mjs"))
            .args(files),
        "install node with `apt-get install nodejs npm`",
    )
}

#[test]
fn dashboard_matches_grafana_schema() {
    let good = schema_check(&[&repo(DASHBOARD)]);
    assert!(
        good.ok,
        "the dashboard fails Grafana's schema:\n{}",
        good.output
    );
    assert!(good.output.trim_end().ends_with(": ok"), "{}", good.output);

    // Each broken copy must be rejected, for its own reason.
    type Breakage = fn(&mut Value);
    let breakages: [(&str, Breakage, &str); 6] = [
        (
            "schemaVersion",
            |d| d["schemaVersion"] = "39".into(),
            "not assignable to type 'number'",
        ),
        (
            "panel type",
            |d| d["panels"][6]["type"] = "timeseriez".into(),
            "Did you mean '\"timeseries\"'",
        ),
        (
            "gridPos",
            |d| {
                d["panels"][6].as_object_mut().unwrap().remove("gridPos");
            },
            "Property 'gridPos' is missing",
        ),
        (
            "expr",
            |d| {
                d["panels"][6]["targets"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("expr");
            },
            "Property 'expr' is missing",
        ),
        (
            "thresholds mode",
            |d| d["panels"][0]["fieldConfig"]["defaults"]["thresholds"]["mode"] = "absolut".into(),
            "'\"absolut\"' is not assignable",
        ),
        (
            "unknown option",
            |d| d["panels"][6]["options"]["legend"]["displayMod"] = "table".into(),
            "'\"displayMod\"' does not exist",
        ),
    ];
    let dir = tempfile::tempdir().expect("temp dir");
    let mut files = Vec::new();
    for (i, (_, breakage, _)) in breakages.iter().enumerate() {
        let mut d = dashboard();
        breakage(&mut d);
        let path = dir.path().join(format!("broken-{i}.json"));
        fs::write(&path, serde_json::to_string_pretty(&d).unwrap()).expect("write copy");
        files.push(path);
    }
    let bad = schema_check(&files.iter().map(PathBuf::as_path).collect::<Vec<_>>());
    assert!(!bad.ok, "broken dashboards passed:\n{}", bad.output);
    for ((what, _, message), path) in breakages.iter().zip(&files) {
        let name = path.display().to_string();
        let report: Vec<&str> = bad
            .output
            .lines()
            .filter(|l| l.starts_with(&format!("{name}:")))
            .collect();
        assert!(
            report.iter().any(|l| l.contains(message)),
            "the broken {what} was not reported as {message:?}:\n{}",
            bad.output
        );
    }
}

/// Every PromQL expression in a dashboard: panel queries and the selectors of
/// `label_values(...)` variables, each with where it comes from.
fn dashboard_queries(d: &Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for var in d["templating"]["list"].as_array().into_iter().flatten() {
        let selector = var["query"]
            .as_str()
            .and_then(|q| q.strip_prefix("label_values("))
            .and_then(|r| r.strip_suffix(')'))
            .and_then(|inner| inner.rsplit_once(','));
        if let Some((selector, _label)) = selector {
            queries.push((format!("variable {}", var["name"]), selector.to_string()));
        }
    }
    for panel in all_panels(d) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default();
            queries.push((
                format!("panel {:?} query {}", panel["title"], target["refId"]),
                expr.to_string(),
            ));
        }
    }
    queries
}

/// The panels, with those nested in rows, rows included.
fn all_panels(d: &Value) -> Vec<&Value> {
    let mut panels = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        panels.push(p);
        panels.extend(p["panels"].as_array().into_iter().flatten());
    }
    panels
}

/// `expr` as Prometheus would get it: template variables set to what "All"
/// sends, Grafana's interval variables to a duration. Unknown variables are errors.
fn expand_variables(expr: &str, variables: &BTreeSet<String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, len) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced.find('}').ok_or("unclosed ${")?;
            (&braced[..end], end + 2)
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        if variables.contains(name) {
            out.push_str(".*");
        } else if ["__interval", "__rate_interval", "__range"].contains(&name) {
            out.push_str("5m");
        } else {
            return Err(format!("unknown variable ${name}"));
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Checks every query of dashboard `d` with `promtool check rules`, one
/// recording rule per query. Returns promtool's report on failure.
fn check_dashboard_promql(d: &Value) -> Result<(), String> {
    let variables: BTreeSet<String> = d["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str().map(String::from))
        .collect();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut index = Vec::new();
    for (i, (origin, expr)) in dashboard_queries(d).into_iter().enumerate() {
        let expanded = expand_variables(&expr, &variables).map_err(|e| format!("{origin}: {e}"))?;
        if expanded.trim().is_empty() {
            return Err(format!("{origin}: empty query"));
        }
        rules.push_str(&format!(
            "      - record: dashboard_query_{i}\n        expr: |\n"
        ));
        for line in expanded.lines() {
            rules.push_str(&format!("          {line}\n"));
        }
        index.push(format!("rule {} = {origin}", i + 1));
    }
    let dir = tempfile::tempdir().expect("temp dir");
    fs::write(dir.path().join("dashboard-queries.yml"), &rules).expect("write rules");
    let outcome = promtool(&["check", "rules", "dashboard-queries.yml"], dir.path());
    if outcome.ok {
        Ok(())
    } else {
        Err(format!("{}\n{}", outcome.output, index.join("\n")))
    }
}

#[test]
fn dashboard_queries_pass_promtool() {
    let d = dashboard();
    let queries = dashboard_queries(&d);
    assert!(queries.len() >= 15, "only {} queries found", queries.len());
    check_dashboard_promql(&d).unwrap_or_else(|e| panic!("a dashboard query is not PromQL:\n{e}"));

    let mut broken = dashboard();
    broken["panels"][6]["targets"][0]["expr"] = "mailprobe_delivery_seconds{size=~\"$size\"".into();
    let err = check_dashboard_promql(&broken).expect_err("an unclosed selector passed");
    assert!(err.contains("could not parse expression"), "{err}");

    let mut broken = dashboard();
    broken["panels"][6]["targets"][0]["expr"] =
        "mailprobe_delivery_seconds{size=~\"$sise\"}".into();
    let err = check_dashboard_promql(&broken).expect_err("an unknown variable passed");
    assert!(err.contains("unknown variable $sise"), "{err}");
}

/// What is wrong with the dashboard's layout and variables, if anything.
fn layout_problems(d: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut ids = BTreeSet::new();
    let mut boxes: Vec<(String, [i64; 4])> = Vec::new();
    for p in all_panels(d) {
        let title = p["title"].as_str().unwrap_or("?").to_string();
        if !ids.insert(p["id"].as_i64().unwrap_or(-1)) {
            problems.push(format!("{title}: id {} used twice", p["id"]));
        }
        let g = &p["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| g[k].as_i64().unwrap_or(-1));
        if x < 0 || y < 0 || w < 1 || h < 1 || x + w > 24 {
            problems.push(format!("{title}: gridPos {g} is off the 24-column grid"));
        }
        if p["type"] == "row" && (x, w) != (0, 24) {
            problems.push(format!("{title}: a row spans the whole width"));
        }
        for (other, [ox, oy, ow, oh]) in &boxes {
            if x < ox + ow && ox < &(x + w) && y < oy + oh && oy < &(y + h) {
                problems.push(format!("{title} overlaps {other}"));
            }
        }
        boxes.push((title, [x, y, w, h]));
    }
    let names: Vec<&str> = d["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .collect();
    let text = d["panels"].to_string();
    for name in &names {
        if !text.contains(&format!("${name}")) && !text.contains(&format!("${{{name}}}")) {
            problems.push(format!("variable {name} is not used by any panel"));
        }
    }
    for required in ["datasource", "profile"] {
        if !names.contains(&required) {
            problems.push(format!("no variable {required}"));
        }
    }
    problems
}

#[test]
fn dashboard_layout_and_variables_hold_together() {
    let d = dashboard();
    assert_eq!(layout_problems(&d), Vec::<String>::new());

    let mut broken = dashboard();
    broken["panels"][7]["gridPos"]["x"] = 6.into(); // onto "Delivery latency by size"
    broken["templating"]["list"][1]["name"] = "profiles".into();
    let problems = layout_problems(&broken);
    assert!(
        problems.iter().any(|p| p.contains("overlaps")),
        "{problems:?}"
    );
    assert!(
        problems.contains(&"variable profiles is not used by any panel".to_string())
            && problems.contains(&"no variable profile".to_string()),
        "{problems:?}"
    );
}

/// Names in `text` that look like mailprobe's or blackbox's metrics
/// (`probe_...`, `mailprobe_...`) but are not among KNOWN_NAMES.
fn unknown_metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("probe_") || w.starts_with("mailprobe_"))
        .filter(|w| !KNOWN_NAMES.contains(w))
        .map(String::from)
        .collect()
}

#[test]
fn contrib_files_use_only_the_exporters_metric_names() {
    for file in [
        "contrib/prometheus/prometheus.yml",
        "contrib/prometheus/alerts.yml",
        "contrib/prometheus/alerts_test.yml",
        DASHBOARD,
    ] {
        let unknown = unknown_metric_names(&read(file));
        assert!(unknown.is_empty(), "{file} uses unknown names: {unknown:?}");
    }
    let typo = replaced(
        &read("contrib/prometheus/alerts.yml"),
        "mailprobe_delivery_seconds[10m]",
        "mailprobe_delivery_second[10m]",
        1,
    );
    assert_eq!(
        unknown_metric_names(&typo),
        BTreeSet::from(["mailprobe_delivery_second".to_string()])
    );
}
