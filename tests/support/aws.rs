//! The AWS harness (scripts/harness/aws_s3.py) from a test: a private network + mount
//! namespace where AWS's S3 host names resolve to a front on 127.0.0.1:443 that answers as
//! AWS does, with moto behind it. Commands run inside with nsenter, with the harness's CA
//! as AWS_CA_BUNDLE, so the tool's default endpoint code path is what runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::{repo, venv};

pub struct Aws {
    pub dir: tempfile::TempDir,
    /// A process inside the namespace (the front), for nsenter.
    pub pid: u32,
    unshare_pid: u32,
    /// moto, as seen inside the namespace (no TLS, path style): for seeding.
    pub moto: String,
    pub world: serde_json::Value,
}

/// Static keys the front knows.
pub const KEY_ID: &str = "AKIDTESTHARNESS";
pub const SECRET: &str = "harness/secret+key";

impl Aws {
    /// Starts a harness whose buckets are `buckets` (name → settings, see aws_s3.py).
    pub fn start(buckets: serde_json::Value) -> Aws {
        let dir = tempfile::tempdir().unwrap();
        let world = serde_json::json!({"buckets": buckets, "keys": {KEY_ID: SECRET}});
        std::fs::write(dir.path().join("world.json"), world.to_string()).unwrap();
        let out = Command::new(venv().join("bin/python"))
            .arg(repo().join("scripts/harness/aws_s3.py"))
            .args(["start", "--dir"])
            .arg(dir.path())
            .arg("--world")
            .arg(dir.path().join("world.json"))
            .args(["--watch-pid", &std::process::id().to_string()])
            .output()
            .expect("running aws_s3.py");
        assert!(
            out.status.success(),
            "aws_s3.py start failed (it needs root for unshare -mn): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        Aws {
            pid: info["pid"].as_u64().unwrap() as u32,
            unshare_pid: info["unshare_pid"].as_u64().unwrap() as u32,
            moto: info["moto"].as_str().unwrap().to_string(),
            dir,
            world,
        }
    }

    /// Changes the world (faults, clock, expired tokens); the front re-reads it.
    pub fn set(&mut self, field: &str, value: serde_json::Value) {
        self.world[field] = value;
        let path = self.dir.path().join("world.json");
        let tmp = self.dir.path().join("world.json.tmp");
        std::fs::write(&tmp, self.world.to_string()).unwrap();
        // A later mtime for certain: the front compares nanoseconds.
        std::thread::sleep(std::time::Duration::from_millis(5));
        std::fs::rename(tmp, path).unwrap();
    }

    /// A command inside the namespace, with a clean AWS environment: no credentials, no
    /// region, no profile, no instance metadata, the harness's CA.
    pub fn command(&self, program: impl AsRef<Path>) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.pid.to_string(), "-m", "-n", "--"])
            .arg("env")
            .args([
                "-u",
                "AWS_ACCESS_KEY_ID",
                "-u",
                "AWS_SECRET_ACCESS_KEY",
                "-u",
                "AWS_SESSION_TOKEN",
                "-u",
                "AWS_REGION",
                "-u",
                "AWS_DEFAULT_REGION",
                "-u",
                "AWS_PROFILE",
                "-u",
                "AWS_ENDPOINT_URL",
                "-u",
                "AWS_ENDPOINT_URL_S3",
            ])
            .arg(format!(
                "AWS_CA_BUNDLE={}",
                self.dir.path().join("ca.pem").display()
            ))
            .arg("AWS_EC2_METADATA_DISABLED=true")
            .arg(format!("HOME={}", self.home().display()))
            .arg(program.as_ref());
        c
    }

    /// The tool, inside.
    pub fn tool(&self) -> Command {
        self.command(assert_cmd::cargo::cargo_bin("s3invbackup"))
    }

    /// A Python script of scripts/harness/, inside, with the venv.
    pub fn script(&self, name: &str) -> Command {
        let mut c = self.command(venv().join("bin/python"));
        c.arg(repo().join("scripts/harness").join(name));
        c
    }

    /// The HOME commands run with (empty unless a test writes ~/.aws there).
    pub fn home(&self) -> PathBuf {
        let h = self.dir.path().join("home");
        std::fs::create_dir_all(&h).unwrap();
        h
    }

    /// Every request the front answered: (method, host, path, status).
    pub fn requests(&self) -> Vec<(String, String, String, u16)> {
        let Ok(text) = std::fs::read_to_string(self.dir.path().join("requests.jsonl")) else {
            return Vec::new();
        };
        text.lines()
            .map(|l| serde_json::from_str::<(String, String, String, u16)>(l).unwrap())
            .collect()
    }

    pub fn clear_requests(&self) {
        let _ = std::fs::remove_file(self.dir.path().join("requests.jsonl"));
    }
}

impl Drop for Aws {
    fn drop(&mut self) {
        // unshare --kill-child takes the front, and the front's watchdog moto, with it.
        unsafe {
            libc::kill(self.unshare_pid as i32, libc::SIGTERM);
        }
    }
}

/// Runs, and returns the output (stdout, stderr as text).
pub fn run(mut c: Command) -> (Output, String, String) {
    let out = c.output().expect("running a command in the harness");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}
