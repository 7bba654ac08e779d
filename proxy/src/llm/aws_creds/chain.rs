//! The AWS SDKs' standard credential chain, one fetch at a time: the first
//! source whose settings are present is used, in the order most SDKs
//! (Java 2.x, Kotlin, PHP) follow (docs.aws.amazon.com/sdkref/latest/guide/standardized-credentials.html):
//!
//! 1. environment `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`;
//! 2. web identity (EKS IRSA): `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`,
//!    exchanged at STS (`AssumeRoleWithWebIdentity`, unsigned);
//! 3. the shared files' profile (`AWS_PROFILE`, default `default`), static keys only;
//! 4. container credentials (ECS task roles, EKS Pod Identity);
//! 5. the EC2 instance metadata service (IMDSv2), unless `AWS_EC2_METADATA_DISABLED`.
//!
//! A present source that fails is an error: the chain does not fall
//! through to the next (a broken IRSA setup must not silently use the
//! node's role). Files are read on every fetch (tokens rotate). Knows
//! nothing of caching or signing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::Full;

use super::parse::{self, Issued};
use crate::upstream::Pool;

/// Longest wait for the instance metadata service, all three calls: off
/// EC2 it does not answer, and requests wait for this.
const IMDS_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest answer read from a credentials endpoint.
const MAX_BODY: usize = 64 << 10;
/// IMDSv2 session tokens asked for (6 hours, the maximum).
const IMDS_TOKEN_TTL: &str = "21600";
/// The ECS agent's address, for `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`.
const ECS_HOST: &str = "http://169.254.170.2";
/// Hosts allowed for `AWS_CONTAINER_CREDENTIALS_FULL_URI` over plain HTTP
/// (besides loopback): the ECS agent and EKS Pod Identity's agent.
const CONTAINER_HOSTS: [&str; 3] = ["169.254.170.2", "169.254.170.23", "[fd00:ec2::23]"];

/// The variables the chain reads, captured once when the backend is built
/// (the process environment does not change). Empty values count as unset,
/// as in the SDKs.
#[derive(Clone, Default)]
pub struct Environment {
    vars: BTreeMap<String, String>,
}

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: values include secret keys.
        f.debug_set().entries(self.vars.keys()).finish()
    }
}

impl Environment {
    /// `AWS_*` and `HOME` of this process.
    pub fn from_process() -> Self {
        Self::from_pairs(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    /// The variables among `pairs` the chain reads.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .filter(|(k, v)| (k.starts_with("AWS_") || k == "HOME") && !v.trim().is_empty())
                .collect(),
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }
}

/// Credentials and the source they came from (for logs).
pub struct Fetched {
    pub issued: Issued,
    pub source: &'static str,
}

/// Runs the chain once.
pub async fn fetch(env: &Environment, region: &str, pool: &Arc<Pool>) -> Result<Fetched, String> {
    let from = |source: &'static str| move |issued| Fetched { issued, source };
    match (
        env.get("AWS_ACCESS_KEY_ID"),
        env.get("AWS_SECRET_ACCESS_KEY"),
    ) {
        (Some(id), Some(secret)) => {
            return Ok(from("environment")(Issued {
                access_key_id: id.trim().to_owned(),
                secret_access_key: sluice_crds::values::Secret::new(secret.trim()),
                session_token: env
                    .get("AWS_SESSION_TOKEN")
                    .map(|t| sluice_crds::values::Secret::new(t.trim())),
                expiration: None,
            }))
        }
        (Some(_), None) => {
            return Err("AWS_ACCESS_KEY_ID is set without AWS_SECRET_ACCESS_KEY".into())
        }
        (None, Some(_)) => {
            return Err("AWS_SECRET_ACCESS_KEY is set without AWS_ACCESS_KEY_ID".into())
        }
        (None, None) => {}
    }
    match (
        env.get("AWS_WEB_IDENTITY_TOKEN_FILE"),
        env.get("AWS_ROLE_ARN"),
    ) {
        (Some(file), Some(role)) => {
            return web_identity(env, region, file, role, pool)
                .await
                .map(from("web identity"))
                .map_err(|e| format!("web identity (role {role}): {e}"))
        }
        (Some(_), None) => {
            return Err("AWS_WEB_IDENTITY_TOKEN_FILE is set without AWS_ROLE_ARN".into())
        }
        _ => {}
    }
    if let Some(issued) = shared_files(env).await? {
        return Ok(from("shared credentials file")(issued));
    }
    if let Some(url) = container_url(env)? {
        return container(env, &url, pool)
            .await
            .map(from("container"))
            .map_err(|e| format!("container credentials ({url}): {e}"));
    }
    let disabled = env
        .get("AWS_EC2_METADATA_DISABLED")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    if disabled {
        return Err("none found: no AWS_ACCESS_KEY_ID, no web identity (AWS_WEB_IDENTITY_TOKEN_FILE), no profile in the shared files, no container credentials (AWS_CONTAINER_CREDENTIALS_FULL_URI), and the instance metadata service is disabled (AWS_EC2_METADATA_DISABLED)".into());
    }
    let endpoint = imds_endpoint(env);
    match tokio::time::timeout(IMDS_TIMEOUT, instance(&endpoint, pool)).await {
        Ok(Ok(issued)) => Ok(from("instance metadata")(issued)),
        Ok(Err(e)) => Err(format!(
            "nothing in the environment, the shared files or the container settings, and the instance metadata service ({endpoint}): {e}"
        )),
        Err(_) => Err(format!(
            "nothing in the environment, the shared files or the container settings, and the instance metadata service ({endpoint}) gave no answer within {}s (not on EC2?)",
            IMDS_TIMEOUT.as_secs()
        )),
    }
}

/// STS's endpoint: `AWS_ENDPOINT_URL_STS`, `AWS_ENDPOINT_URL`, or the
/// region's (`sts.{region}.amazonaws.com`, `.com.cn` in China).
pub fn sts_endpoint(env: &Environment, region: &str) -> String {
    match env
        .get("AWS_ENDPOINT_URL_STS")
        .or_else(|| env.get("AWS_ENDPOINT_URL"))
    {
        Some(url) => url.trim().to_owned(),
        None if region.starts_with("cn-") => format!("https://sts.{region}.amazonaws.com.cn/"),
        None => format!("https://sts.{region}.amazonaws.com/"),
    }
}

/// `AssumeRoleWithWebIdentity` with the token file's current contents.
async fn web_identity(
    env: &Environment,
    region: &str,
    file: &str,
    role: &str,
    pool: &Arc<Pool>,
) -> Result<Issued, String> {
    let token = tokio::fs::read_to_string(file)
        .await
        .map_err(|e| format!("reading the token file {file}: {e}"))?;
    let token = token.trim();
    if token.is_empty() {
        return Err(format!("the token file {file} is empty"));
    }
    let session = match env.get("AWS_ROLE_SESSION_NAME") {
        Some(name) => name.trim().to_owned(),
        None => format!("sluice-{}", chrono::Utc::now().timestamp_millis()),
    };
    let form = format!(
        "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn={}&RoleSessionName={}&WebIdentityToken={}",
        form_encode(role),
        form_encode(&session),
        form_encode(token)
    );
    let url = sts_endpoint(env, region);
    let (status, body) = call(
        pool,
        Method::POST,
        &url,
        &[(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
        )],
        Bytes::from(form),
    )
    .await
    .map_err(|e| format!("{url}: {e}"))?;
    parse::sts_answer(status, &body)
}

/// The profile of `AWS_PROFILE` (or `default`) in the credentials file,
/// then the config file; `None` when neither has it and no profile was
/// named.
async fn shared_files(env: &Environment) -> Result<Option<Issued>, String> {
    let home = env.get("HOME");
    let path = |var: &str, default: &str| {
        env.get(var)
            .map(|p| match (p.strip_prefix("~/"), home) {
                (Some(rest), Some(home)) => format!("{home}/{rest}"),
                _ => p.to_owned(),
            })
            .or_else(|| home.map(|h| format!("{h}/.aws/{default}")))
    };
    let named = env.get("AWS_PROFILE");
    let name = named.unwrap_or("default").trim();
    for (file, config) in [
        (path("AWS_SHARED_CREDENTIALS_FILE", "credentials"), false),
        (path("AWS_CONFIG_FILE", "config"), true),
    ] {
        let Some(file) = file else { continue };
        let text = match tokio::fs::read_to_string(&file).await {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("reading {file}: {e}")),
        };
        if let Some(profile) = parse::profile(&text, name, config) {
            return profile.keys(name, &file).map(Some);
        }
    }
    match named {
        Some(name) => Err(format!(
            "AWS_PROFILE is `{name}`, but no shared credentials or config file has that profile"
        )),
        None => Ok(None),
    }
}

/// The container endpoint, checked like the SDKs do: any `https` URL, or
/// `http` to loopback or to the ECS / EKS Pod Identity agents.
fn container_url(env: &Environment) -> Result<Option<String>, String> {
    if let Some(relative) = env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
        let relative = relative.trim();
        let slash = if relative.starts_with('/') { "" } else { "/" };
        return Ok(Some(format!("{ECS_HOST}{slash}{relative}")));
    }
    let Some(full) = env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI") else {
        return Ok(None);
    };
    let full = full.trim();
    let uri: http::Uri = full
        .parse()
        .map_err(|_| format!("AWS_CONTAINER_CREDENTIALS_FULL_URI `{full}` is not a URL"))?;
    let host = uri.host().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match uri.scheme_str() {
        Some("https") => Ok(Some(full.to_owned())),
        Some("http") if loopback || CONTAINER_HOSTS.contains(&host) => Ok(Some(full.to_owned())),
        _ => Err(format!(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI `{full}` must be https, or http to a loopback address, 169.254.170.2, 169.254.170.23 or fd00:ec2::23"
        )),
    }
}

/// `GET` the container endpoint with its authorization token (the file's
/// current contents first, as EKS Pod Identity rotates it).
async fn container(env: &Environment, url: &str, pool: &Arc<Pool>) -> Result<Issued, String> {
    let token = match (
        env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
        env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
    ) {
        (Some(file), _) => Some(
            tokio::fs::read_to_string(file)
                .await
                .map_err(|e| format!("reading AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE {file}: {e}"))?
                .trim()
                .to_owned(),
        ),
        (None, Some(token)) => Some(token.trim().to_owned()),
        (None, None) => None,
    };
    let mut headers = vec![(
        http::header::ACCEPT,
        HeaderValue::from_static("application/json"),
    )];
    if let Some(token) = token {
        let mut value = HeaderValue::from_str(&token)
            .map_err(|_| "the authorization token is not a valid header value".to_owned())?;
        value.set_sensitive(true);
        headers.push((http::header::AUTHORIZATION, value));
    }
    let (status, body) = call(pool, Method::GET, url, &headers, Bytes::new()).await?;
    parse::json_answer("the container credentials endpoint", status, &body)
}

/// `AWS_EC2_METADATA_SERVICE_ENDPOINT`, or the default for the IPv4 / IPv6
/// endpoint mode, without a trailing slash.
pub fn imds_endpoint(env: &Environment) -> String {
    match env.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") {
        Some(url) => url.trim().trim_end_matches('/').to_owned(),
        None if env
            .get("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE")
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("ipv6")) =>
        {
            "http://[fd00:ec2::254]".into()
        }
        None => "http://169.254.169.254".into(),
    }
}

/// IMDSv2: a session token (`PUT`), the role's name, its credentials. No
/// IMDSv1 fallback (like the AWS SDK for Rust).
async fn instance(endpoint: &str, pool: &Arc<Pool>) -> Result<Issued, String> {
    let ttl = HeaderName::from_static("x-aws-ec2-metadata-token-ttl-seconds");
    let (status, token) = call(
        pool,
        Method::PUT,
        &format!("{endpoint}/latest/api/token"),
        &[(ttl, HeaderValue::from_static(IMDS_TOKEN_TTL))],
        Bytes::new(),
    )
    .await?;
    if !status.is_success() {
        return Err(format!(
            "the session token request (PUT /latest/api/token) answered {status}"
        ));
    }
    let mut token = HeaderValue::from_bytes(token.trim_ascii())
        .map_err(|_| "the session token is not a valid header value".to_owned())?;
    token.set_sensitive(true);
    let headers = [(HeaderName::from_static("x-aws-ec2-metadata-token"), token)];
    let list = format!("{endpoint}/latest/meta-data/iam/security-credentials/");
    let (status, roles) = call(pool, Method::GET, &list, &headers, Bytes::new()).await?;
    if status == StatusCode::NOT_FOUND {
        return Err("the instance has no IAM role (instance profile)".into());
    }
    if !status.is_success() {
        return Err(format!("listing the instance's role answered {status}"));
    }
    let roles = String::from_utf8_lossy(&roles);
    let role = roles
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .ok_or("the instance has no IAM role (instance profile)")?;
    if role.contains(['/', '?', '#', '%']) || role.contains("..") {
        return Err(format!("the instance's role name `{role}` is not a name"));
    }
    let (status, body) = call(
        pool,
        Method::GET,
        &format!("{list}{role}"),
        &headers,
        Bytes::new(),
    )
    .await?;
    parse::json_answer("the instance metadata service", status, &body)
}

/// `application/x-www-form-urlencoded` value: RFC 3986 unreserved kept.
fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One request through the gateway's upstream pool; the status and the
/// whole (bounded) body.
async fn call(
    pool: &Arc<Pool>,
    method: Method,
    url: &str,
    headers: &[(HeaderName, HeaderValue)],
    body: Bytes,
) -> Result<(StatusCode, Vec<u8>), String> {
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = method;
    *request.uri_mut() = url.parse().map_err(|_| format!("`{url}` is not a URL"))?;
    for (name, value) in headers {
        request.headers_mut().insert(name.clone(), value.clone());
    }
    let (response, conn) = pool.send(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let out = crate::upstream::read_body(response, conn, MAX_BODY).await?;
    Ok((status, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Environment {
        Environment::from_pairs(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
    }

    #[test]
    fn environment_keeps_aws_settings_only_and_hides_values() {
        let e = env(&[
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
            ("PATH", "/bin"),
            ("AWS_PROFILE", " "),
        ]);
        assert_eq!(format!("{e:?}"), "{\"AWS_SECRET_ACCESS_KEY\"}");
        assert!(e.get("AWS_PROFILE").is_none(), "empty counts as unset");
    }

    #[test]
    fn endpoints_follow_overrides() {
        assert_eq!(
            sts_endpoint(&env(&[]), "eu-west-1"),
            "https://sts.eu-west-1.amazonaws.com/"
        );
        assert_eq!(
            sts_endpoint(&env(&[]), "cn-north-1"),
            "https://sts.cn-north-1.amazonaws.com.cn/"
        );
        assert_eq!(
            sts_endpoint(
                &env(&[
                    ("AWS_ENDPOINT_URL", "http://a"),
                    ("AWS_ENDPOINT_URL_STS", "http://b")
                ]),
                "x"
            ),
            "http://b"
        );
        assert_eq!(
            sts_endpoint(&env(&[("AWS_ENDPOINT_URL", "http://a")]), "x"),
            "http://a"
        );
        assert_eq!(imds_endpoint(&env(&[])), "http://169.254.169.254");
        assert_eq!(
            imds_endpoint(&env(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "IPv6")])),
            "http://[fd00:ec2::254]"
        );
        assert_eq!(
            imds_endpoint(&env(&[(
                "AWS_EC2_METADATA_SERVICE_ENDPOINT",
                "http://127.0.0.1:9/"
            )])),
            "http://127.0.0.1:9"
        );
    }

    #[test]
    fn container_urls_are_checked() {
        let url = |pairs: &[(&str, &str)]| container_url(&env(pairs));
        assert_eq!(url(&[]).unwrap(), None);
        assert_eq!(
            url(&[(
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "/v2/credentials/abc"
            )])
            .unwrap()
            .unwrap(),
            "http://169.254.170.2/v2/credentials/abc"
        );
        for ok in [
            "http://169.254.170.23/v1/credentials",
            "http://127.0.0.1:8080/creds",
            "http://[::1]:80/creds",
            "http://localhost/creds",
            "https://creds.example.com/x",
        ] {
            assert!(
                url(&[("AWS_CONTAINER_CREDENTIALS_FULL_URI", ok)])
                    .unwrap()
                    .is_some(),
                "{ok}"
            );
        }
        let err = url(&[(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "http://10.0.0.1/creds",
        )])
        .unwrap_err();
        assert!(err.contains("must be https"), "{err}");
    }

    #[test]
    fn form_values_are_encoded() {
        assert_eq!(
            form_encode("arn:aws:iam::1:role/a b+c"),
            "arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fa%20b%2Bc"
        );
    }
}
