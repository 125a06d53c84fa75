//! Reading manifests named by `-f FILE|DIR|-`: each document with the file and position it
//! came from, so every error can say where.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use api::manifest::{self, MAX_MANIFEST_BYTES};
use serde_json::Value;

/// A source of manifests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A file.
    File(PathBuf),
    /// Standard input (`-f -`).
    Stdin,
    /// Text given in a request, not read from a file (an MCP tool's `manifest` argument): the
    /// name errors give it.
    Text(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Stdin => f.write_str("<stdin>"),
            Source::Text(name) => f.write_str(name),
        }
    }
}

/// One document of one source.
#[derive(Clone, Debug)]
pub struct Document {
    /// Where it came from.
    pub source: Source,
    /// Its position among the non-empty documents of the source, from 1.
    pub index: usize,
    /// The object.
    pub value: Value,
    /// Where its fields are, for errors.
    pub lines: manifest::Lines,
}

impl Document {
    /// `Kind/name` (with namespace when set) as far as the document says.
    pub fn label(&self) -> String {
        let get = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let kind = get(&self.value, "kind").unwrap_or_else(|| "?".into());
        let meta = self.value.get("metadata").cloned().unwrap_or(Value::Null);
        let name = get(&meta, "name").unwrap_or_else(|| "?".into());
        match get(&meta, "namespace") {
            Some(ns) => format!("{kind}/{ns}/{name}"),
            None => format!("{kind}/{name}"),
        }
    }

    /// `file: document N (Kind/name)`: where an error is.
    pub fn place(&self) -> String {
        format!("{}: document {} ({})", self.source, self.index, self.label())
    }

    /// Every problem of the document as a manifest (`api::manifest::check`: unknown fields,
    /// the schema's, the typed validation's), one line each: `file:line: document N
    /// (Kind/name): field: what is wrong`.
    pub fn problems(&self) -> Vec<String> {
        let Err(errors) = manifest::check(&self.value) else { return Vec::new() };
        errors
            .iter()
            .map(|e| {
                let at = match self.lines.of(&e.path) {
                    Some(line) => format!("{}:{line}", self.source),
                    None => self.source.to_string(),
                };
                format!("{at}: document {} ({}): {e}", self.index, self.label())
            })
            .collect()
    }
}

/// A source with its documents, in order.
#[derive(Debug)]
pub struct SourceDocs {
    /// Where the documents came from.
    pub source: Source,
    /// The documents.
    pub docs: Vec<Document>,
}

/// Expands `-f` arguments: files as given, directories recursively (`*.yaml`, `*.yml`,
/// `*.json`, sorted), `-` for standard input.
pub fn expand(args: &[PathBuf]) -> anyhow::Result<Vec<Source>> {
    let mut out = Vec::new();
    for arg in args {
        if arg.as_os_str() == "-" {
            out.push(Source::Stdin);
            continue;
        }
        let meta = std::fs::metadata(arg).with_context(|| format!("cannot read {}", arg.display()))?;
        if meta.is_dir() {
            let before = out.len();
            walk(arg, &mut out)?;
            if out.len() == before {
                bail!("{}: no manifests (*.yaml, *.yml, *.json) in this directory", arg.display());
            }
        } else {
            out.push(Source::File(arg.clone()));
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<Source>) -> anyhow::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read directory {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot read directory {}", dir.display()))?;
    entries.sort();
    for path in entries {
        // Symlinked directories are not followed: no loops, no surprises.
        let meta =
            std::fs::symlink_metadata(&path).with_context(|| format!("cannot read {}", path.display()))?;
        if meta.is_dir() {
            walk(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json") {
            out.push(Source::File(path));
        }
    }
    Ok(())
}

/// Reads and parses one source.
pub fn read(source: &Source) -> anyhow::Result<SourceDocs> {
    let bytes = match source {
        Source::File(p) => crate::fsutil::read_limited(p, MAX_MANIFEST_BYTES as u64)?,
        Source::Stdin => {
            let mut buf = Vec::new();
            std::io::stdin()
                .take(MAX_MANIFEST_BYTES as u64 + 1)
                .read_to_end(&mut buf)
                .context("cannot read standard input")?;
            if buf.len() > MAX_MANIFEST_BYTES {
                bail!("<stdin>: larger than the limit of {MAX_MANIFEST_BYTES} bytes");
            }
            buf
        }
        Source::Text(name) => bail!("{name}: given as text, not a file to read"),
    };
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!("{source}: not UTF-8 text (invalid byte at offset {})", e.utf8_error().valid_up_to())
    })?;
    parse(source, &text)
}

/// Parses `text`, the documents of `source`.
pub fn parse(source: &Source, text: &str) -> anyhow::Result<SourceDocs> {
    let values = manifest::parse_documents(text).map_err(|e| anyhow::anyhow!("{source}: {}", e.located()))?;
    let mut lines = manifest::document_lines(text).into_iter();
    let docs = values
        .into_iter()
        .enumerate()
        .map(|(i, value)| Document {
            source: source.clone(),
            index: i + 1,
            value,
            lines: lines.next().unwrap_or_default(),
        })
        .collect();
    Ok(SourceDocs { source: source.clone(), docs })
}

/// Reads every source; fails with all the read errors if any.
pub fn read_all(sources: &[Source]) -> anyhow::Result<Vec<SourceDocs>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for s in sources {
        match read(s) {
            Ok(d) => out.push(d),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    Ok(out)
}

/// Serializes documents as one multi-document YAML text.
pub fn to_yaml(docs: &[Document]) -> anyhow::Result<String> {
    let mut out = String::new();
    for (i, d) in docs.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&value_to_yaml(&d.value).with_context(|| format!("cannot write {}", d.place()))?);
    }
    Ok(out)
}

/// Serializes one object as YAML (strings a YAML 1.1 reader could misread are quoted).
pub fn value_to_yaml(value: &Value) -> anyhow::Result<String> {
    Ok(serde_saphyr::to_string(value)?)
}
