//! `ui events`: what happened to objects and why, as `kubectl events` shows it; and the
//! Events section of `ui describe` ([`section`]).

use api::kinds::event::{self, EVENT_KIND};
use chrono::{DateTime, Utc};
use client::blocking::Client;
use serde_json::Value;

use super::{Context, Outcome};
use crate::connection::ClusterArgs;
use crate::objects::{self, kind_named};
use crate::output::OutputArgs;
use crate::table::Table;

/// List events (placements, pulls, starts, probe failures, kills, evictions)
///
/// As `kubectl events`: the events of the namespace (or every namespace with -A), oldest
/// first, or only those about one object with --for KIND/NAME. You see the events about
/// your own objects (and a node's operator those about the node).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The events of every namespace
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Only the events about this object: KIND/NAME (`replica/web-5d8f-0`, `workload/web`)
    #[arg(long = "for", value_name = "KIND/NAME")]
    for_object: Option<String>,
    /// Only events of these types: Normal, Warning
    #[arg(long, value_delimiter = ',', value_name = "TYPES")]
    types: Vec<String>,
    /// After listing, keep watching and print each new or repeated event
    #[arg(short, long)]
    watch: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    output: OutputArgs,
}

fn info() -> &'static api::KindInfo {
    api::kinds::by_kind(EVENT_KIND).expect("Event is a kind")
}

/// When an event last happened: its series' last time, else its own time.
fn last_seen(e: &Value) -> Option<DateTime<Utc>> {
    e.pointer("/series/lastObservedTime")
        .or_else(|| e.get("eventTime"))
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.to_utc())
}

/// Every event in `ns` (all when None) that `fields` selects, page by page, oldest first.
pub fn list(
    client: &Client,
    ns: Option<&str>,
    fields: &str,
) -> Result<Vec<Value>, client::blocking::ClientError> {
    list_at(client, ns, fields).map(|(items, _)| items)
}

/// [`list`], and the `resourceVersion` it was read at (every page is read at the first's).
fn list_at(
    client: &Client,
    ns: Option<&str>,
    fields: &str,
) -> Result<(Vec<Value>, String), client::blocking::ClientError> {
    let mut items = Vec::new();
    let mut token = String::new();
    let mut revision = String::new();
    loop {
        let mut query = vec![("limit", "500")];
        if !fields.is_empty() {
            query.push(("fieldSelector", fields));
        }
        if !token.is_empty() {
            query.push(("continue", token.as_str()));
        }
        let page = client.list_with(info(), ns, &query, false)?;
        if revision.is_empty() {
            revision =
                page.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or_default().into();
        }
        items.extend(page.get("items").and_then(Value::as_array).cloned().unwrap_or_default());
        match page.pointer("/metadata/continue").and_then(Value::as_str).filter(|t| !t.is_empty()) {
            Some(t) => token = t.to_owned(),
            None => break,
        }
    }
    items.sort_by_key(last_seen);
    Ok((items, revision))
}

/// "5s", or "5s (x3 over 2m)" for a series, as kubectl prints LAST SEEN.
fn interval(e: &Value, now: DateTime<Utc>) -> String {
    let since = |t: Option<DateTime<Utc>>| {
        t.map_or_else(|| "<unknown>".to_owned(), |t| objects::human_duration((now - t).num_seconds()))
    };
    let first = e
        .get("eventTime")
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.to_utc());
    match e.pointer("/series/count").and_then(Value::as_i64) {
        Some(n) if n > 1 => format!("{} (x{n} over {})", since(last_seen(e)), since(first)),
        _ => since(first),
    }
}

fn text<'a>(e: &'a Value, pointer: &str) -> &'a str {
    e.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

/// The table of `ui events`: LAST SEEN, TYPE, REASON, OBJECT, MESSAGE (NAMESPACE first with
/// every namespace).
pub fn table(events: &[Value], namespaces: bool, now: DateTime<Utc>) -> Table {
    let mut headers = vec!["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"];
    if namespaces {
        headers.insert(0, "NAMESPACE");
    }
    let rows = events
        .iter()
        .map(|e| {
            let object =
                format!("{}/{}", text(e, "/regarding/kind").to_lowercase(), text(e, "/regarding/name"));
            let mut row = vec![
                interval(e, now),
                text(e, "/type").to_owned(),
                text(e, "/reason").to_owned(),
                object,
                text(e, "/note").trim().to_owned(),
            ];
            if namespaces {
                row.insert(0, text(e, "/metadata/namespace").to_owned());
            }
            row
        })
        .collect();
    Table { headers: headers.into_iter().map(String::from).collect(), rows }
}

/// The field selector of `--for KIND/NAME`.
fn for_selector(what: &str) -> anyhow::Result<String> {
    let (kind, name) = what
        .split_once('/')
        .filter(|(k, n)| !k.is_empty() && !n.is_empty())
        .ok_or_else(|| anyhow::anyhow!("--for {what:?}: write KIND/NAME, e.g. replica/web-5d8f-0"))?;
    let kind = kind_named(kind)?;
    Ok(format!("regarding.kind={},regarding.name={name}", kind.kind))
}

pub fn run(ctx: &Context, args: &Args) -> anyhow::Result<Outcome> {
    let client = crate::connection::connect(ctx, &args.cluster)?;
    let ns = (!args.all_namespaces).then(|| client.namespace().to_owned());
    let mut fields = match &args.for_object {
        Some(what) => for_selector(what)?,
        None => String::new(),
    };
    if let [one] = args.types.as_slice() {
        fields.push_str(&format!("{}type={one}", if fields.is_empty() { "" } else { "," }));
    }
    let wanted = |e: &Value| args.types.is_empty() || args.types.iter().any(|t| t == text(e, "/type"));
    let (events, revision) = list_at(&client, ns.as_deref(), &fields)?;
    let events: Vec<Value> = events.into_iter().filter(wanted).collect();
    let list =
        serde_json::json!({ "apiVersion": event::EVENTS_API_VERSION, "kind": "EventList", "items": events });
    if !args.output.print_structured(&list)? {
        if events.is_empty() && !args.watch {
            match &ns {
                Some(ns) => println!("No events found in {ns} namespace."),
                None => println!("No events found."),
            }
        } else {
            print!("{}", table(&events, ns.is_none(), Utc::now()).render());
        }
    }
    if args.watch {
        follow(&client, ns.as_deref(), &fields, &revision, &args.output, &wanted, ns.is_none())?;
    }
    Ok(Outcome::Success)
}

/// Prints each event added or changed after `revision` (the list's: nothing twice) (`-w`),
/// until the server ends the watch.
#[allow(clippy::too_many_arguments)]
fn follow(
    client: &Client,
    ns: Option<&str>,
    fields: &str,
    revision: &str,
    output: &OutputArgs,
    wanted: &dyn Fn(&Value) -> bool,
    namespaces: bool,
) -> anyhow::Result<()> {
    let mut query = vec![("watch", "1"), ("resourceVersion", revision)];
    if !fields.is_empty() {
        query.push(("fieldSelector", fields));
    }
    let mut stream = client.watch_with(info(), ns, &query)?;
    while let Some((kind, e)) = stream.next_event()? {
        match kind.as_str() {
            "ADDED" | "MODIFIED" if wanted(&e) => print_one(output, &e, namespaces)?,
            "ERROR" => {
                let msg = e.get("message").and_then(Value::as_str).unwrap_or("no message");
                anyhow::bail!("the watch failed: {msg}");
            }
            _ => {}
        }
    }
    Ok(())
}

/// Prints one event followed with `-w`: its row (the header was printed with the list), or
/// the object with `-o json|yaml`.
fn print_one(output: &OutputArgs, e: &Value, namespaces: bool) -> anyhow::Result<()> {
    if !output.print_structured(e)? {
        let t = table(std::slice::from_ref(e), namespaces, Utc::now());
        print!("{}", t.render().lines().skip(1).map(|l| format!("{l}\n")).collect::<String>());
    }
    Ok(())
}

/// The Events section of `ui describe` for `obj`: the events about it (by uid), oldest first,
/// as TYPE, REASON, AGE, FROM, MESSAGE; `<none>` without any. A listing that fails says so
/// and leaves the rest of the description alone.
pub fn section(client: &Client, obj: &Value) -> String {
    let Some(uid) = objects::meta_str(obj, "uid") else { return String::new() };
    // A cluster-scoped object's events are in `default` (as Kubernetes).
    let ns = objects::meta_str(obj, "namespace").unwrap_or("default");
    let events = match list(client, Some(ns), &format!("regarding.uid={uid}")) {
        Ok(events) => events,
        Err(e) => return format!("Events:       <cannot be listed: {e}>\n"),
    };
    if events.is_empty() {
        return "Events:       <none>\n".to_owned();
    }
    let now = Utc::now();
    let rows = events
        .iter()
        .map(|e| {
            vec![
                text(e, "/type").to_owned(),
                text(e, "/reason").to_owned(),
                interval(e, now),
                text(e, "/reportingController").to_owned(),
                text(e, "/note").trim().to_owned(),
            ]
        })
        .collect();
    let t = Table { headers: ["TYPE", "REASON", "AGE", "FROM", "MESSAGE"].map(String::from).to_vec(), rows };
    let mut out = "Events:\n".to_owned();
    for l in t.render().lines() {
        out.push_str(&format!("  {l}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_series_reads_as_kubectl_prints_it() {
        let now = DateTime::parse_from_rfc3339("2026-01-02T03:10:00Z").unwrap().to_utc();
        let one = json!({ "eventTime": "2026-01-02T03:09:50.000000Z", "type": "Normal", "reason": "Started",
            "regarding": { "kind": "Replica", "name": "w-1" }, "note": "started", "metadata": { "namespace": "d" } });
        let mut many = one.clone();
        many["series"] = json!({ "count": 3, "lastObservedTime": "2026-01-02T03:09:55.000000Z" });
        assert_eq!(interval(&one, now), "10s");
        assert_eq!(interval(&many, now), "5s (x3 over 10s)");
        let t = table(&[one], true, now);
        assert_eq!(t.headers[0], "NAMESPACE");
        assert_eq!(t.rows[0], ["d", "10s", "Normal", "Started", "replica/w-1", "started"]);
        assert_eq!(for_selector("replica/w-1").unwrap(), "regarding.kind=Replica,regarding.name=w-1");
        assert!(for_selector("w-1").is_err());
    }
}
