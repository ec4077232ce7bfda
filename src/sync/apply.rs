//! The executor: carries out a planned run on the tree (its commit is in [`super::commit`]).
//!
//! All changes to the tree are made by one thread (this one), each journaled first: moves
//! and directory changes as the plan is read, placements as downloads verify. Downloads run
//! on the fetcher's pool into the staging area (same filesystem), so a file appears in the
//! tree only whole and verified, with its mtime already set. Every step is idempotent --
//! a rename whose target exists and source does not is done, a download whose destination
//! holds the right size and mtime is done, a verified file in staging is placed without
//! fetching it again -- so a resumed run replays the plan from the start.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::backup::Backup;
use crate::backup::journal::{Entry, Journal, PlacedCheck};
use crate::backup::layout::NameStem;
use crate::backup::run_dir::{PlanSummary, RunDir, Step};
use crate::model::record::LocalState;
use crate::model::timestamp::Timestamp;
use crate::s3::S3Client;
use crate::sync::concurrency::ConcurrencyReport;
use crate::sync::fetch::{
    FetchCounters, FetchError, FetchOptions, FetchRequest, FetchResult, fetch_all,
};
use crate::sync::plan;
use crate::sys::progress::{Counters, Phase, Progress, Reporter};
use crate::sys::stop::Stop;

/// A version that could not be fetched in this run.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub key: String,
    pub version_id: String,
    pub last_modified: Timestamp,
    pub size: u64,
    pub state: &'static str,
    pub error: String,
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunOutcome {
    pub date: String,
    pub downloaded: u64,
    pub downloaded_bytes: u64,
    /// Verified files found in staging from an interrupted run and placed without a GET.
    pub reused_from_staging: u64,
    pub renamed: u64,
    pub displaced: u64,
    pub versions_files: u64,
    /// Of those, written as the plan rendered them (no catalog read).
    pub versions_files_planned: u64,
    pub requests: u64,
    /// Files found where the plan placed a version, not that version (torn by a power
    /// loss after their rename, or put there by hand): moved to `.<stem>/quarantine/`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub quarantined: Vec<String>,
    pub failures: Vec<Failure>,
    pub interrupted: bool,
    /// How many downloads were in flight (`--jobs auto`: the curve it followed).
    pub concurrency: ConcurrencyReport,
}

pub struct Executor<'a> {
    pub backup: &'a Backup,
    pub client: &'a S3Client,
    pub bucket: &'a str,
    pub fetch: FetchOptions,
    pub progress: Progress,
    pub stop: Stop,
}

impl Executor<'_> {
    /// Runs the plan in `run_dir` to the end (or to a graceful stop).
    pub fn execute(&self, run_dir: &RunDir, summary: &PlanSummary) -> Result<RunOutcome> {
        let counters = Arc::new(Counters::default());
        let _reporter = Reporter::start(
            Phase::new(
                format!("fetch {}", summary.date),
                "objects",
                summary.fetches,
                summary.fetch_bytes,
            ),
            Arc::clone(&counters),
            &self.progress,
        );
        // The step reader and the fetcher's result callback both run on this thread and
        // take turns with the run's state: one RefCell, never borrowed across a call.
        let run = RefCell::new(Run::start(
            self,
            run_dir,
            &summary.date,
            Arc::clone(&counters),
        )?);
        let requests = run_dir
            .read_steps()?
            .map_while(|step| run.borrow_mut().next_request(step))
            .flatten();
        let fetch_counters = FetchCounters {
            display: Some(Arc::clone(&counters)),
            ..FetchCounters::default()
        };
        let fetched = {
            let _graceful = self.stop.graceful();
            fetch_all(self.client, requests, &self.fetch, &fetch_counters, |r| {
                run.borrow_mut().fetched(r)
            })
        };
        let mut run = run.into_inner();
        run.journal.sync()?;
        if let Some(e) = run.error.take() {
            return Err(e);
        }
        fetched?;
        if self.stop.requested() {
            run.outcome.interrupted = true;
        }
        run.outcome.requests = fetch_counters.requests.load(Ordering::Relaxed);
        run.outcome.concurrency = std::mem::take(
            &mut *fetch_counters
                .concurrency
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        Ok(run.outcome)
    }
}

/// A download in flight: where it goes once verified.
struct InFlight {
    /// Its step's index in the plan (for the checkpoint: the first step not yet done).
    step: u64,
    dest: String,
    key: String,
    version_id: String,
}

/// One execution of a plan: what it has done so far and what is in flight.
struct Run<'a> {
    exec: &'a Executor<'a>,
    root: &'a Path,
    state_dir: PathBuf,
    journal: Journal,
    /// Moves an earlier attempt of this run made: their source path may hold a newer file
    /// since (the current path, refilled by a download), so "target exists" means done.
    moved_before: HashSet<(String, String)>,
    /// Staging shards are made as downloads need them (a small run needs few).
    shards_made: [bool; 256],
    /// Directories of the tree seen to be real directories (not symbolic links) this run.
    real_dirs: HashSet<String>,
    in_flight: HashMap<PathBuf, InFlight>,
    outcome: RunOutcome,
    /// The first error: no further step is read and no further download placed.
    error: Option<anyhow::Error>,
    counters: Arc<Counters>,
    /// Access denials since the last download that worked: a long unbroken run of them
    /// is the credentials (or their absence), not the versions.
    denied_in_a_row: u32,
    /// When this attempt started (names its quarantine folder).
    started: String,
    /// Moves not yet durable: a power loss may undo any of them, and keep a later rename
    /// that does not depend on them. So nothing is put where a move took a held version from
    /// until that move is durable (see [`Run::before_filling`]).
    unsynced_moves: UnsyncedMoves,
    /// Steps read so far.
    steps_read: u64,
    /// An earlier attempt ran on another boot (a power loss or node crash may have cut it):
    /// what it placed or staged from this step on is checked by content, not trusted by size
    /// and mtime (the size and the time may have reached the disk, the bytes not).
    recheck_from: Option<u64>,
    /// Placed since the last checkpoint: bytes, files.
    since_checkpoint: (u64, u64),
}

/// A checkpoint (a syncfs, then a journal entry) after this many bytes or files placed: what
/// an attempt cut by a power loss leaves to re-read is bounded by it.
const CHECKPOINT_BYTES: u64 = 8 << 30;
const CHECKPOINT_FILES: u64 = 100_000;

/// The tree paths this run's moves vacated, and the directories those moves changed, since
/// the directories were last fsynced.
#[derive(Default)]
struct UnsyncedMoves {
    vacated: HashSet<String>,
    dirs: HashSet<PathBuf>,
}

/// This many 403s in a row, with no success between, stop the run.
const DENIED_IN_A_ROW: u32 = 50;

impl<'a> Run<'a> {
    fn start(
        exec: &'a Executor<'a>,
        run_dir: &RunDir,
        date: &str,
        counters: Arc<Counters>,
    ) -> Result<Run<'a>> {
        let entries = run_dir.read_journal()?;
        let here = crate::sys::boot::this_boot();
        let mut elsewhere = None;
        let mut durable_steps = 0;
        let mut attempts = 0;
        for e in &entries {
            match e {
                Entry::Attempt { on } => {
                    attempts += 1;
                    if *on != here {
                        elsewhere = Some(on.clone());
                    }
                }
                Entry::Checkpoint { steps } => durable_steps = durable_steps.max(*steps),
                _ => {}
            }
        }
        // A journal with entries and no attempt recorded is an older version's: its boot is
        // not known either.
        if attempts == 0 && !entries.is_empty() {
            elsewhere = Some("an unrecorded boot".to_string());
        }
        let recheck_from = elsewhere.map(|on| {
            tracing::warn!(
                "an earlier attempt at this run ran on {on}, not on this boot ({here}): what it \
                 placed after plan step {durable_steps} is checked by content before it is \
                 trusted (a power loss may have kept sizes and times without the bytes)"
            );
            durable_steps
        });
        let moved_before = entries
            .into_iter()
            .filter_map(|e| match e {
                Entry::Rename { from, to } => Some((from, to)),
                _ => None,
            })
            .collect();
        let mut journal = Journal::open(&run_dir.journal_path())?;
        journal.append(&Entry::Attempt { on: here })?;
        journal.sync()?;
        Ok(Run {
            exec,
            root: &exec.backup.root,
            state_dir: exec.backup.part_dir(),
            journal,
            moved_before,
            shards_made: [false; 256],
            real_dirs: HashSet::new(),
            in_flight: HashMap::new(),
            started: crate::model::timestamp::Timestamp::now()
                .to_string()
                .replace(':', "-"),
            outcome: RunOutcome {
                date: date.to_string(),
                ..RunOutcome::default()
            },
            error: None,
            counters,
            denied_in_a_row: 0,
            unsynced_moves: UnsyncedMoves::default(),
            steps_read: 0,
            recheck_from,
            since_checkpoint: (0, 0),
        })
    }

    /// The next step's download, if it has one; `None` ends the plan (an error or a stop).
    fn next_request(&mut self, step: Result<Step>) -> Option<Option<FetchRequest>> {
        if self.error.is_some() {
            return None;
        }
        if self.exec.stop.requested() {
            self.outcome.interrupted = true;
            return None;
        }
        match step.and_then(|s| self.step(s)) {
            Ok(request) => Some(request),
            Err(e) => {
                self.error = Some(e);
                None
            }
        }
    }

    fn step(&mut self, step: Step) -> Result<Option<FetchRequest>> {
        self.steps_read += 1;
        match step {
            Step::Rename { from, to } => self.rename(from, to).map(|()| None),
            Step::Displace { dir, to } => self.displace(dir, to).map(|()| None),
            Step::Mkdir { dir } => self.mkdir(dir).map(|()| None),
            Step::Fetch {
                key,
                version_id,
                last_modified,
                size,
                etag,
                etag_is_md5,
                dest,
                versioned,
            } => {
                let target = Target {
                    key,
                    version_id,
                    last_modified,
                    size,
                    dest,
                    versioned,
                };
                self.fetch(target, etag, etag_is_md5)
            }
        }
    }

    fn rename(&mut self, from: String, to: String) -> Result<()> {
        inside(&from)?;
        inside(&to)?;
        self.no_links(&from)?;
        self.no_links(&to)?;
        let (src, dst) = (self.root.join(&from), self.root.join(&to));
        if exists(&dst) && self.moved_before.contains(&(from.clone(), to.clone())) {
            return Ok(());
        }
        if exists(&src) {
            if exists(&dst) {
                // Both names are there and the journal does not list the move: an earlier
                // attempt made it, then filled `from` again (the next version placed there), and
                // a power loss took the journal's last entries but not the renames (the
                // journal is synced in batches; the tree's directories are synced before
                // anything is put where a move vacated, see `before_filling`). `to` is a
                // name unique to the version moved, so the move is done; whatever is at
                // `from` is checked by the step that fills it, and set aside if it is not
                // the version the plan puts there.
                tracing::warn!(
                    "{to} is there and so is {from}: taking the move as done by an attempt \
                     whose last journal entries a power loss took"
                );
                return Ok(());
            }
            self.journal.append(&Entry::Rename {
                from: from.clone(),
                to,
            })?;
            make_parent(&dst)?;
            std::fs::rename(&src, &dst)
                .with_context(|| format!("moving {} to {}", src.display(), dst.display()))?;
            self.moved(&from, [&src, &dst]);
            self.outcome.renamed += 1;
        } else if !exists(&dst) {
            bail!(
                "{} is missing: the catalog says it holds a version; run fsck --repair to fetch \
                 it again",
                src.display()
            );
        }
        Ok(())
    }

    fn displace(&mut self, dir: String, to: String) -> Result<()> {
        inside(&dir)?;
        inside(&to)?;
        self.no_links(&dir)?;
        self.no_links(&to)?;
        let src = self.root.join(&dir);
        if src.is_dir() {
            let dst = self.root.join(&to);
            let merged = exists(&dst);
            self.journal.append(&Entry::Displace {
                dir: dir.clone(),
                to,
                merged,
            })?;
            let mut changed = vec![src.clone()];
            merge_dir(&src, &dst, &self.exec.backup.stem, &mut changed)?;
            self.moved(&dir, changed.iter());
            self.outcome.displaced += 1;
        }
        Ok(())
    }

    fn mkdir(&mut self, dir: String) -> Result<()> {
        inside(&dir)?;
        self.no_links(&format!("{dir}/"))?;
        let path = self.root.join(&dir);
        if !path.is_dir() {
            self.before_filling(&dir)?;
            self.journal.append(&Entry::Mkdir { dir })?;
            std::fs::create_dir_all(&path)
                .with_context(|| format!("creating directory {}", path.display()))?;
        }
        Ok(())
    }

    /// Done already (in the tree, or verified in staging by an interrupted attempt), or a
    /// request for the fetcher.
    fn fetch(
        &mut self,
        t: Target,
        etag: Option<String>,
        etag_is_md5: bool,
    ) -> Result<Option<FetchRequest>> {
        let step = self.steps_read - 1;
        let recheck = self.recheck_from.is_some_and(|from| step >= from);
        let dest = self.root.join(&t.dest);
        if is_verified_copy(&dest, t.size, t.last_modified)
            && (!recheck || self.holds_bytes(&dest, &etag, etag_is_md5))
        {
            self.counters.files_done.fetch_add(1, Ordering::Relaxed);
            self.counters.bytes.fetch_add(t.size, Ordering::Relaxed);
            return Ok(None);
        }
        let staging =
            self.state_dir
                .join(Backup::staging_rel(&t.key, &t.version_id, t.last_modified));
        if is_verified_copy(&staging, t.size, t.last_modified)
            && (!recheck || self.holds_bytes(&staging, &etag, etag_is_md5))
        {
            // Verified by the interrupted attempt; how is not known any more.
            self.place(&staging, &t.dest, None)?;
            self.outcome.reused_from_staging += 1;
            self.counters.files_done.fetch_add(1, Ordering::Relaxed);
            self.counters.bytes.fetch_add(t.size, Ordering::Relaxed);
            return Ok(None);
        }
        self.make_shard(&staging)?;
        self.in_flight.insert(
            staging.clone(),
            InFlight {
                step,
                dest: t.dest,
                key: t.key.clone(),
                version_id: t.version_id.clone(),
            },
        );
        Ok(Some(FetchRequest {
            bucket: self.exec.bucket.to_string(),
            key: t.key,
            version_id: t.versioned.then_some(t.version_id),
            size: t.size,
            etag: plan::parse_etag(&etag),
            etag_is_md5,
            last_modified: t.last_modified,
            dest: staging,
        }))
    }

    /// Whether `path` holds the bytes of the version whose ETag is `etag`, read and checked
    /// against it. What cannot be checked that way (an ETag that is no MD5) counts as not held: one
    /// download again, never a wrong file kept.
    fn holds_bytes(&self, path: &Path, etag: &Option<String>, etag_is_md5: bool) -> bool {
        let local = crate::model::record::Local::default();
        match crate::maintain::fsck::verify::verify_bytes(
            path,
            plan::parse_etag(etag),
            etag_is_md5,
            &local,
        ) {
            Ok(true) => true,
            Ok(false) => false,
            Err(why) => {
                tracing::warn!(
                    "{}: {why} (a power loss took its bytes); fetched again",
                    path.display()
                );
                false
            }
        }
    }

    /// After `size` more bytes placed: a checkpoint when enough is unsynced. The first step
    /// not yet done bounds what is durable (downloads finish out of order).
    fn placed(&mut self, size: u64) -> Result<()> {
        self.since_checkpoint.0 += size;
        self.since_checkpoint.1 += 1;
        if self.since_checkpoint.0 < CHECKPOINT_BYTES && self.since_checkpoint.1 < CHECKPOINT_FILES
        {
            return Ok(());
        }
        let steps = self
            .in_flight
            .values()
            .map(|f| f.step)
            .min()
            .unwrap_or(self.steps_read);
        crate::backup::durable::sync_filesystem(self.root)?;
        self.journal.append(&Entry::Checkpoint { steps })?;
        self.journal.sync()?;
        self.since_checkpoint = (0, 0);
        Ok(())
    }

    /// No directory on the way to `rel` (a path in the tree; its own last component aside)
    /// is a symbolic link: a run never creates, renames or writes through one. An operator
    /// who moved a directory elsewhere and left a link, or a planted link, stops the run
    /// (resumable) with the fix. Each directory is looked at once per run.
    fn no_links(&mut self, rel: &str) -> Result<()> {
        let Some((parent, _)) = rel.rsplit_once('/') else {
            return Ok(());
        };
        if self.real_dirs.contains(parent) {
            return Ok(());
        }
        crate::backup::layout::no_symlink_on_the_way(self.root, rel)
            .map_err(|e| anyhow::anyhow!("{e}; then run sync again"))?;
        // Only a parent that exists now is known to be real (an absent one is made by
        // this run, and looked at again next time).
        if self.root.join(parent).is_dir() {
            self.real_dirs.insert(parent.to_string());
        }
        Ok(())
    }

    fn make_shard(&mut self, staging: &Path) -> Result<()> {
        let shard = staging.parent().expect("sharded");
        let name = shard.file_name().unwrap_or_default().to_string_lossy();
        let id = usize::from_str_radix(&name, 16).unwrap_or(0) & 255;
        if !self.shards_made[id] {
            std::fs::create_dir_all(shard)
                .with_context(|| format!("creating {}", shard.display()))?;
            self.shards_made[id] = true;
        }
        Ok(())
    }

    /// Moves a verified download from staging into the tree, journaled first.
    fn place(&mut self, staging: &Path, dest: &str, check: Option<PlacedCheck>) -> Result<()> {
        inside(dest)?;
        self.no_links(dest)?;
        let staging_rel = staging
            .strip_prefix(&self.state_dir)
            .unwrap_or(staging)
            .to_string_lossy()
            .into_owned();
        self.journal.append(&Entry::Place {
            staging: staging_rel,
            dest: dest.to_string(),
            check,
        })?;
        let target = self.root.join(dest);
        if exists(&target) {
            self.set_aside(&target, dest)?;
        }
        self.before_filling(dest)?;
        make_parent(&target)?;
        use std::os::unix::fs::PermissionsExt;
        let mode = self.exec.backup.config.file_mode;
        std::fs::set_permissions(staging, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {}", staging.display()))?;
        std::fs::rename(staging, &target)
            .with_context(|| format!("moving {} to {}", staging.display(), target.display()))
    }

    /// A file stands where the plan places a version, and it is not that version (the
    /// fetch found no verified copy there): a placement whose rename reached the disk before
    /// its bytes did (a power loss, or a node crash on a cluster filesystem), or a file put
    /// there by hand. Neither is held by the catalog; it moves to quarantine, never deleted,
    /// and the version takes its place. Anything but a plain file there stops the run.
    fn set_aside(&mut self, target: &Path, dest: &str) -> Result<()> {
        let meta = std::fs::symlink_metadata(target)
            .with_context(|| format!("reading {}", target.display()))?;
        if !meta.is_file() {
            bail!(
                "{} already exists where the plan places a new version, and is not a file; \
                 the tree does not match the catalog (run fsck)",
                target.display()
            );
        }
        let to = self
            .exec
            .backup
            .quarantine_dir()
            .join(&self.started)
            .join(dest);
        make_parent(&to)?;
        std::fs::rename(target, &to)
            .with_context(|| format!("moving {} to {}", target.display(), to.display()))?;
        self.moved(dest, [target, to.as_path()]);
        tracing::warn!(
            "{} is not the version the plan places there ({} bytes): kept in {}, fetched again",
            target.display(),
            meta.len(),
            to.display()
        );
        self.outcome.quarantined.push(dest.to_string());
        Ok(())
    }

    /// Records a move of `vacated` (a tree path) that changed the entries of the parents of
    /// `paths` (every path the move removed or created).
    fn moved<P: AsRef<Path>>(&mut self, vacated: &str, paths: impl IntoIterator<Item = P>) {
        let m = &mut self.unsynced_moves;
        m.vacated.insert(vacated.to_string());
        for p in paths {
            if let Some(parent) = p.as_ref().parent() {
                m.dirs.insert(parent.to_path_buf());
            }
        }
    }

    /// Called before a rename or mkdir puts something at `rel`: if a move of this run vacated
    /// `rel` or a directory above it, and that move is not yet durable, its directories are
    /// fsynced first. Otherwise a power loss could keep the new entry and lose the move,
    /// and the version the move was saving would be gone (POSIX orders neither). Moves are
    /// few and placements many, so this is one fsync per directory per batch of moves.
    fn before_filling(&mut self, rel: &str) -> Result<()> {
        let m = &self.unsynced_moves;
        if m.vacated.is_empty() {
            return Ok(());
        }
        let hit = m.vacated.contains(rel)
            || rel
                .match_indices('/')
                .any(|(i, _)| m.vacated.contains(&rel[..i]));
        if !hit {
            return Ok(());
        }
        // The journal first: a move made durable must be one a rollback can find.
        self.journal.sync()?;
        let m = std::mem::take(&mut self.unsynced_moves);
        for dir in &m.dirs {
            if dir.is_dir() {
                crate::backup::durable::sync_dir(dir)?;
            }
        }
        Ok(())
    }

    /// A download finished: place it, or record why not.
    fn fetched(&mut self, r: FetchResult) {
        let Some(p) = self.in_flight.remove(&r.request.dest) else {
            return;
        };
        self.counters.files_done.fetch_add(1, Ordering::Relaxed);
        if !matches!(r.outcome, Err(FetchError::Forbidden(_))) {
            self.denied_in_a_row = 0;
        }
        match r.outcome {
            Ok(how) => {
                if self.error.is_some() {
                    return; // stays verified in staging for the next run
                }
                let check = PlacedCheck {
                    how: crate::model::record::Check::from(how).name().to_string(),
                    part_size: r.part_size,
                    checksum: r.checksum.as_deref().map(crate::inventory::hex),
                };
                match self
                    .place(&r.request.dest, &p.dest, Some(check))
                    .and_then(|()| self.placed(r.request.size))
                {
                    Ok(()) => {
                        self.outcome.downloaded += 1;
                        self.outcome.downloaded_bytes += r.request.size;
                        self.counters
                            .bytes
                            .fetch_add(r.request.size, Ordering::Relaxed);
                    }
                    Err(e) => self.error = Some(e),
                }
            }
            Err(FetchError::Local(e) | FetchError::Fatal(e)) => {
                // Disk full, too many open files, credentials refused...: stop asking for
                // more; what verified stays in staging for the run that resumes this one.
                if self.error.is_none() {
                    self.error = Some(e);
                }
            }
            Err(e) => {
                if let FetchError::Forbidden(why) = &e {
                    self.denied_in_a_row += 1;
                    if self.denied_in_a_row == DENIED_IN_A_ROW && self.error.is_none() {
                        self.error = Some(anyhow::anyhow!(
                            "{DENIED_IN_A_ROW} downloads in a row were denied, the last: {why}; \
                             stopping (the run resumes where it stopped)"
                        ));
                    }
                }
                let state = match e {
                    FetchError::Archived(_) => LocalState::Archived,
                    FetchError::NeedsCustomerKey(_) => LocalState::NeedsKey,
                    _ => LocalState::Missing,
                };
                self.outcome.failures.push(Failure {
                    key: p.key,
                    version_id: p.version_id,
                    last_modified: r.request.last_modified,
                    size: r.request.size,
                    state: state.name(),
                    error: e.to_string(),
                });
            }
        }
    }
}

/// Every path a step names must stay inside the backup (layout::check_inside).
fn inside(path: &str) -> Result<()> {
    crate::backup::layout::check_inside(path).map_err(anyhow::Error::msg)
}

/// The version a fetch step places.
struct Target {
    key: String,
    version_id: String,
    last_modified: Timestamp,
    size: u64,
    dest: String,
    /// Name the version in the GET (false: a current-versions-only inventory).
    versioned: bool,
}

/// The file at `path` has this size and mtime (to the millisecond): it is a verified copy,
/// since mtimes are set only after verification.
fn is_verified_copy(path: &Path, size: u64, last_modified: Timestamp) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    meta.is_file()
        && meta.len() == size
        && meta
            .modified()
            .ok()
            .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
            .is_some_and(|d| d.as_millis() as i64 == last_modified.0)
}

fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

fn make_parent(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating directory {}", parent.display()))?;
    }
    Ok(())
}

/// Moves directory `src` to `dst`, merging into `dst` if it exists. The entries of a
/// displaced directory are old versions (unique names) and directories; a versions JSON is
/// derived data and may be replaced.
/// Every directory whose entries it changes is added to `changed` (for their fsync).
fn merge_dir(src: &Path, dst: &Path, stem: &NameStem, changed: &mut Vec<PathBuf>) -> Result<()> {
    changed.push(dst.to_path_buf());
    if !exists(dst) {
        return std::fs::rename(src, dst)
            .with_context(|| format!("moving {} to {}", src.display(), dst.display()));
    }
    if !dst.is_dir() {
        bail!(
            "cannot move directory {} to {}: a file is in the way",
            src.display(),
            dst.display()
        );
    }
    let versions_file = stem.versions_file();
    for entry in std::fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let entry = entry.with_context(|| format!("reading {}", src.display()))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        if from.is_dir() && to.is_dir() {
            merge_dir(&from, &to, stem, changed)?;
        } else if exists(&to) && entry.file_name().to_str() != Some(versions_file.as_str()) {
            bail!(
                "cannot merge {} into {}: {} exists in both",
                src.display(),
                dst.display(),
                entry.file_name().to_string_lossy()
            );
        } else {
            std::fs::rename(&from, &to)
                .with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
            changed.push(to);
        }
    }
    changed.push(src.join("."));
    std::fs::remove_dir(src).with_context(|| format!("removing empty {}", src.display()))
}
