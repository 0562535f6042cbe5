//! Just enough of the protobuf wire format to edit one nested field of an encoded message and
//! copy every other byte unchanged (unknown fields included, in their original order).

use prost::encoding::{decode_varint, encode_varint};

/// Wire type of length-delimited fields (strings, bytes, embedded messages).
pub const LEN: u8 = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub String);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed protobuf: {}", self.0)
    }
}

impl std::error::Error for WireError {}

/// One field occurrence of an encoded message.
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    pub number: u32,
    pub wire_type: u8,
    /// The whole occurrence: key, length prefix (if any) and value.
    pub raw: &'a [u8],
    /// The value; for length-delimited fields without the length prefix.
    pub payload: &'a [u8],
}

/// Splits an encoded message into its field occurrences. Groups (deprecated, unused by Envoy's
/// API) are rejected.
pub fn fields(buf: &[u8]) -> Result<Vec<Field<'_>>, WireError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let start = pos;
        let mut rest = &buf[pos..];
        let key = decode_varint(&mut rest).map_err(|e| WireError(format!("field key at byte {pos}: {e}")))?;
        pos = buf.len() - rest.len();
        let number = u32::try_from(key >> 3).map_err(|_| WireError(format!("field number too large at byte {start}")))?;
        if number == 0 {
            return Err(WireError(format!("field number 0 at byte {start}")));
        }
        let wire_type = (key & 7) as u8;
        let value_start;
        match wire_type {
            0 => {
                value_start = pos;
                decode_varint(&mut rest).map_err(|e| WireError(format!("varint of field {number}: {e}")))?;
                pos = buf.len() - rest.len();
            }
            1 | 5 => {
                let n = if wire_type == 1 { 8 } else { 4 };
                if rest.len() < n {
                    return Err(WireError(format!("field {number} truncated")));
                }
                value_start = pos;
                pos += n;
            }
            LEN => {
                let len = decode_varint(&mut rest).map_err(|e| WireError(format!("length of field {number}: {e}")))?;
                value_start = buf.len() - rest.len();
                let len = usize::try_from(len).ok().filter(|l| *l <= rest.len())
                    .ok_or_else(|| WireError(format!("field {number} longer than its message")))?;
                pos = value_start + len;
            }
            t => return Err(WireError(format!("unsupported wire type {t} (field {number})"))),
        }
        out.push(Field { number, wire_type, raw: &buf[start..pos], payload: &buf[value_start..pos] });
    }
    Ok(out)
}

/// Appends a length-delimited field.
pub fn put_len_field(out: &mut Vec<u8>, number: u32, payload: &[u8]) {
    encode_varint((u64::from(number) << 3) | u64::from(LEN), out);
    encode_varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// Rewrites the length-delimited occurrences of the fields `numbers` with `edit`, which returns
/// `Some(new value)` to replace one and `None` to keep it. Returns `None` when nothing changed,
/// so an untouched message keeps its exact bytes.
pub fn edit_len_fields<E>(
    buf: &[u8],
    numbers: &[u32],
    mut edit: impl FnMut(u32, &[u8]) -> Result<Option<Vec<u8>>, E>,
) -> Result<Option<Vec<u8>>, E>
where
    E: From<WireError>,
{
    let parsed = fields(buf)?;
    let mut replaced: Vec<Option<Vec<u8>>> = Vec::with_capacity(parsed.len());
    let mut changed = false;
    for f in &parsed {
        let new = if f.wire_type == LEN && numbers.contains(&f.number) { edit(f.number, f.payload)? } else { None };
        changed |= new.is_some();
        replaced.push(new);
    }
    if !changed {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(buf.len() + 16);
    for (f, new) in parsed.iter().zip(replaced) {
        match new {
            Some(v) => put_len_field(&mut out, f.number, &v),
            None => out.extend_from_slice(f.raw),
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_every_wire_type_and_keeps_raw_bytes() {
        // 1: varint 150, 2: "hi", 3: fixed32, 4: fixed64
        let mut buf = vec![0x08, 0x96, 0x01];
        put_len_field(&mut buf, 2, b"hi");
        buf.extend_from_slice(&[0x1d, 1, 2, 3, 4]);
        buf.extend_from_slice(&[0x21, 1, 2, 3, 4, 5, 6, 7, 8]);
        let fs = fields(&buf).unwrap();
        assert_eq!(fs.iter().map(|f| (f.number, f.wire_type)).collect::<Vec<_>>(), [(1, 0), (2, 2), (3, 5), (4, 1)]);
        assert_eq!(fs[1].payload, b"hi");
        assert_eq!(fs.iter().flat_map(|f| f.raw.iter().copied()).collect::<Vec<_>>(), buf);
    }

    #[test]
    fn rejects_truncated_and_group_fields() {
        assert!(fields(&[0x12, 0x05, b'a']).is_err());
        assert!(fields(&[0x0b]).is_err());
        assert!(fields(&[0x1d, 1, 2]).is_err());
        assert!(fields(&[0x00]).is_err());
    }

    #[test]
    fn edits_only_the_selected_fields() {
        let mut buf = Vec::new();
        put_len_field(&mut buf, 1, b"a");
        put_len_field(&mut buf, 2, b"b");
        put_len_field(&mut buf, 1, b"c");
        let out = edit_len_fields::<WireError>(&buf, &[1], |_, v| Ok((v == b"c").then(|| b"long".to_vec()))).unwrap().unwrap();
        let fs = fields(&out).unwrap();
        assert_eq!(fs.iter().map(|f| f.payload).collect::<Vec<_>>(), [&b"a"[..], b"b", b"long"]);
        assert_eq!(edit_len_fields::<WireError>(&buf, &[1, 2], |_, _| Ok(None)).unwrap(), None);
    }
}
