//! What S3 answered when it said no, and what that means for a run: retry the request,
//! fail one version (and retry it next run), or stop the whole run because every other
//! request would meet the same answer.

/// An S3 failure with its HTTP status and S3 error code. `what` is the request as
/// `METHOD s3://bucket/key?versionId=…`: never a URL, which could carry a signature.
#[derive(Debug, thiserror::Error)]
#[error("{what}: HTTP {status}{}{}{}{}", code.as_deref().map(|c| format!(" {c}")).unwrap_or_default(), message.as_deref().map(|m| format!(": {m}")).unwrap_or_default(), fix.map(|f| format!(" ({f})")).unwrap_or_default(), credentials.as_deref().map(|c| format!(" [credentials: {c}; region {region}]")).unwrap_or_default())]
pub struct S3Error {
    pub what: String,
    pub bucket: String,
    pub status: u16,
    pub code: Option<String>,
    pub message: Option<String>,
    /// `x-amz-bucket-region`, when S3 sent it (wrong-region answers carry it).
    pub bucket_region: Option<String>,
    /// For an error that stops a run: what to change. Set by the client, which knows the
    /// credential source and region involved.
    pub fix: Option<&'static str>,
    /// For a refusal: where the credentials came from (or that there were none).
    pub credentials: Option<String>,
    /// The region the request was signed for.
    pub region: String,
}

impl S3Error {
    pub fn code(&self) -> &str {
        self.code.as_deref().unwrap_or("")
    }

    /// Worth asking again, after a pause.
    pub fn is_transient(&self) -> bool {
        self.status >= 500
            || self.status == 429
            || matches!(
                self.code(),
                "SlowDown" | "RequestTimeout" | "InternalError" | "ServiceUnavailable"
            )
    }

    /// S3 asks everyone to slow down (not one object's problem): the pool as a whole pauses.
    pub fn is_throttle(&self) -> bool {
        self.status == 503 || self.status == 429 || self.code() == "SlowDown"
    }

    /// The temporary credentials ran out (or were revoked): refresh them and ask again once.
    pub fn is_expired_token(&self) -> bool {
        matches!(self.code(), "ExpiredToken" | "TokenRefreshRequired")
    }

    /// Our clock disagrees with S3's: correct it from the response's `Date` and ask again.
    pub fn is_clock_skew(&self) -> bool {
        self.code() == "RequestTimeTooSkewed"
            || (self.code() == "AccessDenied"
                && self.message.as_deref().is_some_and(|m| {
                    m.contains("Request has expired") || m.contains("not yet valid")
                }))
    }

    /// S3 named the bucket's real region (a 301 PermanentRedirect, or a 400 about the
    /// signing region): sign for that one and ask again.
    pub fn redirect_region(&self) -> Option<&str> {
        let wrong_region = self.status == 301
            || self.status == 307
            || matches!(
                self.code(),
                "PermanentRedirect"
                    | "AuthorizationHeaderMalformed"
                    | "AuthorizationQueryParametersError"
                    | "IllegalLocationConstraintException"
            );
        if !wrong_region {
            return None;
        }
        self.bucket_region.as_deref().filter(|r| !r.is_empty())
    }

    /// Every request of this run would get this answer: stop instead of failing versions
    /// one by one. (A single version's 403 or 404 is not one of these.)
    pub fn stops_run(&self) -> bool {
        self.is_expired_token()
            || self.is_clock_skew()
            || matches!(
                self.code(),
                "InvalidAccessKeyId"
                    | "SignatureDoesNotMatch"
                    | "InvalidToken"
                    | "AuthorizationHeaderMalformed"
                    | "AuthorizationQueryParametersError"
                    | "PermanentRedirect"
                    | "NoSuchBucket"
                    | "AccountProblem"
                    | "AllAccessDisabled"
            )
            || self.status == 301
    }

    /// A denial for this one request (AccessDenied, 403 with no body on a HEAD).
    pub fn is_access_denied(&self) -> bool {
        self.status == 403 && !self.stops_run()
    }
}

/// How requests are signed, for the advice on a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Signing {
    Signed,
    /// The chain found nothing.
    NoCredentials,
    /// `--no-sign-request`.
    NoSignRequest,
}

/// The fix for an error that stops a run, given how the request was signed.
pub(super) fn fix_for(e: &S3Error, signing: Signing) -> Option<&'static str> {
    let anonymous = signing != Signing::Signed;
    Some(match e.code() {
        _ if e.is_expired_token() => {
            "the credentials expired and refreshing them gave no newer ones: renew them (aws sso login, a new session token)"
        }
        _ if e.is_clock_skew() => {
            "this machine's clock is off by more than 15 minutes even after correcting for S3's Date header: fix it (chrony / ntpd)"
        }
        "InvalidAccessKeyId" => {
            "the access key id is unknown to AWS: check AWS_ACCESS_KEY_ID / the profile's aws_access_key_id, or use --no-sign-request for a public bucket"
        }
        "SignatureDoesNotMatch" => {
            "the secret access key does not match the access key id: check AWS_SECRET_ACCESS_KEY / the profile"
        }
        "InvalidToken" => "the session token is malformed: check AWS_SESSION_TOKEN / the profile",
        "NoSuchBucket" => "check the bucket name",
        "PermanentRedirect"
        | "AuthorizationHeaderMalformed"
        | "AuthorizationQueryParametersError" => {
            "the bucket's region could not be resolved: pass --region"
        }
        _ if e.status == 301 => "the bucket's region could not be resolved: pass --region",
        _ if e.status == 403 && signing == Signing::NoSignRequest => {
            "the requests were unsigned (--no-sign-request): this needs credentials (see README, Credentials and regions)"
        }
        _ if e.status == 403 && anonymous => {
            "no credentials were found, so the requests were anonymous: configure credentials (see README, Credentials and regions), or check that the bucket is public"
        }
        _ if e.status == 403 => {
            "the credentials are not allowed this: check the IAM policy (README lists the actions needed) and --request-payer"
        }
        _ => return None,
    })
}
