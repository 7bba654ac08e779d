//! `sluice budgets`: prints each limit's spend from a running gateway's
//! `/budgets` (fetched by `admin_client`) as a table.

/// The report as a table: one row per limit.
pub fn table(report: &serde_json::Value) -> String {
    let mut rows = vec![[
        "BUDGET",
        "TENANT",
        "LIMIT",
        "SPENT",
        "OF",
        "REMAINING",
        "%",
        "RESETS",
    ]
    .map(str::to_owned)];
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    for budget in report["budgets"].as_array().into_iter().flatten() {
        for limit in budget["limits"].as_array().into_iter().flatten() {
            let usd = |v: &serde_json::Value| {
                if limit["metric"] == "cost" {
                    format!("${}", text(v))
                } else {
                    text(v)
                }
            };
            let spent = match limit.get("error") {
                Some(error) => format!("? ({})", text(error)),
                None => usd(&limit["spent"]),
            };
            rows.push([
                text(&budget["name"]),
                text(&budget["tenant"]),
                text(&limit["name"]),
                spent,
                usd(&limit["limit"]),
                usd(&limit["remaining"]),
                text(&limit["percent"]),
                text(&limit["resetsAt"]),
            ]);
        }
    }
    if rows.len() == 1 {
        return "no budgets configured\n".into();
    }
    let widths: Vec<usize> = (0..8)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
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
    fn prints_one_row_per_limit() {
        let report = serde_json::json!({"budgets": [{"name": "team-a", "tenant": "team-a", "limits": [
            {"name": "cost-monthly", "metric": "cost", "limit": "100.000000", "spent": "12.340000", "remaining": "87.660000", "percent": 12, "resetsAt": "2026-12-01T00:00:00Z"},
            {"name": "requests-per-minute", "metric": "requests", "limit": 600, "spent": 3, "remaining": 597, "percent": 0, "resetsAt": "2026-11-26T02:31:00Z"}
        ]}]});
        let table = table(&report);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("BUDGET"));
        assert!(lines[1].contains("$12.340000") && lines[1].contains("$100.000000"));
        assert!(lines[2].contains("597"));
        assert_eq!(
            super::table(&serde_json::json!({"budgets": []})),
            "no budgets configured\n"
        );
    }
}
