//! The answers credential sources give, read into [`Issued`]: STS's
//! `AssumeRoleWithWebIdentity` XML, the container and instance metadata
//! endpoints' JSON, and profiles of the shared `credentials` / `config`
//! files. Pure functions over bytes and text: no I/O. Errors never quote
//! a secret (only element names, codes and the services' own messages).

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sluice_crds::values::Secret;

/// Credentials as a source handed them out.
pub struct Issued {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
    /// When temporary credentials stop working (`None`: long-term keys).
    pub expiration: Option<DateTime<Utc>>,
}

/// An STS query-API answer: the `Credentials` of an
/// `AssumeRoleWithWebIdentityResponse`, or the `Code` and `Message` of an
/// `ErrorResponse`.
pub fn sts_answer(status: http::StatusCode, body: &[u8]) -> Result<Issued, String> {
    let text = std::str::from_utf8(body).map_err(|_| "STS answered with non-UTF-8 bytes")?;
    if let Some(error) = element(text, "Error") {
        let code = element(error, "Code").map(unescape).unwrap_or_default();
        let message = element(error, "Message").map(unescape).unwrap_or_default();
        return Err(format!("STS answered {status}: {code}: {message}"));
    }
    if !status.is_success() {
        return Err(format!("STS answered {status} without an error document"));
    }
    let credentials = element(text, "Credentials").ok_or(
        "STS answered without a <Credentials> element (not an AssumeRoleWithWebIdentity answer)",
    )?;
    let field = |name: &str| {
        element(credentials, name)
            .map(|v| unescape(v.trim()).into_owned())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("STS's <Credentials> has no <{name}>"))
    };
    let expiration = field("Expiration")?;
    Ok(Issued {
        access_key_id: field("AccessKeyId")?,
        secret_access_key: Secret::new(field("SecretAccessKey")?),
        session_token: Some(Secret::new(field("SessionToken")?)),
        expiration: Some(timestamp(&expiration, "STS's <Expiration>")?),
    })
}

/// The JSON of the container credentials endpoint (ECS, EKS Pod Identity)
/// and of the instance metadata service (`Code: Success` there).
pub fn json_answer(what: &str, status: http::StatusCode, body: &[u8]) -> Result<Issued, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Answer<'a> {
        #[serde(borrow, default)]
        access_key_id: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        secret_access_key: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        token: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        expiration: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        code: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        message: Option<Cow<'a, str>>,
    }
    let answer: Answer<'_> = match serde_json::from_slice(body) {
        Ok(answer) => answer,
        Err(_) if !status.is_success() => {
            return Err(format!("{what} answered {status}"));
        }
        Err(e) => return Err(format!("{what} answered {status} with invalid JSON: {e}")),
    };
    let failed = answer.code.as_deref().is_some_and(|code| code != "Success");
    if !status.is_success() || failed {
        return Err(format!(
            "{what} answered {status}{}{}",
            answer
                .code
                .as_deref()
                .map(|c| format!(": {c}"))
                .unwrap_or_default(),
            answer
                .message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ));
    }
    let missing = |name: &str| format!("{what} answered without `{name}`");
    let access_key_id = answer
        .access_key_id
        .filter(|v| !v.is_empty())
        .ok_or_else(|| missing("AccessKeyId"))?;
    let secret = answer
        .secret_access_key
        .filter(|v| !v.is_empty())
        .ok_or_else(|| missing("SecretAccessKey"))?;
    let expiration = match answer.expiration.as_deref() {
        None => None,
        Some(text) => Some(timestamp(text, &format!("{what}'s `Expiration`"))?),
    };
    Ok(Issued {
        access_key_id: access_key_id.into_owned(),
        secret_access_key: Secret::new(secret),
        session_token: answer.token.filter(|t| !t.is_empty()).map(Secret::new),
        expiration,
    })
}

/// What a profile of the shared files holds.
#[derive(Default)]
pub struct Profile {
    /// Its `key = value` settings, keys lower case.
    pub settings: Vec<(String, String)>,
}

impl Profile {
    fn get(&self, key: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// The profile's static keys; an error for a profile that gets its
    /// credentials some other way (IAM Identity Center, roles, a process).
    pub fn keys(&self, name: &str, file: &str) -> Result<Issued, String> {
        match (
            self.get("aws_access_key_id"),
            self.get("aws_secret_access_key"),
        ) {
            (Some(id), Some(secret)) => Ok(Issued {
                access_key_id: id.to_owned(),
                secret_access_key: Secret::new(secret),
                session_token: self.get("aws_session_token").map(Secret::new),
                expiration: None,
            }),
            (Some(_), None) | (None, Some(_)) => Err(format!(
                "profile `{name}` in {file} needs both aws_access_key_id and aws_secret_access_key"
            )),
            (None, None) => {
                let how = [
                    ("sso_session", "IAM Identity Center (SSO)"),
                    ("sso_start_url", "IAM Identity Center (SSO)"),
                    ("login_session", "a console login session"),
                    ("role_arn", "an assumed role (role_arn)"),
                    ("credential_process", "credential_process"),
                    ("web_identity_token_file", "web_identity_token_file"),
                ]
                .into_iter()
                .find(|(key, _)| self.get(key).is_some())
                .map(|(_, how)| how);
                Err(match how {
                    Some(how) => format!(
                        "profile `{name}` in {file} gets its credentials from {how}, which Sluice does not support: give it aws_access_key_id and aws_secret_access_key, or use the environment, web identity, container or instance credentials"
                    ),
                    None => format!("profile `{name}` in {file} has no aws_access_key_id"),
                })
            }
        }
    }
}

/// The profile `name` of an INI file: `[name]` in the credentials file,
/// `[profile name]` (or `[default]`) in the config file.
pub fn profile(text: &str, name: &str, config_file: bool) -> Option<Profile> {
    let mut found: Option<Profile> = None;
    let mut in_profile = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[') {
            let section = section.split(']').next().unwrap_or_default().trim();
            let section_name = if config_file {
                match section.strip_prefix("profile") {
                    Some(rest) if rest.starts_with(char::is_whitespace) => Some(rest.trim()),
                    _ if section == "default" => Some("default"),
                    _ => None,
                }
            } else {
                Some(section)
            };
            in_profile = section_name == Some(name);
            if in_profile && found.is_none() {
                found = Some(Profile::default());
            }
            continue;
        }
        if !in_profile {
            continue;
        }
        if let (Some(profile), Some((key, value))) = (found.as_mut(), line.split_once('=')) {
            let value = value.trim();
            // Inline comments need whitespace before them.
            let value = value
                .find(" #")
                .or_else(|| value.find(" ;"))
                .map_or(value, |i| value[..i].trim_end());
            profile
                .settings
                .push((key.trim().to_ascii_lowercase(), value.to_owned()));
        }
    }
    found
}

/// The text inside the first `<name>...</name>` of `text` (no attributes
/// on AWS's elements; a namespace prefix is not used by STS).
fn element<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = text.find(&open)? + open.len();
    let end = text[start..].find(&close)? + start;
    Some(&text[start..end])
}

/// XML's five entities and numeric character references.
fn unescape(text: &str) -> Cow<'_, str> {
    if !text.contains('&') {
        return text.into();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';') else {
            break;
        };
        let entity = &rest[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out.into()
}

/// An ISO 8601 / RFC 3339 time, e.g. `2026-11-26T08:00:00Z`.
fn timestamp(text: &str, what: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| format!("{what} `{}` is not an ISO 8601 time", text.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    // The answer shape of the STS API reference
    // (docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRoleWithWebIdentity.html).
    const STS_OK: &str = r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>amzn1.account.AF6RHO7KZU5XRVQJGXK6HB56KR2A</SubjectFromWebIdentityToken>
    <Audience>client.5498841531868486423.1548@apps.example.com</Audience>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/FederatedWebIdentityRole/app1</Arn>
      <AssumedRoleId>AROACLKWSDQRAOEXAMPLE:app1</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>AQoDYXdzEE0a8ANXXXXXXXXNO1ewxE5TijQyp+IEXAMPLE&amp;x</SessionToken>
      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>
      <Expiration>2014-10-24T23:00:23Z</Expiration>
      <AccessKeyId>ASgeIAIOSFODNN7EXAMPLE</AccessKeyId>
    </Credentials>
    <SourceIdentity>SourceIdentityValue</SourceIdentity>
    <Provider>www.amazon.com</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata>
    <RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId>
  </ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"#;

    #[test]
    fn reads_sts_credentials() {
        let issued = sts_answer(StatusCode::OK, STS_OK.as_bytes()).unwrap();
        assert_eq!(issued.access_key_id, "ASgeIAIOSFODNN7EXAMPLE");
        assert_eq!(
            issued.secret_access_key.expose(),
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"
        );
        assert_eq!(
            issued.session_token.unwrap().expose(),
            "AQoDYXdzEE0a8ANXXXXXXXXNO1ewxE5TijQyp+IEXAMPLE&x"
        );
        assert_eq!(
            issued.expiration.unwrap().to_rfc3339(),
            "2014-10-24T23:00:23+00:00"
        );
    }

    #[test]
    fn sts_errors_and_malformed_answers_are_clean() {
        let error = r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>No OpenIDConnect provider found in your account for https://oidc.example.com</Message></Error>
  <RequestId>x</RequestId></ErrorResponse>"#;
        assert_eq!(
            sts_answer(StatusCode::BAD_REQUEST, error.as_bytes()).err().unwrap(),
            "STS answered 400 Bad Request: InvalidIdentityToken: No OpenIDConnect provider found in your account for https://oidc.example.com"
        );
        let cut = &STS_OK[..STS_OK.find("<Expiration>").unwrap() + 20];
        let err = sts_answer(StatusCode::OK, cut.as_bytes()).err().unwrap();
        assert!(err.contains("without a <Credentials>"), "{err}");
        assert!(!err.contains("wJalrXUtnFEMI"), "no secret in {err}");
        let bad_time = STS_OK.replace("2014-10-24T23:00:23Z", "tomorrow");
        let err = sts_answer(StatusCode::OK, bad_time.as_bytes())
            .err()
            .unwrap();
        assert_eq!(err, "STS's <Expiration> `tomorrow` is not an ISO 8601 time");
        let no_token = STS_OK
            .replace("<SessionToken>", "<X>")
            .replace("</SessionToken>", "</X>");
        assert_eq!(
            sts_answer(StatusCode::OK, no_token.as_bytes())
                .err()
                .unwrap(),
            "STS's <Credentials> has no <SessionToken>"
        );
        assert_eq!(
            sts_answer(StatusCode::BAD_GATEWAY, b"<html>busy</html>")
                .err()
                .unwrap(),
            "STS answered 502 Bad Gateway without an error document"
        );
        assert!(sts_answer(StatusCode::OK, &[0xff, 0xfe]).is_err());
    }

    #[test]
    fn reads_container_and_instance_json() {
        let body = br#"{"AccessKeyId":"ASIAX","SecretAccessKey":"s/e+cret","Token":"tok","Expiration":"2026-11-26T10:00:00Z","RoleArn":"arn:aws:iam::1:role/r"}"#;
        let issued = json_answer("the container endpoint", StatusCode::OK, body).unwrap();
        assert_eq!(issued.access_key_id, "ASIAX");
        assert_eq!(issued.secret_access_key.expose(), "s/e+cret");
        assert_eq!(issued.session_token.unwrap().expose(), "tok");
        assert!(issued.expiration.is_some());
        let imds = br#"{"Code":"Success","LastUpdated":"2026-11-26T08:00:00Z","Type":"AWS-HMAC","AccessKeyId":"ASIAY","SecretAccessKey":"s","Token":"t","Expiration":"2026-11-26T14:00:00+00:00"}"#;
        assert_eq!(
            json_answer("IMDS", StatusCode::OK, imds)
                .unwrap()
                .access_key_id,
            "ASIAY"
        );
    }

    #[test]
    fn json_errors_and_malformed_answers_are_clean() {
        let failed =
            br#"{"Code":"AssumeRoleUnauthorizedAccess","Message":"EC2 cannot assume the role"}"#;
        assert_eq!(
            json_answer("IMDS", StatusCode::OK, failed).err().unwrap(),
            "IMDS answered 200 OK: AssumeRoleUnauthorizedAccess: EC2 cannot assume the role"
        );
        assert_eq!(
            json_answer("the container endpoint", StatusCode::FORBIDDEN, b"denied")
                .err()
                .unwrap(),
            "the container endpoint answered 403 Forbidden"
        );
        let cut = br#"{"AccessKeyId":"ASIAX","SecretAccessKey":"s3cr3t-value","To"#;
        let err = json_answer("the container endpoint", StatusCode::OK, cut)
            .err()
            .unwrap();
        assert!(
            err.starts_with("the container endpoint answered 200 OK with invalid JSON"),
            "{err}"
        );
        assert!(!err.contains("s3cr3t-value"), "no secret in {err}");
        assert_eq!(
            json_answer("IMDS", StatusCode::OK, br#"{"AccessKeyId":"A"}"#)
                .err()
                .unwrap(),
            "IMDS answered without `SecretAccessKey`"
        );
        assert_eq!(
            json_answer(
                "IMDS",
                StatusCode::OK,
                br#"{"AccessKeyId":"A","SecretAccessKey":"s","Expiration":"soon"}"#
            )
            .err()
            .unwrap(),
            "IMDS's `Expiration` `soon` is not an ISO 8601 time"
        );
    }

    #[test]
    fn reads_profiles_of_both_files() {
        let credentials = "[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = d\n\n# c\n[work]\nAWS_ACCESS_KEY_ID=AKIAWORK ; key\naws_secret_access_key = w/x+y\naws_session_token = tok\n";
        let work = profile(credentials, "work", false).unwrap();
        let keys = work.keys("work", "f").unwrap();
        assert_eq!(keys.access_key_id, "AKIAWORK");
        assert_eq!(keys.secret_access_key.expose(), "w/x+y");
        assert_eq!(keys.session_token.unwrap().expose(), "tok");
        assert!(profile(credentials, "nope", false).is_none());
        let config = "[default]\nregion = us-east-1\n[profile dev]\nsso_session = corp\nsso_account_id = 1\n[work]\naws_access_key_id = NOT_A_CONFIG_PROFILE\n";
        assert!(profile(config, "work", true).is_none());
        let err = profile(config, "dev", true)
            .unwrap()
            .keys("dev", "~/.aws/config")
            .err()
            .unwrap();
        assert!(
            err.contains("IAM Identity Center (SSO), which Sluice does not support"),
            "{err}"
        );
        let err = profile(config, "default", true)
            .unwrap()
            .keys("default", "c")
            .err()
            .unwrap();
        assert_eq!(err, "profile `default` in c has no aws_access_key_id");
    }

    #[test]
    fn unescapes_xml() {
        assert_eq!(unescape("a&amp;b&lt;&#47;&#x2B;&bogus;"), "a&b</+&bogus;");
    }
}
