//! Bedrock backends without keys in the config (`auth.aws: {region}`):
//! credentials from the AWS SDKs' standard chain, through a real
//! `sluice run` whose environment points each source at the test upstream.
//! The upstream plays STS (web identity), the container credentials
//! endpoint and IMDSv2, hands out short-lived credentials, and its Bedrock
//! face recomputes every signature with them (session token included), so a
//! request signed with the wrong or expired keys fails here. Also: the
//! precedence of the sources, refresh before expiry, a source that is down
//! or answers garbage (a clean 502, then the route's next backend), and no
//! secret in the gateway's logs or errors.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use sluice_test_upstream::aws_creds::{
    issued, IssuedCredentials, TEST_CONTAINER_TOKEN, TEST_ROLE_ARN, TEST_WEB_IDENTITY_TOKEN,
};
use sluice_test_upstream::{RecordedRequest, Upstream, TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY};
use support::{backend, config, dead_url, post_json, upstream, Sluice};

const MODEL: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";

/// A temporary directory for token and profile files (also the child's HOME).
struct Files(tempfile::TempDir);

impl Files {
    fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

/// The child's environment: every chain setting neutralised (the test
/// process may have AWS settings of its own; empty means unset), instance
/// metadata off, HOME in `files`; then `extra`.
fn environment(files: &Files, extra: &[(&str, String)]) -> Vec<(String, String)> {
    let home = files.path().to_str().unwrap().to_owned();
    let mut env: Vec<(String, String)> = [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_ROLE_SESSION_NAME",
        "AWS_PROFILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_CONFIG_FILE",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_STS",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE",
    ]
    .into_iter()
    .map(|k| (k.to_owned(), String::new()))
    .collect();
    env.extend([
        ("AWS_EC2_METADATA_DISABLED".to_owned(), "true".to_owned()),
        ("HOME".to_owned(), home),
        ("TEAM_A_KEY".to_owned(), "sk-team-a".to_owned()),
        ("UPSTREAM_KEY".to_owned(), "sk-upstream-secret".to_owned()),
        ("SLUICE_LOG".to_owned(), "debug".to_owned()),
    ]);
    env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    env
}

/// A gateway with one chain-signed Bedrock backend on `aws`'s Bedrock face
/// (route `anthropic.*`) and route `fallback` that tries it first, then an
/// OpenAI backend on `gpt`.
fn gateway(aws: &Upstream, gpt: &Upstream, env: &[(String, String)]) -> Sluice {
    let routes = "      - models: [\"anthropic.*\"]\n        backends: [{backend: bedrock}]\n      - models: [fallback]\n        backends: [{backend: bedrock, model: anthropic.claude-3-haiku-20240307-v1:0, priority: 0}, {backend: gpt, model: gpt-4o, priority: 1}]\n        retry: {attempts: 2, on: [\"5xx\", \"429\"]}";
    let backends = format!(
        "---\nkind: Backend\nmetadata: {{name: bedrock}}\nspec:\n  provider: Bedrock\n  endpoint: {}\n  auth:\n    aws: {{region: us-east-1}}\n  timeout: 5s\n{}",
        aws.url(),
        backend("gpt", &gpt.url()),
    );
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Sluice::start(&config(routes, &backends), &env)
}

async fn chat(sluice: &Sluice, model: &str) -> (u16, Value, Option<String>) {
    let response = post_json(
        sluice,
        "/chat/completions",
        &json!({"model": model, "messages": [{"role": "user", "content": "hello"}]}),
        &[],
    )
    .await;
    let status = response.status().as_u16();
    let name = response
        .headers()
        .get("x-upstream-name")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, response.json().await.unwrap(), name)
}

fn bedrock_requests(upstream: &Upstream) -> Vec<RecordedRequest> {
    upstream
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/model/"))
        .collect()
}

fn sts_requests(upstream: &Upstream) -> Vec<RecordedRequest> {
    upstream
        .requests()
        .into_iter()
        .filter(|r| r.path == "/" && r.body.contains("Action=AssumeRoleWithWebIdentity"))
        .collect()
}

/// The access key id a Bedrock request was signed with.
fn key_id(request: &RecordedRequest) -> String {
    let auth = request.header("authorization").unwrap();
    let credential = auth.split("Credential=").nth(1).unwrap();
    credential.split('/').next().unwrap().to_owned()
}

fn issued_by_key(key: &str) -> IssuedCredentials {
    issued()
        .into_iter()
        .find(|c| c.access_key_id == key)
        .unwrap_or_else(|| panic!("{key} was not issued by the test upstream"))
}

/// Neither the gateway's stderr (debug logs) nor its access log holds any
/// of `secrets`.
fn assert_no_secrets(sluice: &Sluice, secrets: &[&str]) {
    let logs = format!("{}\n{}", sluice.stderr(), sluice.access_log_text());
    for secret in secrets {
        assert!(!secret.is_empty());
        assert!(!logs.contains(secret), "a secret is in the logs: {logs}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_identity_credentials_sign_bedrock_requests() {
    let aws = upstream("aws").await;
    let gpt = upstream("gpt").await;
    let files = Files::new();
    let token_file = files.write("token", &format!("{TEST_WEB_IDENTITY_TOKEN}\n"));
    let env = environment(
        &files,
        &[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file),
            ("AWS_ROLE_ARN", TEST_ROLE_ARN.into()),
            ("AWS_ENDPOINT_URL_STS", aws.url()),
        ],
    );
    let sluice = gateway(&aws, &gpt, &env);
    // Three at once while there are no credentials yet: one fetch.
    let answers = futures_util::future::join_all((0..3).map(|_| chat(&sluice, MODEL))).await;
    for (status, body, _) in answers {
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["object"], "chat.completion");
    }
    // One exchange at STS, cached for the three requests.
    let sts = sts_requests(&aws);
    assert_eq!(sts.len(), 1, "{sts:#?}");
    assert_eq!(sts[0].method, "POST");
    assert_eq!(
        sts[0].header("content-type"),
        Some("application/x-www-form-urlencoded; charset=utf-8")
    );
    assert!(sts[0].header("authorization").is_none(), "unsigned");
    assert!(
        sts[0].body.contains("RoleSessionName=sluice-"),
        "{}",
        sts[0].body
    );
    let requests = bedrock_requests(&aws);
    assert_eq!(requests.len(), 3);
    let key = key_id(&requests[0]);
    let credentials = issued_by_key(&key);
    assert_eq!(credentials.source, "sts");
    for request in &requests {
        assert_eq!(key_id(request), key);
        assert_eq!(
            request.header("x-amz-security-token"),
            Some(credentials.session_token.as_str())
        );
    }
    assert_no_secrets(
        &sluice,
        &[
            &credentials.secret_access_key,
            &credentials.session_token,
            TEST_WEB_IDENTITY_TOKEN,
        ],
    );
    assert!(
        sluice.stderr().contains(&key),
        "the key id is logged at debug"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_credentials_sign_bedrock_requests() {
    let aws = upstream("aws").await;
    let gpt = upstream("gpt").await;
    let files = Files::new();
    let token_file = files.write("pod-identity-token", TEST_CONTAINER_TOKEN);
    let env = environment(
        &files,
        &[
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                format!("{}/v1/credentials", aws.url()),
            ),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", token_file.clone()),
        ],
    );
    let sluice = gateway(&aws, &gpt, &env);
    let (status, body, _) = chat(&sluice, MODEL).await;
    assert_eq!(status, 200, "{body}");
    let requests = bedrock_requests(&aws);
    let credentials = issued_by_key(&key_id(&requests[0]));
    assert_eq!(credentials.source, "container");
    assert_eq!(
        requests[0].header("x-amz-security-token"),
        Some(credentials.session_token.as_str())
    );
    let fetch = aws
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1/credentials")
        .unwrap();
    assert_eq!(fetch.method, "GET");
    assert_eq!(fetch.header("authorization"), Some(TEST_CONTAINER_TOKEN));
    assert_no_secrets(
        &sluice,
        &[
            &credentials.secret_access_key,
            &credentials.session_token,
            TEST_CONTAINER_TOKEN,
        ],
    );

    // The token in the variable instead of a file; a wrong one is refused
    // by the endpoint: a clean 502 that does not quote it.
    let env = environment(
        &files,
        &[
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                format!("{}/v2/credentials/task", aws.url()),
            ),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN",
                "wrong-token-value".into(),
            ),
        ],
    );
    let sluice = gateway(&aws, &gpt, &env);
    let (status, body, _) = chat(&sluice, MODEL).await;
    assert_eq!(status, 502, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("could not get AWS credentials: container credentials")
            && message.contains("answered 401 Unauthorized: AccessDeniedException"),
        "{message}"
    );
    assert!(!message.contains("wrong-token-value"), "{message}");
    assert_no_secrets(&sluice, &["wrong-token-value"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_metadata_credentials_sign_bedrock_requests() {
    let aws = upstream("aws").await;
    let gpt = upstream("gpt").await;
    let files = Files::new();
    let env = environment(
        &files,
        &[
            ("AWS_EC2_METADATA_DISABLED", String::new()),
            (
                "AWS_EC2_METADATA_SERVICE_ENDPOINT",
                format!("{}/", aws.url()),
            ),
        ],
    );
    let sluice = gateway(&aws, &gpt, &env);
    let (status, body, _) = chat(&sluice, MODEL).await;
    assert_eq!(status, 200, "{body}");
    let calls: Vec<RecordedRequest> = aws
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/latest/"))
        .collect();
    let summary: Vec<(&str, &str)> = calls
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("PUT", "/latest/api/token"),
            ("GET", "/latest/meta-data/iam/security-credentials/"),
            (
                "GET",
                "/latest/meta-data/iam/security-credentials/sluice-instance-role"
            ),
        ]
    );
    assert_eq!(
        calls[0].header("x-aws-ec2-metadata-token-ttl-seconds"),
        Some("21600")
    );
    let session = calls[1].header("x-aws-ec2-metadata-token").unwrap();
    assert_eq!(calls[2].header("x-aws-ec2-metadata-token"), Some(session));
    let credentials = issued_by_key(&key_id(&bedrock_requests(&aws)[0]));
    assert_eq!(credentials.source, "imds");
    assert_no_secrets(
        &sluice,
        &[
            &credentials.secret_access_key,
            &credentials.session_token,
            session,
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_and_profile_keys_sign_bedrock_requests() {
    let aws = upstream("aws").await;
    let gpt = upstream("gpt").await;
    let files = Files::new();
    let env = environment(
        &files,
        &[
            ("AWS_ACCESS_KEY_ID", TEST_ACCESS_KEY_ID.into()),
            ("AWS_SECRET_ACCESS_KEY", TEST_SECRET_ACCESS_KEY.into()),
        ],
    );
    let sluice = gateway(&aws, &gpt, &env);
    let (status, body, _) = chat(&sluice, MODEL).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(key_id(&bedrock_requests(&aws)[0]), TEST_ACCESS_KEY_ID);
    assert_no_secrets(&sluice, &[TEST_SECRET_ACCESS_KEY]);

    // `~/.aws/credentials` (HOME), profile from AWS_PROFILE.
    std::fs::create_dir_all(files.path().join(".aws")).unwrap();
    files.write(
        ".aws/credentials",
        &format!("[default]\naws_access_key_id = AKIAWRONG\naws_secret_access_key = wrong\n\n[work]\naws_access_key_id = {TEST_ACCESS_KEY_ID}\naws_secret_access_key = {TEST_SECRET_ACCESS_KEY}\n"),
    );
    aws.clear();
    let env = environment(&files, &[("AWS_PROFILE", "work".into())]);
    let sluice = gateway(&aws, &gpt, &env);
    let (status, body, _) = chat(&sluice, MODEL).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(key_id(&bedrock_requests(&aws)[0]), TEST_ACCESS_KEY_ID);

    // An IAM Identity Center profile in AWS_CONFIG_FILE: not supported, said so.
    let config = files.write(
        "config",
        "[profile sso]\nsso_session = corp\nsso_account_id = 123456789012\nsso_role_name = Bedrock\n",
    );
    let env = environment(
        &files,
        &[("AWS_PROFILE", "sso".into()), ("AWS_CONFIG_FILE", config)],
    );
    let sluice = gateway(&aws, &gpt, &env);
    let (status, body, _) = chat(&sluice, MODEL).await;
    assert_eq!(status, 502, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("profile `sso`")
            && message.contains("IAM Identity Center (SSO), which Sluice does not support"),
        "{message}"
    );
    // A profile nobody has.
    let env = environment(&files, &[("AWS_PROFILE", "nope".into())]);
    let sluice = gateway(&aws, &gpt, &env);
    let (status, body, _) = chat(&sluice, MODEL).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains(
            "AWS_PROFILE is `nope`, but no shared credentials or config file has that profile"
        ),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_are_tried_in_the_sdk_order() {
    let aws = upstream("aws").await;
    let gpt = upstream("gpt").await;
    let files = Files::new();
    let token_file = files.write("token", TEST_WEB_IDENTITY_TOKEN);
    let profile = files.write(
        "credentials",
        &format!("[default]\naws_access_key_id = {TEST_ACCESS_KEY_ID}\naws_secret_access_key = {TEST_SECRET_ACCESS_KEY}\n"),
    );
    let every_source = [
        ("AWS_ACCESS_KEY_ID", TEST_ACCESS_KEY_ID.to_owned()),
        ("AWS_SECRET_ACCESS_KEY", TEST_SECRET_ACCESS_KEY.to_owned()),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file),
        ("AWS_ROLE_ARN", TEST_ROLE_ARN.to_owned()),
        ("AWS_ENDPOINT_URL_STS", aws.url()),
        ("AWS_SHARED_CREDENTIALS_FILE", profile),
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!("{}/v1/credentials", aws.url()),
        ),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN",
            TEST_CONTAINER_TOKEN.to_owned(),
        ),
        ("AWS_EC2_METADATA_DISABLED", String::new()),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", aws.url()),
    ];
    // Each round drops the winner of the round before.
    let rounds: [(&str, &[&str]); 5] = [
        ("environment", &[]),
        ("sts", &["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]),
        ("profile", &["AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"]),
        ("container", &["AWS_SHARED_CREDENTIALS_FILE"]),
        ("imds", &["AWS_CONTAINER_CREDENTIALS_FULL_URI"]),
    ];
    let mut dropped: Vec<&str> = Vec::new();
    for (winner, drop) in rounds {
        dropped.extend(drop);
        let extra: Vec<(&str, String)> = every_source
            .iter()
            .filter(|(k, _)| !dropped.contains(k))
            .cloned()
            .collect();
        aws.clear();
        let sluice = gateway(&aws, &gpt, &environment(&files, &extra));
        let (status, body, _) = chat(&sluice, MODEL).await;
        assert_eq!(status, 200, "{winner}: {body}");
        let key = key_id(&bedrock_requests(&aws)[0]);
        let source = if key == TEST_ACCESS_KEY_ID {
            if winner == "environment" {
                "environment"
            } else {
                "profile"
            }
        } else {
            issued_by_key(&key).source
        };
        assert_eq!(source, winner);
        // Nothing after the winner was asked.
        let asked: Vec<String> = aws
            .requests()
            .into_iter()
            .filter(|r| !r.path.starts_with("/model/"))
            .map(|r| r.path)
            .collect();
        let expected: &[&str] = match winner {
            "sts" => &["/"],
            "container" => &["/v1/credentials"],
            "imds" => &[
                "/latest/api/token",
                "/latest/meta-data/iam/security-credentials/",
                "/latest/meta-data/iam/security-credentials/sluice-instance-role",
            ],
            _ => &[],
        };
        assert_eq!(asked, expected, "{winner}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_credentials_are_refreshed_before_they_expire() {
    let aws = upstream("aws").await;
    let gpt = upstream("gpt").await;
    // Four-second credentials: refreshed after half their life (2 s), not
    // used in their last quarter.
    aws.aws().set_lifetime(Duration::from_secs(4));
    let files = Files::new();
    let token_file = files.write("token", TEST_WEB_IDENTITY_TOKEN);
    let env = environment(
        &files,
        &[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.clone()),
            ("AWS_ROLE_ARN", TEST_ROLE_ARN.into()),
            ("AWS_ROLE_SESSION_NAME", "bedrock-gateway".into()),
            ("AWS_ENDPOINT_URL_STS", aws.url()),
        ],
    );
    let sluice = gateway(&aws, &gpt, &env);
    let (status, body, _) = chat(&sluice, MODEL).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(sts_requests(&aws).len(), 1);
    let first = key_id(&bedrock_requests(&aws)[0]);

    // The projected token rotates: the refresh must read the file again.
    let rotated = "eyJhbGciOiJSUzI1NiJ9.rotated-service-account-token.c2ln";
    std::fs::write(&token_file, rotated).unwrap();
    aws.aws().set_web_identity_token(rotated);

    // The background refresh happens without any request, about 2 s after
    // the first fetch.
    let waiting = std::time::Instant::now();
    while sts_requests(&aws).len() < 2 && waiting.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refreshed_after = waiting.elapsed();
    assert!(
        refreshed_after > Duration::from_millis(1000),
        "not at once: {refreshed_after:?}"
    );
    let sts = sts_requests(&aws);
    assert_eq!(sts.len(), 2, "refreshed once by now: {sts:#?}");
    assert!(sts[1]
        .body
        .contains("WebIdentityToken=eyJhbGciOiJSUzI1NiJ9.rotated"));
    assert!(sts[1].body.contains("RoleSessionName=bedrock-gateway"));
    let (status, body, _) = chat(&sluice, MODEL).await;
    assert_eq!(status, 200, "{body}");
    let second = key_id(&bedrock_requests(&aws)[1]);
    assert_ne!(first, second, "the new credentials sign");

    // Past the first credentials' expiry: requests keep working.
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(refreshed_after)).await;
    let (status, body, _) = chat(&sluice, MODEL).await;
    assert_eq!(status, 200, "{body}");
    assert!(sts_requests(&aws).len() >= 3);
    assert_no_secrets(&sluice, &[rotated, TEST_WEB_IDENTITY_TOKEN]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_down_gives_a_clean_502_and_the_route_falls_back() {
    let aws = upstream("aws").await;
    let gpt = upstream("gpt").await;
    let files = Files::new();
    let token_file = files.write("token", TEST_WEB_IDENTITY_TOKEN);
    let dead = dead_url();
    let env = environment(
        &files,
        &[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file),
            ("AWS_ROLE_ARN", TEST_ROLE_ARN.into()),
            ("AWS_ENDPOINT_URL_STS", dead.clone()),
        ],
    );
    let sluice = gateway(&aws, &gpt, &env);
    let (status, body, _) = chat(&sluice, MODEL).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "upstream_failed");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("upstream bedrock failed: could not get AWS credentials: web identity (role arn:aws:iam::123456789012:role/sluice-bedrock):")
            && message.contains(&dead),
        "{message}"
    );
    assert!(!message.contains(TEST_WEB_IDENTITY_TOKEN), "{message}");
    assert!(
        bedrock_requests(&aws).is_empty(),
        "nothing unsigned was sent"
    );

    let (status, body, name) = chat(&sluice, "fallback").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(name.as_deref(), Some("gpt"));
    let line = sluice.last_log(2);
    assert_eq!(line["upstream"], "gpt");
    assert_eq!(line["failed_attempts"][0]["upstream"], "bedrock");
    assert_eq!(line["failed_attempts"][0]["error"], "auth");
    assert_no_secrets(&sluice, &[TEST_WEB_IDENTITY_TOKEN]);

    // A token STS refuses: its error in words.
    let other = files.write("other-token", "not-the-right-token");
    let env = environment(
        &files,
        &[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", other),
            ("AWS_ROLE_ARN", TEST_ROLE_ARN.into()),
            ("AWS_ENDPOINT_URL", aws.url()),
        ],
    );
    let sluice = gateway(&aws, &gpt, &env);
    let (status, body, _) = chat(&sluice, MODEL).await;
    assert_eq!(status, 502, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("STS answered 400 Bad Request: InvalidIdentityToken"),
        "{message}"
    );
    assert!(!message.contains("not-the-right-token"), "{message}");
    assert_no_secrets(&sluice, &["not-the-right-token"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_credentials_answers_give_a_clean_502() {
    let aws = upstream("aws").await;
    let gpt = upstream("gpt").await;
    aws.aws().set_malformed(true);
    let files = Files::new();
    let token_file = files.write("token", TEST_WEB_IDENTITY_TOKEN);
    let cases: [(&[(&str, String)], &str); 3] = [
        (
            &[
                ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file),
                ("AWS_ROLE_ARN", TEST_ROLE_ARN.into()),
                ("AWS_ENDPOINT_URL_STS", aws.url()),
            ],
            "STS answered without a <Credentials> element",
        ),
        (
            &[
                (
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                    format!("{}/v1/credentials", aws.url()),
                ),
                (
                    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
                    TEST_CONTAINER_TOKEN.into(),
                ),
            ],
            "the container credentials endpoint answered 200 OK with invalid JSON",
        ),
        (
            &[
                ("AWS_EC2_METADATA_DISABLED", String::new()),
                ("AWS_EC2_METADATA_SERVICE_ENDPOINT", aws.url()),
            ],
            "the instance metadata service answered 200 OK with invalid JSON",
        ),
    ];
    for (extra, expected) in cases {
        let sluice = gateway(&aws, &gpt, &environment(&files, extra));
        let (status, body, _) = chat(&sluice, MODEL).await;
        assert_eq!(status, 502, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{message}");
        // The next backend still serves.
        let (status, _, name) = chat(&sluice, "fallback").await;
        assert_eq!(status, 200);
        assert_eq!(name.as_deref(), Some("gpt"));
    }

    // Nothing at all: the error says where it looked.
    let sluice = gateway(&aws, &gpt, &environment(&files, &[]));
    let (status, body, _) = chat(&sluice, MODEL).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("could not get AWS credentials: none found"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_outlive_config_reloads() {
    let aws = upstream("aws").await;
    let gpt = upstream("gpt").await;
    let files = Files::new();
    let token_file = files.write("token", &format!("{TEST_WEB_IDENTITY_TOKEN}\n"));
    let env = environment(
        &files,
        &[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file),
            ("AWS_ROLE_ARN", TEST_ROLE_ARN.into()),
            ("AWS_ENDPOINT_URL_STS", aws.url()),
        ],
    );
    let sluice = gateway(&aws, &gpt, &env);
    assert_eq!(chat(&sluice, MODEL).await.0, 200);
    assert_eq!(sts_requests(&aws).len(), 1);
    let first = std::fs::read_to_string(&sluice.config_path).unwrap();
    for n in 1..=2 {
        std::fs::write(
            &sluice.config_path,
            first.replace("timeout: 5s", &format!("timeout: {}s", 5 + n)),
        )
        .unwrap();
        sluice.signal("HUP");
        let started = std::time::Instant::now();
        while sluice.stderr().matches("config reloaded").count() < n {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{}",
                sluice.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(chat(&sluice, MODEL).await.0, 200);
    }
    assert_eq!(
        sts_requests(&aws).len(),
        1,
        "the credentials outlive both reloads"
    );
    let keys: Vec<String> = bedrock_requests(&aws).iter().map(key_id).collect();
    assert_eq!(keys.len(), 3);
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
}
