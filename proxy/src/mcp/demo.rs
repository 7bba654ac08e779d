//! The built-in demo MCP server behind `provider: Demo` backends: a flight
//! search (`search-flight`, as in Goose's flight-search recipe) and a small
//! calendar, answering in process and deterministically, so a fresh
//! `sluice run` serves MCP with no keys and no network. Not a hot path.

use serde_json::{json, Value};

/// The demo server's tools, as `tools/list` items.
pub fn tools() -> Vec<Value> {
    vec![
        json!({
            "name": "search-flight",
            "title": "Search flights (demo)",
            "description": "Search flights between two cities on a date. Demo data from Sluice's built-in MCP server.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "origin": {"type": "string", "description": "Departure city"},
                    "destination": {"type": "string", "description": "Arrival city"},
                    "date": {"type": "string", "description": "Date of travel, e.g. 31/12/2026"}
                },
                "required": ["origin", "destination"]
            }
        }),
        json!({
            "name": "list-events",
            "title": "List calendar events (demo)",
            "description": "List the events of a day in the demo calendar.",
            "inputSchema": {
                "type": "object",
                "properties": {"date": {"type": "string", "description": "The day, e.g. 31/12/2026"}},
                "required": ["date"]
            }
        }),
        json!({
            "name": "create-event",
            "title": "Create a calendar event (demo)",
            "description": "Add an event to the demo calendar (nothing is stored).",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "title": {"type": "string"},
                    "date": {"type": "string"},
                    "time": {"type": "string"}
                },
                "required": ["title", "date"]
            }
        }),
    ]
}

/// Calls a demo tool; `None` for an unknown tool.
pub fn call(name: &str, arguments: &Value) -> Option<Value> {
    let arg = |key: &str, default: &str| {
        arguments
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_owned()
    };
    let text = match name {
        "search-flight" => {
            let (origin, destination, date) = (
                arg("origin", "New York"),
                arg("destination", "Los Angeles"),
                arg("date", "31/12/2026"),
            );
            format!(
                "Found 3 flights from {origin} to {destination} on {date} (demo data):\n\
                 1. AF123 departs 08:05, arrives 11:20, nonstop, EUR 299\n\
                 2. DL456 departs 12:40, arrives 15:58, nonstop, EUR 342\n\
                 3. UA789 departs 18:15, arrives 21:31, nonstop, EUR 318"
            )
        }
        "list-events" => {
            let date = arg("date", "today");
            format!("Events on {date} (demo calendar):\n- 09:30 Stand-up\n- 14:00 Flight planning")
        }
        "create-event" => {
            let (title, date, time) = (
                arg("title", "Event"),
                arg("date", "today"),
                arg("time", "all day"),
            );
            format!(
                "Created \"{title}\" on {date} at {time} in the demo calendar (nothing is stored)."
            )
        }
        _ => return None,
    };
    Some(json!({"content": [{"type": "text", "text": text}], "isError": false}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_deterministically() {
        let args =
            json!({"origin": "New York", "destination": "Los Angeles", "date": "31/12/2026"});
        let result = call("search-flight", &args).unwrap();
        let text = result["content"][0]["text"].as_str().unwrap();
        assert!(text.contains("AF123") && text.contains("31/12/2026"));
        assert_eq!(call("search-flight", &args), Some(result));
        assert!(call("nope", &args).is_none());
        for tool in tools() {
            assert!(call(tool["name"].as_str().unwrap(), &json!({})).is_some());
        }
    }
}
