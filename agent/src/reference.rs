//! Image references as docker spells them: `registry/repository:tag`, `repository@sha256:…`,
//! and Docker Hub's short names (`busybox` is `docker.io/library/busybox:latest`).

pub use oci_client::Reference;

/// Parses `s` as docker does (the default registry `docker.io`, `library/` for one-part names
/// there, the tag `latest` without a tag or digest).
pub fn parse(s: &str) -> Result<Reference, String> {
    if s.len() > 512 {
        return Err("an image reference has at most 512 characters".to_owned());
    }
    s.parse::<Reference>().map_err(|e| format!("{s:?} is not an image reference: {e}"))
}

/// `s` in its full form: `docker.io/library/busybox:latest`.
pub fn normalize(s: &str) -> Result<String, String> {
    parse(s).map(|r| r.whole())
}

/// The repository digest `REGISTRY/REPOSITORY@DIGEST` of `r` pinned to `digest`.
pub fn pinned(r: &Reference, digest: &str) -> String {
    format!("{}/{}@{digest}", r.registry(), r.repository())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn short_names_are_normalised_as_docker_does() {
        for (short, full) in [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("me/app", "docker.io/me/app:latest"),
            ("docker.io/busybox", "docker.io/library/busybox:latest"),
            ("127.0.0.1:5000/web:1", "127.0.0.1:5000/web:1"),
            ("localhost/web", "localhost/web:latest"),
            ("ghcr.io/o/r/sub:v2", "ghcr.io/o/r/sub:v2"),
        ] {
            assert_eq!(normalize(short).unwrap(), full, "{short}");
        }
        let r = parse(&format!("127.0.0.1:5000/web@{D}")).unwrap();
        assert_eq!(
            (r.registry(), r.repository(), r.tag(), r.digest()),
            ("127.0.0.1:5000", "web", None, Some(D))
        );
        assert_eq!(pinned(&r, D), format!("127.0.0.1:5000/web@{D}"));
        let r = parse(&format!("web:1@{D}")).unwrap();
        assert_eq!((r.tag(), r.digest()), (Some("1"), Some(D)));
    }

    #[test]
    fn malformed_references_are_refused() {
        for bad in ["", "web/UPPER", "web:", "web@sha256:short", "a b", &"x".repeat(600)] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
