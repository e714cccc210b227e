//! The member check of tar archives (`pg_basebackup --format=tar`, read by `tar -x`), fed bytes
//! as they stream.
//!
//! Understood: ustar and GNU headers (the ustar `prefix`, base-256 sizes), GNU long names and
//! long link names (`L`, `K`), pax extended headers (`x`: `path`, `linkpath`, `size`; `g` without
//! those). Member types: regular files, directories, symbolic and hard links. Everything else
//! (devices, FIFOs, GNU sparse/multi-volume/dump-dir members, pax `GNU.sparse.*` keys) is
//! refused, and so is any header whose checksum is wrong (tar would skip ahead and resync
//! somewhere this check did not look) and any non-zero byte after the end-of-archive block.
//!
//! Links: a symbolic link's target must be relative, climb (`..`) only at its start and no
//! higher than the link's own directory; a hard link's target must be a valid member name; no
//! member may be, or be under, a symbolic link made earlier in the archive (a hard link to one
//! counts as one); no symbolic link may replace a directory made earlier. So every path tar
//! opens resolves under the extraction directory.

use std::collections::HashSet;

use super::member::{MemberPath, Rejection, check_symlink_target};

const BLOCK: usize = 512;
/// Longest GNU long name / link name accepted.
const MAX_LONG_NAME: u64 = 64 * 1024;
/// Largest pax extended header accepted.
const MAX_PAX: u64 = 1024 * 1024;

#[derive(Debug)]
enum Collect {
    LongName,
    LongLink,
    Pax { global: bool },
}

#[derive(Debug)]
enum State {
    /// Collecting a 512-byte header block.
    Header,
    /// Skipping member data (and its padding).
    Skip {
        remaining: u64,
    },
    /// Collecting the data of a meta member, then `pad` bytes of padding.
    Collect {
        what: Collect,
        remaining: u64,
        pad: u64,
        buf: Vec<u8>,
    },
    /// After the end-of-archive block: only zero bytes may follow.
    End,
    Broken(Rejection),
}

/// Overrides that meta members set for the next real member.
#[derive(Debug, Default)]
struct Pending {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax_path: Option<Vec<u8>>,
    pax_linkpath: Option<Vec<u8>>,
    pax_size: Option<u64>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.long_name.is_none()
            && self.long_link.is_none()
            && self.pax_path.is_none()
            && self.pax_linkpath.is_none()
            && self.pax_size.is_none()
    }
}

#[derive(Debug)]
pub(crate) struct TarInspector {
    state: State,
    block: Vec<u8>,
    pending: Pending,
    symlinks: HashSet<MemberPath>,
    dirs: HashSet<MemberPath>,
    members: u64,
}

impl Default for TarInspector {
    fn default() -> Self {
        TarInspector {
            state: State::Header,
            block: Vec::with_capacity(BLOCK),
            pending: Pending::default(),
            symlinks: HashSet::new(),
            dirs: HashSet::new(),
            members: 0,
        }
    }
}

fn padded(len: u64) -> u64 {
    len.div_ceil(BLOCK as u64) * BLOCK as u64
}

/// A NUL-terminated header field.
fn field(h: &[u8]) -> &[u8] {
    match h.iter().position(|b| *b == 0) {
        Some(n) => &h[..n],
        None => h,
    }
}

/// A numeric header field: octal (spaces and NULs around it), or GNU base-256.
fn number(h: &[u8]) -> Option<u64> {
    if h.first().is_some_and(|b| b & 0x80 != 0) {
        if h[0] != 0x80 {
            return None; // negative or too large
        }
        let mut v: u64 = 0;
        for b in &h[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(*b))?;
        }
        return Some(v);
    }
    let digits: &[u8] = {
        let t = field(h);
        let start = t.iter().position(|b| *b != b' ').unwrap_or(t.len());
        let t = &t[start..];
        let end = t.iter().position(|b| *b == b' ').unwrap_or(t.len());
        &t[..end]
    };
    if digits.is_empty() {
        return Some(0);
    }
    let mut v: u64 = 0;
    for d in digits {
        if !(b'0'..=b'7').contains(d) {
            return None;
        }
        v = v.checked_mul(8)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(v)
}

fn checksum_ok(h: &[u8]) -> bool {
    let Some(stored) = number(&h[148..156]) else {
        return false;
    };
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, b) in h.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { *b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    stored == unsigned || i64::try_from(stored).is_ok_and(|s| s == signed)
}

/// A pax record: key and value.
type PaxRecord<'a> = (&'a [u8], &'a [u8]);

/// Parses pax records `LEN KEY=VALUE\n`.
fn pax_records(data: &[u8]) -> Result<Vec<PaxRecord<'_>>, Rejection> {
    let bad = || Rejection::archive("malformed pax extended header");
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|b| *b == 0) {
            break; // padding some writers leave
        }
        let sp = rest.iter().position(|b| *b == b' ').ok_or_else(bad)?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(bad());
        }
        let rec = &rest[sp + 1..len - 1];
        let eq = rec.iter().position(|b| *b == b'=').ok_or_else(bad)?;
        out.push((&rec[..eq], &rec[eq + 1..]));
        rest = &rest[len..];
    }
    Ok(out)
}

impl TarInspector {
    pub(crate) fn members(&self) -> u64 {
        self.members
    }

    pub(crate) fn feed(&mut self, mut data: &[u8]) -> Result<(), Rejection> {
        while !data.is_empty() {
            match &mut self.state {
                State::Broken(r) => return Err(r.clone()),
                State::End => {
                    if data.iter().any(|b| *b != 0) {
                        return Err(
                            self.fail(Rejection::archive("data after the end-of-archive block"))
                        );
                    }
                    return Ok(());
                }
                State::Skip { remaining } => {
                    let n = (*remaining).min(data.len() as u64);
                    *remaining -= n;
                    if *remaining == 0 {
                        self.state = State::Header;
                    }
                    data = &data[n as usize..];
                }
                State::Collect {
                    remaining,
                    pad,
                    buf,
                    ..
                } => {
                    if *remaining > 0 {
                        let n = (*remaining).min(data.len() as u64) as usize;
                        buf.extend_from_slice(&data[..n]);
                        *remaining -= n as u64;
                        data = &data[n..];
                    } else {
                        let n = (*pad).min(data.len() as u64);
                        *pad -= n;
                        data = &data[n as usize..];
                    }
                    if let State::Collect {
                        remaining: 0,
                        pad: 0,
                        ..
                    } = &self.state
                    {
                        let State::Collect { what, buf, .. } =
                            std::mem::replace(&mut self.state, State::Header)
                        else {
                            unreachable!()
                        };
                        if let Err(r) = self.collected(what, buf) {
                            return Err(self.fail(r));
                        }
                    }
                }
                State::Header => {
                    let take = (BLOCK - self.block.len()).min(data.len());
                    self.block.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.block.len() == BLOCK {
                        let block = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK));
                        if let Err(r) = self.header(&block) {
                            return Err(self.fail(r));
                        }
                    }
                }
            }
        }
        match &self.state {
            State::Broken(r) => Err(r.clone()),
            _ => Ok(()),
        }
    }

    pub(crate) fn finish(&self) -> Result<(), Rejection> {
        match &self.state {
            State::Broken(r) => Err(r.clone()),
            State::End => Ok(()),
            State::Header if self.block.is_empty() && self.pending.is_empty() => Ok(()),
            _ => Err(Rejection::archive("the tar archive ends inside a member")),
        }
    }

    fn fail(&mut self, r: Rejection) -> Rejection {
        self.state = State::Broken(r.clone());
        r
    }

    fn collected(&mut self, what: Collect, buf: Vec<u8>) -> Result<(), Rejection> {
        match what {
            Collect::LongName => self.pending.long_name = Some(field(&buf).to_vec()),
            Collect::LongLink => self.pending.long_link = Some(field(&buf).to_vec()),
            Collect::Pax { global } => {
                for (key, value) in pax_records(&buf)? {
                    if key.starts_with(b"GNU.sparse.") {
                        return Err(Rejection::archive(
                            "pax header with GNU sparse keys (sparse members are not supported)",
                        ));
                    }
                    let overrides = matches!(key, b"path" | b"linkpath" | b"size");
                    if global && overrides {
                        return Err(Rejection::archive(format!(
                            "global pax header sets {:?}",
                            String::from_utf8_lossy(key)
                        )));
                    }
                    match key {
                        b"path" => self.pending.pax_path = Some(value.to_vec()),
                        b"linkpath" => self.pending.pax_linkpath = Some(value.to_vec()),
                        b"size" => {
                            let size = std::str::from_utf8(value)
                                .ok()
                                .and_then(|s| s.parse().ok())
                                .ok_or_else(|| Rejection::archive("pax size is not a number"))?;
                            self.pending.pax_size = Some(size);
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }

    fn header(&mut self, h: &[u8]) -> Result<(), Rejection> {
        if h.iter().all(|b| *b == 0) {
            self.state = State::End;
            return Ok(());
        }
        let raw_name = field(&h[..100]);
        if !checksum_ok(h) {
            return Err(Rejection::member(raw_name, "bad tar header checksum"));
        }
        let typeflag = h[156];
        let header_size =
            number(&h[124..136]).ok_or_else(|| Rejection::member(raw_name, "bad size field"))?;
        let collect = |what, limit: u64| -> Result<State, Rejection> {
            if header_size > limit {
                return Err(Rejection::member(
                    raw_name,
                    format!("meta member of {header_size} bytes"),
                ));
            }
            Ok(State::Collect {
                what,
                remaining: header_size,
                pad: padded(header_size) - header_size,
                buf: Vec::new(),
            })
        };
        match typeflag {
            b'L' => {
                self.state = collect(Collect::LongName, MAX_LONG_NAME)?;
                return Ok(());
            }
            b'K' => {
                self.state = collect(Collect::LongLink, MAX_LONG_NAME)?;
                return Ok(());
            }
            b'x' | b'g' => {
                self.state = collect(
                    Collect::Pax {
                        global: typeflag == b'g',
                    },
                    MAX_PAX,
                )?;
                return Ok(());
            }
            _ => {}
        }

        // A real member: its name and link name, after the overrides.
        let pending = std::mem::take(&mut self.pending);
        if pending.long_name.is_some() && pending.pax_path.is_some() {
            return Err(Rejection::member(
                raw_name,
                "both a GNU long name and a pax path",
            ));
        }
        if pending.long_link.is_some() && pending.pax_linkpath.is_some() {
            return Err(Rejection::member(
                raw_name,
                "both a GNU long link name and a pax linkpath",
            ));
        }
        let ustar = &h[257..263] == b"ustar\0";
        let name: Vec<u8> = match pending.long_name.or(pending.pax_path) {
            Some(n) => n,
            None => {
                let prefix = field(&h[345..500]);
                if ustar && !prefix.is_empty() {
                    [prefix, b"/", raw_name].concat()
                } else {
                    raw_name.to_vec()
                }
            }
        };
        let link: Vec<u8> = pending
            .long_link
            .or(pending.pax_linkpath)
            .unwrap_or_else(|| field(&h[157..257]).to_vec());
        let size = pending.pax_size.unwrap_or(header_size);

        let path = MemberPath::parse(&name)?;
        self.check_not_through_symlink(&path, &name)?;
        match typeflag {
            b'0' | 0 | b'7' => {
                if path.is_root() {
                    return Err(Rejection::member(&name, "a file at the directory itself"));
                }
            }
            b'5' => {}
            b'2' => {
                if path.is_root() || self.dirs.contains(&path) {
                    return Err(Rejection::member(
                        &name,
                        "a symbolic link replacing a directory",
                    ));
                }
                check_symlink_target(&path, &name, &link)?;
            }
            b'1' => {
                if path.is_root() {
                    return Err(Rejection::member(
                        &name,
                        "a hard link at the directory itself",
                    ));
                }
                let target = MemberPath::parse(&link).map_err(|r| {
                    Rejection::member(&name, format!("hard link target: {}", r.reason))
                })?;
                if target.is_root() {
                    return Err(Rejection::member(
                        &name,
                        "hard link to the directory itself",
                    ));
                }
                if target.ancestors().any(|a| self.symlinks.contains(&a)) {
                    return Err(Rejection::member(
                        &name,
                        "hard link target goes through a symbolic link",
                    ));
                }
                if self.dirs.contains(&path) {
                    return Err(Rejection::member(
                        &name,
                        "a hard link replacing a directory",
                    ));
                }
            }
            b'3' | b'4' => {
                return Err(Rejection::member(&name, "device member"));
            }
            b'6' => return Err(Rejection::member(&name, "FIFO member")),
            t => {
                return Err(Rejection::member(
                    &name,
                    format!("unsupported member type {:?}", t as char),
                ));
            }
        }
        if !matches!(typeflag, b'0' | 0 | b'7') && size != 0 {
            return Err(Rejection::member(
                &name,
                format!("a link or directory member with {size} bytes of data"),
            ));
        }

        // Record what this member makes.
        for a in path.ancestors() {
            self.dirs.insert(a);
        }
        match typeflag {
            b'5' if !path.is_root() => {
                self.dirs.insert(path);
            }
            b'2' => {
                self.symlinks.insert(path);
            }
            b'1' => {
                let target = MemberPath::parse(&link)?;
                if self.symlinks.contains(&target) {
                    self.symlinks.insert(path);
                }
            }
            _ => {}
        }
        self.members += 1;
        self.state = if size == 0 {
            State::Header
        } else {
            State::Skip {
                remaining: padded(size),
            }
        };
        Ok(())
    }

    /// Refuses a member that is, or lies under, a symbolic link made earlier.
    fn check_not_through_symlink(&self, path: &MemberPath, name: &[u8]) -> Result<(), Rejection> {
        if self.symlinks.is_empty() {
            return Ok(());
        }
        if self.symlinks.contains(path) {
            return Err(Rejection::member(
                name,
                "replaces a symbolic link made earlier in the archive",
            ));
        }
        if let Some(l) = path.ancestors().find(|a| self.symlinks.contains(a)) {
            let shown: Vec<String> =
                l.0.iter()
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect();
            return Err(Rejection::member(
                name,
                format!(
                    "goes through the symbolic link {:?} made earlier in the archive",
                    shown.join("/")
                ),
            ));
        }
        Ok(())
    }
}
