//! `sluice cluster status`: the counter store's cluster as a running
//! gateway's `/cluster` reports it, as a table.

/// The report as text: the store, then one row per member.
pub fn table(report: &serde_json::Value) -> String {
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    let mut out = format!("store: {}\n", text(&report["state"]));
    if report["state"] == "raft" {
        out.push_str(&format!(
            "this replica: {} ({})  leader: {}  term: {}  commit index: {}\nleases: {} outstanding, {} leased  counters: {}\n",
            text(&report["id"]),
            text(&report["role"]),
            text(&report["leader"]),
            text(&report["term"]),
            text(&report["commitIndex"]),
            text(&report["leases"]["count"]),
            text(&report["leases"]["amount"]),
            text(&report["counters"]),
        ));
    }
    let mut rows = vec![["ID", "ADDRESS", "ROLE", "MATCHED", "LAG"].map(str::to_owned)];
    for member in report["members"].as_array().into_iter().flatten() {
        let role = match (member["leader"] == true, member["voter"] != false) {
            (true, _) => "leader",
            (false, true) => "voter",
            (false, false) => "learner",
        };
        let mut id = text(&member["id"]);
        if member["self"] == true {
            id.push('*');
        }
        rows.push([
            id,
            text(&member["addr"]),
            role.to_owned(),
            text(&member["matched"]),
            text(&member["lag"]),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raft_report_reads_as_a_table() {
        let report = serde_json::json!({
            "state": "raft", "id": 2, "role": "Follower", "leader": 1, "term": 4,
            "commitIndex": 812, "counters": 3, "leases": {"count": 2, "amount": 40},
            "members": [
                {"id": 1, "addr": "10.0.0.1:7101", "voter": true, "leader": true, "self": false, "matched": null, "lag": null},
                {"id": 2, "addr": "10.0.0.2:7101", "voter": true, "leader": false, "self": true, "matched": 812, "lag": 0}
            ]
        });
        let table = table(&report);
        assert!(
            table.contains("leader: 1  term: 4  commit index: 812"),
            "{table}"
        );
        assert!(
            table.contains("2*  10.0.0.2:7101  voter   812      0"),
            "{table}"
        );
        assert!(
            table.contains("1   10.0.0.1:7101  leader  -        -"),
            "{table}"
        );
    }
}
