//! `ui get`: list objects, or show some by name, as a table, YAML, JSON or names; `-w`
//! then prints every change.

use anyhow::bail;
use api::{KindInfo, Scope};
use chrono::Utc;
use serde_json::{Value, json};

use super::{Context, Outcome};
use crate::connection::{Client, ClusterArgs};
use crate::objects::{self, kind_named};
use crate::table::{self, Table, format_row};

/// How `ui get` prints objects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Columns, as the server's table defines them (else NAME and AGE).
    #[default]
    Table,
    /// The table with its extra columns.
    Wide,
    /// JSON: the object, or a `List` of them.
    Json,
    /// YAML: the object, or a `List` of them.
    Yaml,
    /// `singular.group/name`, one per line.
    Name,
}

/// Show objects: a table by default, or YAML, JSON or names
///
/// KIND is a kind as kubectl names it: plural (workloads), singular (workload), short name
/// (wl) or the kind itself (Workload); several, comma-separated (`wl,tp`); or a category, as
/// discovery publishes them for kubectl: `all` (workloads and replicas, as kubectl's `all` is
/// pods and their controllers) or `univrs` (every kind). Without NAME, lists the
/// objects of the namespace (or, with -A, of all namespaces). With -w, keeps printing each
/// change after the first output, until interrupted.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The kind: plural, singular or short name (`workloads`, `workload`, `wl`); several,
    /// comma-separated (`wl,tp`); or a category (`all`, `univrs`)
    kind: String,
    /// Names of objects to show [default: all]
    names: Vec<String>,
    /// Output format
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    output: Format,
    /// Keep watching and print every change after the first output
    #[arg(short = 'w', long)]
    watch: bool,
    /// Only objects whose labels match, e.g. `app=hello` or `tier in (web,db),!canary`
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    selector: Option<String>,
    /// List across all namespaces (adds a NAMESPACE column)
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// The kinds `ui get` is asked for: one, several (`wl,tp`) or a category, each once, in order.
fn kinds_named(arg: &str) -> anyhow::Result<Vec<&'static KindInfo>> {
    let mut out: Vec<&'static KindInfo> = Vec::new();
    for name in arg.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        // A category (`all`, `univrs`), as kubectl expands it from discovery.
        let mut named: Vec<&'static KindInfo> = api::kinds::in_category(name).collect();
        if named.is_empty() {
            named.push(kind_named(name)?);
        }
        for k in named {
            if !out.iter().any(|o| o.kind == k.kind) {
                out.push(k);
            }
        }
    }
    if out.is_empty() {
        bail!("no kind given: name one (`ui get workloads`), several (`wl,tp`) or `all`");
    }
    Ok(out)
}

pub fn run(ctx: &Context, args: &Args) -> anyhow::Result<Outcome> {
    let kinds = kinds_named(&args.kind)?;
    let client = crate::connection::connect(ctx, &args.cluster)?;
    if kinds.len() > 1 {
        return get_several(&client, &kinds, args);
    }
    let kind = kinds[0];
    if args.all_namespaces && !args.names.is_empty() {
        bail!("a name cannot be given with -A: objects are named within a namespace (use -n NAMESPACE)");
    }
    let ns = match kind.scope {
        Scope::Namespaced if !args.all_namespaces => Some(client.namespace().to_owned()),
        _ => None,
    };
    let show_ns = args.all_namespaces && kind.scope == Scope::Namespaced;
    let tabular = matches!(args.output, Format::Table | Format::Wide);

    // The first output: by name (each one, errors after), or the list.
    let mut failed = false;
    let (answer, list_rv) = if args.names.is_empty() {
        let list = client.list(kind, ns.as_deref(), args.selector.as_deref(), tabular)?;
        let rv = list.pointer("/metadata/resourceVersion").and_then(Value::as_str).map(str::to_owned);
        (list, rv)
    } else {
        let mut found = Vec::new();
        for name in &args.names {
            let got = if tabular {
                client.get_table(kind, ns.as_deref(), name)
            } else {
                client.get(kind, ns.as_deref(), name)
            };
            match got {
                Ok(v) => found.push(v),
                Err(e) => {
                    eprintln!("{e}");
                    failed = true;
                }
            }
        }
        (merge(found, tabular), None)
    };

    let mut printer = Printer::new(args.output, show_ns);
    let empty = printer.first(&answer, args.names.len() == 1)?;
    if empty && args.names.is_empty() && tabular && !args.watch {
        match &ns {
            Some(ns) => eprintln!("No resources found in {ns} namespace."),
            None => eprintln!("No resources found"),
        }
    }

    if args.watch {
        let rv = match list_rv {
            Some(rv) => rv,
            None => list_version(&client, kind, ns.as_deref(), args.selector.as_deref())?,
        };
        watch(&client, kind, ns.as_deref(), args, rv, &mut printer)?;
    }
    Ok(if failed { Outcome::Failure } else { Outcome::Success })
}

/// `ui get` of several kinds: each kind's list in turn (tables one after another, names as
/// `kind.group/name`), or one List of them all for JSON and YAML.
fn get_several(client: &Client, kinds: &[&'static KindInfo], args: &Args) -> anyhow::Result<Outcome> {
    if !args.names.is_empty() {
        bail!(
            "names cannot be given with several kinds: ask for one kind (`ui get {} NAME`)",
            kinds[0].singular
        );
    }
    if args.watch {
        bail!("-w watches one kind: run `ui get KIND -w` for each");
    }
    let tabular = matches!(args.output, Format::Table | Format::Wide);
    let mut all = Vec::new();
    let mut printed = 0;
    for kind in kinds {
        let show_ns = args.all_namespaces && kind.scope == Scope::Namespaced;
        let ns = match kind.scope {
            Scope::Namespaced if !args.all_namespaces => Some(client.namespace().to_owned()),
            _ => None,
        };
        let list = client.list(kind, ns.as_deref(), args.selector.as_deref(), tabular)?;
        if !tabular {
            all.extend(table::items(&list).into_iter().cloned());
            continue;
        }
        let mut t = Table::of(&list, args.output == Format::Wide, show_ns, Utc::now());
        if t.rows.is_empty() {
            continue;
        }
        // As kubectl: with several kinds, each name says its kind.
        if let Some(i) = t.headers.iter().position(|h| h == "NAME") {
            for row in &mut t.rows {
                row[i] = objects::reference(kind, &row[i]);
            }
        }
        if printed > 0 {
            println!();
        }
        print!("{}", t.render());
        printed += 1;
    }
    match args.output {
        Format::Table | Format::Wide if printed == 0 => eprintln!("No resources found"),
        Format::Table | Format::Wide => {}
        _ => Printer::new(args.output, false).first(&list_of(all), false).map(drop)?,
    }
    Ok(Outcome::Success)
}

/// Several answers by name as one: the rows of several Tables, or a List of objects.
fn merge(mut found: Vec<Value>, tabular: bool) -> Value {
    if found.len() == 1 {
        return found.remove(0);
    }
    if tabular && found.first().is_some_and(table::is_table) {
        let mut t = found[0].clone();
        let rows: Vec<Value> = found
            .iter()
            .flat_map(|f| f.get("rows").and_then(Value::as_array).cloned().unwrap_or_default())
            .collect();
        t["rows"] = Value::Array(rows);
        return t;
    }
    list_of(found)
}

fn list_of(items: Vec<Value>) -> Value {
    json!({ "apiVersion": "v1", "kind": "List", "metadata": { "resourceVersion": "" }, "items": items })
}

fn list_version(
    client: &Client,
    kind: &KindInfo,
    ns: Option<&str>,
    selector: Option<&str>,
) -> anyhow::Result<String> {
    let list = client.list(kind, ns, selector, false)?;
    Ok(list.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or("0").to_owned())
}

/// Watches from `rv`, printing each change; re-watches from the last version seen when the
/// server ends the stream, and lists again when that version has expired (410).
fn watch(
    client: &Client,
    kind: &KindInfo,
    ns: Option<&str>,
    args: &Args,
    mut rv: String,
    printer: &mut Printer,
) -> anyhow::Result<()> {
    loop {
        let tabular = matches!(args.output, Format::Table | Format::Wide);
        let mut stream = client.watch(kind, ns, args.selector.as_deref(), &rv, tabular)?;
        let mut events = 0;
        while let Some((event, object)) = stream.next_event()? {
            events += 1;
            match event.as_str() {
                "ERROR" => {
                    if object.get("code").and_then(Value::as_u64) == Some(410) {
                        rv = list_version(client, kind, ns, args.selector.as_deref())?;
                        break;
                    }
                    let msg = object.get("message").and_then(Value::as_str).unwrap_or("no message");
                    bail!("the watch failed: {msg}");
                }
                "BOOKMARK" => {}
                _ => {
                    let name = objects::name_of(table::subject(&object));
                    if args.names.is_empty() || args.names.iter().any(|n| n == name) {
                        printer.event(client, kind, &object)?;
                    }
                }
            }
            if let Some(v) = objects::meta_str(table::subject(&object), "resourceVersion")
                .or_else(|| objects::meta_str(&object, "resourceVersion"))
            {
                rv = v.to_owned();
            }
        }
        if events == 0 {
            // A server that ends every watch at once must not be asked again in a busy loop.
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
}

/// Prints the first answer and then each watch event in one format.
struct Printer {
    format: Format,
    namespaces: bool,
    widths: Vec<usize>,
    /// The `columnDefinitions` of the server's first Table, if it sent one: later Tables (in
    /// watch events) may leave them out.
    columns: Option<Value>,
}

impl Printer {
    fn new(format: Format, namespaces: bool) -> Self {
        Self { format, namespaces, widths: Vec::new(), columns: None }
    }

    /// Prints the first answer; returns whether it had no objects.
    fn first(&mut self, answer: &Value, single: bool) -> anyhow::Result<bool> {
        let items = if table::is_table(answer) {
            answer.get("rows").and_then(Value::as_array).map_or(0, Vec::len)
        } else {
            table::items(answer).len()
        };
        match self.format {
            Format::Table | Format::Wide => {
                self.columns = answer.get("columnDefinitions").filter(|_| table::is_table(answer)).cloned();
                let t = Table::of(answer, self.format == Format::Wide, self.namespaces, Utc::now());
                if !t.rows.is_empty() {
                    self.widths = t.widths();
                    print!("{}", t.render());
                }
            }
            Format::Json | Format::Yaml => {
                let out = if single || answer.get("items").is_none() {
                    answer.clone()
                } else {
                    list_of(table::items(answer).into_iter().cloned().collect())
                };
                self.structured(&out)?;
            }
            Format::Name => {
                for obj in table::items(answer) {
                    self.name(obj);
                }
            }
        }
        Ok(items == 0)
    }

    fn structured(&self, v: &Value) -> anyhow::Result<()> {
        match self.format {
            Format::Json => println!("{}", serde_json::to_string_pretty(v)?),
            _ => print!("{}", objects::to_yaml(v)?),
        }
        Ok(())
    }

    fn name(&self, obj: &Value) {
        let kind = obj.get("kind").and_then(Value::as_str).and_then(api::kinds::by_kind);
        if let Some(kind) = kind {
            println!("{}", objects::reference(kind, objects::name_of(obj)));
        }
    }

    /// Prints one watch event's object.
    fn event(&mut self, client: &Client, kind: &KindInfo, obj: &Value) -> anyhow::Result<()> {
        match self.format {
            Format::Table | Format::Wide => {
                let wide = self.format == Format::Wide;
                let mut row_source = obj.clone();
                match &self.columns {
                    // As Kubernetes, a watch event's Table may omit the column definitions.
                    Some(columns) if table::is_table(obj) => {
                        let defined = obj.get("columnDefinitions").and_then(Value::as_array);
                        if defined.is_none_or(Vec::is_empty) {
                            row_source["columnDefinitions"] = columns.clone();
                        }
                    }
                    // A server that sent a Table for the list but plain objects in the watch:
                    // ask for the object's row, so the columns stay those of the header.
                    Some(_) => {
                        let ns = objects::meta_str(obj, "namespace");
                        if let Ok(t) = client.get_table(kind, ns, objects::name_of(obj)) {
                            row_source = t;
                        }
                    }
                    None => {}
                }
                let t = Table::of(&row_source, wide, self.namespaces, Utc::now());
                if self.widths.is_empty() {
                    self.widths = t.widths();
                    print!("{}", format_row(&t.headers, &self.widths));
                }
                for row in &t.rows {
                    print!("{}", format_row(row, &self.widths));
                }
            }
            Format::Json => println!("{}", serde_json::to_string_pretty(obj)?),
            Format::Yaml => print!("---\n{}", objects::to_yaml(obj)?),
            Format::Name => self.name(obj),
        }
        use std::io::Write;
        std::io::stdout().flush()?;
        Ok(())
    }
}
