//! Tables as kubectl prints them: from the server's `meta.k8s.io/v1` `Table` when it sends
//! one, else NAME and AGE computed from the objects.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::objects;

/// Rows under uppercase headers.
#[derive(Debug, Default)]
pub struct Table {
    /// Column headers, uppercase.
    pub headers: Vec<String>,
    /// Cells, one Vec per row, as many as headers.
    pub rows: Vec<Vec<String>>,
}

/// Whether `v` is a `meta.k8s.io` Table.
pub fn is_table(v: &Value) -> bool {
    v.get("kind").and_then(Value::as_str) == Some("Table")
}

/// What a value is about: the object of the first row of a Table (a watch event's Table has
/// one row), or the value itself.
pub fn subject(v: &Value) -> &Value {
    if is_table(v)
        && let Some(obj) = v.pointer("/rows/0/object")
    {
        return obj;
    }
    v
}

/// The objects of a list, or the one object.
pub fn items(v: &Value) -> Vec<&Value> {
    match v.get("items").and_then(Value::as_array) {
        Some(items) => items.iter().collect(),
        None => vec![v],
    }
}

impl Table {
    /// The table of a server answer: a Table (priority-1 columns only when `wide`), or a list
    /// or object shown as NAME and AGE. `namespaces` adds a NAMESPACE column first.
    pub fn of(answer: &Value, wide: bool, namespaces: bool, now: DateTime<Utc>) -> Self {
        if is_table(answer) {
            Self::of_server_table(answer, wide, namespaces)
        } else {
            let mut t = Self::fallback_headers(namespaces);
            for obj in items(answer) {
                t.rows.push(Self::fallback_row(obj, namespaces, now));
            }
            t
        }
    }

    /// NAME and AGE (after NAMESPACE).
    pub fn fallback_headers(namespaces: bool) -> Self {
        let mut headers = vec!["NAME".to_owned(), "AGE".to_owned()];
        if namespaces {
            headers.insert(0, "NAMESPACE".into());
        }
        Self { headers, rows: Vec::new() }
    }

    /// The NAME and AGE row of one object.
    pub fn fallback_row(obj: &Value, namespaces: bool, now: DateTime<Utc>) -> Vec<String> {
        let mut row = vec![objects::name_of(obj).to_owned(), objects::age(obj, now)];
        if namespaces {
            row.insert(0, objects::meta_str(obj, "namespace").unwrap_or_default().to_owned());
        }
        row
    }

    fn of_server_table(t: &Value, wide: bool, namespaces: bool) -> Self {
        let columns: Vec<&Value> = t
            .get("columnDefinitions")
            .and_then(Value::as_array)
            .map(|c| c.iter().collect())
            .unwrap_or_default();
        let shown: Vec<usize> = columns
            .iter()
            .enumerate()
            .filter(|(_, c)| wide || c.get("priority").and_then(Value::as_i64).unwrap_or(0) == 0)
            .map(|(i, _)| i)
            .collect();
        let mut headers: Vec<String> = shown
            .iter()
            .map(|&i| columns[i].get("name").and_then(Value::as_str).unwrap_or_default().to_uppercase())
            .collect();
        if namespaces {
            headers.insert(0, "NAMESPACE".into());
        }
        let mut rows = Vec::new();
        for row in t.get("rows").and_then(Value::as_array).into_iter().flatten() {
            let cells = row.get("cells").and_then(Value::as_array).cloned().unwrap_or_default();
            let mut out: Vec<String> = shown.iter().map(|&i| cell(cells.get(i))).collect();
            if namespaces {
                let ns = row.get("object").map(|o| objects::meta_str(o, "namespace").unwrap_or_default());
                out.insert(0, ns.unwrap_or_default().to_owned());
            }
            rows.push(out);
        }
        Self { headers, rows }
    }

    /// The widths of the columns: the widest cell or header of each.
    pub fn widths(&self) -> Vec<usize> {
        let mut w: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, c) in row.iter().enumerate() {
                if i < w.len() {
                    w[i] = w[i].max(c.chars().count());
                }
            }
        }
        w
    }

    /// The header line and the rows, aligned with three spaces between columns.
    pub fn render(&self) -> String {
        let widths = self.widths();
        let mut out = format_row(&self.headers, &widths);
        for r in &self.rows {
            out.push_str(&format_row(r, &widths));
        }
        out
    }
}

/// One line: every cell but the last padded to its column's width.
pub fn format_row(cells: &[String], widths: &[usize]) -> String {
    let mut line = String::new();
    for (i, c) in cells.iter().enumerate() {
        if i + 1 == cells.len() {
            line.push_str(c);
        } else {
            let w = widths.get(i).copied().unwrap_or(0);
            line.push_str(&format!("{c:<w$}   "));
        }
    }
    line.push('\n');
    line
}

fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "<none>".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_server_table_shows_priority_one_columns_only_when_wide() {
        let t = json!({
            "kind": "Table", "apiVersion": "meta.k8s.io/v1",
            "columnDefinitions": [
                {"name": "Name", "type": "string", "priority": 0},
                {"name": "Replicas", "type": "integer", "priority": 0},
                {"name": "Trust Policy", "type": "string", "priority": 1},
            ],
            "rows": [{"cells": ["hello", 2, "eu-only"], "object": {"metadata": {"name": "hello", "namespace": "default"}}}],
        });
        let now = Utc::now();
        assert_eq!(Table::of(&t, false, false, now).render(), "NAME    REPLICAS\nhello   2\n");
        assert_eq!(
            Table::of(&t, true, true, now).render(),
            "NAMESPACE   NAME    REPLICAS   TRUST POLICY\ndefault     hello   2          eu-only\n"
        );
    }

    #[test]
    fn a_watch_event_table_stands_for_its_row_object() {
        let t = json!({"kind": "Table", "rows": [{"cells": ["a"], "object": {"metadata": {"name": "a"}}}]});
        assert_eq!(subject(&t)["metadata"]["name"], "a");
        let obj = json!({"kind": "Workload", "metadata": {"name": "b"}});
        assert_eq!(subject(&obj), &obj);
    }

    #[test]
    fn without_a_table_objects_show_name_and_age() {
        let list = json!({"kind": "WorkloadList", "items": [
            {"metadata": {"name": "hello", "creationTimestamp": "2026-01-01T00:00:00Z"}},
        ]});
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:45Z").unwrap().with_timezone(&Utc);
        assert_eq!(Table::of(&list, false, false, now).render(), "NAME    AGE\nhello   45s\n");
    }
}
