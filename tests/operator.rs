//! The operator's contract: exit codes a monitor can alert on, the run history and
//! `status --check`, the metrics file (parsed by prometheus_client's own parser), progress
//! and logs on a terminal and through a pipe, closed pipes, output paths checked before a
//! run, fsck under a run or a lock, restore across filesystems, and the kit (completions,
//! man pages, the examples' syntax and flags).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{cli, edit_manifest, fixture, repo, use_server, venv};

const STEM: &str = "s3invbackup";

fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("s3invbackup")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `sync INVENTORY BACKUP` with quiet progress and `extra`.
fn sync(inventory: &Path, backup: &Path, extra: &[&str]) -> std::process::Output {
    cli()
        .arg("sync")
        .arg(inventory)
        .arg(backup)
        .args(["--progress", "none", "--jobs", "4"])
        .args(extra)
        .output()
        .unwrap()
}

fn check(backup: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let out = cli()
        .args(["status", "--check"])
        .arg(backup)
        .args(extra)
        .output()
        .unwrap();
    (out.status.code(), text(&out.stdout))
}

/// The samples of a metrics file, as prometheus_client parses them.
fn metrics(path: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(venv().join("bin/python"))
        .arg(repo().join("scripts/harness/metrics_json.py"))
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "not valid exposition text: {}",
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn sample(samples: &[serde_json::Value], name: &str, label: Option<(&str, &str)>) -> f64 {
    samples
        .iter()
        .find(|s| s["name"] == name && label.is_none_or(|(k, v)| s["labels"][k] == v))
        .unwrap_or_else(|| panic!("no sample {name} {label:?} in {samples:?}"))["value"]
        .as_f64()
        .unwrap()
}

fn runs(backup: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(backup.join(format!(".{STEM}/runs.jsonl")))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn usage_errors_exit_64_and_answers_exit_0() {
    for args in [
        &["--no-such-flag"][..],
        &["sync"],
        &["status"],
        &["sync", "a", "b", "c"],
        &[
            "restore",
            "b",
            "--link",
            "sideways",
            "--at",
            "2024-01-01",
            "d",
        ],
        &["status", "b", "--max-age", "3d"],
    ] {
        let out = Command::new(bin()).args(args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(64),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    for args in [&["--help"][..], &["--version"], &["sync", "--help"]] {
        let out = Command::new(bin()).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(!out.stdout.is_empty());
    }
}

#[test]
fn runs_are_recorded_checked_and_exported_as_metrics() {
    use_server();
    let fx = fixture("op-metrics", &["--files", "2"]);
    let dates = fx.dates();
    let tmp = tempfile::tempdir().unwrap();
    let backup = tmp.path().join("backup");
    let prom = tmp.path().join("s3invbackup.prom");
    let report = tmp.path().join("report.json");
    let prom_arg = prom.to_str().unwrap();

    // The first date: a run row, an OK check, metrics that say what the report says.
    let out = sync(
        &fx.local,
        &backup,
        &[
            "--start-date",
            &dates[0],
            "--end-date",
            &dates[0],
            "--metrics-file",
            prom_arg,
            "--report",
            report.to_str().unwrap(),
        ],
    );
    // One version of the first date cannot be fetched (see the report): a partial run.
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    for field in ["started", "ended", "version", "newest_inventory"] {
        assert!(r[field].is_string(), "report lacks {field}: {r}");
    }
    assert!(r["duration_secs"].as_f64().unwrap() >= 0.0);
    let fetched: u64 = r["dates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["outcome"]["downloaded"].as_u64().unwrap())
        .sum();
    assert!(fetched > 0);
    let m = metrics(&prom);
    assert_eq!(
        sample(
            &m,
            "s3invbackup_last_run_result",
            Some(("result", "partial"))
        ),
        1.0
    );
    assert_eq!(
        sample(&m, "s3invbackup_last_run_result", Some(("result", "done"))),
        0.0
    );
    assert_eq!(
        sample(
            &m,
            "s3invbackup_last_run_fetch_failures",
            Some(("kind", "missing"))
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            "s3invbackup_versions_not_held",
            Some(("reason", "missing"))
        ),
        1.0
    );
    assert_eq!(
        sample(&m, "s3invbackup_last_run_versions_fetched", None),
        fetched as f64
    );
    assert_eq!(sample(&m, "s3invbackup_last_run_dates_applied", None), 1.0);
    assert!(sample(&m, "s3invbackup_inventory_age_seconds", None) > 0.0);
    assert!(sample(&m, "s3invbackup_bytes_held", None) > 0.0);
    // The alert rules shipped in examples/ name metrics that exist.
    let rules =
        std::fs::read_to_string(repo().join("examples/prometheus/s3invbackup.rules.yml")).unwrap();
    for name in rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("s3invbackup_"))
    {
        assert!(
            m.iter().any(|s| s["name"] == name),
            "the rules use {name}, never written"
        );
    }
    let history = runs(&backup);
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["result"], "partial");
    assert_eq!(history[0]["failed"], 1);
    assert_eq!(history[0]["dates"], serde_json::json!([dates[0]]));
    // A version waits for the next sync's retry: a warning (2), not an alert.
    let (code, said) = check(&backup, &[]);
    assert_eq!(code, Some(2), "{said}");
    assert!(
        said.starts_with("WARNING: ") && said.contains("the next sync retries"),
        "{said}"
    );
    // The fixture's dates are from 2024: a day's --max-age finds the backup behind.
    let (code, said) = check(&backup, &["--max-age", "1d"]);
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains("CRITICAL") && said.contains("more than --max-age 1d"),
        "{said}"
    );

    // A night that fails (a damaged manifest): exit 1, recorded, metrics say failed, the
    // check names the error.
    let broken = tmp.path().join("broken");
    assert!(
        Command::new("cp")
            .arg("-a")
            .arg(&fx.local)
            .arg(&broken)
            .status()
            .unwrap()
            .success()
    );
    edit_manifest(&broken, &dates[1], |m| {
        m["sourceBucket"] = "another-bucket".into()
    });
    let out = sync(&broken, &backup, &["--metrics-file", prom_arg]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let m = metrics(&prom);
    assert_eq!(
        sample(
            &m,
            "s3invbackup_last_run_result",
            Some(("result", "failed"))
        ),
        1.0
    );
    let history = runs(&backup);
    assert_eq!(history.len(), 2);
    assert_eq!(history[1]["result"], "failed");
    let (code, said) = check(&backup, &[]);
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains("the last sync") && said.contains("failed"),
        "{said}"
    );
    // status shows both runs, the first row untouched by the second.
    let out = cli().arg("status").arg(&backup).output().unwrap();
    let shown = text(&out.stdout);
    assert!(shown.contains("runs         the last 2 of 2"), "{shown}");
    // The catalog's shape, from its manifest: the counts agree with the last applied date.
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(backup.join(".s3invbackup/state.json")).unwrap())
            .unwrap();
    let versions = state["applied"].as_array().unwrap().last().unwrap()["versions"].clone();
    assert!(
        shown.contains(&format!("catalog      {versions} versions of ")),
        "{shown}"
    );
    let json: serde_json::Value = serde_json::from_slice(
        &cli()
            .args(["status", "--json"])
            .arg(&backup)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(json["catalog"]["records"], versions, "{json}");
    assert!(
        shown.contains(" partial ") && shown.contains(" failed "),
        "{shown}"
    );

    // An interrupted run: the check says so and how to finish it; fsck folds the run's own
    // files into one line instead of listing them as strays.
    let out = cli()
        .arg("sync")
        .arg(&fx.local)
        .arg(&backup)
        .args(["--progress", "none", "--jobs", "1"])
        .env("S3INVBACKUP_CRASH_AFTER", "3")
        .output()
        .unwrap();
    assert!(
        out.status.code().is_none(),
        "the crash point was not reached"
    );
    let (code, said) = check(&backup, &[]);
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains("was interrupted") && said.contains("s3invbackup sync"),
        "{said}"
    );
    let out = cli().arg("fsck").arg(&backup).output().unwrap();
    let table = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{table}");
    assert!(table.contains("unfinished-run"), "{table}");
    assert!(table.contains("(folded)"), "{table}");
    assert!(
        !table.contains("\nstray "),
        "the run's files listed as strays: {table}"
    );
    // Resumed: done, and healthy again.
    let out = sync(&fx.local, &backup, &["--metrics-file", prom_arg]);
    let resumed = out.status.code();
    assert!(matches!(resumed, Some(0 | 2)), "{}", text(&out.stderr));
    let (code, said) = check(&backup, &[]);
    assert!(matches!(code, Some(0 | 2)), "{said}");
    let expected = if resumed == Some(0) {
        "done"
    } else {
        "partial"
    };
    assert_eq!(runs(&backup).last().unwrap()["result"], expected);
    let m = metrics(&prom);
    assert_eq!(
        sample(
            &m,
            "s3invbackup_last_run_result",
            Some(("result", expected))
        ),
        1.0
    );
    // The resumed run applied the fixture's days 2 and 3: new versions among their changes.
    assert!(sample(&m, "s3invbackup_last_run_changes", Some(("kind", "added"))) > 0.0);
    // It downloaded, so it had downloads in flight; nothing throttled it.
    assert!(sample(&m, "s3invbackup_last_run_downloads_in_flight_max", None) >= 1.0);
    assert_eq!(
        sample(&m, "s3invbackup_last_run_throttled_requests", None),
        0.0
    );
    // `sync BACKUP` alone uses the inventory recorded at creation: up to date now.
    let out = cli()
        .arg("sync")
        .arg(&backup)
        .args(["--progress", "none"])
        .output()
        .unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 2)),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("up to date"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn output_paths_are_checked_before_the_run_and_closed_pipes_never_panic() {
    use_server();
    let fx = fixture("op-pipes", &["--files", "2"]);
    let tmp = tempfile::tempdir().unwrap();
    let backup = tmp.path().join("backup");
    for flag in ["--report", "--metrics-file"] {
        let out = sync(&fx.local, &backup, &[flag, "/nonexistent/dir/out"]);
        assert_eq!(out.status.code(), Some(1), "{flag}");
        let said = text(&out.stderr);
        assert!(
            said.contains("/nonexistent/dir/out") && said.contains("does not exist"),
            "{said}"
        );
        assert!(!backup.exists(), "{flag}: the run started anyway");
    }
    // stdout and stderr into a pipe that closes after one byte: never a panic (101).
    let script = format!(
        "{:?} sync {:?} {:?} --progress plain -v 2>&1 | head -c 1 >/dev/null; exit ${{PIPESTATUS[0]}}",
        bin(),
        fx.local,
        backup
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("AWS_ENDPOINT_URL", support::server().endpoint.as_str())
        .env("AWS_ACCESS_KEY_ID", support::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", support::SECRET_KEY)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    assert!(matches!(out.status.code(), Some(0 | 2)), "{out:?}");
    // The run completed behind the closed pipe.
    let (code, said) = check(&backup, &[]);
    assert!(matches!(code, Some(0 | 2)), "{said}");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "{:?} locate {:?} --help | head -c 1 >/dev/null; exit ${{PIPESTATUS[0]}}",
            bin(),
            backup
        ))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

/// `cmd` on a pseudo-terminal (util-linux `script`): what a person at a terminal sees.
fn on_a_terminal(cmd: &str, env: &[(&str, &str)]) -> String {
    let mut c = Command::new("script");
    c.args(["-qefc", cmd, "/dev/null"])
        .env("COLUMNS", "100")
        .env("LINES", "40");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    text(&out.stdout)
}

#[test]
fn progress_and_logs_on_a_terminal_and_through_a_pipe() {
    use_server();
    let fx = fixture("op-progress", &["--files", "2"]);
    let tmp = tempfile::tempdir().unwrap();
    let srv = support::server();
    let env = [
        ("AWS_ENDPOINT_URL", srv.endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", support::ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", support::SECRET_KEY),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let dates = fx.dates();
    // Through a pipe: plain lines with the phase's figures, no escape codes at all.
    let backup = tmp.path().join("piped");
    let out = cli()
        .arg("sync")
        .arg(&fx.local)
        .arg(&backup)
        .args(["-v", "--start-date", &dates[0], "--end-date", &dates[0]])
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(matches!(out.status.code(), Some(0 | 2)), "{err}");
    assert!(!err.contains('\x1b'), "escape codes in a pipe: {err:?}");
    let done = err
        .lines()
        .find(|l| l.starts_with(&format!("fetch {}: done, ", dates[0])))
        .unwrap_or_else(|| panic!("no end-of-phase line: {err}"));
    assert!(done.contains(" objects") && done.contains("/s"), "{done}");
    assert!(!done.contains("0 rows"), "{done}");
    // Every phase of the night ends with its line: reading the inventory (streamed into
    // the plan, no index written), the plan (keys merged).
    for phase in ["read", "plan"] {
        assert!(
            err.lines()
                .any(|l| l.starts_with(&format!("{phase} {}: done, ", dates[0]))),
            "no end-of-{phase} line: {err}"
        );
    }
    // JSON logs: every log line is one object.
    let backup = tmp.path().join("json");
    let out = cli()
        .arg("sync")
        .arg(&fx.local)
        .arg(&backup)
        .args(["-v", "--log-format", "json", "--progress", "none"])
        .args(["--start-date", &dates[0], "--end-date", &dates[0]])
        .output()
        .unwrap();
    let err = text(&out.stderr);
    let logs: Vec<serde_json::Value> = err
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(!logs.is_empty(), "{err}");
    assert!(
        logs.iter()
            .all(|l| l["level"].is_string() && l["fields"]["message"].is_string())
    );
    // On a terminal: colours, unless NO_COLOR; every line fits the 100 columns.
    let cmd = |backup: &str| {
        format!(
            "{:?} sync {:?} {:?} -v --start-date {} --end-date {}",
            bin(),
            fx.local,
            tmp.path().join(backup),
            dates[0],
            dates[0]
        )
    };
    let shown = on_a_terminal(&cmd("tty"), &env);
    assert!(
        shown.contains("\x1b[") && shown.contains("m INFO") || shown.contains("\x1b[32m"),
        "no colour on a terminal: {shown:?}"
    );
    let no_color: Vec<(&str, &str)> = env.iter().copied().chain([("NO_COLOR", "1")]).collect();
    let shown = on_a_terminal(&cmd("tty-nocolor"), &no_color);
    let sgr = regex::Regex::new(r"\x1b\[[0-9;]*m").unwrap();
    assert!(!sgr.is_match(&shown), "colour despite NO_COLOR: {shown:?}");
    // Progress lines (not log lines, which the terminal wraps) fit its width.
    let controls = regex::Regex::new(r"\x1b\[[0-9;?]*[A-Za-z]").unwrap();
    let progress: Vec<String> = shown
        .split(['\n', '\r'])
        .map(|l| controls.replace_all(l, "").into_owned())
        .filter(|l| l.starts_with("fetch ") || l.starts_with("read ") || l.starts_with("index "))
        .collect();
    assert!(!progress.is_empty(), "no progress shown: {shown:?}");
    for line in &progress {
        assert!(
            line.chars().count() <= 100,
            "wider than the terminal: {line:?}"
        );
    }
}

#[test]
fn fsck_refuses_while_a_sync_holds_the_lock() {
    use_server();
    let fx = fixture("op-lock", &["--files", "2"]);
    let tmp = tempfile::tempdir().unwrap();
    let backup = tmp.path().join("backup");
    let out = sync(&fx.local, &backup, &[]);
    assert!(
        matches!(out.status.code(), Some(0 | 2)),
        "{}",
        text(&out.stderr)
    );
    let lock = backup.join(format!(".{STEM}/lock"));
    std::fs::write(
        &lock,
        "pid 4242 on elsewhere since 2026-12-01T00:00:00.000Z",
    )
    .unwrap();
    // flock(1) takes the same flock(2) lock a sync holds (-o: flock itself holds it, not
    // the sleep, so killing flock releases it).
    let mut holder = Command::new("flock")
        .args(["-x", "-o"])
        .arg(&lock)
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut out;
    loop {
        out = cli().arg("fsck").arg(&backup).output().unwrap();
        if out.status.code() == Some(1) || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = holder.kill();
    let _ = holder.wait();
    let said = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("pid 4242 on elsewhere"), "{said}");
    let out = cli().arg("fsck").arg(&backup).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}

#[test]
fn restore_copies_onto_another_filesystem_and_says_when_nothing_matches() {
    use_server();
    let fx = fixture("op-restore", &["--files", "2"]);
    let tmp = tempfile::tempdir().unwrap();
    let backup = tmp.path().join("backup");
    let out = sync(&fx.local, &backup, &[]);
    assert!(
        matches!(out.status.code(), Some(0 | 2)),
        "{}",
        text(&out.stderr)
    );
    let other = tmp.path().join("other-fs");
    std::fs::create_dir(&other).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
        .arg(&other)
        .status()
        .unwrap()
        .success();
    assert!(
        mounted,
        "this test mounts a tmpfs: it needs root (as CI runs it)"
    );
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(other.clone());
    let restore = |dest: &Path, extra: &[&str]| {
        cli()
            .arg("restore")
            .arg(&backup)
            .args(["--at", "2100-01-01", "--progress", "none"])
            .args(extra)
            .arg(dest)
            .output()
            .unwrap()
    };
    // --link hard is refused before anything is made, naming the flag to use.
    let dest = other.join("hard");
    let out = restore(&dest, &["--link", "hard"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--link copy"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dest.exists(), "a partial directory was left");
    // The default copies there, with a warning.
    let dest = other.join("auto");
    let out = restore(&dest, &[]);
    let said = text(&out.stderr);
    assert!(matches!(out.status.code(), Some(0 | 2)), "{said}");
    assert!(
        said.contains("another filesystem") && said.contains("copies"),
        "{said}"
    );
    let a = std::fs::read(backup.join("a.txt")).unwrap();
    assert_eq!(std::fs::read(dest.join("a.txt")).unwrap(), a);
    // Beside the backup it links.
    let dest = tmp.path().join("linked");
    let out = restore(&dest, &[]);
    assert!(
        text(&out.stderr).contains("hard links"),
        "{}",
        text(&out.stderr)
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(dest.join("a.txt")).unwrap().ino(),
        std::fs::metadata(backup.join("a.txt")).unwrap().ino()
    );
    // Nothing under the prefix: said, not silent.
    let out = restore(&tmp.path().join("empty"), &["--prefix", "no-such-prefix/"]);
    assert!(
        text(&out.stderr).contains("nothing to restore"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn completions_man_pages_and_examples_are_valid() {
    let out = Command::new(bin())
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("completion.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    assert!(
        Command::new("bash")
            .arg("-n")
            .arg(&script)
            .status()
            .unwrap()
            .success()
    );
    assert!(text(&out.stdout).contains("--metrics-file"));
    for shell in ["zsh", "fish"] {
        let out = Command::new(bin())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(
            out.status.success() && text(&out.stdout).contains("sync"),
            "{shell}"
        );
    }
    let pages = dir.path().join("man");
    std::fs::create_dir(&pages).unwrap();
    assert!(
        Command::new(bin())
            .args(["man", "--dir"])
            .arg(&pages)
            .status()
            .unwrap()
            .success()
    );
    let sync_page = pages.join("s3invbackup-sync.1");
    let rendered = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww"])
        .arg(&sync_page)
        .output()
        .unwrap();
    assert!(rendered.status.success(), "{}", text(&rendered.stderr));
    assert!(
        text(&rendered.stdout).contains("metrics"),
        "the sync page lacks its flags"
    );
    assert!(pages.join("s3invbackup.1").exists() && pages.join("s3invbackup-fsck.1").exists());

    // The examples: shell syntax, systemd's own verifier, and every flag they pass exists.
    let examples = repo().join("examples");
    assert!(
        Command::new("bash")
            .arg("-n")
            .arg(examples.join("slurm/s3invbackup.sbatch"))
            .status()
            .unwrap()
            .success()
    );
    let units = dir.path().join("units");
    std::fs::create_dir(&units).unwrap();
    for unit in ["s3invbackup@.service", "s3invbackup@.timer"] {
        let text = std::fs::read_to_string(examples.join("systemd").join(unit)).unwrap();
        // Verified as an instance, with the binary where the unit expects it (the built one).
        let text = text
            .replace("/usr/local/bin/s3invbackup", bin().to_str().unwrap())
            .replace("EnvironmentFile=", "EnvironmentFile=-")
            .replace("User=backup\n", "")
            .replace("Group=backup\n", "");
        std::fs::write(units.join(unit.replace("@.", "@demo.")), text).unwrap();
    }
    if Path::new("/usr/bin/systemd-analyze").exists() {
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(units.join("s3invbackup@demo.service"))
            .arg(units.join("s3invbackup@demo.timer"))
            .output()
            .unwrap();
        let said = text(&out.stderr);
        assert!(
            out.status.success() && !said.contains("s3invbackup@demo"),
            "systemd-analyze verify: {said}"
        );
    }
    let sync_help = text(
        &Command::new(bin())
            .args(["sync", "--help"])
            .output()
            .unwrap()
            .stdout,
    );
    let status_help = text(
        &Command::new(bin())
            .args(["status", "--help"])
            .output()
            .unwrap()
            .stdout,
    );
    for file in [
        "cron/s3invbackup.cron",
        "systemd/s3invbackup@.service",
        "slurm/s3invbackup.sbatch",
    ] {
        let body = std::fs::read_to_string(examples.join(file)).unwrap();
        for line in body.lines().filter(|l| !l.trim_start().starts_with('#')) {
            for cmd in line
                .split("s3invbackup ")
                .skip(1)
                .chain(line.split("$bin ").skip(1))
            {
                let help = if cmd.starts_with("status") {
                    &status_help
                } else if cmd.starts_with("sync") {
                    &sync_help
                } else {
                    continue;
                };
                for flag in cmd
                    .split_whitespace()
                    .take_while(|w| !w.starts_with(['>', '|']))
                    .filter(|w| w.starts_with("--"))
                {
                    assert!(
                        help.contains(flag),
                        "{file}: {flag} is not a flag of: {cmd}"
                    );
                }
            }
        }
    }
    // A cron line is five fields, a user, then a command.
    let cron = std::fs::read_to_string(examples.join("cron/s3invbackup.cron")).unwrap();
    for line in cron
        .lines()
        .filter(|l| !l.starts_with('#') && !l.contains('=') && !l.is_empty())
    {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert!(fields.len() > 6 && fields[6].starts_with('/'), "{line}");
    }
}

#[test]
fn each_dates_changes_are_the_diff_of_its_inventories() {
    use_server();
    let fx = fixture("op-changes", &["--files", "2"]);
    let dates = fx.dates();
    let tmp = tempfile::tempdir().unwrap();
    let backup = tmp.path().join("backup");
    // One date per run, as nights go; each run after the first says what the bucket did.
    for (i, d) in dates.iter().enumerate() {
        let out = sync(
            &fx.local,
            &backup,
            &["--start-date", &dates[0], "--end-date", d],
        );
        let said = text(&out.stderr);
        assert!(matches!(out.status.code(), Some(0 | 2)), "{said}");
        assert_eq!(said.contains("  in the bucket: "), i > 0, "{said}");
    }
    let changes = |extra: &[&str]| {
        cli()
            .arg("changes")
            .arg(&backup)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = changes(&["--date", &dates[0]]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("first date"),
        "{}",
        text(&out.stderr)
    );
    for pair in dates.windows(2) {
        // The oracle: the diff engine over the two dates' own indexes, built afresh from
        // the inventory (the backup keeps neither).
        let diff = cli()
            .arg("diff")
            .arg(format!("{}@{}", fx.local.display(), pair[0]))
            .arg(format!("{}@{}", fx.local.display(), pair[1]))
            .args(["--format", "jsonl", "--progress", "none", "--cache-dir"])
            .arg(tmp.path().join("cache"))
            .output()
            .unwrap();
        assert!(diff.status.success(), "{}", text(&diff.stderr));
        let recorded = changes(&["--date", &pair[1], "--format", "jsonl"]);
        assert!(recorded.status.success(), "{}", text(&recorded.stderr));
        let expected = text(&diff.stdout);
        assert!(!expected.is_empty(), "{} changed nothing?", pair[1]);
        assert_eq!(text(&recorded.stdout), expected, "changes of {}", pair[1]);
    }
    // Day 2 of the fixture deletes dir/b.txt and overwrites a.txt.
    let out = changes(&[
        "--date",
        &dates[1][..10],
        "--kind",
        "added-delete-marker",
        "--format",
        "csv",
    ]);
    let csv = text(&out.stdout);
    assert!(csv.starts_with("change,key,version_id,"), "{csv}");
    assert!(csv.contains("added-delete-marker,dir/b.txt,"), "{csv}");
    assert_eq!(csv.lines().count(), 2, "{csv}");
    let out = changes(&[]);
    let summary = text(&out.stdout);
    assert!(
        summary.contains(&format!("changes of {}", dates[2])),
        "{summary}"
    );
    assert!(summary.contains("now-current"), "{summary}");
    let out = changes(&["--date", "1999-01-01"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not an applied date"));
}

#[test]
fn half_set_credentials_are_an_error_not_an_anonymous_run() {
    for (vars, needle) in [
        (
            &[("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEONLYID")][..],
            "AWS_SECRET_ACCESS_KEY is not",
        ),
        (
            &[("AWS_SECRET_ACCESS_KEY", "only-the-secret-value")],
            "AWS_ACCESS_KEY_ID is not",
        ),
        (
            &[("AWS_SESSION_TOKEN", "only-a-token-value")],
            "temporary credentials need all three",
        ),
    ] {
        let mut c = Command::new(bin());
        c.args([
            "dates",
            "s3://bucket/inventory/",
            "--endpoint-url",
            "http://127.0.0.1:1",
        ])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("HOME", "/nonexistent");
        for (k, v) in vars {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        let said = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{vars:?}: {said}");
        assert!(said.contains(needle), "{vars:?}: {said}");
        assert!(!said.contains("anonymous"), "{said}");
        assert!(
            !said.contains(vars[0].1),
            "a credential was printed: {said}"
        );
    }
}

#[test]
fn a_repair_is_a_run_of_its_own_and_leaves_the_nights_row() {
    use_server();
    let fx = fixture("op-repair", &["--files", "2"]);
    let tmp = tempfile::tempdir().unwrap();
    let backup = tmp.path().join("backup");
    let out = sync(&fx.local, &backup, &[]);
    assert!(
        matches!(out.status.code(), Some(0 | 2)),
        "{}",
        text(&out.stderr)
    );
    let state = || -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(backup.join(format!(".{STEM}/state.json"))).unwrap())
            .unwrap()
    };
    let night = state()["applied"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    std::fs::remove_file(backup.join("a.txt")).unwrap();
    let out = cli()
        .args(["fsck", "--repair", "--progress", "none"])
        .arg(&backup)
        .output()
        .unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 2)),
        "{}",
        text(&out.stderr)
    );
    assert!(backup.join("a.txt").exists(), "not downloaded again");
    let after = state()["applied"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    for field in [
        "date",
        "applied_at",
        "downloaded",
        "downloaded_bytes",
        "renamed",
        "failed",
    ] {
        assert_eq!(
            after[field], night[field],
            "the night's {field} was rewritten by the repair"
        );
    }
    let history = runs(&backup);
    let last = history.last().unwrap();
    assert_eq!(last["command"], "fsck --repair");
    assert!(
        matches!(last["result"].as_str(), Some("done" | "partial")),
        "{last}"
    );
    assert_eq!(history.iter().filter(|r| r["command"] == "sync").count(), 1);
    // rollback with nothing to undo is not a run; prune --dry-run is not either.
    cli().arg("rollback").arg(&backup).assert().success();
    cli()
        .args(["prune", "--noncurrent-older-than", "1d", "--dry-run"])
        .arg(&backup)
        .assert()
        .success();
    assert_eq!(runs(&backup).len(), history.len());
    cli()
        .args(["prune", "--noncurrent-older-than", "1d"])
        .arg(&backup)
        .assert()
        .success();
    assert_eq!(runs(&backup).last().unwrap()["command"], "prune");
}

#[test]
fn prune_and_restore_never_go_through_a_symbolic_link() {
    use_server();
    let fx = fixture("op-links", &["--scenario", "sync", "--files", "2"]);
    let tmp = tempfile::tempdir().unwrap();
    let backup = tmp.path().join("backup");
    let out = sync(
        &fx.local,
        &backup,
        &["--on-bad-key", "skip", "--start-date", &fx.dates()[0]],
    );
    assert!(
        matches!(out.status.code(), Some(0 | 2)),
        "{}",
        text(&out.stderr)
    );
    // zarr/0 holds current and old versions; it moves to another disk and is linked back.
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::rename(backup.join("zarr/0"), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, backup.join("zarr/0")).unwrap();
    let listing = |d: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let outside = listing(&elsewhere);
    assert!(outside.iter().any(|n| n.contains(".old.")), "{outside:?}");
    let catalog = std::fs::read(backup.join(format!(".{STEM}/catalog/manifest.json"))).unwrap();
    let out = cli()
        .args(["prune", "--noncurrent-older-than", "1d"])
        .arg(&backup)
        .output()
        .unwrap();
    let said = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("zarr/0 is a symbolic link"), "{said}");
    assert_eq!(
        listing(&elsewhere),
        outside,
        "prune deleted through the link"
    );
    assert_eq!(
        std::fs::read(backup.join(format!(".{STEM}/catalog/manifest.json"))).unwrap(),
        catalog,
        "the refused prune changed the catalog"
    );
    let out = cli()
        .args(["restore", "--at", "2100-01-01", "--progress", "none"])
        .arg(&backup)
        .arg(tmp.path().join("restored"))
        .output()
        .unwrap();
    let said = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("zarr/0 is a symbolic link"), "{said}");
    assert!(
        !tmp.path().join("restored/zarr/0").exists(),
        "restored through the link"
    );
}
