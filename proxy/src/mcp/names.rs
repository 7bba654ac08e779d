//! Tool and prompt names across many servers: `{prefix}__{name}` outward,
//! and back to the owning backend and its own name inward. Knows nothing of
//! HTTP or sessions.

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

#[cfg(test)]
mod tests {
    use super::*;
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
