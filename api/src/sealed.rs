//! Sealed values: one env value of a Workload, encrypted with age on its owner's machine to the
//! nodes its TrustPolicy admits and to the owner's own recovery recipient (`ui seal`), opened
//! by a node agent when it starts a replica.
//!
//! The envelope is one ASCII-armored age file per value (so Git diffs and merges stay per
//! value; no file-level MAC). Its plaintext binds the value to where it may be used:
//!
//! ```text
//! univrs.io/sealed/v1
//! namespace: NS
//! workload: NAME
//! owner: did:key:z6Mk…
//! recipients: age1…,age1…
//!
//! VALUE
//! ```
//!
//! Age recipients are public, so anyone can seal *to* a node; what makes a sealed value the
//! owner's is the binding, checked by the node after decrypting: namespace and workload name,
//! and the did of the workload's signer (a stranger who copies the ciphertext into a workload
//! of their own with the same namespace and name — a name freed by a deletion, or taken first
//! — signs it with another key, so the node refuses to open it for them). `recipients`, inside
//! the encryption, lets `ui seal --refresh` tell whether a value is already sealed to the
//! current set of nodes without re-encrypting it (age does not reveal an X25519 stanza's
//! recipient). Pure: no I/O, no clock.

use std::collections::BTreeSet;
use std::io::{Read, Write};

use age::armor::{ArmoredReader, ArmoredWriter, Format};
use zeroize::Zeroizing;

/// The first line of every sealed value's plaintext.
pub const HEADER: &str = "univrs.io/sealed/v1";
/// How an armored age file starts.
pub const ARMOR_BEGIN: &str = "-----BEGIN AGE ENCRYPTED FILE-----";
/// Largest sealed value (armored) opened.
pub const MAX_SEALED: usize = 256 * 1024;
/// Largest plaintext opened.
const MAX_PLAIN: u64 = 128 * 1024;

/// The `reason` of a Replica whose node could not open a sealed value (no key for it, a key it
/// was not sealed to, or a corrupt envelope): the replica is not started, and the workload's
/// next replica is placed on another node (the scheduler avoids this one for the template).
pub const NOT_OPENED_REASON: &str = "SealedSecretNotOpened";
/// The `reason` of a Replica whose sealed value opened but was sealed for another workload (or
/// another owner): no node could run it, so it is not placed again.
pub const MISMATCH_REASON: &str = "SealedSecretMismatch";

/// Where a sealed value may be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The workload's namespace.
    pub namespace: String,
    /// The workload's name.
    pub workload: String,
    /// The did:key of the workload's signer (its owner).
    pub owner: String,
}

impl std::fmt::Display for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "workload {}/{} of {}", self.namespace, self.workload, self.owner)
    }
}

/// A sealed value, opened.
pub struct Opened {
    /// What it is bound to.
    pub binding: Binding,
    /// The recipients it was sealed to (age1…, sorted).
    pub recipients: BTreeSet<String>,
    /// The value.
    pub value: Zeroizing<String>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("binding", &self.binding)
            .field("recipients", &self.recipients)
            .finish_non_exhaustive()
    }
}

/// Why a sealed value did not open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    /// Not sealed to any key given (or no key given).
    #[error(
        "not sealed to this key: it was sealed to other recipients (re-seal it with `ui seal --refresh`)"
    )]
    NotForThisKey,
    /// Not an age file, or damaged.
    #[error("not a valid sealed value: {0}")]
    Corrupt(String),
    /// Opened, but bound to another workload or owner.
    #[error("sealed for {sealed_for}, not for {here}: seal the value for this workload with `ui seal`")]
    Mismatch {
        /// What the value is bound to.
        sealed_for: Box<Binding>,
        /// Where it was found.
        here: Box<Binding>,
    },
}

/// Seals `value` for `binding` to `recipients` (at least one): an armored age file.
pub fn seal(value: &str, binding: &Binding, recipients: &[age::x25519::Recipient]) -> Result<String, String> {
    if recipients.is_empty() {
        return Err("no recipients to seal to".to_owned());
    }
    for (what, s) in
        [("namespace", &binding.namespace), ("workload", &binding.workload), ("owner", &binding.owner)]
    {
        if s.is_empty() || s.contains(['\n', '\r']) {
            return Err(format!("{what} {s:?} cannot be bound"));
        }
    }
    let names: BTreeSet<String> = recipients.iter().map(ToString::to_string).collect();
    let plain = Zeroizing::new(format!(
        "{HEADER}\nnamespace: {}\nworkload: {}\nowner: {}\nrecipients: {}\n\n{value}",
        binding.namespace,
        binding.workload,
        binding.owner,
        names.iter().cloned().collect::<Vec<_>>().join(",")
    ));
    let encryptor = age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let armored = ArmoredWriter::wrap_output(&mut out, Format::AsciiArmor).map_err(|e| e.to_string())?;
    let mut writer = encryptor.wrap_output(armored).map_err(|e| e.to_string())?;
    writer.write_all(plain.as_bytes()).map_err(|e| e.to_string())?;
    writer.finish().and_then(ArmoredWriter::finish).map_err(|e| e.to_string())?;
    String::from_utf8(out).map_err(|e| e.to_string())
}

/// Opens `sealed` with `identity` (none: this node has no age key) without checking where it
/// is used: for its owner's `ui seal --refresh`, which checks the binding itself.
pub fn open_unchecked(sealed: &str, identity: Option<&age::x25519::Identity>) -> Result<Opened, OpenError> {
    if sealed.len() > MAX_SEALED {
        return Err(OpenError::Corrupt(format!("larger than {MAX_SEALED} bytes")));
    }
    if !sealed.trim_start().starts_with(ARMOR_BEGIN) {
        return Err(OpenError::Corrupt("not an ASCII-armored age file".to_owned()));
    }
    let decryptor = age::Decryptor::new(ArmoredReader::new(sealed.trim().as_bytes()))
        .map_err(|e| OpenError::Corrupt(e.to_string()))?;
    let Some(identity) = identity else { return Err(OpenError::NotForThisKey) };
    let mut reader = match decryptor.decrypt(std::iter::once(identity as &dyn age::Identity)) {
        Ok(r) => r,
        Err(age::DecryptError::NoMatchingKeys) => return Err(OpenError::NotForThisKey),
        Err(e) => return Err(OpenError::Corrupt(e.to_string())),
    };
    let mut plain = Zeroizing::new(Vec::new());
    (&mut reader)
        .take(MAX_PLAIN + 1)
        .read_to_end(&mut plain)
        .map_err(|e| OpenError::Corrupt(e.to_string()))?;
    if plain.len() as u64 > MAX_PLAIN {
        return Err(OpenError::Corrupt(format!("its value is larger than {MAX_PLAIN} bytes")));
    }
    let text = std::str::from_utf8(&plain).map_err(|_| OpenError::Corrupt("not UTF-8".to_owned()))?;
    parse_plain(text)
}

/// Opens `sealed` with `identity` for use in `here`: refused unless it was sealed for exactly
/// that workload and owner.
pub fn open(
    sealed: &str,
    identity: Option<&age::x25519::Identity>,
    here: &Binding,
) -> Result<Opened, OpenError> {
    let opened = open_unchecked(sealed, identity)?;
    if &opened.binding != here {
        return Err(OpenError::Mismatch {
            sealed_for: Box::new(opened.binding),
            here: Box::new(here.clone()),
        });
    }
    Ok(opened)
}

fn parse_plain(text: &str) -> Result<Opened, OpenError> {
    let bad = |what: &str| OpenError::Corrupt(format!("its header is not univrs's: {what}"));
    let (head, value) = text.split_once("\n\n").ok_or_else(|| bad("no blank line after it"))?;
    let mut lines = head.lines();
    if lines.next() != Some(HEADER) {
        return Err(bad(&format!("it does not start with {HEADER}")));
    }
    let mut field = |name: &str| -> Result<String, OpenError> {
        lines
            .next()
            .and_then(|l| l.strip_prefix(name))
            .and_then(|l| l.strip_prefix(": "))
            .map(str::to_owned)
            .ok_or_else(|| bad(&format!("no {name}")))
    };
    let binding =
        Binding { namespace: field("namespace")?, workload: field("workload")?, owner: field("owner")? };
    let recipients = field("recipients")?.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect();
    Ok(Opened { binding, recipients, value: Zeroizing::new(value.to_owned()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(ns: &str, name: &str) -> Binding {
        Binding { namespace: ns.into(), workload: name.into(), owner: "did:key:z6MkAlice".into() }
    }

    #[test]
    fn a_value_opens_for_every_recipient_and_only_where_it_is_bound() {
        let node = age::x25519::Identity::generate();
        let owner = age::x25519::Identity::generate();
        let stranger = age::x25519::Identity::generate();
        let here = binding("default", "web");
        let sealed = seal("s3cret\nwith lines", &here, &[node.to_public(), owner.to_public()]).unwrap();
        assert!(sealed.starts_with(ARMOR_BEGIN), "{sealed}");
        assert!(!sealed.contains("s3cret"));
        for key in [&node, &owner] {
            let opened = open(&sealed, Some(key), &here).unwrap();
            assert_eq!(opened.value.as_str(), "s3cret\nwith lines");
            assert_eq!(
                opened.recipients,
                [node.to_public().to_string(), owner.to_public().to_string()].into_iter().collect()
            );
        }
        assert_eq!(open(&sealed, Some(&stranger), &here).unwrap_err(), OpenError::NotForThisKey);
        assert_eq!(open(&sealed, None, &here).unwrap_err(), OpenError::NotForThisKey);
        // Moved to another workload, or into a stranger's workload of the same name.
        let err = open(&sealed, Some(&node), &binding("default", "other")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("default/web") && text.contains("default/other"), "{text}");
        let mallory = Binding { owner: "did:key:z6MkMallory".into(), ..here.clone() };
        assert!(matches!(open(&sealed, Some(&node), &mallory), Err(OpenError::Mismatch { .. })));
    }

    #[test]
    fn each_seal_differs_and_damage_is_refused() {
        let node = age::x25519::Identity::generate();
        let here = binding("ns", "w");
        let a = seal("v", &here, &[node.to_public()]).unwrap();
        let b = seal("v", &here, &[node.to_public()]).unwrap();
        assert_ne!(a, b, "a fresh file key each time");
        assert!(matches!(open("hello", Some(&node), &here), Err(OpenError::Corrupt(_))));
        let mut damaged: Vec<char> = a.chars().collect();
        let i = damaged.len() / 2;
        damaged[i] = if damaged[i] == 'A' { 'B' } else { 'A' };
        let damaged: String = damaged.into_iter().collect();
        assert!(open(&damaged, Some(&node), &here).is_err());
        assert!(seal("v", &here, &[]).is_err());
        assert!(seal("v", &binding("ns\nx", "w"), &[node.to_public()]).is_err());
    }
}
