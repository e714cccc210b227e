//! Member names of an archive: what may be extracted under the extraction directory.

use std::fmt;

/// Why a snapshot's content was refused: the member (when known) and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The member's name as the archive spells it (lossy UTF-8, escaped when displayed).
    pub member: Option<String>,
    /// What is wrong with it.
    pub reason: String,
}

impl Rejection {
    /// A rejection of the member named `name`.
    pub fn member(name: &[u8], reason: impl Into<String>) -> Self {
        Rejection {
            member: Some(String::from_utf8_lossy(name).into_owned()),
            reason: reason.into(),
        }
    }

    /// A rejection of the archive as a whole (it cannot be parsed).
    pub fn archive(reason: impl Into<String>) -> Self {
        Rejection {
            member: None,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.member {
            Some(m) => write!(f, "member {m:?}: {}", self.reason),
            None => write!(f, "{}", self.reason),
        }
    }
}

impl std::error::Error for Rejection {}

/// Most path components a member name may have. Every ancestor of a member is remembered (as
/// a directory the archive made), so a deeper name would cost time and memory quadratic in its
/// depth: one 64 KiB GNU long name of `a/a/a/...` held gigabytes. Real snapshots nest a few
/// levels.
pub(crate) const MAX_DEPTH: usize = 128;

/// A member name made relative and normalized: its components, none of them empty, `.` or
/// `..`. No components is the extraction directory itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub(crate) struct MemberPath(pub(crate) Vec<Vec<u8>>);

impl MemberPath {
    /// Checks a member name: not empty, no NUL byte, not absolute, no `..` component.
    pub(crate) fn parse(name: &[u8]) -> Result<Self, Rejection> {
        if name.is_empty() {
            return Err(Rejection::member(name, "empty name"));
        }
        if name.contains(&0) {
            return Err(Rejection::member(name, "the name holds a NUL byte"));
        }
        if name.starts_with(b"/") {
            return Err(Rejection::member(name, "absolute path"));
        }
        let mut parts = Vec::new();
        for c in name.split(|b| *b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => {
                    return Err(Rejection::member(
                        name,
                        "a `..` component leaves the directory",
                    ));
                }
                c => parts.push(c.to_vec()),
            }
            if parts.len() > MAX_DEPTH {
                return Err(Rejection::member(
                    name,
                    format!("more than {MAX_DEPTH} path components"),
                ));
            }
        }
        Ok(MemberPath(parts))
    }

    /// The extraction directory itself (`.`, `./`).
    pub(crate) fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// Depth of the directory holding this member.
    pub(crate) fn parent_depth(&self) -> usize {
        self.0.len().saturating_sub(1)
    }

    /// Every proper ancestor (not the root), shortest first.
    pub(crate) fn ancestors(&self) -> impl Iterator<Item = MemberPath> + '_ {
        (1..self.0.len()).map(|n| MemberPath(self.0[..n].to_vec()))
    }
}

/// Checks the target of a symbolic link member at `link`: relative, no NUL, and leading `..`
/// components only (at most as many as `link` has parent directories), so the target resolves
/// under the extraction directory through real directories only.
pub(crate) fn check_symlink_target(
    link: &MemberPath,
    name: &[u8],
    target: &[u8],
) -> Result<(), Rejection> {
    if target.is_empty() {
        return Err(Rejection::member(
            name,
            "symbolic link with an empty target",
        ));
    }
    if target.contains(&0) {
        return Err(Rejection::member(
            name,
            "symbolic link target holds a NUL byte",
        ));
    }
    if target.starts_with(b"/") {
        return Err(Rejection::member(
            name,
            format!(
                "symbolic link to the absolute path {:?}",
                String::from_utf8_lossy(target)
            ),
        ));
    }
    let mut up = 0usize;
    let mut descended = false;
    for c in target.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." if !descended => up += 1,
            b".." => {
                return Err(Rejection::member(
                    name,
                    format!(
                        "symbolic link target {:?} climbs after descending",
                        String::from_utf8_lossy(target)
                    ),
                ));
            }
            _ => descended = true,
        }
    }
    if up > link.parent_depth() {
        return Err(Rejection::member(
            name,
            format!(
                "symbolic link target {:?} leaves the directory",
                String::from_utf8_lossy(target)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<MemberPath, Rejection> {
        MemberPath::parse(s.as_bytes())
    }

    #[test]
    fn relative_names_are_normalized_and_escaping_ones_refused() {
        assert_eq!(p("./a//b/").unwrap().0, vec![b"a".to_vec(), b"b".to_vec()]);
        assert!(p("./").unwrap().is_root());
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a/..", "a\0b"] {
            assert!(p(bad).is_err(), "{bad:?}");
        }
        assert!(
            p("a/../b").is_err(),
            "any `..` is refused, even one staying inside"
        );
    }

    #[test]
    fn names_deeper_than_the_depth_limit_are_refused() {
        assert_eq!(p(&"a/".repeat(MAX_DEPTH)).unwrap().0.len(), MAX_DEPTH);
        let deep = "a/".repeat(32 * 1024);
        let e = p(&deep).unwrap_err();
        assert!(e.to_string().contains("path components"), "{e}");
    }

    #[test]
    fn symlink_targets_stay_under_the_directory() {
        let link = p("a/b/l").unwrap();
        for ok in ["x", "./x/y", "..", "../..", "../../c/d", "."] {
            check_symlink_target(&link, b"a/b/l", ok.as_bytes()).unwrap();
        }
        for bad in ["", "/etc", "../../..", "x/../..", "x/..", "../x/../.."] {
            assert!(
                check_symlink_target(&link, b"a/b/l", bad.as_bytes()).is_err(),
                "{bad:?}"
            );
        }
    }
}
