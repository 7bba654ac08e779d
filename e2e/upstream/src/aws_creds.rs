//! Where AWS credentials come from, played for the gateway's credential
//! chain: STS's `AssumeRoleWithWebIdentity` (`POST /` or `GET /?Action=...`,
//! the query API's XML, checking the role ARN and the web identity token),
//! the container credentials endpoint (`GET /v2/credentials/...` as ECS,
//! `/v1/credentials` as the EKS Pod Identity agent, checking the
//! `Authorization` token) and the EC2 instance metadata service, IMDSv2
//! only (`PUT /latest/api/token` first, then the role and its credentials
//! with that token). Each hands out fresh short-lived credentials, kept in
//! a process-wide register so the Bedrock face verifies signatures made
//! with them (their secret, session token and expiry).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderValue, Method, StatusCode};
use sha2::{Digest, Sha256};

/// The role the STS face lets web identities assume.
pub const TEST_ROLE_ARN: &str = "arn:aws:iam::123456789012:role/sluice-bedrock";
/// The web identity token the STS face accepts (until a test sets another).
pub const TEST_WEB_IDENTITY_TOKEN: &str =
    "eyJhbGciOiJSUzI1NiJ9.sluice-test-service-account-token.c2ln";
/// The `Authorization` the container credentials face wants.
pub const TEST_CONTAINER_TOKEN: &str = "sluice-test-container-authorization-token";
/// The instance's role in the metadata face.
pub const TEST_INSTANCE_ROLE: &str = "sluice-instance-role";
/// The start of every access key id the faces hand out.
pub const ISSUED_KEY_PREFIX: &str = "ASIASLUICE";

/// How an upstream's credential faces behave; tests change it while it runs.
#[derive(Debug)]
pub struct AwsSettings {
    lifetime_ms: AtomicU64,
    malformed: AtomicBool,
    web_identity_token: Mutex<String>,
    imds_tokens: Mutex<Vec<String>>,
}

impl Default for AwsSettings {
    fn default() -> Self {
        Self {
            lifetime_ms: AtomicU64::new(3_600_000),
            malformed: AtomicBool::new(false),
            web_identity_token: Mutex::new(TEST_WEB_IDENTITY_TOKEN.to_owned()),
            imds_tokens: Mutex::new(Vec::new()),
        }
    }
}

impl AwsSettings {
    /// How long credentials handed out from now on stay valid (default an hour).
    pub fn set_lifetime(&self, lifetime: Duration) {
        self.lifetime_ms
            .store(lifetime.as_millis() as u64, Ordering::Relaxed);
    }

    /// Answer with cut-off XML / JSON (status 200) instead of credentials.
    pub fn set_malformed(&self, malformed: bool) {
        self.malformed.store(malformed, Ordering::Relaxed);
    }

    /// The web identity token STS accepts from now on (a rotated token file).
    pub fn set_web_identity_token(&self, token: &str) {
        *self
            .web_identity_token
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = token.to_owned();
    }

    fn lifetime(&self) -> Duration {
        Duration::from_millis(self.lifetime_ms.load(Ordering::Relaxed))
    }

    fn malformed(&self) -> bool {
        self.malformed.load(Ordering::Relaxed)
    }
}

/// Credentials one of the faces handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCredentials {
    /// `sts`, `container` or `imds`.
    pub source: &'static str,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    pub expires: SystemTime,
}

fn register() -> &'static Mutex<HashMap<String, IssuedCredentials>> {
    static ISSUED: OnceLock<Mutex<HashMap<String, IssuedCredentials>>> = OnceLock::new();
    ISSUED.get_or_init(Default::default)
}

/// Every set of credentials handed out in this process, oldest first.
pub fn issued() -> Vec<IssuedCredentials> {
    let mut all: Vec<IssuedCredentials> = register()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .values()
        .cloned()
        .collect();
    all.sort_by(|a, b| a.access_key_id.cmp(&b.access_key_id));
    all
}

/// The credentials with this access key id, if a face handed them out.
pub(crate) fn lookup(access_key_id: &str) -> Option<IssuedCredentials> {
    register()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(access_key_id)
        .cloned()
}

pub(crate) fn issue(source: &'static str, lifetime: Duration) -> IssuedCredentials {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let digest = hex(&Sha256::digest(format!("{source}/{n}/{nanos}")));
    let issued = IssuedCredentials {
        source,
        // Sorted by issue order: zero-padded counter.
        access_key_id: format!("{ISSUED_KEY_PREFIX}{n:06}{}", source.to_ascii_uppercase()),
        secret_access_key: format!("{}/{}+k", &digest[..20], &digest[20..38]),
        session_token: format!("IQoJb3JpZ2luX2VjE{source}{}//session=", &digest[38..]),
        expires: SystemTime::now() + lifetime,
    };
    register()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(issued.access_key_id.clone(), issued.clone());
    issued
}

/// An answer: status, content type, body.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: Bytes,
}

fn answer(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Answer {
    Answer {
        status,
        content_type,
        body: body.into(),
    }
}

/// Whether this request is for a credential face.
pub(crate) fn is_credentials_request(parts: &Parts, body: &[u8]) -> bool {
    let path = parts.uri.path();
    let sts = path == "/"
        && (body.starts_with(b"Action=")
            || body.windows(7).any(|w| w == b"&Action")
            || parts.uri.query().is_some_and(|q| q.contains("Action=")));
    sts || path.starts_with("/v2/credentials/")
        || path == "/v1/credentials"
        || path.starts_with("/latest/")
}

/// Answers a credentials request.
pub(crate) fn handle(settings: &AwsSettings, parts: &Parts, body: &[u8]) -> Answer {
    let path = parts.uri.path();
    if path == "/" {
        return sts(settings, parts, body);
    }
    if path.starts_with("/latest/") {
        return imds(settings, parts);
    }
    container(settings, parts)
}

fn sts(settings: &AwsSettings, parts: &Parts, body: &[u8]) -> Answer {
    let form = if parts.method == Method::GET {
        parts.uri.query().unwrap_or_default().as_bytes()
    } else {
        body
    };
    let fields = form_fields(form);
    let field = |name: &str| fields.get(name).map(String::as_str).unwrap_or_default();
    let error = |status: StatusCode, code: &str, message: &str| {
        answer(
            status,
            "text/xml",
            format!(
                "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  <Error>\n    <Type>Sender</Type>\n    <Code>{code}</Code>\n    <Message>{}</Message>\n  </Error>\n  <RequestId>mock-request</RequestId>\n</ErrorResponse>\n",
                xml_escape(message)
            ),
        )
    };
    if field("Action") != "AssumeRoleWithWebIdentity" {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            "Could not find operation for this mock",
        );
    }
    if field("Version") != "2011-06-15" {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValue",
            "Version must be 2011-06-15",
        );
    }
    let session = field("RoleSessionName");
    let session_ok = (2..=64).contains(&session.len())
        && session
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b));
    if !session_ok {
        return error(
            StatusCode::BAD_REQUEST,
            "ValidationError",
            "1 validation error detected: Value at 'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*",
        );
    }
    let expected = settings
        .web_identity_token
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    if field("WebIdentityToken") != expected {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidIdentityToken",
            "Couldn't retrieve verification key from your identity provider",
        );
    }
    if field("RoleArn") != TEST_ROLE_ARN {
        return error(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "Not authorized to perform sts:AssumeRoleWithWebIdentity",
        );
    }
    if settings.malformed() {
        return answer(
            StatusCode::OK,
            "text/xml",
            "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials><SessionToken>cut",
        );
    }
    let issued = issue("sts", settings.lifetime());
    answer(
        StatusCode::OK,
        "text/xml",
        format!(
            "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  <AssumeRoleWithWebIdentityResult>\n    <SubjectFromWebIdentityToken>system:serviceaccount:sluice:sluice</SubjectFromWebIdentityToken>\n    <Audience>sts.amazonaws.com</Audience>\n    <AssumedRoleUser>\n      <Arn>arn:aws:sts::123456789012:assumed-role/sluice-bedrock/{session}</Arn>\n      <AssumedRoleId>AROAMOCK:{session}</AssumedRoleId>\n    </AssumedRoleUser>\n    <Credentials>\n      <SessionToken>{}</SessionToken>\n      <SecretAccessKey>{}</SecretAccessKey>\n      <Expiration>{}</Expiration>\n      <AccessKeyId>{}</AccessKeyId>\n    </Credentials>\n    <Provider>arn:aws:iam::123456789012:oidc-provider/oidc.eks.mock</Provider>\n  </AssumeRoleWithWebIdentityResult>\n  <ResponseMetadata>\n    <RequestId>mock-request</RequestId>\n  </ResponseMetadata>\n</AssumeRoleWithWebIdentityResponse>\n",
            xml_escape(&issued.session_token),
            xml_escape(&issued.secret_access_key),
            iso8601(issued.expires),
            issued.access_key_id,
        ),
    )
}

fn container(settings: &AwsSettings, parts: &Parts) -> Answer {
    if parts.method != Method::GET {
        return answer(StatusCode::METHOD_NOT_ALLOWED, "application/json", "{}");
    }
    let authorized = parts
        .headers
        .get("authorization")
        .is_some_and(|v| v == TEST_CONTAINER_TOKEN);
    if !authorized {
        return answer(
            StatusCode::UNAUTHORIZED,
            "application/json",
            r#"{"Code":"AccessDeniedException","Message":"Authorization header is missing or invalid"}"#,
        );
    }
    if settings.malformed() {
        return answer(
            StatusCode::OK,
            "application/json",
            r#"{"AccessKeyId":"ASIA"#,
        );
    }
    let issued = issue("container", settings.lifetime());
    answer(
        StatusCode::OK,
        "application/json",
        credentials_json(&issued, false),
    )
}

fn imds(settings: &AwsSettings, parts: &Parts) -> Answer {
    let path = parts.uri.path();
    let text = |status: StatusCode, body: String| answer(status, "text/plain", body);
    if path == "/latest/api/token" {
        if parts.method != Method::PUT {
            return text(StatusCode::METHOD_NOT_ALLOWED, String::new());
        }
        let ttl = parts
            .headers
            .get("x-aws-ec2-metadata-token-ttl-seconds")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok());
        if !ttl.is_some_and(|t| (1..=21600).contains(&t)) {
            return text(StatusCode::BAD_REQUEST, String::new());
        }
        let token = format!(
            "AQAEAmockimds{}==",
            hex(&Sha256::digest(format!("{:?}", SystemTime::now())))
        );
        settings
            .imds_tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(token.clone());
        return text(StatusCode::OK, token);
    }
    let token_ok = parts
        .headers
        .get("x-aws-ec2-metadata-token")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|token| {
            settings
                .imds_tokens
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .any(|t| t == token)
        });
    if !token_ok {
        // IMDSv1 is off on this instance: tokens are required.
        return text(StatusCode::UNAUTHORIZED, String::new());
    }
    let Some(role) = path.strip_prefix("/latest/meta-data/iam/security-credentials/") else {
        return text(StatusCode::NOT_FOUND, String::new());
    };
    if parts.method != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, String::new());
    }
    if role.is_empty() {
        return text(StatusCode::OK, TEST_INSTANCE_ROLE.to_owned());
    }
    if role != TEST_INSTANCE_ROLE {
        return text(StatusCode::NOT_FOUND, String::new());
    }
    if settings.malformed() {
        return answer(
            StatusCode::OK,
            "text/plain",
            r#"{"Code":"Success","AccessKeyId":"#,
        );
    }
    let issued = issue("imds", settings.lifetime());
    answer(
        StatusCode::OK,
        "text/plain",
        credentials_json(&issued, true),
    )
}

fn credentials_json(issued: &IssuedCredentials, imds: bool) -> String {
    let head = if imds {
        format!(
            "\"Code\":\"Success\",\"LastUpdated\":\"{}\",\"Type\":\"AWS-HMAC\",",
            iso8601(SystemTime::now())
        )
    } else {
        format!("\"RoleArn\":\"{TEST_ROLE_ARN}\",")
    };
    format!(
        "{{{head}\"AccessKeyId\":\"{}\",\"SecretAccessKey\":\"{}\",\"Token\":\"{}\",\"Expiration\":\"{}\"}}",
        issued.access_key_id,
        issued.secret_access_key,
        issued.session_token,
        iso8601(issued.expires)
    )
}

/// `YYYY-MM-DDTHH:MM:SSZ` (civil date from days since the epoch,
/// Howard Hinnant's algorithm).
fn iso8601(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// `a=b&c=d` with `+` and `%XX` decoded.
fn form_fields(form: &[u8]) -> HashMap<String, String> {
    let decode = |text: &[u8]| {
        let mut out = Vec::with_capacity(text.len());
        let mut i = 0;
        while i < text.len() {
            match text[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < text.len() => {
                    let hex = std::str::from_utf8(&text[i + 1..i + 3]).unwrap_or("");
                    match u8::from_str_radix(hex, 16) {
                        Ok(b) => {
                            out.push(b);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    form.split(|&b| b == b'&')
        .filter_map(|pair| {
            let at = pair.iter().position(|&b| b == b'=')?;
            Some((decode(&pair[..at]), decode(&pair[at + 1..])))
        })
        .collect()
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The content type header of an answer.
pub(crate) fn content_type(answer: &Answer) -> HeaderValue {
    HeaderValue::from_static(answer.content_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times_and_forms() {
        assert_eq!(
            iso8601(UNIX_EPOCH + Duration::from_secs(1_414_191_623)),
            "2014-10-24T23:00:23Z"
        );
        assert_eq!(
            iso8601(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        let f = form_fields(b"Action=A&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fx&T=a+b%2B&bad=%Z");
        assert_eq!(f["RoleArn"], "arn:aws:iam::1:role/x");
        assert_eq!(f["T"], "a b+");
        assert_eq!(f["bad"], "%Z");
    }

    #[test]
    fn issued_credentials_are_registered() {
        let issued = issue("sts", Duration::from_secs(60));
        assert!(issued.access_key_id.starts_with(ISSUED_KEY_PREFIX));
        assert_eq!(lookup(&issued.access_key_id), Some(issued));
    }
}
