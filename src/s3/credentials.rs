//! Where a request's credentials come from: aws-config's default chain, the same one the AWS
//! CLI and SDKs use (environment, `~/.aws/credentials` and `~/.aws/config` with profiles,
//! `credential_process`, SSO, assume-role with `source_profile`, web identity, ECS, EC2
//! IMDSv2), with our own cache in front so that temporary credentials are renewed before
//! they expire and again when S3 answers `ExpiredToken`: a run of several days must outlive
//! any one session token.
//!
//! aws-config is async; the chain runs on a small private tokio runtime, entered only to
//! load or renew credentials (a few times a run), never per request.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use anyhow::{Result, anyhow};
use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;
use aws_credential_types::provider::error::CredentialsError;

/// Renew temporary credentials this long before they expire, or once half their life is
/// gone if that is sooner (credentials valid for less than ten minutes would otherwise be
/// renewed before every request).
const RENEW_BEFORE: Duration = Duration::from_secs(5 * 60);

pub(super) struct CredentialSource {
    chain: Option<Chain>,
    /// Anonymous because `--no-sign-request` said so (not because nothing was found).
    unsigned_on_purpose: bool,
    /// The credentials, and when they were loaded.
    cached: Mutex<Option<(Credentials, SystemTime)>>,
    /// For messages: where the credentials came from, or that the run is anonymous.
    description: String,
}

struct Chain {
    runtime: tokio::runtime::Runtime,
    provider: DefaultCredentialsChain,
}

impl CredentialSource {
    /// Requests are not signed (`--no-sign-request`).
    pub fn anonymous(why: &str, on_purpose: bool) -> CredentialSource {
        CredentialSource {
            chain: None,
            unsigned_on_purpose: on_purpose,
            cached: Mutex::new(None),
            description: format!("anonymous ({why})"),
        }
    }

    /// Loads credentials from the default chain now, so that a misconfigured profile is
    /// reported before anything is planned. Finding none is not an error: the run is then
    /// anonymous, and says so.
    pub fn from_chain(
        profile: Option<&str>,
        region_hint: Option<&str>,
    ) -> Result<CredentialSource> {
        half_set_keys()?;
        let runtime = start_runtime()?;
        let provider = runtime.block_on(async {
            let mut builder = DefaultCredentialsChain::builder();
            if let Some(p) = profile {
                builder = builder.profile_name(p);
            }
            // Always a region, so that the chain does not go looking for one in instance
            // metadata (STS and SSO endpoints only; S3's regions are found per bucket).
            builder = builder.region(aws_config::Region::new(
                region_hint.unwrap_or("us-east-1").to_string(),
            ));
            builder.build().await
        });
        let chain = Chain { runtime, provider };
        match chain.load() {
            Ok(creds) => {
                let description = describe(&creds, profile);
                tracing::info!("credentials: {description}");
                Ok(CredentialSource {
                    chain: Some(chain),
                    unsigned_on_purpose: false,
                    cached: Mutex::new(Some((creds, SystemTime::now()))),
                    description,
                })
            }
            Err(CredentialsError::CredentialsNotLoaded(_)) => {
                // A profile asked for by name that yields nothing is a mistake to report,
                // not a reason to go anonymous.
                let named = profile.map(|p| (p.to_string(), "--profile")).or_else(|| {
                    std::env::var("AWS_PROFILE")
                        .ok()
                        .filter(|p| !p.is_empty())
                        .map(|p| (p, "AWS_PROFILE"))
                });
                if let Some((p, from)) = named {
                    return Err(anyhow!(
                        "profile {p:?} not found, or it gives no credentials ({from}; profiles are read from ~/.aws/config and ~/.aws/credentials, or AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE)"
                    ));
                }
                tracing::warn!(
                    "no credentials were found (environment, ~/.aws, web identity, container, instance metadata): requests are anonymous (--no-sign-request says so and skips the search)"
                );
                Ok(CredentialSource::anonymous(
                    "no credentials were found",
                    false,
                ))
            }
            // The chain's last link, instance metadata, answering "no" (not EC2, IMDS turned
            // off, a container past the hop limit) means nothing was configured anywhere.
            Err(e) if profile.is_none() && error_chain(&e).contains("IMDS") => {
                tracing::warn!(
                    "no credentials were found (environment, ~/.aws, web identity, container), and instance metadata refused ({}): requests are anonymous (--no-sign-request says so and skips the search)",
                    error_chain(&e)
                );
                Ok(CredentialSource::anonymous(
                    "no credentials were found",
                    false,
                ))
            }
            Err(e) => Err(anyhow!(
                "loading AWS credentials{}: {}",
                profile
                    .map(|p| format!(" for profile {p:?}"))
                    .unwrap_or_default(),
                error_chain(&e)
            )),
        }
    }

    pub fn signing(&self) -> super::error::Signing {
        use super::error::Signing;
        match (&self.chain, self.unsigned_on_purpose) {
            (Some(_), _) => Signing::Signed,
            (None, true) => Signing::NoSignRequest,
            (None, false) => Signing::NoCredentials,
        }
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    /// The credentials to sign with now (None: anonymous), renewed first if they expire
    /// within a few minutes.
    pub fn current(&self) -> Result<Option<Credentials>> {
        let Some(chain) = &self.chain else {
            return Ok(None);
        };
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = cached
            .as_ref()
            .is_some_and(|(c, loaded)| c.expiry().is_none_or(|t| !due(*loaded, t)));
        if !fresh {
            *cached = Some((self.renew(chain)?, SystemTime::now()));
        }
        Ok(cached.as_ref().map(|(c, _)| c.clone()))
    }

    /// S3 said the token signed with `stale` has expired: renew, unless another thread
    /// already did. Returns whether there are credentials other than `stale` to try.
    pub fn renew_after_expired(&self, stale: &Credentials) -> Result<bool> {
        let Some(chain) = &self.chain else {
            return Ok(false);
        };
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if cached
            .as_ref()
            .is_some_and(|(c, _)| !same_identity(c, stale))
        {
            return Ok(true);
        }
        let renewed = self.renew(chain)?;
        let changed = !same_identity(&renewed, stale);
        *cached = Some((renewed, SystemTime::now()));
        Ok(changed)
    }

    fn renew(&self, chain: &Chain) -> Result<Credentials> {
        let creds = chain.load().map_err(|e| {
            anyhow!(
                "renewing AWS credentials ({}): {}",
                self.description,
                error_chain(&e)
            )
        })?;
        tracing::info!(
            "credentials renewed ({}){}",
            self.description,
            creds
                .expiry()
                .map(|t| format!(
                    ", valid until {}",
                    crate::model::timestamp::Timestamp::from_system_time(t)
                ))
                .unwrap_or_default()
        );
        Ok(creds)
    }
}

/// The runtime, or an error: tokio panics (instead of returning an error) when its signal
/// driver cannot get a socket, as with a descriptor limit of 8; that must be exit 1 with
/// the cause, not a crash. The panic hook is silenced for the moment it takes (this runs at
/// start-up, before any other thread of ours).
/// Keys in the environment are all or nothing: with only one of the pair, aws-config skips
/// the environment and the run would silently go on as another identity (a profile, the
/// instance's role) or anonymously. Named, never valued: nothing secret is printed.
fn half_set_keys() -> Result<()> {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    let (id, secret) = (set("AWS_ACCESS_KEY_ID"), set("AWS_SECRET_ACCESS_KEY"));
    if id != secret {
        let (given, missing) = if id {
            ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        } else {
            ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID")
        };
        anyhow::bail!(
            "{given} is set but {missing} is not: set both, or neither (to use a profile, \
             web identity or instance metadata instead)"
        );
    }
    if set("AWS_SESSION_TOKEN") && !id {
        anyhow::bail!(
            "AWS_SESSION_TOKEN is set without AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY: \
             temporary credentials need all three"
        );
    }
    Ok(())
}

fn start_runtime() -> Result<tokio::runtime::Runtime> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let built = std::panic::catch_unwind(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("credentials")
            .enable_all()
            .build()
    });
    std::panic::set_hook(hook);
    match built {
        Ok(Ok(rt)) => Ok(rt),
        Ok(Err(e)) => Err(anyhow!("starting the credentials runtime: {e}")),
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(anyhow!(
                "starting the credentials runtime: {why} (too few open files? raise `ulimit -n`)"
            ))
        }
    }
}

impl Chain {
    fn load(&self) -> Result<Credentials, CredentialsError> {
        self.runtime
            .block_on(async { self.provider.provide_credentials().await })
    }
}

/// Credentials loaded at `loaded` and expiring at `expiry` should be renewed now.
fn due(loaded: SystemTime, expiry: SystemTime) -> bool {
    let life = expiry.duration_since(loaded).unwrap_or_default();
    let renew_at = expiry
        .checked_sub(RENEW_BEFORE.min(life / 2))
        .unwrap_or(loaded);
    SystemTime::now() >= renew_at
}

fn same_identity(a: &Credentials, b: &Credentials) -> bool {
    a.access_key_id() == b.access_key_id() && a.session_token() == b.session_token()
}

/// aws-config's name for the provider that answered (`Environment`, `ProfileFile`,
/// `CredentialProcess`, `WebIdentityToken`, `Sso`, `IMDSv2`, `ECS`...), with the profile.
/// `Credentials` has no accessor for it, but its Debug (which redacts the secret) prints it.
fn describe(creds: &Credentials, profile: Option<&str>) -> String {
    let debug = format!("{creds:?}");
    let provider = debug
        .split_once("provider_name: \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map_or("the default chain", |(name, _)| name);
    let profile = profile
        .map(str::to_string)
        .or_else(|| std::env::var("AWS_PROFILE").ok().filter(|p| !p.is_empty()));
    let mut text = match profile {
        Some(p) if provider != "Environment" => format!("{provider}, profile {p:?}"),
        _ => provider.to_string(),
    };
    if creds.session_token().is_some() {
        text.push_str(", temporary");
    }
    text
}

/// aws-config's errors put the cause in `source()`: spell the whole chain.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_before_expiry_and_not_before_every_request() {
        let now = SystemTime::now();
        let min = Duration::from_secs(60);
        let sec = Duration::from_secs(1);
        // An hour's credentials: renewed in their last five minutes.
        assert!(!due(now, now + 60 * min));
        assert!(due(now - 56 * min, now + 4 * min));
        // Two minutes' credentials: renewed after a minute, not on every call.
        assert!(!due(now, now + 2 * min));
        assert!(due(now - min - sec, now + min - sec));
        // Expired: due.
        assert!(due(now - 2 * min, now - min));
    }
}
