//! Tool and prompt names across many servers: `{prefix}__{name}` outward,
//! and back to the owning backend and its own name inward; resource URIs
//! likewise (`{prefix}+{uri}`), in lists and inside results. Knows nothing of
//! HTTP or sessions.

use serde_json::Value;
use sluice_crds::snapshot::McpRoute;

/// Separates a backend's prefix from the upstream's own tool or prompt name.
pub const SEPARATOR: &str = "__";
/// Separates a backend's prefix from a resource URI (`kiwi+file:///a`).
pub const URI_SEPARATOR: &str = "+";

/// The name clients see for an upstream's `name`.
pub fn outward(prefix: Option<&str>, separator: &str, name: &str) -> String {
    match prefix {
        Some(prefix) => format!("{prefix}{separator}{name}"),
        None => name.to_owned(),
    }
}

/// The route backend (by position) that owns a prefixed `name`, and the
/// upstream's own name. `None` when no prefix matches; routes without
/// prefixes are resolved by asking the servers (see the caller).
pub fn inward<'a>(route: &McpRoute, separator: &str, name: &'a str) -> Option<(usize, &'a str)> {
    let (prefix, rest) = name.split_once(separator)?;
    route
        .backends
        .iter()
        .position(|b| b.prefix.as_deref() == Some(prefix))
        .map(|position| (position, rest))
}

/// Prefixes the resource URIs inside a result (`contents[].uri` of
/// `resources/read`, resource links and embedded resources in the `content`
/// of a tool result or in the messages of a prompt), so that the client can
/// read them back through the gateway. Whether anything changed.
pub fn prefix_uris(result: &mut Value, prefix: &str) -> bool {
    let mut changed = false;
    let mut prefix_at = |slot: Option<&mut Value>| {
        if let Some(slot) = slot {
            if let Some(uri) = slot.as_str() {
                *slot = Value::String(outward(Some(prefix), URI_SEPARATOR, uri));
                changed = true;
            }
        }
    };
    let Some(result) = result.as_object_mut() else {
        return false;
    };
    let mut blocks: Vec<&mut Value> = Vec::new();
    for (key, value) in result.iter_mut() {
        match (key.as_str(), value) {
            ("contents", Value::Array(contents)) => blocks.extend(contents.iter_mut()),
            ("content", Value::Array(content)) => blocks.extend(content.iter_mut()),
            ("messages", Value::Array(messages)) => {
                blocks.extend(messages.iter_mut().filter_map(|m| m.get_mut("content")));
            }
            _ => {}
        }
    }
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            // `resources/read` contents have no type; links do.
            None | Some("resource_link") => prefix_at(block.get_mut("uri")),
            Some("resource") => prefix_at(block.get_mut("resource").and_then(|r| r.get_mut("uri"))),
            _ => {}
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn uris_inside_results_get_the_prefix() {
        let mut read = json!({"contents": [{"uri": "file:///a", "text": "x"}]});
        assert!(prefix_uris(&mut read, "docs"));
        assert_eq!(read["contents"][0]["uri"], "docs+file:///a");
        let mut call = json!({"content": [
            {"type": "text", "text": "uri"},
            {"type": "resource_link", "uri": "demo://b", "name": "b"},
            {"type": "resource", "resource": {"uri": "demo://c", "text": "c"}},
        ]});
        assert!(prefix_uris(&mut call, "k"));
        assert_eq!(call["content"][1]["uri"], "k+demo://b");
        assert_eq!(call["content"][2]["resource"]["uri"], "k+demo://c");
        let mut prompt = json!({"messages": [{"role": "user", "content": {"type": "resource", "resource": {"uri": "demo://d"}}}]});
        assert!(prefix_uris(&mut prompt, "k"));
        assert_eq!(
            prompt["messages"][0]["content"]["resource"]["uri"],
            "k+demo://d"
        );
        let mut plain = json!({"content": [{"type": "text", "text": "no links"}]});
        assert!(!prefix_uris(&mut plain, "k"));
    }
    use sluice_crds::snapshot::McpRouteBackend;

    fn backend(prefix: Option<&str>) -> McpRouteBackend {
        McpRouteBackend {
            backend: 0,
            prefix: prefix.map(str::to_owned),
            include: vec![],
            exclude: vec![],
        }
    }

    #[test]
    fn prefixes_round_trip() {
        let route = McpRoute {
            name: "tools".into(),
            path: "/mcp".into(),
            backends: vec![backend(Some("kiwi")), backend(Some("cal"))],
            access: None,
            oauth: None,
        };
        assert_eq!(
            outward(Some("kiwi"), SEPARATOR, "search-flight"),
            "kiwi__search-flight"
        );
        assert_eq!(outward(None, SEPARATOR, "search-flight"), "search-flight");
        assert_eq!(
            inward(&route, SEPARATOR, "cal__list__events"),
            Some((1, "list__events"))
        );
        assert_eq!(
            inward(&route, SEPARATOR, "kiwi__search-flight"),
            Some((0, "search-flight"))
        );
        assert_eq!(inward(&route, SEPARATOR, "other__x"), None);
        assert_eq!(inward(&route, SEPARATOR, "plain"), None);
        assert_eq!(
            outward(Some("cal"), URI_SEPARATOR, "demo://a+b"),
            "cal+demo://a+b"
        );
        assert_eq!(
            inward(&route, URI_SEPARATOR, "cal+demo://a+b"),
            Some((1, "demo://a+b"))
        );
    }
}
