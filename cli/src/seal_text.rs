//! Rewriting one env value of a manifest in its text, for `ui seal`: the `value:` (or
//! `sealed:`) entry of one env variable is replaced by a `sealed: |` block, every other line
//! (comments, order, quoting, blank lines) stays as written, so a Git diff shows exactly the
//! values that changed. The result is parsed again and must be the object expected, or the
//! rewrite is refused.

use anyhow::{Context as _, bail};
use serde_json::Value;

/// One replacement: the env variable `index` of the Workload that is document `doc` (0-based
/// among the non-empty documents) gets `sealed`, losing its `value`.
#[derive(Clone, Debug)]
pub struct Replace {
    /// Which document.
    pub doc: usize,
    /// Which env variable (its index in `spec.env`).
    pub index: usize,
    /// The armored age file.
    pub sealed: String,
}

/// The indentation of a line (spaces).
fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// `text` with every replacement made. Refused (with why) when the entry cannot be found as a
/// block mapping entry or the result is not the object expected.
pub fn rewrite(text: &str, replacements: &[Replace]) -> anyhow::Result<String> {
    let values = api::manifest::parse_documents(text).map_err(|e| anyhow::anyhow!("{}", e.located()))?;
    let lines_of = api::manifest::document_lines(text);
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    let mut expected = values.clone();
    // From the bottom up, so the line numbers of the ones above stay right.
    let mut todo: Vec<(usize, &Replace)> = Vec::new();
    for r in replacements {
        let located = lines_of.get(r.doc).context("no such document")?;
        let var = format!("spec.env[{}]", r.index);
        let field = ["value", "sealed"]
            .into_iter()
            .find(|f| values[r.doc].pointer(&format!("/spec/env/{}/{f}", r.index)).is_some())
            .with_context(|| format!("{var} has neither value nor sealed"))?;
        let line = located
            .of(&format!("{var}.{field}"))
            .with_context(|| format!("cannot find {var}.{field} in the text"))?;
        todo.push((line, r));
        let env = expected[r.doc]
            .pointer_mut(&format!("/spec/env/{}", r.index))
            .and_then(Value::as_object_mut)
            .context("no such env variable")?;
        env.remove("value");
        env.insert("sealed".into(), Value::String(block_value(&r.sealed)));
    }
    todo.sort_by_key(|t| std::cmp::Reverse(t.0));
    for (line, r) in todo {
        replace_entry(&mut lines, line, &r.sealed)
            .with_context(|| format!("document {}: spec.env[{}] (line {line})", r.doc + 1, r.index))?;
    }
    let out = lines.join("\n");
    let again = api::manifest::parse_documents(&out).map_err(|e| anyhow::anyhow!("{}", e.located()))?;
    if again != expected {
        bail!(
            "the rewritten text does not read back as the sealed manifest (an env entry written in a form ui seal does not rewrite: use a block mapping, `- name: X` then `value: Y` on its own line); nothing was written"
        );
    }
    Ok(out)
}

/// What a `|` block of `sealed` reads back as: its lines and one final newline.
fn block_value(sealed: &str) -> String {
    format!("{}\n", sealed.trim_end())
}

/// Replaces the `value:`/`sealed:` entry whose value is on 1-based line `at` (the key's line,
/// or for a block scalar the line after it) with a `sealed: |` block.
fn replace_entry(lines: &mut Vec<String>, at: usize, sealed: &str) -> anyhow::Result<()> {
    let is_key = |l: &str| {
        let t = l.trim_start().trim_start_matches("- ");
        t.starts_with("value:") || t.starts_with("sealed:")
    };
    // The key's line: the value's own, or the nearest above it.
    let mut key = at.checked_sub(1).context("no line 0")?;
    while !is_key(&lines[key]) {
        if key == 0 || at - key > 1 {
            bail!("no `value:` or `sealed:` key found near the value");
        }
        key -= 1;
    }
    let line = &lines[key];
    let dash = line.trim_start().starts_with("- ");
    let col = indent(line) + if dash { 2 } else { 0 };
    // Its value runs on over the lines indented deeper (blank lines between them included).
    let mut end = key + 1;
    let mut last = key;
    while end < lines.len() {
        let l = &lines[end];
        if l.trim().is_empty() {
            end += 1;
            continue;
        }
        if indent(l) <= col || l.starts_with("---") || l.starts_with("...") {
            break;
        }
        last = end;
        end += 1;
    }
    let lead = &line[..indent(line)];
    let mut block = vec![format!("{lead}{}sealed: |", if dash { "- " } else { "" })];
    let pad = " ".repeat(col + 2);
    block.extend(sealed.trim_end().lines().map(|l| format!("{pad}{l}")));
    lines.splice(key..=last, block);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARMOR: &str = "-----BEGIN AGE ENCRYPTED FILE-----\nYWdl\n-----END AGE ENCRYPTED FILE-----\n";

    #[test]
    fn only_the_value_changes_and_comments_stay() {
        let text = "\
# my app
apiVersion: univrs.io/v1
kind: Workload
metadata:
  name: web   # the name
spec:
  image: busybox
  env:
    - name: PLAIN
      value: \"hello\"  # stays
    - name: TOKEN
      secret: true
      value: 'hunter2'
    # between
    - value: |
        multi
        line
      name: KEY
  replicas: 2
";
        let out = rewrite(
            text,
            &[
                Replace { doc: 0, index: 1, sealed: ARMOR.into() },
                Replace { doc: 0, index: 2, sealed: ARMOR.into() },
            ],
        )
        .unwrap();
        assert!(out.contains("# my app\n") && out.contains("name: web   # the name"), "{out}");
        assert!(out.contains("      value: \"hello\"  # stays\n"), "{out}");
        assert!(out.contains("    # between\n"), "{out}");
        assert!(!out.contains("hunter2") && !out.contains("multi"), "{out}");
        assert!(out.contains(
            "      secret: true\n      sealed: |\n        -----BEGIN AGE ENCRYPTED FILE-----\n        YWdl\n"
        ), "{out}");
        assert!(out.contains("    - sealed: |\n        -----BEGIN AGE"), "{out}");
        assert!(out.ends_with("      name: KEY\n  replicas: 2\n"), "{out}");
        // Sealing again (a refresh) replaces the sealed block in place.
        let again =
            rewrite(&out, &[Replace { doc: 0, index: 1, sealed: ARMOR.replace("YWdl", "Zm9v") }]).unwrap();
        let changed: Vec<_> = out.lines().zip(again.lines()).filter(|(a, b)| a != b).collect();
        assert_eq!(changed, [("        YWdl", "        Zm9v")]);
    }

    #[test]
    fn the_right_document_of_several_and_flow_forms_are_refused() {
        let text = "kind: Workload\nmetadata: {name: a}\nspec:\n  env:\n  - name: X\n    value: one\n---\nkind: Workload\nmetadata: {name: b}\nspec:\n  env:\n  - name: X\n    value: two\n";
        let out = rewrite(text, &[Replace { doc: 1, index: 0, sealed: ARMOR.into() }]).unwrap();
        assert!(out.contains("value: one") && !out.contains("value: two"), "{out}");
        let flow = "kind: Workload\nmetadata: {name: a}\nspec:\n  env: [{name: X, value: one}]\n";
        assert!(rewrite(flow, &[Replace { doc: 0, index: 0, sealed: ARMOR.into() }]).is_err());
    }
}
