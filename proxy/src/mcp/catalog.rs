//! What a route offers, gathered from its servers: tools, prompts,
//! resources and resource templates under each server's prefix, every
//! upstream page followed; and, inward, which server owns a name.

use serde_json::value::RawValue;
use serde_json::{json, Value};
use sluice_crds::snapshot::McpRoute;

use super::servers::{channel_of, reinitialize, server, session_gone, upstream_of, Upstream};
use super::*;

/// The things a route aggregates from its servers.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Tools,
    Prompts,
    Resources,
    ResourceTemplates,
}

impl Kind {
    /// The list's key in a `*/list` result.
    pub(super) fn key(self) -> &'static str {
        match self {
            Self::Tools => "tools",
            Self::Prompts => "prompts",
            Self::Resources => "resources",
            Self::ResourceTemplates => "resourceTemplates",
        }
    }

    pub(super) fn list_method(self) -> &'static str {
        match self {
            Self::Tools => "tools/list",
            Self::Prompts => "prompts/list",
            Self::Resources => "resources/list",
            Self::ResourceTemplates => "resources/templates/list",
        }
    }

    /// The field that names an item (and the request param that picks one).
    pub(super) fn field(self) -> &'static str {
        match self {
            Self::Tools | Self::Prompts => "name",
            Self::Resources => "uri",
            Self::ResourceTemplates => "uriTemplate",
        }
    }

    /// Between a prefix and the upstream's own name: names get `__`, URIs `+`.
    pub(super) fn separator(self) -> &'static str {
        match self {
            Self::Tools | Self::Prompts => names::SEPARATOR,
            Self::Resources | Self::ResourceTemplates => names::URI_SEPARATOR,
        }
    }

    pub(super) fn what(self) -> &'static str {
        match self {
            Self::Tools => "tool",
            Self::Prompts => "prompt",
            Self::Resources | Self::ResourceTemplates => "resource",
        }
    }
}

/// A list of a stdio or legacy SSE server, every page.
async fn list_channel(
    gateway: &Gateway,
    name: &str,
    timeout: std::time::Duration,
    upstream: &UpstreamSession,
    kind: Kind,
) -> Result<Vec<Value>, McpClientError> {
    let process = channel_of(gateway, name, upstream)?;
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let params = cursor.as_ref().map_or(json!({}), |c| json!({"cursor": c}));
        let result = process.call(kind.list_method(), params, timeout).await?;
        if let Some(Value::Array(page)) = result.get(kind.key()) {
            items.extend(page.iter().cloned());
        }
        cursor = result
            .get("nextCursor")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    Ok(items)
}

/// One list (tools or prompts) of one upstream, every page.
pub(super) async fn list_one(
    gateway: &Gateway,
    server: &Upstream<'_>,
    upstream: &UpstreamSession,
    client: &Value,
    kind: Kind,
) -> Result<Vec<Value>, McpClientError> {
    let server = match server {
        Upstream::Http(server) => server,
        Upstream::Demo(_) if kind == Kind::Tools => return Ok(demo::tools()),
        Upstream::Demo(_) => return Ok(Vec::new()),
        Upstream::Stdio { .. } | Upstream::LegacySse(_) => {
            let (name, timeout) = server.channel_timeout().unwrap_or_default();
            return list_channel(gateway, name, timeout, upstream, kind).await;
        }
    };
    let method = kind.list_method();
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    let mut renewed = false;
    for _ in 0..MAX_PAGES {
        let params = cursor.as_ref().map_or(json!({}), |c| json!({"cursor": c}));
        let session = gateway.mcp_renewals.current(upstream.session.as_deref());
        let outcome = server
            .request(
                &gateway.upstreams,
                session.as_deref(),
                Some(&upstream.version),
                method,
                params.clone(),
            )
            .await;
        let (result, _) = match outcome {
            Err(McpClientError::Status(_, status, body))
                if session_gone(status, upstream, &body) && !renewed =>
            {
                renewed = true;
                let fresh = reinitialize(gateway, server, upstream, client).await?;
                server
                    .request(
                        &gateway.upstreams,
                        Some(&fresh),
                        Some(&upstream.version),
                        method,
                        params,
                    )
                    .await?
            }
            other => other?,
        };
        if let Some(Value::Array(page)) = result.get(kind.key()) {
            items.extend(page.iter().cloned());
        }
        cursor = result
            .get("nextCursor")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    Ok(items)
}

pub(super) async fn list(
    gateway: &Gateway,
    runtime: &Runtime,
    route: &McpRoute,
    session: &SessionState,
    kind: Kind,
    id: &RawValue,
) -> Result<Served, McpError> {
    let merged = merged(gateway, runtime, route, session, kind).await;
    let mut result = serde_json::Map::new();
    result.insert(kind.key().into(), Value::Array(merged));
    Ok(Served::Local(result_response(id, Value::Object(result))))
}

/// Every server's list of one kind, filtered and renamed, in route order.
pub(super) async fn merged(
    gateway: &Gateway,
    runtime: &Runtime,
    route: &McpRoute,
    session: &SessionState,
    kind: Kind,
) -> Vec<Value> {
    let lists = (0..route.backends.len()).filter_map(|position| {
        let server = server(runtime, route, position)?;
        let upstream = upstream_of(session, runtime, route, position)?;
        Some(async move {
            (
                position,
                list_one(gateway, &server, upstream, &session.client, kind).await,
            )
        })
    });
    let mut merged = Vec::new();
    for (position, outcome) in futures_util::future::join_all(lists).await {
        let backend = &route.backends[position];
        match outcome {
            Ok(items) => {
                for mut item in items {
                    let Some(name) = item
                        .get(kind.field())
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                    else {
                        continue;
                    };
                    if kind == Kind::Tools && !backend.exposes(&name) {
                        continue;
                    }
                    let outward =
                        names::outward(backend.prefix.as_deref(), kind.separator(), &name);
                    if kind == Kind::Tools && !route.allows(&session.tenant, &outward) {
                        continue;
                    }
                    item[kind.field()] = Value::String(outward);
                    merged.push(item);
                }
            }
            Err(error) => {
                tracing::warn!(route = %route.name, %error, "MCP server left out of the list")
            }
        }
    }
    merged
}

/// Finds which route backend owns an outward name, and the upstream's name.
pub(super) async fn owner(
    gateway: &Gateway,
    runtime: &Runtime,
    route: &McpRoute,
    session: &SessionState,
    kind: Kind,
    name: &str,
) -> Option<(usize, String)> {
    if let Some((position, upstream_name)) = names::inward(route, kind.separator(), name) {
        return Some((position, upstream_name.to_owned()));
    }
    let unprefixed: Vec<usize> = (0..route.backends.len())
        .filter(|&p| {
            route.backends[p].prefix.is_none() && upstream_of(session, runtime, route, p).is_some()
        })
        .collect();
    if let [only] = unprefixed.as_slice() {
        return Some((*only, name.to_owned()));
    }
    // Several unprefixed servers: ask each which has it.
    for position in unprefixed {
        let (Some(server), Some(upstream)) = (
            server(runtime, route, position),
            upstream_of(session, runtime, route, position),
        ) else {
            continue;
        };
        let items = list_one(gateway, &server, upstream, &session.client, kind)
            .await
            .ok();
        let Some(items) = items else {
            continue;
        };
        if items
            .iter()
            .any(|item| item.get(kind.field()).and_then(Value::as_str) == Some(name))
        {
            return Some((position, name.to_owned()));
        }
    }
    None
}
