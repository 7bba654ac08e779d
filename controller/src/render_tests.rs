#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use crate::hub::Rollout;
use crate::objects::Kind;
use crate::status::conditions;

pub(crate) fn object(kind: Kind, name: &str, spec: serde_json::Value) -> SourceObject {
    SourceObject {
        key: ObjectKey {
            kind,
            name: name.into(),
        },
        namespace: "default".into(),
        uid: None,
        generation: Some(2),
        spec,
        status: None,
    }
}

/// A gateway with a client key from the Secret `keys`, an OpenAI backend
/// whose key comes from the Secret `openai`, and a route to it.
pub(crate) fn namespace() -> Objects {
    let mut secrets = BTreeMap::new();
    secrets.insert(
        "keys".to_owned(),
        [
            ("ci".to_owned(), "sk-ci".to_owned()),
            ("unused".to_owned(), "sk-unused".to_owned()),
        ]
        .into_iter()
        .collect(),
    );
    secrets.insert(
        "openai".to_owned(),
        [("apiKey".to_owned(), "sk-openai".to_owned())]
            .into_iter()
            .collect(),
    );
    Objects {
        objects: vec![
            object(
                Kind::Backend,
                "openai",
                json!({"provider": "OpenAI", "auth": {"apiKey": {"valueFrom": {"secretKeyRef": {"name": "openai", "key": "apiKey"}}}}}),
            ),
            object(
                Kind::AIGateway,
                "gw",
                json!({
                    "auth": {"apiKeys": [{"name": "ci", "tenant": "team-a", "valueFrom": {"secretKeyRef": {"name": "keys", "key": "ci"}}}]},
                    "llm": {"routes": [{"models": ["gpt-4o"], "backends": [{"backend": "openai"}]}]}
                }),
            ),
        ],
        secrets,
    }
}

fn key(kind: Kind, name: &str) -> ObjectKey {
    ObjectKey {
        kind,
        name: name.into(),
    }
}

#[test]
fn valid_objects_make_a_bundle_with_only_the_referenced_secret_values() {
    let rendered = render(&namespace());
    let bundle = rendered.bundle.expect("compiles");
    assert!(rendered.verdicts.values().all(Verdict::is_clean));
    // Sorted by kind, then name: the same objects always hash the same.
    assert_eq!(bundle.documents[0]["kind"], "AIGateway");
    assert_eq!(bundle.documents[1]["metadata"], json!({"name": "openai"}));
    assert_eq!(
        bundle.secrets["keys"].len(),
        1,
        "unreferenced keys stay out"
    );
    assert_eq!(bundle.secrets["openai"]["apiKey"], "sk-openai");
    assert!(bundle.compile().is_ok(), "a proxy compiles it the same way");
    let mut reordered = namespace();
    reordered.objects.reverse();
    assert_eq!(render(&reordered).bundle.unwrap().hash(), bundle.hash());
}

#[test]
fn a_missing_secret_is_an_unresolved_reference_not_a_crash() {
    let mut objects = namespace();
    objects.secrets.remove("openai");
    let rendered = render(&objects);
    assert!(rendered.bundle.is_none());
    let verdict = &rendered.verdicts[&key(Kind::Backend, "openai")];
    assert!(verdict.invalid.is_empty(), "{verdict:?}");
    assert_eq!(verdict.unresolved.len(), 1);
    assert_eq!(verdict.unresolved[0].0, RefProblem::SecretNotFound);
    assert!(
        verdict.unresolved[0]
            .1
            .contains("Secret `openai` not found"),
        "{verdict:?}"
    );
    let backend = &objects.objects[0];
    let c = conditions(backend, &rendered, &Rollout::default());
    assert_eq!((c[0].type_, c[0].status), ("Accepted", "True"));
    assert_eq!(
        (c[1].type_, c[1].status, c[1].reason),
        ("ResolvedRefs", "False", "SecretNotFound")
    );
    assert_eq!(
        (c[2].type_, c[2].status, c[2].reason),
        ("Programmed", "False", "Invalid")
    );
    // The gateway itself is fine, but not published because of the Backend.
    let gateway = &objects.objects[1];
    let c = conditions(gateway, &rendered, &Rollout::default());
    assert_eq!(c[1].status, "True");
    assert_eq!(c[2].reason, "Pending");
    assert!(
        c[2].message.contains("errors in Backend/openai"),
        "{}",
        c[2].message
    );
    assert!(
        c[2].message.contains("no version has been published yet"),
        "{}",
        c[2].message
    );
}

#[test]
fn a_missing_key_names_the_keys_there_are() {
    let mut objects = namespace();
    objects.objects[0].spec["auth"]["apiKey"]["valueFrom"]["secretKeyRef"]["key"] = json!("token");
    let rendered = render(&objects);
    let verdict = &rendered.verdicts[&key(Kind::Backend, "openai")];
    assert_eq!(
        verdict.unresolved[0].1,
        "spec.auth.apiKey.valueFrom: Secret `openai` has no key `token` (its keys: apiKey)"
    );
}

#[test]
fn an_invalid_backend_is_not_accepted_with_the_compile_error() {
    let mut objects = namespace();
    objects.objects[0].spec["provider"] = json!("Gopher");
    let rendered = render(&objects);
    assert!(rendered.bundle.is_none());
    let verdict = &rendered.verdicts[&key(Kind::Backend, "openai")];
    assert_eq!(verdict.invalid.len(), 1, "{verdict:?}");
    let c = conditions(&objects.objects[0], &rendered, &Rollout::default());
    assert_eq!((c[0].status, c[0].reason), ("False", "Invalid"));
    assert!(
        c[0].message.starts_with("fix the spec: spec.provider: "),
        "{}",
        c[0].message
    );
    assert!(
        c[0].message.contains("unknown provider `Gopher`"),
        "{}",
        c[0].message
    );

    // An unknown field is named with its path, as `sluice validate` does.
    let mut objects = namespace();
    objects.objects[0].spec["endpiont"] = json!("http://x");
    let rendered = render(&objects);
    let verdict = &rendered.verdicts[&key(Kind::Backend, "openai")];
    assert!(
        verdict.invalid[0].starts_with("spec.endpiont: unknown field"),
        "{verdict:?}"
    );
}

#[test]
fn a_route_to_a_missing_backend_is_an_unresolved_reference() {
    let mut objects = namespace();
    objects.objects.remove(0);
    let rendered = render(&objects);
    let verdict = &rendered.verdicts[&key(Kind::AIGateway, "gw")];
    assert_eq!(verdict.unresolved[0].0, RefProblem::BackendNotFound);
    assert_eq!(
        verdict.unresolved[0].1,
        "spec.llm.routes[0].backends[0].backend: no Backend named `openai`"
    );
}
