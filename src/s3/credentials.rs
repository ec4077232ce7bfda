//! Where a request's credentials come from (issue 12 replaces this with aws-config's
//! default chain): the environment, then the profile named by AWS_PROFILE (or `default`) in
//! the shared credentials file.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use rusty_s3::Credentials;

/// Credentials the AWS CLI would use: the environment first, then the profile named by
/// AWS_PROFILE (or `default`) in the shared credentials file. None means anonymous.
pub(super) fn find_credentials() -> Result<Option<Credentials>> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if let (Some(key), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        return Ok(Some(match env("AWS_SESSION_TOKEN") {
            Some(token) => Credentials::new_with_token(key, secret, token),
            None => Credentials::new(key, secret),
        }));
    }
    let explicit_profile = env("AWS_PROFILE");
    let profile = explicit_profile
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let file = match env("AWS_SHARED_CREDENTIALS_FILE") {
        Some(f) => PathBuf::from(f),
        None => match std::env::var_os("HOME") {
            Some(home) => PathBuf::from(home).join(".aws").join("credentials"),
            None => return Ok(None),
        },
    };
    if !file.exists() {
        if explicit_profile.is_some() {
            bail!(
                "AWS_PROFILE={profile} is set but {} does not exist",
                file.display()
            );
        }
        return Ok(None);
    }
    let ini =
        ini::Ini::load_from_file(&file).with_context(|| format!("reading {}", file.display()))?;
    let Some(section) = ini.section(Some(profile.as_str())) else {
        if explicit_profile.is_some() {
            bail!("profile {profile:?} not found in {}", file.display());
        }
        return Ok(None);
    };
    match (
        section.get("aws_access_key_id"),
        section.get("aws_secret_access_key"),
    ) {
        (Some(key), Some(secret)) => Ok(Some(match section.get("aws_session_token") {
            Some(token) => Credentials::new_with_token(key, secret, token),
            None => Credentials::new(key, secret),
        })),
        _ => bail!(
            "profile {profile:?} in {} lacks aws_access_key_id / aws_secret_access_key",
            file.display()
        ),
    }
}
