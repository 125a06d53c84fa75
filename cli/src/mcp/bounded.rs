//! Outputs an agent can afford: compact, cut at a bound, and saying so (and how to get the
//! rest) when cut.

use chrono::Utc;
use serde_json::Value;

use crate::table::Table;

/// The most text a tool answers with.
pub const MAX_TEXT: usize = 24 * 1024;
/// Rows per list page unless asked otherwise.
pub const DEFAULT_PAGE: usize = 50;
/// The most rows per list page.
pub const MAX_PAGE: usize = 500;

/// `text`, or its first `limit` bytes (at a line end where possible) and a last line saying
/// how much was left out and `how` to get it.
pub fn cut(text: String, limit: usize, how: &str) -> String {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    if let Some(nl) = text[..end].rfind('\n') {
        end = nl + 1;
    }
    let mut out = text[..end].to_owned();
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&format!("[cut: showing {end} of {} bytes; {how}]\n", text.len()));
    out
}

/// An object as compact YAML: without `managedFields` (bookkeeping an agent never needs),
/// cut at [`MAX_TEXT`].
pub fn object_yaml(obj: &Value) -> anyhow::Result<String> {
    let mut obj = obj.clone();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    let how = "the rest is in the object: `get` it with format json, or `list` with selectors";
    Ok(cut(crate::objects::to_yaml(&obj)?, MAX_TEXT, how))
}

/// A list answer (a Table, or a List) as aligned columns, with the page's `continue` token
/// and how many are left, when the server says.
pub fn table(answer: &Value, show_ns: bool, how_more: &str) -> String {
    let t = Table::of(answer, false, show_ns, Utc::now());
    let rows = t.rows.len();
    let mut out = if rows == 0 { "no objects\n".to_owned() } else { t.render() };
    let token = answer.pointer("/metadata/continue").and_then(Value::as_str).filter(|t| !t.is_empty());
    if let Some(token) = token {
        let left = answer
            .pointer("/metadata/remainingItemCount")
            .and_then(Value::as_i64)
            .map(|n| format!("{n} more"))
            .unwrap_or_else(|| "more".into());
        out.push_str(&format!("[{rows} shown, {left}; continue: {token} — {how_more}]\n"));
    }
    cut(out, MAX_TEXT, "ask for a smaller `limit`, or narrow with a selector")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_text_says_how_much_is_left_and_how_to_get_it() {
        let text = "line one\nline two\nline three\n".to_owned();
        assert_eq!(cut(text.clone(), 100, "x"), text);
        let short = cut(text, 14, "ask again");
        assert!(short.starts_with("line one\n["), "{short}");
        assert!(short.contains("showing 9 of 29 bytes; ask again"), "{short}");
    }
}
