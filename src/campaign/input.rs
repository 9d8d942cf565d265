//! Streaming device lists: CSV with a header, or JSONL. Rows are read one at a
//! time with a bounded line length, so a file of any size (or stdin) needs
//! constant memory. Every problem with a row becomes a [`RowError`] with its
//! line number; only a missing CSV header column stops the whole read.

use std::io::{BufRead, ErrorKind};
use std::time::SystemTime;

/// The longest input line accepted, in bytes.
pub const MAX_LINE: usize = 16 * 1024;

/// One device from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRow {
    /// The caller's device id.
    pub device_id: String,
    /// The channel URI, not yet validated.
    pub channel_uri: String,
    /// The tenant key in the config.
    pub tenant: String,
    /// When the channel was read from the device (RFC 3339), if known.
    pub channel_seen_at: Option<SystemTime>,
}

/// Why a row could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// The device id, when it could be read.
    pub device_id: Option<String>,
    /// What is wrong.
    pub reason: String,
}

/// One input line: its number and what was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputRow {
    /// 1-based line number.
    pub line: u64,
    /// The row or why it is bad.
    pub row: Result<DeviceRow, RowError>,
}

/// The input as a whole cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// Reading failed.
    #[error("{source_name}: read error: {error}")]
    Io {
        /// File name or `stdin`.
        source_name: String,
        /// The error.
        error: std::io::Error,
    },
    /// The CSV header lacks a required column.
    #[error("{source_name}:{line}: CSV header has no `{column}` column (needs device_id, channel_uri, tenant; optional channel_seen_at)")]
    Header {
        /// File name or `stdin`.
        source_name: String,
        /// The header's line.
        line: u64,
        /// The missing column.
        column: &'static str,
    },
}

/// The file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated with a header line.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

/// Reads devices from any `BufRead`.
pub struct DeviceReader<R> {
    reader: R,
    source_name: String,
    line: u64,
    bytes: u64,
    format: Option<Format>,
    columns: Option<[usize; 4]>,
    buf: Vec<u8>,
}

impl<R: BufRead> DeviceReader<R> {
    /// A reader; the format is taken from the first non-empty line (`{` means JSONL).
    pub fn new(reader: R, source_name: impl Into<String>) -> Self {
        DeviceReader {
            reader,
            source_name: source_name.into(),
            line: 0,
            bytes: 0,
            format: None,
            columns: None,
            buf: Vec::new(),
        }
    }

    /// Bytes consumed so far (for progress).
    pub fn bytes_read(&self) -> u64 {
        self.bytes
    }

    /// The next row, `Ok(None)` at the end.
    pub fn next_row(&mut self) -> Result<Option<InputRow>, InputError> {
        loop {
            let Some(too_long) = self.read_line()? else {
                return Ok(None);
            };
            self.line += 1;
            let line = self.line;
            if too_long {
                return Ok(Some(bad(
                    line,
                    None,
                    format!("line is longer than {MAX_LINE} bytes"),
                )));
            }
            let raw = std::mem::take(&mut self.buf);
            let result = self.parse_line(line, &raw);
            self.buf = raw;
            match result? {
                Some(row) => return Ok(Some(row)),
                None => continue,
            }
        }
    }

    /// Reads one line into `buf` (without the newline). `Some(true)` when it was
    /// longer than [`MAX_LINE`] (the rest is skipped), `None` at the end.
    fn read_line(&mut self) -> Result<Option<bool>, InputError> {
        self.buf.clear();
        let mut too_long = false;
        let mut any = false;
        loop {
            let chunk = match self.reader.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(error) => {
                    return Err(InputError::Io {
                        source_name: self.source_name.clone(),
                        error,
                    })
                }
            };
            if chunk.is_empty() {
                return Ok(if any { Some(too_long) } else { None });
            }
            any = true;
            let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            let content = if done {
                &chunk[..take - 1]
            } else {
                &chunk[..take]
            };
            if !too_long {
                if self.buf.len() + content.len() > MAX_LINE {
                    too_long = true;
                    self.buf.clear();
                } else {
                    self.buf.extend_from_slice(content);
                }
            }
            self.reader.consume(take);
            self.bytes += take as u64;
            if done {
                if self.buf.last() == Some(&b'\r') {
                    self.buf.pop();
                }
                return Ok(Some(too_long));
            }
        }
    }

    fn parse_line(&mut self, line: u64, raw: &[u8]) -> Result<Option<InputRow>, InputError> {
        let raw = if line == 1 {
            raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw)
        } else {
            raw
        };
        if raw.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(None);
        }
        if raw.contains(&0) {
            return Ok(Some(bad(line, None, "line contains a NUL byte".into())));
        }
        let text = match std::str::from_utf8(raw) {
            Ok(t) => t,
            Err(e) => {
                return Ok(Some(bad(
                    line,
                    None,
                    format!("line is not valid UTF-8 (at byte {})", e.valid_up_to()),
                )))
            }
        };
        let format = *self
            .format
            .get_or_insert(if text.trim_start().starts_with('{') {
                Format::Jsonl
            } else {
                Format::Csv
            });
        match format {
            Format::Jsonl => Ok(Some(InputRow {
                line,
                row: parse_json(text),
            })),
            Format::Csv => {
                let fields = match split_csv(text) {
                    Ok(f) => f,
                    Err(reason) => return Ok(Some(bad(line, None, reason))),
                };
                let Some(cols) = self.columns else {
                    let find = |name: &'static str| {
                        fields
                            .iter()
                            .position(|f| f.trim().eq_ignore_ascii_case(name))
                            .ok_or(InputError::Header {
                                source_name: self.source_name.clone(),
                                line,
                                column: name,
                            })
                    };
                    let seen = fields
                        .iter()
                        .position(|f| f.trim().eq_ignore_ascii_case("channel_seen_at"))
                        .unwrap_or(usize::MAX);
                    self.columns = Some([
                        find("device_id")?,
                        find("channel_uri")?,
                        find("tenant")?,
                        seen,
                    ]);
                    return Ok(None);
                };
                Ok(Some(InputRow {
                    line,
                    row: csv_row(&fields, cols),
                }))
            }
        }
    }
}

fn bad(line: u64, device_id: Option<String>, reason: String) -> InputRow {
    InputRow {
        line,
        row: Err(RowError { device_id, reason }),
    }
}

fn check_fields(
    device_id: String,
    channel_uri: String,
    tenant: String,
    seen: Option<&str>,
) -> Result<DeviceRow, RowError> {
    let err = |reason: String, id: &str| RowError {
        device_id: (!id.is_empty()).then(|| id.to_string()),
        reason,
    };
    if device_id.trim().is_empty() {
        return Err(err("device_id is empty".into(), ""));
    }
    if device_id.len() > 256 {
        return Err(err("device_id is longer than 256 bytes".into(), ""));
    }
    if tenant.trim().is_empty() {
        return Err(err("tenant is empty".into(), &device_id));
    }
    let channel_seen_at = match seen.map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => match humantime::parse_rfc3339_weak(s) {
            Ok(t) => Some(t),
            Err(e) => {
                return Err(err(
                    format!("channel_seen_at {s:?} is not RFC 3339: {e}"),
                    &device_id,
                ))
            }
        },
    };
    Ok(DeviceRow {
        device_id,
        channel_uri,
        tenant,
        channel_seen_at,
    })
}

fn parse_json(text: &str) -> Result<DeviceRow, RowError> {
    #[derive(serde::Deserialize)]
    struct J {
        device_id: Option<serde_json::Value>,
        channel_uri: Option<String>,
        tenant: Option<String>,
        channel_seen_at: Option<String>,
    }
    let j: J = serde_json::from_str(text).map_err(|e| RowError {
        device_id: None,
        reason: format!("not a JSON object with the device fields: {e}"),
    })?;
    let device_id = match j.device_id {
        Some(serde_json::Value::String(s)) => s,
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => {
            return Err(RowError {
                device_id: None,
                reason: "device_id is missing".into(),
            })
        }
    };
    let Some(channel_uri) = j.channel_uri else {
        return Err(RowError {
            device_id: Some(device_id),
            reason: "channel_uri is missing".into(),
        });
    };
    let Some(tenant) = j.tenant else {
        return Err(RowError {
            device_id: Some(device_id),
            reason: "tenant is missing".into(),
        });
    };
    check_fields(device_id, channel_uri, tenant, j.channel_seen_at.as_deref())
}

fn csv_row(fields: &[String], cols: [usize; 4]) -> Result<DeviceRow, RowError> {
    let get = |i: usize| fields.get(i).map(|s| s.trim().to_string());
    let device_id = get(cols[0]).unwrap_or_default();
    let (Some(channel_uri), Some(tenant)) = (get(cols[1]), get(cols[2])) else {
        return Err(RowError {
            device_id: (!device_id.is_empty()).then_some(device_id),
            reason: format!("row has {} fields; the header has more", fields.len()),
        });
    };
    let seen = if cols[3] == usize::MAX {
        None
    } else {
        get(cols[3])
    };
    check_fields(device_id, channel_uri, tenant, seen.as_deref())
}

/// Splits one CSV line (RFC 4180 quoting within the line).
fn split_csv(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    field.push('"');
                    chars.next();
                } else {
                    quoted = false;
                }
            } else {
                field.push(c);
            }
        } else if c == ',' {
            out.push(std::mem::take(&mut field));
            was_quoted = false;
        } else if c == '"' && field.trim().is_empty() && !was_quoted {
            field.clear();
            quoted = true;
            was_quoted = true;
        } else {
            field.push(c);
        }
    }
    if quoted {
        return Err("unterminated quoted field".into());
    }
    out.push(field);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(input: &[u8]) -> Result<Vec<InputRow>, InputError> {
        let mut r = DeviceReader::new(input, "test");
        let mut out = Vec::new();
        while let Some(row) = r.next_row()? {
            out.push(row);
        }
        Ok(out)
    }

    #[test]
    fn csv_with_header_any_order() {
        let rows = read_all(b"tenant,channel_uri,device_id\r\ncontoso,https://a.notify.windows.com/?token=x,d1\n\ncontoso,\"https://b.notify.windows.com/?token=a,b\",\"d \"\"2\"\"\"\n").unwrap();
        assert_eq!(rows.len(), 2);
        let r = rows[0].row.as_ref().unwrap();
        assert_eq!(
            (rows[0].line, r.device_id.as_str(), r.tenant.as_str()),
            (2, "d1", "contoso")
        );
        let r = rows[1].row.as_ref().unwrap();
        assert_eq!(rows[1].line, 4);
        assert_eq!(r.channel_uri, "https://b.notify.windows.com/?token=a,b");
        assert_eq!(r.device_id, "d \"2\"");
    }

    #[test]
    fn jsonl_with_seen_at() {
        let rows = read_all(b"{\"device_id\":\"d1\",\"channel_uri\":\"u\",\"tenant\":\"t\",\"channel_seen_at\":\"2026-11-01T00:00:00Z\"}\n{\"device_id\":7,\"channel_uri\":\"u\",\"tenant\":\"t\"}").unwrap();
        assert!(rows[0].row.as_ref().unwrap().channel_seen_at.is_some());
        assert_eq!(rows[1].row.as_ref().unwrap().device_id, "7");
    }

    #[test]
    fn bad_rows_have_line_numbers_and_reasons() {
        let mut input = b"device_id,channel_uri,tenant\nd1,u,t\nd2,u\n\xff\xfe,u,t\nd4,u\0,t\n,u,t\nd6,\"u,t\nd7,u,t,extra\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE + 10));
        input.extend(b"\nd9,u,t\n");
        let rows = read_all(&input).unwrap();
        let summary: Vec<(u64, Result<&str, &str>)> = rows
            .iter()
            .map(|r| {
                (
                    r.line,
                    r.row
                        .as_ref()
                        .map(|d| d.device_id.as_str())
                        .map_err(|e| e.reason.as_str()),
                )
            })
            .collect();
        assert_eq!(summary[0], (2, Ok("d1")));
        assert!(
            matches!(summary[1], (3, Err(r)) if r.contains("fields")),
            "{summary:?}"
        );
        assert!(
            matches!(summary[2], (4, Err(r)) if r.contains("UTF-8")),
            "{summary:?}"
        );
        assert!(
            matches!(summary[3], (5, Err(r)) if r.contains("NUL")),
            "{summary:?}"
        );
        assert!(
            matches!(summary[4], (6, Err(r)) if r.contains("device_id is empty")),
            "{summary:?}"
        );
        assert!(
            matches!(summary[5], (7, Err(r)) if r.contains("unterminated")),
            "{summary:?}"
        );
        assert_eq!(summary[6], (8, Ok("d7")));
        assert!(
            matches!(summary[7], (9, Err(r)) if r.contains("longer than")),
            "{summary:?}"
        );
        assert_eq!(summary[8], (10, Ok("d9")));
    }

    #[test]
    fn missing_header_column_is_fatal_with_place() {
        let e = read_all(b"device,channel_uri,tenant\n").unwrap_err();
        assert_eq!(e.to_string(), "test:1: CSV header has no `device_id` column (needs device_id, channel_uri, tenant; optional channel_seen_at)");
    }

    #[test]
    fn broken_json_line_is_a_bad_row() {
        let rows = read_all(b"{\"device_id\":\"d1\",\"channel_uri\":\"u\",\"tenant\":\"t\"}\n{\"device_id\": \n{\"device_id\":\"d3\",\"tenant\":\"t\"}\n").unwrap();
        assert!(rows[0].row.is_ok());
        assert!(rows[1].row.as_ref().unwrap_err().reason.contains("JSON"));
        assert_eq!(
            rows[2].row.as_ref().unwrap_err().reason,
            "channel_uri is missing"
        );
        assert_eq!(
            rows[2].row.as_ref().unwrap_err().device_id.as_deref(),
            Some("d3")
        );
    }
}
