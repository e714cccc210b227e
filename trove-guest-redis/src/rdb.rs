//! What a restore checks in an RDB file before the server sees it: the `REDIS00nn` header and
//! the auxiliary fields a master writes for its replicas (`redis-ver`, `repl-id`,
//! `repl-offset`). The checksum of the whole file is `redis-check-rdb`'s job.

use std::collections::BTreeMap;

/// The header fields of an RDB file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RdbHeader {
    pub(crate) version: u32,
    pub(crate) aux: BTreeMap<String, String>,
}

/// Parses the header and auxiliary fields at the start of an RDB file (`bytes` may be a prefix
/// of it); `None` when it is not an RDB file or the prefix ends inside the fields.
pub(crate) fn parse_header(bytes: &[u8]) -> Option<RdbHeader> {
    let magic = bytes.get(..9)?;
    if &magic[..5] != b"REDIS" {
        return None;
    }
    let version = std::str::from_utf8(&magic[5..]).ok()?.parse().ok()?;
    let mut r = Reader { b: bytes, i: 9 };
    let mut aux = BTreeMap::new();
    while *r.b.get(r.i)? == 0xFA {
        r.i += 1;
        let k = r.string()?;
        let v = r.string()?;
        aux.insert(
            String::from_utf8_lossy(&k).into_owned(),
            String::from_utf8_lossy(&v).into_owned(),
        );
    }
    Some(RdbHeader { version, aux })
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.b.get(self.i..self.i.checked_add(n)?)?;
        self.i += n;
        Some(s)
    }

    fn byte(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    /// A length, or `Err(encoding)` for a specially encoded string.
    fn len(&mut self) -> Option<Result<usize, u8>> {
        let b = self.byte()?;
        Some(Ok(match b >> 6 {
            0 => usize::from(b & 0x3F),
            1 => (usize::from(b & 0x3F) << 8) | usize::from(self.byte()?),
            2 if b == 0x80 => u32::from_be_bytes(self.take(4)?.try_into().ok()?) as usize,
            2 if b == 0x81 => {
                usize::try_from(u64::from_be_bytes(self.take(8)?.try_into().ok()?)).ok()?
            }
            2 => return None,
            _ => return Some(Err(b & 0x3F)),
        }))
    }

    fn string(&mut self) -> Option<Vec<u8>> {
        Some(match self.len()? {
            Ok(n) => self.take(n)?.to_vec(),
            Err(0) => (self.byte()? as i8).to_string().into_bytes(),
            Err(1) => i16::from_le_bytes(self.take(2)?.try_into().ok()?)
                .to_string()
                .into_bytes(),
            Err(2) => i32::from_le_bytes(self.take(4)?.try_into().ok()?)
                .to_string()
                .into_bytes(),
            Err(3) => {
                let clen = self.len()?.ok()?;
                let ulen = self.len()?.ok()?;
                lzf(self.take(clen)?, ulen)?
            }
            Err(_) => return None,
        })
    }
}

/// LZF decompression (Redis compresses strings longer than 20 bytes with it).
fn lzf(input: &[u8], out_len: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(out_len.min(1 << 20));
    let mut i = 0;
    while i < input.len() {
        let ctrl = usize::from(input[i]);
        i += 1;
        if ctrl < 32 {
            out.extend_from_slice(input.get(i..i + ctrl + 1)?);
            i += ctrl + 1;
        } else {
            let mut len = ctrl >> 5;
            if len == 7 {
                len += usize::from(*input.get(i)?);
                i += 1;
            }
            let back = ((ctrl & 0x1F) << 8) + usize::from(*input.get(i)?) + 1;
            i += 1;
            let start = out.len().checked_sub(back)?;
            for k in 0..len + 2 {
                out.push(out[start + k]);
            }
        }
        if out.len() > out_len {
            return None;
        }
    }
    (out.len() == out_len).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_with_integer_and_plain_aux_fields_is_read() {
        let mut b = b"REDIS0010".to_vec();
        b.extend([0xFA, 9]);
        b.extend(b"redis-ver");
        b.extend([6]);
        b.extend(b"7.0.15");
        b.extend([0xFA, 11]);
        b.extend(b"repl-offset");
        b.extend([0xC2]);
        b.extend(70000i32.to_le_bytes());
        b.extend([0xFE, 0]);
        let h = parse_header(&b).unwrap();
        assert_eq!(h.version, 10);
        assert_eq!(h.aux["redis-ver"], "7.0.15");
        assert_eq!(h.aux["repl-offset"], "70000");
    }

    #[test]
    fn a_cut_header_or_foreign_file_is_not_an_rdb() {
        assert!(parse_header(b"REDIS0010\xFA\x09redis").is_none());
        assert!(parse_header(b"\x1f\x8bnot an rdb").is_none());
    }

    #[test]
    fn lzf_back_references_expand() {
        // literal "ab", then a back reference of length 4 at distance 2: "ababab".
        assert_eq!(lzf(&[1, b'a', b'b', 0x40, 1], 6).unwrap(), b"ababab");
        assert!(
            lzf(&[1, b'a', b'b', 0x40, 9], 6).is_none(),
            "reference before the start"
        );
    }
}
