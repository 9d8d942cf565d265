//! HPACK header compression (RFC 7541) for the HTTP/2 client: the request-header [`Encoder`]
//! (raw strings, dynamic-table reuse of repeated fields) and the response-header [`Decoder`]
//! (full RFC 7541 including Huffman, with HTTP/2 field validation per RFC 9113 8.1.1 / 8.3).
//!
//! Both sides own one dynamic table per connection direction; the caller must feed every header
//! block of the connection, in order, through the same instance.

use std::collections::VecDeque;
use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};

use super::huffman;
use crate::transport::literal_cache::LiteralCache;

/// HPACK failure that breaks the connection's decoding context (RFC 9113 COMPRESSION_ERROR).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HpackError(
    /// What was wrong with the block.
    pub(crate) &'static str,
);

impl fmt::Display for HpackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HPACK: {}", self.0)
    }
}

impl std::error::Error for HpackError {}

/// The protocol's default SETTINGS_HEADER_TABLE_SIZE, also the most the encoder ever uses.
const DEFAULT_TABLE_SIZE: usize = 4096;

/// Per-entry overhead added to name and value length (RFC 7541 4.1).
const ENTRY_OVERHEAD: usize = 32;

/// Number of entries in the static table (RFC 7541 Appendix A).
const STATIC_LEN: usize = 61;

/// Index of the first dynamic-table entry.
const FIRST_DYNAMIC: usize = STATIC_LEN + 1;

// ---------------------------------------------------------------------------------------------
// Shared dynamic table
// ---------------------------------------------------------------------------------------------

/// An entry that knows its RFC 7541 4.1 size (name + value + 32).
trait Sized32 {
    /// The entry's size for table accounting.
    fn size(&self) -> usize;
}

/// A dynamic table (RFC 7541 2.3.2): newest entry at position 0, FIFO eviction by size.
struct Table<T> {
    /// Entries, newest first: position `i` is HPACK index `62 + i`.
    entries: VecDeque<T>,
    /// Sum of the entries' sizes.
    size: usize,
    /// Current maximum size.
    max: usize,
}

impl<T: Sized32> Table<T> {
    /// An empty table of the given maximum size.
    fn new(max: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            size: 0,
            max,
        }
    }

    /// The entry at position `i` (0 = newest).
    fn get(&self, i: usize) -> Option<&T> {
        self.entries.get(i)
    }

    /// Evicts oldest entries until `size + extra <= max` (or the table is empty).
    fn evict_for(&mut self, extra: usize) {
        while self.size + extra > self.max {
            match self.entries.pop_back() {
                Some(e) => self.size -= e.size(),
                None => break,
            }
        }
    }

    /// Changes the maximum size, evicting as needed (RFC 7541 4.3).
    fn set_max(&mut self, max: usize) {
        self.max = max;
        self.evict_for(0);
    }

    /// Adds an entry, evicting first; an entry larger than the table empties it (RFC 7541 4.4).
    fn insert(&mut self, entry: T) {
        let size = entry.size();
        if size > self.max {
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.evict_for(size);
        self.size += size;
        self.entries.push_front(entry);
    }
}

// ---------------------------------------------------------------------------------------------
// Integers and strings (RFC 7541 5.1, 5.2)
// ---------------------------------------------------------------------------------------------

/// Largest shift of a continuation byte: caps decoded integers at about 2^28.
const MAX_INT_SHIFT: u32 = 21;

/// Decodes an integer with an `prefix`-bit prefix starting at `block[*pos]` (which must exist).
fn decode_int(block: &[u8], pos: &mut usize, prefix: u32) -> Result<usize, HpackError> {
    let mask = (1usize << prefix) - 1;
    let first = *block.get(*pos).ok_or(HpackError("truncated integer"))?;
    *pos += 1;
    let mut value = usize::from(first) & mask;
    if value < mask {
        return Ok(value);
    }
    let mut shift = 0;
    loop {
        let b = *block.get(*pos).ok_or(HpackError("truncated integer"))?;
        *pos += 1;
        value += usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
        if shift > MAX_INT_SHIFT {
            return Err(HpackError("integer overflow"));
        }
    }
}

/// Reads a string literal at `block[*pos]` as sent: whether it is Huffman-coded, and its octets.
fn read_raw<'a>(block: &'a [u8], pos: &mut usize) -> Result<(bool, &'a [u8]), HpackError> {
    let huffman = block.get(*pos).is_some_and(|b| b & 0x80 != 0);
    let len = decode_int(block, pos, 7)?;
    let raw = block
        .get(*pos..)
        .and_then(|rest| rest.get(..len))
        .ok_or(HpackError("truncated string"))?;
    *pos += len;
    Ok((huffman, raw))
}

/// The string a literal's octets stand for (Huffman-decoded into `scratch` if need be).
fn decode_str<'a>(
    huffman: bool,
    raw: &'a [u8],
    scratch: &'a mut Vec<u8>,
) -> Result<&'a [u8], HpackError> {
    if huffman {
        huffman::decode(raw, scratch)?;
        Ok(scratch)
    } else {
        Ok(raw)
    }
}

/// Appends an integer with a `prefix`-bit prefix; `first` carries the representation's flag bits.
#[inline(always)]
fn encode_int(dst: &mut BytesMut, first: u8, prefix: u32, value: usize) {
    let mask = (1usize << prefix) - 1;
    if value < mask {
        dst.put_u8(first | value as u8);
    } else {
        encode_int_long(dst, first | mask as u8, value - mask);
    }
}

/// The multi-byte tail of [`encode_int`]: `first` is the full prefix, `rest` the remainder.
#[cold]
fn encode_int_long(dst: &mut BytesMut, first: u8, mut rest: usize) {
    dst.put_u8(first);
    while rest >= 0x80 {
        dst.put_u8(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    dst.put_u8(rest as u8);
}

/// Appends a raw (non-Huffman) string literal.
fn encode_str(dst: &mut BytesMut, s: &[u8]) {
    encode_int(dst, 0, 7, s.len());
    dst.put_slice(s);
}

// ---------------------------------------------------------------------------------------------
// Decoder-side field representation and the static table
// ---------------------------------------------------------------------------------------------

/// A field name, classified once when it enters a table or is decoded from a literal.
#[derive(Clone, Debug)]
enum Name {
    /// `:status`.
    Status,
    /// A valid lowercase regular name that is not connection-specific.
    Header(HeaderName),
    /// Anything a response must not carry, kept raw: another pseudo-header (starts with `:`),
    /// a connection-specific name, or a name http rejects (uppercase, bad octets, empty).
    Other(Bytes),
}

impl Name {
    /// Classifies a decoded name.
    fn new(raw: &[u8]) -> Self {
        if raw == b":status" {
            return Name::Status;
        }
        if raw.first() != Some(&b':') && !is_connection_specific(raw) {
            if let Ok(name) = HeaderName::from_lowercase(raw) {
                return Name::Header(name);
            }
        }
        Name::Other(Bytes::copy_from_slice(raw))
    }

    /// The name as sent.
    #[cfg(test)]
    fn bytes(&self) -> &[u8] {
        match self {
            Name::Status => b":status",
            Name::Header(h) => h.as_str().as_bytes(),
            Name::Other(b) => b,
        }
    }
}

/// A field value: validated once by http's rules, or kept raw if it failed.
#[derive(Clone, Debug)]
enum Value {
    /// A value `HeaderValue` accepts.
    Valid(HeaderValue),
    /// A value `HeaderValue` rejects.
    Invalid(Bytes),
}

impl Value {
    /// Validates a decoded value.
    fn new(raw: &[u8]) -> Self {
        match HeaderValue::from_bytes(raw) {
            Ok(v) => Value::Valid(v),
            Err(_) => Value::Invalid(Bytes::copy_from_slice(raw)),
        }
    }

    /// The value as sent.
    fn bytes(&self) -> &[u8] {
        match self {
            Value::Valid(v) => v.as_bytes(),
            Value::Invalid(b) => b,
        }
    }
}

/// A decoded field as stored in the static or dynamic table.
#[derive(Clone, Debug)]
struct Field {
    /// Classified name.
    name: Name,
    /// Validated value.
    value: Value,
    /// Raw name length + raw value length + 32.
    size: usize,
}

impl Sized32 for Field {
    fn size(&self) -> usize {
        self.size
    }
}

/// Static entry with a regular header name.
const fn hdr(name: &'static str, value: &'static str) -> Field {
    Field {
        name: Name::Header(HeaderName::from_static(name)),
        value: Value::Valid(HeaderValue::from_static(value)),
        size: name.len() + value.len() + ENTRY_OVERHEAD,
    }
}

/// Static entry whose name a response must not carry (request pseudo-headers, transfer-encoding).
const fn other(name: &'static str, value: &'static str) -> Field {
    Field {
        name: Name::Other(Bytes::from_static(name.as_bytes())),
        value: Value::Valid(HeaderValue::from_static(value)),
        size: name.len() + value.len() + ENTRY_OVERHEAD,
    }
}

/// Static `:status` entry.
const fn status(value: &'static str) -> Field {
    Field {
        name: Name::Status,
        value: Value::Valid(HeaderValue::from_static(value)),
        size: ":status".len() + value.len() + ENTRY_OVERHEAD,
    }
}

/// The static table (RFC 7541 Appendix A), pre-validated; `STATIC_TABLE[i - 1]` is index `i`.
static STATIC_TABLE: [Field; STATIC_LEN] = [
    other(":authority", ""),
    other(":method", "GET"),
    other(":method", "POST"),
    other(":path", "/"),
    other(":path", "/index.html"),
    other(":scheme", "http"),
    other(":scheme", "https"),
    status("200"),
    status("204"),
    status("206"),
    status("304"),
    status("400"),
    status("404"),
    status("500"),
    hdr("accept-charset", ""),
    hdr("accept-encoding", "gzip, deflate"),
    hdr("accept-language", ""),
    hdr("accept-ranges", ""),
    hdr("accept", ""),
    hdr("access-control-allow-origin", ""),
    hdr("age", ""),
    hdr("allow", ""),
    hdr("authorization", ""),
    hdr("cache-control", ""),
    hdr("content-disposition", ""),
    hdr("content-encoding", ""),
    hdr("content-language", ""),
    hdr("content-length", ""),
    hdr("content-location", ""),
    hdr("content-range", ""),
    hdr("content-type", ""),
    hdr("cookie", ""),
    hdr("date", ""),
    hdr("etag", ""),
    hdr("expect", ""),
    hdr("expires", ""),
    hdr("from", ""),
    hdr("host", ""),
    hdr("if-match", ""),
    hdr("if-modified-since", ""),
    hdr("if-none-match", ""),
    hdr("if-range", ""),
    hdr("if-unmodified-since", ""),
    hdr("last-modified", ""),
    hdr("link", ""),
    hdr("location", ""),
    hdr("max-forwards", ""),
    hdr("proxy-authenticate", ""),
    hdr("proxy-authorization", ""),
    hdr("range", ""),
    hdr("referer", ""),
    hdr("refresh", ""),
    hdr("retry-after", ""),
    hdr("server", ""),
    hdr("set-cookie", ""),
    hdr("strict-transport-security", ""),
    other("transfer-encoding", ""),
    hdr("user-agent", ""),
    hdr("vary", ""),
    hdr("via", ""),
    hdr("www-authenticate", ""),
];

/// Connection-specific fields, forbidden in HTTP/2 (RFC 9113 8.2.2).
fn is_connection_specific(name: &[u8]) -> bool {
    matches!(
        name,
        b"connection" | b"keep-alive" | b"proxy-connection" | b"transfer-encoding" | b"upgrade"
    )
}

// ---------------------------------------------------------------------------------------------
// Decoder
// ---------------------------------------------------------------------------------------------

/// A decoded response header block.
#[derive(Debug, Default)]
pub(crate) struct DecodedHead {
    /// `:status`, if present and valid (3 digits 100..=999).
    pub(crate) status: Option<StatusCode>,
    /// Regular header fields (names are lowercase as sent; not re-validated beyond http's rules).
    pub(crate) headers: HeaderMap,
    /// Set when the block decoded fine but the message is malformed (RFC 9113 8.1.1 / 8.3):
    /// a pseudo-header other than `:status`, a duplicate `:status`, a pseudo-header after a
    /// regular field, an uppercase or otherwise invalid field name, an invalid value
    /// (http::HeaderValue rules), a connection-specific field, or the decoded list exceeding
    /// `max_list_size` (name + value + 32 per field). The dynamic table is updated regardless.
    pub(crate) malformed: Option<&'static str>,
}

/// Header map capacity reserved for the first regular field of a response.
const INITIAL_HEADERS: usize = 12;

/// HPACK decoder for the response header blocks of one connection.
pub(crate) struct Decoder {
    /// Dynamic table.
    table: Table<Field>,
    /// Our SETTINGS_HEADER_TABLE_SIZE: the most a size update may ask for.
    max_table_size: usize,
    /// Reused buffer for Huffman-decoded strings.
    scratch: Vec<u8>,
    /// Recently decoded literal names.
    names: LiteralCache<Name>,
    /// Recently decoded literal values.
    values: LiteralCache<Value>,
}

impl Decoder {
    /// `max_table_size`: our SETTINGS_HEADER_TABLE_SIZE (4096 is used). The table starts at this
    /// size.
    pub(crate) fn new(max_table_size: usize) -> Self {
        Self {
            table: Table::new(max_table_size),
            max_table_size,
            scratch: Vec::new(),
            names: LiteralCache::new(),
            values: LiteralCache::new(),
        }
    }

    /// Decodes one complete header block (HEADERS + CONTINUATION fragments already joined,
    /// padding and priority already stripped). `Err` only for compression errors, after which
    /// the connection must be closed: bad integer (truncated, or above about 2^28), truncated
    /// string, index 0 or beyond the tables, Huffman errors (EOS decoded, padding longer than 7
    /// bits or not all ones), a dynamic table size update that is not at the start of the block,
    /// exceeds `max_table_size`, or is the third in a row. Message-level problems set
    /// [`DecodedHead::malformed`] instead; the dynamic table is updated either way.
    pub(crate) fn decode(
        &mut self,
        block: &[u8],
        max_list_size: usize,
    ) -> Result<DecodedHead, HpackError> {
        let mut head = DecodedHead::default();
        let mut list_size = 0usize;
        let mut regular_seen = false;
        self.decode_fields(block, |name, value, size| {
            if head.malformed.is_some() {
                return;
            }
            list_size = list_size.saturating_add(size);
            if list_size > max_list_size {
                head.malformed = Some("header list too large");
                return;
            }
            match name {
                Name::Header(name) => {
                    regular_seen = true;
                    match value {
                        Value::Valid(value) => {
                            if head.headers.capacity() == 0 {
                                // One allocation for a typical response instead of growing.
                                head.headers.reserve(INITIAL_HEADERS);
                            }
                            head.headers.append(name, value);
                        }
                        Value::Invalid(_) => head.malformed = Some("invalid field value"),
                    }
                }
                Name::Status => {
                    head.malformed = if regular_seen {
                        Some("pseudo-header after regular field")
                    } else if head.status.is_some() {
                        Some("duplicate :status")
                    } else {
                        match StatusCode::from_bytes(value.bytes()) {
                            Ok(status) => {
                                head.status = Some(status);
                                None
                            }
                            Err(_) => Some("invalid :status"),
                        }
                    }
                }
                Name::Other(raw) => {
                    head.malformed = Some(if raw.first() == Some(&b':') {
                        "pseudo-header other than :status"
                    } else if is_connection_specific(&raw) {
                        "connection-specific field"
                    } else {
                        "invalid field name"
                    });
                }
            }
        })?;
        Ok(head)
    }

    /// Looks up index `idx` in the static and dynamic tables.
    fn lookup(&self, idx: usize) -> Result<&Field, HpackError> {
        if idx == 0 {
            return Err(HpackError("index 0"));
        }
        match idx.checked_sub(FIRST_DYNAMIC) {
            None => Ok(&STATIC_TABLE[idx - 1]),
            Some(i) => self
                .table
                .get(i)
                .ok_or(HpackError("index past end of table")),
        }
    }

    /// Reads a literal representation whose name index has a `prefix`-bit prefix.
    fn literal(&mut self, block: &[u8], pos: &mut usize, prefix: u32) -> Result<Field, HpackError> {
        let idx = decode_int(block, pos, prefix)?;
        let (name, name_len) = if idx == 0 {
            let (huffman, raw) = read_raw(block, pos)?;
            match self.names.get(huffman, raw) {
                Some(hit) => hit,
                None => {
                    let s = decode_str(huffman, raw, &mut self.scratch)?;
                    let (name, len) = (Name::new(s), s.len());
                    self.names.put(huffman, raw, len, &name);
                    (name, len)
                }
            }
        } else {
            let f = self.lookup(idx)?;
            (
                f.name.clone(),
                f.size - ENTRY_OVERHEAD - f.value.bytes().len(),
            )
        };
        let (huffman, raw) = read_raw(block, pos)?;
        let (value, value_len) = match self.values.get(huffman, raw) {
            Some(hit) => hit,
            None => {
                let s = decode_str(huffman, raw, &mut self.scratch)?;
                let (value, len) = (Value::new(s), s.len());
                self.values.put(huffman, raw, len, &value);
                (value, len)
            }
        };
        Ok(Field {
            name,
            size: name_len + value_len + ENTRY_OVERHEAD,
            value,
        })
    }

    /// Decodes the raw field representations of one block, updating the dynamic table and
    /// handing each field (name, value, size) to `emit` in order.
    fn decode_fields(
        &mut self,
        block: &[u8],
        mut emit: impl FnMut(Name, Value, usize),
    ) -> Result<(), HpackError> {
        let mut pos = 0;
        let mut size_updates = 0;
        let mut at_start = true;
        while let Some(&first) = block.get(pos) {
            if first & 0x80 != 0 {
                // Indexed field (6.1).
                let idx = decode_int(block, &mut pos, 7)?;
                let f = self.lookup(idx)?;
                emit(f.name.clone(), f.value.clone(), f.size);
            } else if first & 0x40 != 0 {
                // Literal with incremental indexing (6.2.1).
                let f = self.literal(block, &mut pos, 6)?;
                self.table.insert(f.clone());
                emit(f.name, f.value, f.size);
            } else if first & 0x20 != 0 {
                // Dynamic table size update (6.3).
                if !at_start {
                    return Err(HpackError("table size update after a field"));
                }
                if size_updates == 2 {
                    return Err(HpackError("more than two table size updates"));
                }
                size_updates += 1;
                let size = decode_int(block, &mut pos, 5)?;
                if size > self.max_table_size {
                    return Err(HpackError("table size update above the limit"));
                }
                self.table.set_max(size);
                continue;
            } else {
                // Literal without indexing (6.2.2) or never indexed (6.2.3).
                let f = self.literal(block, &mut pos, 4)?;
                emit(f.name, f.value, f.size);
            }
            at_start = false;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Encoder
// ---------------------------------------------------------------------------------------------

/// An entry of the encoder's dynamic table.
struct EncEntry {
    /// Field name; `None` is `:authority`.
    name: Option<HeaderName>,
    /// Field value. Holding the caller's `HeaderValue` (a refcount clone) keeps its buffer alive,
    /// so an incoming value at the same address and length is the same value: see [`same_bytes`].
    value: HeaderValue,
    /// Name length + value length + 32.
    size: usize,
}

impl Sized32 for EncEntry {
    fn size(&self) -> usize {
        self.size
    }
}

/// Byte equality with a shortcut for the common case of the very same (shared or static) buffer.
#[inline(always)]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && (a.as_ptr() == b.as_ptr() || a == b)
}

/// Whether a table entry is exactly the regular field (`name`, `value`).
#[inline(always)]
fn is_field(e: &EncEntry, name: &HeaderName, value: &HeaderValue) -> bool {
    same_bytes(e.value.as_bytes(), value.as_bytes())
        && e.name
            .as_ref()
            .is_some_and(|n| same_bytes(n.as_str().as_bytes(), name.as_str().as_bytes()))
}

/// Static-table index of a regular header name, if it has one (RFC 7541 Appendix A).
fn static_name_index(name: &HeaderName) -> Option<usize> {
    Some(match name.as_str() {
        "accept-charset" => 15,
        "accept-encoding" => 16,
        "accept-language" => 17,
        "accept-ranges" => 18,
        "accept" => 19,
        "access-control-allow-origin" => 20,
        "age" => 21,
        "allow" => 22,
        "authorization" => 23,
        "cache-control" => 24,
        "content-disposition" => 25,
        "content-encoding" => 26,
        "content-language" => 27,
        "content-length" => 28,
        "content-location" => 29,
        "content-range" => 30,
        "content-type" => 31,
        "cookie" => 32,
        "date" => 33,
        "etag" => 34,
        "expect" => 35,
        "expires" => 36,
        "from" => 37,
        "host" => 38,
        "if-match" => 39,
        "if-modified-since" => 40,
        "if-none-match" => 41,
        "if-range" => 42,
        "if-unmodified-since" => 43,
        "last-modified" => 44,
        "link" => 45,
        "location" => 46,
        "max-forwards" => 47,
        "proxy-authenticate" => 48,
        "proxy-authorization" => 49,
        "range" => 50,
        "referer" => 51,
        "refresh" => 52,
        "retry-after" => 53,
        "server" => 54,
        "set-cookie" => 55,
        "strict-transport-security" => 56,
        "transfer-encoding" => 57,
        "user-agent" => 58,
        "vary" => 59,
        "via" => 60,
        "www-authenticate" => 61,
        _ => return None,
    })
}

/// Static index of `:authority`.
const AUTHORITY_INDEX: usize = 1;
/// Static index of `:method` (name only).
const METHOD_INDEX: usize = 2;
/// Static index of `:path` (name only).
const PATH_INDEX: usize = 4;
/// Static index of `:scheme` (name only).
const SCHEME_INDEX: usize = 6;

/// HPACK encoder for the request header blocks of one connection.
pub(crate) struct Encoder {
    /// Dynamic table, mirroring the peer decoder's.
    table: Table<EncEntry>,
    /// Size updates owed at the start of the next block: (smallest seen, final).
    pending_update: Option<(usize, usize)>,
    /// Table position where `:authority` was found last time: where the search starts.
    authority_hint: usize,
}

impl Encoder {
    /// Starts with the protocol's default table size, 4096.
    pub(crate) fn new() -> Self {
        Self {
            table: Table::new(DEFAULT_TABLE_SIZE),
            pending_update: None,
            authority_hint: 0,
        }
    }

    /// The peer's SETTINGS_HEADER_TABLE_SIZE arrived: the encoder uses `min(size, 4096)` from the
    /// next block on, and that block starts with dynamic table size update(s) (RFC 7541 4.2).
    pub(crate) fn set_max_table_size(&mut self, size: usize) {
        let size = size.min(DEFAULT_TABLE_SIZE);
        self.pending_update = Some(match self.pending_update {
            Some((smallest, _)) => (smallest.min(size), size),
            None => (size, size),
        });
    }

    /// [`Encoder::encode_request`] with the pseudo-headers taken from `req`'s absolute URI
    /// (`https` and `/` when the URI has no scheme or path).
    pub(crate) fn encode_request_of(&mut self, req: &http::Request<Bytes>, dst: &mut BytesMut) {
        let uri = req.uri();
        self.encode_request(
            req.method(),
            uri.scheme_str().unwrap_or("https"),
            uri.authority().map_or("", |a| a.as_str()),
            uri.path_and_query().map_or("/", |p| p.as_str()),
            req.headers(),
            dst,
        );
    }

    /// Appends one request header block to `dst`: pseudo-headers first (`:method`, `:scheme`,
    /// `:authority`, `:path`, in that order), then `headers` (connection-specific fields and
    /// `host` are dropped, `te` is kept only as `te: trailers`).
    pub(crate) fn encode_request(
        &mut self,
        method: &Method,
        scheme: &str,
        authority: &str,
        path: &str,
        headers: &HeaderMap,
        dst: &mut BytesMut,
    ) {
        if let Some((smallest, last)) = self.pending_update.take() {
            if smallest < last {
                encode_int(dst, 0x20, 5, smallest);
                self.table.set_max(smallest);
            }
            encode_int(dst, 0x20, 5, last);
            self.table.set_max(last);
        }

        if *method == Method::POST {
            dst.put_u8(0x83);
        } else if *method == Method::GET {
            dst.put_u8(0x82);
        } else {
            encode_int(dst, 0x00, 4, METHOD_INDEX);
            encode_str(dst, method.as_str().as_bytes());
        }

        match scheme {
            "https" => dst.put_u8(0x87),
            "http" => dst.put_u8(0x86),
            _ => {
                encode_int(dst, 0x00, 4, SCHEME_INDEX);
                encode_str(dst, scheme.as_bytes());
            }
        }

        // Repeated fields sit in the table newest first, in reverse order of the request, so
        // the next field is usually one position before the previous hit.
        let auth = authority.as_bytes();
        let mut hint = match self.find(self.authority_hint, |e| {
            e.name.is_none() && same_bytes(e.value.as_bytes(), auth)
        }) {
            Some(pos) => {
                self.authority_hint = pos;
                encode_int(dst, 0x80, 7, FIRST_DYNAMIC + pos);
                pos.wrapping_sub(1)
            }
            None => {
                self.authority(auth, dst);
                usize::MAX
            }
        };

        match path {
            "/" => dst.put_u8(0x84),
            "/index.html" => dst.put_u8(0x85),
            _ => {
                encode_int(dst, 0x00, 4, PATH_INDEX);
                encode_str(dst, path.as_bytes());
            }
        }

        for (name, value) in headers {
            if value.is_sensitive() {
                if !skip(name, value.as_bytes()) {
                    never_indexed(name, value.as_bytes(), dst);
                }
                continue;
            }
            if let Some(pos) = self.find(hint, |e| is_field(e, name, value)) {
                encode_int(dst, 0x80, 7, FIRST_DYNAMIC + pos);
                hint = pos.wrapping_sub(1);
                continue;
            }
            if skip(name, value.as_bytes()) {
                continue;
            }
            hint = usize::MAX;
            let static_idx = static_name_index(name);
            match static_idx {
                Some(i) if STATIC_TABLE[i - 1].value.bytes() == value.as_bytes() => {
                    encode_int(dst, 0x80, 7, i);
                }
                _ => self.header(name, static_idx, value, dst),
            }
        }
    }

    /// Table position of the first entry satisfying `is_match`, trying position `hint` first.
    #[inline(always)]
    fn find(&self, hint: usize, is_match: impl Fn(&EncEntry) -> bool) -> Option<usize> {
        let entries = &self.table.entries;
        match entries.get(hint) {
            Some(e) if is_match(e) => Some(hint),
            _ => entries.iter().position(is_match),
        }
    }

    /// Appends a literal `:authority` (name: static index 1), indexing it if it fits.
    #[cold]
    fn authority(&mut self, value: &[u8], dst: &mut BytesMut) {
        let size = ":authority".len() + value.len() + ENTRY_OVERHEAD;
        match HeaderValue::from_bytes(value) {
            Ok(v) if size <= self.table.max / 2 => {
                encode_int(dst, 0x40, 6, AUTHORITY_INDEX);
                encode_str(dst, value);
                self.table.insert(EncEntry {
                    name: None,
                    value: v,
                    size,
                });
            }
            _ => {
                encode_int(dst, 0x00, 4, AUTHORITY_INDEX);
                encode_str(dst, value);
            }
        }
    }

    /// Appends a literal regular field and indexes it, unless it would take over half the table
    /// (then it is sent without indexing rather than flushing the table).
    #[cold]
    fn header(
        &mut self,
        name: &HeaderName,
        static_idx: Option<usize>,
        value: &HeaderValue,
        dst: &mut BytesMut,
    ) {
        let raw_name = name.as_str().as_bytes();
        let size = raw_name.len() + value.len() + ENTRY_OVERHEAD;
        let (flags, prefix, insert) = if size <= self.table.max / 2 {
            (0x40, 6, true)
        } else {
            (0x00, 4, false)
        };
        let name_idx = static_idx.or_else(|| {
            self.table
                .entries
                .iter()
                .position(|e| e.name.as_ref() == Some(name))
                .map(|pos| FIRST_DYNAMIC + pos)
        });
        match name_idx {
            Some(i) => encode_int(dst, flags, prefix, i),
            None => {
                dst.put_u8(flags);
                encode_str(dst, raw_name);
            }
        }
        encode_str(dst, value.as_bytes());
        if insert {
            self.table.insert(EncEntry {
                name: Some(name.clone()),
                value: value.clone(),
                size,
            });
        }
    }
}

/// Appends a never-indexed literal (RFC 7541 6.2.3) for a sensitive value.
fn never_indexed(name: &HeaderName, value: &[u8], dst: &mut BytesMut) {
    match static_name_index(name) {
        Some(i) => encode_int(dst, 0x10, 4, i),
        None => {
            dst.put_u8(0x10);
            encode_str(dst, name.as_str().as_bytes());
        }
    }
    encode_str(dst, value);
}

/// Whether a request header must not be sent: connection-specific fields, `host` (carried by
/// `:authority`), and `te` other than `trailers` (RFC 9113 8.2.2).
pub(crate) fn skip(name: &HeaderName, value: &[u8]) -> bool {
    if *name == http::header::TE {
        return value != b"trailers";
    }
    *name == http::header::HOST
        || *name == http::header::CONNECTION
        || *name == http::header::TRANSFER_ENCODING
        || *name == http::header::UPGRADE
        || matches!(name.as_str(), "keep-alive" | "proxy-connection")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{HeaderName, HeaderValue};

    pub(super) fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn s(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    type Fields = Vec<(String, String)>;

    /// Decodes through the raw field layer (no response rules).
    pub(super) fn raw_fields(dec: &mut Decoder, block: &[u8]) -> Result<Fields, HpackError> {
        let mut out = Vec::new();
        dec.decode_fields(block, |n, v, size| {
            assert_eq!(size, n.bytes().len() + v.bytes().len() + 32);
            out.push((s(n.bytes()), s(v.bytes())));
        })?;
        Ok(out)
    }

    fn dec_table(dec: &Decoder) -> (Fields, usize) {
        let t = &dec.table;
        let entries = t
            .entries
            .iter()
            .map(|f| (s(f.name.bytes()), s(f.value.bytes())))
            .collect();
        let sum: usize = t.entries.iter().map(|f| f.size).sum();
        assert_eq!(sum, t.size);
        (entries, t.size)
    }

    pub(super) fn enc_table(enc: &Encoder) -> (Fields, usize) {
        let entries = enc
            .table
            .entries
            .iter()
            .map(|e| {
                let name = e.name.as_ref().map_or(":authority", |n| n.as_str());
                (name.to_string(), s(e.value.as_bytes()))
            })
            .collect();
        (entries, enc.table.size)
    }

    fn f(list: &[(&str, &str)]) -> Fields {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    /// Asserts the encoder and decoder dynamic tables agree (cfg(test) sync check).
    pub(super) fn assert_in_sync(enc: &Encoder, dec: &Decoder) {
        assert_eq!(enc_table(enc), dec_table(dec));
        assert_eq!(enc.table.max, dec.table.max);
    }

    #[test]
    fn static_table_is_consistent() {
        assert_eq!(STATIC_TABLE[0].name.bytes(), b":authority");
        assert_eq!(STATIC_TABLE[60].name.bytes(), b"www-authenticate");
        for (i, field) in STATIC_TABLE.iter().enumerate() {
            let raw = field.name.bytes();
            assert_eq!(field.size, raw.len() + field.value.bytes().len() + 32);
            if raw[0] != b':' {
                let name = HeaderName::from_bytes(raw).unwrap();
                assert_eq!(static_name_index(&name), Some(i + 1), "{}", s(raw));
            }
        }
        assert_eq!(
            static_name_index(&HeaderName::from_static("x-wns-type")),
            None
        );
    }

    #[test]
    fn c1_integers() {
        let cases: &[(usize, u32, &[u8])] = &[
            (10, 5, &[0x0a]),
            (1337, 5, &[0x1f, 0x9a, 0x0a]),
            (42, 8, &[0x2a]),
            (31, 5, &[0x1f, 0x00]),
            (4096, 5, &[0x3f & 0x1f, 0xe1, 0x1f]),
        ];
        for &(value, prefix, bytes) in cases {
            let mut dst = BytesMut::new();
            encode_int(&mut dst, 0, prefix, value);
            assert_eq!(&dst[..], bytes, "{value}");
            let mut pos = 0;
            assert_eq!(decode_int(bytes, &mut pos, prefix), Ok(value));
            assert_eq!(pos, bytes.len());
        }
        // Flag bits above the prefix are ignored.
        let mut pos = 0;
        assert_eq!(decode_int(&[0xea], &mut pos, 5), Ok(10));
        // Largest accepted: four continuation bytes.
        let mut pos = 0;
        assert!(decode_int(&[0x1f, 0xff, 0xff, 0xff, 0x7f], &mut pos, 5).is_ok());
        let mut pos = 0;
        assert_eq!(
            decode_int(&[0x1f, 0xff, 0xff, 0xff, 0xff, 0x01], &mut pos, 5),
            Err(HpackError("integer overflow"))
        );
    }

    #[test]
    fn c2_literals_and_indexed() {
        // C.2.1 literal with indexing
        let mut dec = Decoder::new(4096);
        let b = hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572");
        let want = f(&[("custom-key", "custom-header")]);
        assert_eq!(raw_fields(&mut dec, &b).unwrap(), want);
        assert_eq!(dec_table(&dec), (want, 55));
        // C.2.2 literal without indexing
        let mut dec = Decoder::new(4096);
        let b = hex("040c 2f73 616d 706c 652f 7061 7468");
        let want = f(&[(":path", "/sample/path")]);
        assert_eq!(raw_fields(&mut dec, &b).unwrap(), want);
        assert_eq!(dec_table(&dec), (vec![], 0));
        // C.2.3 never indexed
        let b = hex("1008 7061 7373 776f 7264 0673 6563 7265 74");
        let want = f(&[("password", "secret")]);
        assert_eq!(raw_fields(&mut dec, &b).unwrap(), want);
        assert_eq!(dec_table(&dec), (vec![], 0));
        // C.2.4 indexed
        assert_eq!(
            raw_fields(&mut dec, &[0x82]).unwrap(),
            f(&[(":method", "GET")])
        );
        assert_eq!(dec_table(&dec), (vec![], 0));
    }

    fn request_sequence(blocks: [&str; 3]) {
        let mut dec = Decoder::new(4096);
        let b = hex(blocks[0]);
        assert_eq!(
            raw_fields(&mut dec, &b).unwrap(),
            f(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com")
            ])
        );
        assert_eq!(
            dec_table(&dec),
            (f(&[(":authority", "www.example.com")]), 57)
        );
        let b = hex(blocks[1]);
        assert_eq!(
            raw_fields(&mut dec, &b).unwrap(),
            f(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache")
            ])
        );
        assert_eq!(
            dec_table(&dec),
            (
                f(&[
                    ("cache-control", "no-cache"),
                    (":authority", "www.example.com")
                ]),
                110
            )
        );
        let b = hex(blocks[2]);
        assert_eq!(
            raw_fields(&mut dec, &b).unwrap(),
            f(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value")
            ])
        );
        assert_eq!(
            dec_table(&dec),
            (
                f(&[
                    ("custom-key", "custom-value"),
                    ("cache-control", "no-cache"),
                    (":authority", "www.example.com")
                ]),
                164
            )
        );
    }

    #[test]
    fn c3_requests_without_huffman() {
        request_sequence([
            "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
            "8286 84be 5808 6e6f 2d63 6163 6865",
            "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
        ]);
    }

    #[test]
    fn c4_requests_with_huffman() {
        request_sequence([
            "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
            "8286 84be 5886 a8eb 1064 9cbf",
            "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
        ]);
    }

    fn headers_of(head: &DecodedHead) -> Fields {
        head.headers
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), s(v.as_bytes())))
            .collect()
    }

    const DATE1: &str = "Mon, 21 Oct 2013 20:13:21 GMT";
    const DATE2: &str = "Mon, 21 Oct 2013 20:13:22 GMT";
    const LOC: &str = "https://www.example.com";
    const COOKIE: &str = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";

    /// C.5 / C.6: responses with a 256-octet table, through the public `decode`.
    fn response_sequence(blocks: [&str; 3]) {
        let mut dec = Decoder::new(256);
        let head = dec.decode(&hex(blocks[0]), 1 << 20).unwrap();
        assert_eq!(head.malformed, None);
        assert_eq!(head.status, Some(StatusCode::FOUND));
        let want = f(&[
            ("cache-control", "private"),
            ("date", DATE1),
            ("location", LOC),
        ]);
        assert_eq!(headers_of(&head), want);
        assert_eq!(
            dec_table(&dec),
            (
                f(&[
                    ("location", LOC),
                    ("date", DATE1),
                    ("cache-control", "private"),
                    (":status", "302")
                ]),
                222
            )
        );

        let head = dec.decode(&hex(blocks[1]), 1 << 20).unwrap();
        assert_eq!(head.malformed, None);
        assert_eq!(head.status, Some(StatusCode::TEMPORARY_REDIRECT));
        assert_eq!(headers_of(&head), want);
        assert_eq!(
            dec_table(&dec),
            (
                f(&[
                    (":status", "307"),
                    ("location", LOC),
                    ("date", DATE1),
                    ("cache-control", "private")
                ]),
                222
            )
        );

        let head = dec.decode(&hex(blocks[2]), 1 << 20).unwrap();
        assert_eq!(head.malformed, None);
        assert_eq!(head.status, Some(StatusCode::OK));
        assert_eq!(
            headers_of(&head),
            f(&[
                ("cache-control", "private"),
                ("date", DATE2),
                ("location", LOC),
                ("content-encoding", "gzip"),
                ("set-cookie", COOKIE),
            ])
        );
        assert_eq!(
            dec_table(&dec),
            (
                f(&[
                    ("set-cookie", COOKIE),
                    ("content-encoding", "gzip"),
                    ("date", DATE2)
                ]),
                215
            )
        );
    }

    #[test]
    fn c5_responses_without_huffman() {
        response_sequence([
            "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 \
             2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 \
             6c65 2e63 6f6d",
            "4803 3330 37c1 c0bf",
            "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d \
             54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 \
             5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e \
             3d31",
        ]);
    }

    #[test]
    fn c6_responses_with_huffman() {
        response_sequence([
            "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 \
             2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
            "4883 640e ffc1 c0bf",
            "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab \
             77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f \
             9587 3160 65c0 03ed 4ee5 b106 3d50 07",
        ]);
    }

    /// Appends a literal with incremental indexing and a literal name (test block builder).
    pub(super) fn lit(dst: &mut Vec<u8>, flags: u8, name: &[u8], value: &[u8]) {
        dst.push(flags);
        let mut b = BytesMut::new();
        encode_str(&mut b, name);
        encode_str(&mut b, value);
        dst.extend_from_slice(&b);
    }

    #[test]
    fn literal_cache_hits_and_collisions_decode_exactly() {
        // Literals without indexing, as nginx sends every field: the same Huffman-coded name
        // and value each time, plus a value that changes (many of them share cache slots).
        let mut dec = Decoder::new(4096);
        let mut name = Vec::new();
        huffman::encode(b"x-wns-msg-id", &mut name);
        for i in 0..500u32 {
            let value = format!("{:016X}", u64::from(i) * 0x9e37_79b9);
            let mut v = Vec::new();
            huffman::encode(value.as_bytes(), &mut v);
            let mut block = vec![0x88, 0x00, 0x80 | name.len() as u8];
            block.extend_from_slice(&name);
            block.push(0x80 | v.len() as u8);
            block.extend_from_slice(&v);
            // The same field twice more, raw (not Huffman): same string, other octets.
            block.extend_from_slice(&[0x00, 12]);
            block.extend_from_slice(b"x-wns-msg-id");
            block.push(value.len() as u8);
            block.extend_from_slice(value.as_bytes());
            let head = dec.decode(&block, 65_536).unwrap();
            let got: Vec<_> = head.headers.get_all("x-wns-msg-id").iter().collect();
            assert_eq!(got, vec![value.as_str(), value.as_str()], "block {i}");
            // Decoding the same block again (all cache hits) gives the same.
            let again = dec.decode(&block, 65_536).unwrap();
            assert_eq!(again.headers, head.headers);
        }
        // An invalid value stays invalid when it comes from the cache.
        let bad = [0x88, 0x00, 1, b'x', 2, b'a', 0x7f];
        for _ in 0..2 {
            assert_eq!(
                dec.decode(&bad, 65_536).unwrap().malformed,
                Some("invalid field value")
            );
        }
    }

    #[test]
    fn malformed_keeps_table_in_sync() {
        let cases: &[(&[u8], &[u8], &str)] = &[
            (b"X-Bad", b"v", "invalid field name"),
            (b"x bad", b"v", "invalid field name"),
            (b"", b"v", "invalid field name"),
            (b":path", b"/", "pseudo-header other than :status"),
            (b"connection", b"close", "connection-specific field"),
            (b"keep-alive", b"1", "connection-specific field"),
            (b"proxy-connection", b"1", "connection-specific field"),
            (
                b"transfer-encoding",
                b"chunked",
                "connection-specific field",
            ),
            (b"upgrade", b"h2c", "connection-specific field"),
            (b"x-val", b"a\x01b", "invalid field value"),
            (b"x-val", b"a\nb", "invalid field value"),
        ];
        for &(name, value, why) in cases {
            let mut dec = Decoder::new(4096);
            let mut block = vec![];
            block.push(0x88);
            lit(&mut block, 0x40, b"x-good", b"yes");
            lit(&mut block, 0x40, name, value);
            lit(&mut block, 0x40, b"x-after", b"1");
            let head = dec.decode(&block, 1 << 20).unwrap();
            assert_eq!(head.malformed, Some(why), "{}", s(name));
            let (entries, _) = dec_table(&dec);
            assert_eq!(entries[1], (s(name), s(value)));
            assert_eq!(entries.len(), 3);
            // The next block references the entries around the bad one.
            let head = dec.decode(&[0x88, 0xc0, 0xbe], 1 << 20).unwrap();
            assert_eq!(head.malformed, None);
            assert_eq!(head.status, Some(StatusCode::OK));
            assert_eq!(headers_of(&head), f(&[("x-good", "yes"), ("x-after", "1")]));
            // Referencing the bad entry is malformed again.
            let head = dec.decode(&[0x88, 0xbf], 1 << 20).unwrap();
            assert!(head.malformed.is_some());
        }
    }

    #[test]
    fn malformed_message_rules() {
        let mut dec = Decoder::new(4096);
        let check = |dec: &mut Decoder, block: &[u8], why: Option<&str>| {
            let head = dec.decode(block, 1 << 20).unwrap();
            assert_eq!(head.malformed, why, "{block:02x?}");
            head
        };
        check(&mut dec, &[0x88, 0x88], Some("duplicate :status"));
        check(&mut dec, &[0x88, 0x8d], Some("duplicate :status"));
        // content-length: "" (static 28) then :status
        check(
            &mut dec,
            &[0x5c, 0x01, b'0', 0x88],
            Some("pseudo-header after regular field"),
        );
        check(
            &mut dec,
            &[0x88, 0x83],
            Some("pseudo-header other than :status"),
        );
        check(&mut dec, &[0x88, 0xb9], Some("connection-specific field"));
        let head = check(&mut dec, &[0x08, 0x02, b'2', b'0'], Some("invalid :status"));
        assert_eq!(head.status, None);
        check(
            &mut dec,
            &[0x08, 0x03, b'0', b'9', b'9'],
            Some("invalid :status"),
        );
        check(
            &mut dec,
            &[0x08, 0x03, b'2', b'0', b'x'],
            Some("invalid :status"),
        );
        // The literals above were indexed even though the block was malformed.
        let head = check(&mut dec, &[0x8d, 0xbe], None);
        assert_eq!(head.status, Some(StatusCode::NOT_FOUND));
        assert_eq!(headers_of(&head), f(&[("content-length", "0")]));
        // A missing :status is the caller's business (trailers), not malformed here.
        let head = check(&mut dec, &[0xbe], None);
        assert_eq!(head.status, None);
        // Repeated names are appended.
        let head = check(&mut dec, &[0x88, 0xbe, 0xbe], None);
        assert_eq!(head.headers.get_all("content-length").iter().count(), 2);
    }

    #[test]
    fn list_size_limit() {
        let mut dec = Decoder::new(4096);
        let mut block = vec![0x88];
        lit(&mut block, 0x40, b"x-a", &[b'a'; 100]);
        lit(&mut block, 0x40, b"x-b", &[b'b'; 100]);
        // :status 200 = 42, x-a = 135, x-b = 135 => 312
        let head = dec.decode(&block, 312).unwrap();
        assert_eq!(head.malformed, None);
        let head = dec.decode(&[0x88, 0xbe, 0xbf], 311).unwrap();
        assert_eq!(head.malformed, Some("header list too large"));
        let mut dec2 = Decoder::new(4096);
        let head = dec2.decode(&block, 311).unwrap();
        assert_eq!(head.malformed, Some("header list too large"));
        // Table updated anyway.
        assert_eq!(dec_table(&dec2), dec_table(&dec));
        let head = dec2.decode(&[0x88, 0xbf], 1000).unwrap();
        assert_eq!(headers_of(&head), f(&[("x-a", &"a".repeat(100))]));
    }

    #[test]
    fn compression_errors() {
        let err = |block: &[u8]| Decoder::new(4096).decode(block, 1 << 20).unwrap_err();
        assert_eq!(err(&[0x80]), HpackError("index 0"));
        assert_eq!(err(&[0xbe]), HpackError("index past end of table"));
        assert_eq!(err(&[0x40, 0x81]), HpackError("truncated string"));
        assert_eq!(err(&[0x7f]), HpackError("truncated integer"));
        assert_eq!(err(&[0x88, 0xff, 0x80]), HpackError("truncated integer"));
        assert_eq!(
            err(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x0f]),
            HpackError("integer overflow")
        );
        assert_eq!(
            err(&[0x40, 0x05, b'a', b'b']),
            HpackError("truncated string")
        );
        assert_eq!(
            err(&[0x40, 0x01, b'a', 0x05, b'a']),
            HpackError("truncated string")
        );
        assert_eq!(err(&[0x5f]), HpackError("truncated integer"));
        assert_eq!(err(&[0x0f, 0x30]), HpackError("index past end of table"));
        assert_eq!(
            err(&[0x88, 0x20]),
            HpackError("table size update after a field")
        );
        assert_eq!(
            err(&[0x3f, 0xe2, 0x1f]),
            HpackError("table size update above the limit")
        );
        assert_eq!(
            err(&[0x20, 0x3f, 0xe1, 0x1f, 0x20]),
            HpackError("more than two table size updates")
        );
        // Huffman errors inside a block: EOS, long padding, bad padding.
        assert_eq!(
            err(&[0x40, 0x84, 0xff, 0xff, 0xff, 0xff, 0x01, b'a']),
            HpackError("Huffman string contains EOS")
        );
        assert_eq!(
            err(&[0x40, 0x82, 0x1f, 0xff, 0x01, b'a']),
            HpackError("invalid Huffman padding")
        );
        assert_eq!(
            err(&[0x40, 0x81, 0x1e, 0x01, b'a']),
            HpackError("invalid Huffman padding")
        );
        assert_eq!(err(&[0x80]).to_string(), "HPACK: index 0");
    }

    #[test]
    fn size_updates() {
        let mut dec = Decoder::new(4096);
        let mut block = vec![];
        lit(&mut block, 0x40, b"x-a", b"1");
        dec.decode(&block, 1 << 20).unwrap();
        assert_eq!(dec_table(&dec).1, 36);
        // Two updates at block start are fine: 0 evicts everything, then back to 4096.
        let head = dec
            .decode(&[0x20, 0x3f, 0xe1, 0x1f, 0x88], 1 << 20)
            .unwrap();
        assert_eq!(head.status, Some(StatusCode::OK));
        assert_eq!(dec_table(&dec), (vec![], 0));
        assert_eq!(dec.table.max, 4096);
        // An update alone is a valid block.
        dec.decode(&[0x3f, 0x45], 1 << 20).unwrap();
        assert_eq!(dec.table.max, 100);
        // Entry larger than the table empties it.
        lit(&mut block, 0x40, b"x-big", &[b'b'; 80]);
        dec.decode(&block, 1 << 20).unwrap();
        assert_eq!(dec_table(&dec), (vec![], 0));
    }

    fn request_headers(i: usize) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "content-type",
            HeaderValue::from_static("application/octet-stream"),
        );
        h.insert(
            "content-length",
            HeaderValue::from(if i % 7 == 3 { 1234 } else { 42 }),
        );
        h.insert("x-wns-type", HeaderValue::from_static("wns/raw"));
        h.insert("x-wns-cache-policy", HeaderValue::from_static("cache"));
        h.insert("x-wns-ttl", HeaderValue::from_static("60"));
        if i % 5 == 1 {
            let mut v = HeaderValue::from_str(&format!("Bearer secret-{}", i / 10)).unwrap();
            v.set_sensitive(true);
            h.insert("authorization", v);
        }
        if i % 4 == 2 {
            h.append("x-multi", HeaderValue::from_static("one"));
            h.append("x-multi", HeaderValue::from_static("two"));
            h.insert("x-wns-tag", HeaderValue::from(i));
            h.insert("te", HeaderValue::from_static("trailers"));
            h.insert("accept-encoding", HeaderValue::from_static("gzip, deflate"));
            h.insert("accept", HeaderValue::from_static(""));
        }
        if i % 6 == 5 {
            h.insert("host", HeaderValue::from_static("example.com"));
            h.insert("connection", HeaderValue::from_static("close"));
            h.insert("keep-alive", HeaderValue::from_static("1"));
            h.insert("proxy-connection", HeaderValue::from_static("1"));
            h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
            h.insert("upgrade", HeaderValue::from_static("h2c"));
            h.insert("te", HeaderValue::from_static("gzip"));
        }
        if i % 9 == 4 {
            let big = "z".repeat(3000);
            h.insert("x-big", HeaderValue::from_str(&big).unwrap());
        }
        h
    }

    /// The fields a request block must decode to.
    pub(super) fn expected(
        method: &Method,
        authority: &str,
        path: &str,
        headers: &HeaderMap,
    ) -> Fields {
        let mut out = f(&[
            (":method", method.as_str()),
            (":scheme", "https"),
            (":authority", authority),
            (":path", path),
        ]);
        for (n, v) in headers {
            if !skip(n, v.as_bytes()) {
                out.push((n.as_str().to_string(), s(v.as_bytes())));
            }
        }
        out
    }

    #[test]
    fn encoder_decoder_round_trip() {
        let mut enc = Encoder::new();
        let mut dec = Decoder::new(4096);
        let authority = "cloud.notify.windows.com";
        for i in 0..60 {
            match i {
                20 => enc.set_max_table_size(0),
                21 => enc.set_max_table_size(100),
                22 => enc.set_max_table_size(4096),
                30 => {
                    enc.set_max_table_size(1000);
                    enc.set_max_table_size(0);
                    enc.set_max_table_size(8192);
                }
                40 => {
                    enc.set_max_table_size(200);
                    enc.set_max_table_size(300);
                }
                _ => {}
            }
            let method = if i % 11 == 10 {
                Method::PUT
            } else if i % 13 == 12 {
                Method::GET
            } else {
                Method::POST
            };
            let path = format!("/w/?token=AwYAAAB{}", i * 7919);
            let headers = request_headers(i);
            let mut dst = BytesMut::new();
            enc.encode_request(&method, "https", authority, &path, &headers, &mut dst);
            let got = raw_fields(&mut dec, &dst).unwrap();
            assert_eq!(got, expected(&method, authority, &path, &headers), "i={i}");
            assert_in_sync(&enc, &dec);
            // No sensitive value is ever indexed.
            assert!(!enc_table(&enc).0.iter().any(|(n, _)| n == "authorization"));
            // Steady state: only repeated headers => every field but :path is one byte.
            if [7, 8, 33].contains(&i) {
                let n = headers.len();
                assert_eq!(dst.len(), 3 + 1 + 1 + path.len() + n, "i={i} {dst:02x?}");
            }
            if i == 30 {
                // Smallest then final size.
                assert_eq!(&dst[..4], &[0x20, 0x3f, 0xe1, 0x1f]);
            }
            if i == 40 {
                assert_eq!(&dst[..4], &[0x3f, 0xa9, 0x01, 0x3f]);
                assert_eq!(enc.table.max, 300);
            }
        }
        assert_eq!(enc.table.max, 300);
    }

    #[test]
    fn encoder_representations() {
        let mut enc = Encoder::new();
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        h.insert("x-custom", HeaderValue::from_static("a"));
        let mut v = HeaderValue::from_static("token");
        v.set_sensitive(true);
        h.insert("x-secret", v);
        let mut dst = BytesMut::new();
        enc.encode_request(&Method::POST, "https", "a.b", "/p", &h, &mut dst);
        let mut want = vec![
            0x83, 0x87, 0x41, 0x03, b'a', b'.', b'b', 0x04, 0x02, b'/', b'p',
        ];
        want.extend_from_slice(&[0x5f, 0x0a]);
        want.extend_from_slice(b"text/plain");
        lit(&mut want, 0x40, b"x-custom", b"a");
        lit(&mut want, 0x10, b"x-secret", b"token");
        assert_eq!(&dst[..], &want[..]);
        // Second time: all indexed except path; new value for x-custom reuses its dynamic name.
        h.insert("x-custom", HeaderValue::from_static("b"));
        dst.clear();
        enc.encode_request(&Method::POST, "https", "a.b", "/", &h, &mut dst);
        let mut want = vec![0x83, 0x87, 0xc0, 0x84, 0xbf, 0x7e, 0x01, b'b'];
        lit(&mut want, 0x10, b"x-secret", b"token");
        assert_eq!(&dst[..], &want[..]);
        let mut dec = Decoder::new(4096);
        let mut enc2 = Encoder::new();
        let mut all = BytesMut::new();
        enc2.encode_request(&Method::POST, "https", "a.b", "/p", &h, &mut all);
        raw_fields(&mut dec, &all).unwrap();
        assert_in_sync(&enc2, &dec);
    }
}

#[cfg(test)]
#[path = "hpack_corpus.rs"]
mod corpus;
