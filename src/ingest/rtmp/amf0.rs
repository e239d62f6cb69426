//! AMF0, the value encoding of RTMP commands: an iterative decoder with caps on nesting depth and value count,
//! and an encoder for the few values we send.
//!
//! Why our own: the decoder of rml_amf0 recurses once per nesting level, so one 1 MB command of nested strict
//! arrays overflows a tokio worker's stack and aborts the whole process (a stack overflow is not a panic). This
//! one keeps its own stack on the heap, bounded by `Amf0Limits::max_depth`, and never allocates by a count the
//! peer announces (an array of 4 billion elements costs nothing until its elements arrive).

/// One AMF0 value. Objects keep their properties in wire order (duplicates and all).
#[derive(Debug, Clone, PartialEq)]
pub enum Amf0Value {
    /// Marker 0: a 64-bit float (AMF0 has no integers).
    Number(f64),
    /// Marker 1.
    Boolean(bool),
    /// Marker 2 (or 12, long string), UTF-8.
    String(String),
    /// Marker 3: properties in wire order.
    Object(Vec<(String, Amf0Value)>),
    /// Marker 5.
    Null,
    /// Marker 6.
    Undefined,
    /// An associative array (marker 8): decoded like an object.
    EcmaArray(Vec<(String, Amf0Value)>),
    /// Marker 10: a dense array.
    StrictArray(Vec<Amf0Value>),
    /// Milliseconds since the epoch (the time zone field is ignored, as the spec says).
    Date(f64),
}

impl Amf0Value {
    /// The text of a `String`; `None` for any other value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Amf0Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value of a `Number`; `None` for any other value.
    pub fn as_number(&self) -> Option<f64> {
        match self {
            Amf0Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// A property of an object or ECMA array.
    pub fn get(&self, key: &str) -> Option<&Amf0Value> {
        match self {
            Amf0Value::Object(props) | Amf0Value::EcmaArray(props) => {
                props.iter().find(|(k, _)| k == key).map(|(_, v)| v)
            }
            _ => None,
        }
    }
}

/// Bounds on what one decode may build.
#[derive(Debug, Clone, Copy)]
pub struct Amf0Limits {
    /// Objects and arrays nested inside each other.
    pub max_depth: usize,
    /// Values in all, at every level.
    pub max_values: usize,
}

impl Default for Amf0Limits {
    fn default() -> Self {
        Amf0Limits {
            max_depth: 32,
            max_values: 4096,
        }
    }
}

/// Why AMF0 data cannot be decoded; every one ends the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Amf0Error {
    /// The data ends in the middle of a value.
    #[error("AMF0 data ends in the middle of a value")]
    Truncated,
    /// Objects and arrays nest deeper than `Amf0Limits::max_depth` (the limit).
    #[error("AMF0 values nested deeper than {0}")]
    TooDeep(usize),
    /// More values in all than `Amf0Limits::max_values` (the limit).
    #[error("more than {0} AMF0 values")]
    TooManyValues(usize),
    /// A type marker we do not decode (e.g. AMF3 switch, reference, XML); carries it.
    #[error("AMF0 type marker {0:#04x} is not supported")]
    UnsupportedType(u8),
    /// A string is not UTF-8.
    #[error("AMF0 string is not UTF-8")]
    BadUtf8,
    /// An object end marker where no object or ECMA array is open.
    #[error("AMF0 object end marker outside an object")]
    UnexpectedObjectEnd,
}

const NUMBER: u8 = 0x00;
const BOOLEAN: u8 = 0x01;
const STRING: u8 = 0x02;
const OBJECT: u8 = 0x03;
const NULL: u8 = 0x05;
const UNDEFINED: u8 = 0x06;
const ECMA_ARRAY: u8 = 0x08;
const OBJECT_END: u8 = 0x09;
const STRICT_ARRAY: u8 = 0x0A;
const DATE: u8 = 0x0B;
const LONG_STRING: u8 = 0x0C;
const TYPED_OBJECT: u8 = 0x10;

/// A byte cursor that fails with `Truncated` instead of panicking.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Amf0Error> {
        let end = self.pos.checked_add(n).ok_or(Amf0Error::Truncated)?;
        let s = self.data.get(self.pos..end).ok_or(Amf0Error::Truncated)?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, Amf0Error> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, Amf0Error> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, Amf0Error> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn f64(&mut self) -> Result<f64, Amf0Error> {
        let b = self.take(8)?;
        Ok(f64::from_be_bytes(b.try_into().expect("8 bytes")))
    }
    fn string(&mut self, len: usize) -> Result<String, Amf0Error> {
        std::str::from_utf8(self.take(len)?)
            .map(str::to_owned)
            .map_err(|_| Amf0Error::BadUtf8)
    }
    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }
    fn peek_object_end(&self) -> bool {
        self.data.get(self.pos..self.pos + 3) == Some(&[0, 0, OBJECT_END])
    }
}

/// A container being filled: the decoder's explicit stack frame.
enum Open {
    /// Object, typed object or ECMA array: `key` is the property whose value is being read.
    Props {
        ecma: bool,
        props: Vec<(String, Amf0Value)>,
        key: Option<String>,
    },
    Strict {
        items: Vec<Amf0Value>,
        remaining: u32,
    },
}

impl Open {
    fn close(self) -> Amf0Value {
        match self {
            Open::Props { ecma: true, props, .. } => Amf0Value::EcmaArray(props),
            Open::Props { props, .. } => Amf0Value::Object(props),
            Open::Strict { items, .. } => Amf0Value::StrictArray(items),
        }
    }
}

/// Decode every value in `data` (a command is a sequence of top-level values).
pub fn decode_all(data: &[u8], limits: Amf0Limits) -> Result<Vec<Amf0Value>, Amf0Error> {
    let mut c = Cursor { data, pos: 0 };
    let mut out = Vec::new();
    let mut stack: Vec<Open> = Vec::new();
    let mut count = 0usize;
    loop {
        // Finish containers that are complete, or read the next property name.
        match stack.last_mut() {
            None if c.remaining() == 0 => return Ok(out),
            Some(Open::Strict { remaining: 0, .. }) => {
                let done = stack.pop().expect("non-empty").close();
                deliver(&mut stack, &mut out, done);
                continue;
            }
            Some(Open::Strict { remaining, .. }) => *remaining -= 1,
            Some(Open::Props { key, .. }) => {
                if c.peek_object_end() {
                    c.pos += 3;
                    let done = stack.pop().expect("non-empty").close();
                    deliver(&mut stack, &mut out, done);
                    continue;
                }
                let len = c.u16()? as usize;
                *key = Some(c.string(len)?);
            }
            None => {}
        }
        count += 1;
        if count > limits.max_values {
            return Err(Amf0Error::TooManyValues(limits.max_values));
        }
        let marker = c.u8()?;
        let value = match marker {
            NUMBER => Amf0Value::Number(c.f64()?),
            BOOLEAN => Amf0Value::Boolean(c.u8()? != 0),
            STRING => {
                let len = c.u16()? as usize;
                Amf0Value::String(c.string(len)?)
            }
            LONG_STRING => {
                let len = c.u32()? as usize;
                Amf0Value::String(c.string(len)?)
            }
            NULL => Amf0Value::Null,
            UNDEFINED => Amf0Value::Undefined,
            DATE => {
                let ms = c.f64()?;
                c.take(2)?;
                Amf0Value::Date(ms)
            }
            OBJECT | ECMA_ARRAY | TYPED_OBJECT | STRICT_ARRAY => {
                if stack.len() >= limits.max_depth {
                    return Err(Amf0Error::TooDeep(limits.max_depth));
                }
                let open = match marker {
                    STRICT_ARRAY => {
                        let n = c.u32()?;
                        // Every element takes at least one byte: a count beyond what is left is a lie.
                        if n as usize > c.remaining() {
                            return Err(Amf0Error::Truncated);
                        }
                        Open::Strict {
                            items: Vec::new(),
                            remaining: n,
                        }
                    }
                    _ => {
                        if marker == ECMA_ARRAY {
                            c.u32()?; // the count is advisory: properties end with the end marker
                        } else if marker == TYPED_OBJECT {
                            let len = c.u16()? as usize;
                            c.take(len)?; // class name
                        }
                        Open::Props {
                            ecma: marker == ECMA_ARRAY,
                            props: Vec::new(),
                            key: None,
                        }
                    }
                };
                stack.push(open);
                continue;
            }
            OBJECT_END => return Err(Amf0Error::UnexpectedObjectEnd),
            other => return Err(Amf0Error::UnsupportedType(other)),
        };
        deliver(&mut stack, &mut out, value);
    }
}

/// Put a finished value into its container, or the top level.
fn deliver(stack: &mut [Open], out: &mut Vec<Amf0Value>, value: Amf0Value) {
    match stack.last_mut() {
        None => out.push(value),
        Some(Open::Strict { items, .. }) => items.push(value),
        Some(Open::Props { props, key, .. }) => props.push((key.take().unwrap_or_default(), value)),
    }
}

/// Encode values we built ourselves (shallow: status objects and command results).
pub fn encode(values: &[Amf0Value], out: &mut Vec<u8>) {
    for v in values {
        encode_one(v, out);
    }
}

fn encode_one(v: &Amf0Value, out: &mut Vec<u8>) {
    match v {
        Amf0Value::Number(n) => {
            out.push(NUMBER);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Amf0Value::Boolean(b) => out.extend_from_slice(&[BOOLEAN, *b as u8]),
        Amf0Value::String(s) if s.len() <= u16::MAX as usize => {
            out.push(STRING);
            out.extend_from_slice(&(s.len() as u16).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        Amf0Value::String(s) => {
            out.push(LONG_STRING);
            out.extend_from_slice(&(s.len() as u32).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        Amf0Value::Object(props) | Amf0Value::EcmaArray(props) => {
            if matches!(v, Amf0Value::EcmaArray(_)) {
                out.push(ECMA_ARRAY);
                out.extend_from_slice(&(props.len() as u32).to_be_bytes());
            } else {
                out.push(OBJECT);
            }
            for (k, v) in props {
                let k = &k.as_bytes()[..k.len().min(u16::MAX as usize)];
                out.extend_from_slice(&(k.len() as u16).to_be_bytes());
                out.extend_from_slice(k);
                encode_one(v, out);
            }
            out.extend_from_slice(&[0, 0, OBJECT_END]);
        }
        Amf0Value::Null => out.push(NULL),
        Amf0Value::Undefined => out.push(UNDEFINED),
        Amf0Value::StrictArray(items) => {
            out.push(STRICT_ARRAY);
            out.extend_from_slice(&(items.len() as u32).to_be_bytes());
            for i in items {
                encode_one(i, out);
            }
        }
        Amf0Value::Date(ms) => {
            out.push(DATE);
            out.extend_from_slice(&ms.to_be_bytes());
            out.extend_from_slice(&[0, 0]);
        }
    }
}

/// An object from `(key, value)` pairs.
pub fn object<const N: usize>(props: [(&str, Amf0Value); N]) -> Amf0Value {
    Amf0Value::Object(props.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// A string value.
pub fn string(s: impl Into<String>) -> Amf0Value {
    Amf0Value::String(s.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(values: Vec<Amf0Value>) {
        let mut bytes = Vec::new();
        encode(&values, &mut bytes);
        assert_eq!(decode_all(&bytes, Amf0Limits::default()).unwrap(), values);
    }

    #[test]
    fn values_roundtrip() {
        roundtrip(vec![
            string("connect"),
            Amf0Value::Number(1.0),
            object([
                ("app", string("push")),
                ("tcUrl", string("rtmp://h/push")),
                ("fpad", Amf0Value::Boolean(false)),
                ("nested", object([("x", Amf0Value::Null)])),
            ]),
            Amf0Value::StrictArray(vec![Amf0Value::Number(2.0), Amf0Value::Undefined]),
            Amf0Value::EcmaArray(vec![("duration".into(), Amf0Value::Number(0.0))]),
            Amf0Value::Date(1.5e12),
            string("x".repeat(70_000)),
        ]);
        roundtrip(vec![]);
    }

    #[test]
    fn what_rml_amf0_encodes_we_decode() {
        // The encoder ffmpeg-like clients use in our tests; one more implementation to agree with.
        let mut props = std::collections::HashMap::new();
        props.insert("app".to_string(), rml_amf0::Amf0Value::Utf8String("push".into()));
        let bytes = rml_amf0::serialize(&vec![
            rml_amf0::Amf0Value::Utf8String("connect".into()),
            rml_amf0::Amf0Value::Number(1.0),
            rml_amf0::Amf0Value::Object(props),
        ])
        .unwrap();
        let v = decode_all(&bytes, Amf0Limits::default()).unwrap();
        assert_eq!(v[0].as_str(), Some("connect"));
        assert_eq!(v[2].get("app").and_then(Amf0Value::as_str), Some("push"));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        // 200 000 nested strict arrays of one element each: the payload that aborted the process.
        let depth = 200_000;
        let mut bytes = Vec::with_capacity(depth * 5);
        for _ in 0..depth {
            bytes.extend_from_slice(&[STRICT_ARRAY, 0, 0, 0, 1]);
        }
        bytes.push(NULL);
        assert_eq!(decode_all(&bytes, Amf0Limits::default()), Err(Amf0Error::TooDeep(32)));
        // With no depth cap at all, the heap stack still decodes it without recursion.
        let v = decode_all(
            &bytes,
            Amf0Limits {
                max_depth: usize::MAX,
                max_values: usize::MAX,
            },
        )
        .unwrap();
        assert_eq!(v.len(), 1);
        // Dropping a deeply nested value recurses in Drop: unwind it by hand (decode_all's callers never keep
        // one deeper than max_depth).
        let mut v = v.into_iter().next();
        while let Some(Amf0Value::StrictArray(mut items)) = v {
            v = items.pop();
        }
        // Objects nest the same way.
        let mut bytes = Vec::new();
        for _ in 0..100 {
            bytes.extend_from_slice(&[OBJECT, 0, 1, b'a']);
        }
        assert_eq!(decode_all(&bytes, Amf0Limits::default()), Err(Amf0Error::TooDeep(32)));
    }

    #[test]
    fn counts_and_lengths_are_bounded() {
        let mut bytes = vec![STRICT_ARRAY, 0xFF, 0xFF, 0xFF, 0xFF, NULL];
        assert_eq!(decode_all(&bytes, Amf0Limits::default()), Err(Amf0Error::Truncated));
        bytes = vec![STRICT_ARRAY, 0, 0, 0x20, 0];
        bytes.extend(std::iter::repeat_n(NULL, 0x2000));
        assert_eq!(
            decode_all(&bytes, Amf0Limits::default()),
            Err(Amf0Error::TooManyValues(4096))
        );
        assert_eq!(
            decode_all(&[LONG_STRING, 0xFF, 0xFF, 0xFF, 0xFF, b'a'], Amf0Limits::default()),
            Err(Amf0Error::Truncated)
        );
        assert_eq!(
            decode_all(&[STRING, 0, 2, 0xFF, 0xFE], Amf0Limits::default()),
            Err(Amf0Error::BadUtf8)
        );
        assert_eq!(
            decode_all(&[0x11], Amf0Limits::default()),
            Err(Amf0Error::UnsupportedType(0x11))
        );
        assert_eq!(
            decode_all(&[OBJECT_END], Amf0Limits::default()),
            Err(Amf0Error::UnexpectedObjectEnd)
        );
        assert_eq!(
            decode_all(&[OBJECT, 0, 1], Amf0Limits::default()),
            Err(Amf0Error::Truncated)
        );
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..5000 {
            let len = (seed % 64) as usize;
            // Bytes 0..18: mostly valid AMF0 markers, so the decoder gets past the first byte.
            let bytes: Vec<u8> = super::super::noise(&mut seed, len).iter().map(|b| b % 18).collect();
            let _ = decode_all(&bytes, Amf0Limits::default());
        }
    }
}
