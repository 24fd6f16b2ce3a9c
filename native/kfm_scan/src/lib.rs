//! The native twin of `worker.ledger.scan.scan_line` and of the line loop of
//! `worker.ledger.chain.check_bundle`: an optional accelerator for verifying a
//! ledger (docs/ledger.md, "The native accelerator").
//!
//! Why: a stored line must be the RFC 8785 encoding of a valid row, so its
//! members come in one fixed order with one spelling per value, and a
//! hand-written reader over the bytes decides form and schema in one pass.
//! In Python the compiled pattern alone costs several times the three SHA-256
//! a row needs; here the reading costs less than one of them.
//!
//! It accepts exactly the subset the Python pattern accepts (or less): a line
//! it does not accept is "undecided", never "wrong", and the caller hands it
//! to the Python path, which accepts it or names what is wrong. So a bug here
//! can only make verification slower, unless it accepts a line the row model
//! refuses, which the property tests in tests/unit/ledger/test_scan.py hold
//! against the model on generated rows and their byte mutations.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use sha2::{Digest, Sha256};

/// Bumped whenever what is accepted changes, so Python refuses a stale build.
const SCAN_VERSION: u32 = 2;
/// Longer lines go to the model (the Python scan's `FAST_MAX_LINE_BYTES`).
const FAST_MAX_LINE_BYTES: usize = 64 * 1024;
const MAX_SAFE_INT: u64 = (1 << 53) - 1;

/// What a checked line gives: position, links and commit (hex as stored).
struct Key {
    seq: u64,
    prev: [u8; 64],
    hash: [u8; 64],
    commit: [u8; 64],
    /// The line's own SHA-256 (the next row's `prev`), computed with the row hash.
    line_sha: [u8; 32],
    /// Where the members a candidate's body lacks or spells otherwise lie in
    /// the line (byte ranges), for [`link_match`].
    spans: Spans,
}

/// Byte ranges in a scanned line: the two energy numbers (the token), the
/// `,"hash":"…"`, `,"prev":"…"` and `,"seq":N` members, and the quoted
/// `artifact_sha256` and `in_toto` strings.
#[derive(Default, Clone, Copy)]
struct Spans {
    co2: (usize, usize),
    kwh: (usize, usize),
    hash: (usize, usize),
    prev: (usize, usize),
    seq: (usize, usize),
    artifact: (usize, usize),
    in_toto: (usize, usize),
}

fn is_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// `[!#-\[\]-~]`: printable ASCII without `"` and `\`.
fn is_plain(b: u8) -> bool {
    (b'!'..=b'~').contains(&b) && b != b'"' && b != b'\\'
}

/// `[^"\\\x00-\x1f\x7f]`: any byte but the quote, the backslash and controls.
fn is_text(b: u8) -> bool {
    b >= 0x20 && b != 0x7f && b != b'"' && b != b'\\'
}

fn is_name_rest(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-'
}

fn is_scheme_rest(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'+' || b == b'.' || b == b'-'
}

fn is_branch_rest(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'/' || b == b'-'
}

fn has_dotdot(s: &[u8]) -> bool {
    s.windows(2).any(|w| w == b"..")
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn lit(&mut self, s: &[u8]) -> Option<()> {
        if self.b[self.i..].starts_with(s) {
            self.i += s.len();
            Some(())
        } else {
            None
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// A quoted string whose content is `min..=max` bytes of `class` (which
    /// never holds `"`); returns the content.
    fn string(&mut self, min: usize, max: usize, class: impl Fn(u8) -> bool) -> Option<&'a [u8]> {
        self.lit(b"\"")?;
        let start = self.i;
        let rest = &self.b[start..];
        let n = rest.iter().position(|&c| !class(c))?;
        if n < min || n > max || rest[n] != b'"' {
            return None;
        }
        self.i = start + n + 1;
        Some(&rest[..n])
    }

    /// `"` + 64 lowercase hex digits + `"`.
    fn hex64(&mut self) -> Option<[u8; 64]> {
        let s = self.string(64, 64, is_hex)?;
        let mut out = [0u8; 64];
        out.copy_from_slice(s);
        Some(out)
    }

    /// `_URI`: `"[a-z][a-z0-9+.\-]{0,30}://` + plain{1,2000} + `"`.
    fn uri(&mut self) -> Option<()> {
        let s = self.string(1, 2048, is_plain)?;
        if !s[0].is_ascii_lowercase() {
            return None;
        }
        let scheme = 1 + s[1..].iter().take_while(|&&c| is_scheme_rest(c)).count();
        if scheme > 31 || !s[scheme..].starts_with(b"://") {
            return None;
        }
        let rest = s.len() - scheme - 3;
        (1..=2000).contains(&rest).then_some(())
    }

    /// `_NAME`: `"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"`.
    fn name(&mut self) -> Option<()> {
        let s = self.string(1, 128, is_name_rest)?;
        s[0].is_ascii_alphanumeric().then_some(())
    }

    /// `_TEXT`: 1 to 1024 bytes of `is_text`.
    fn text(&mut self) -> Option<&'a [u8]> {
        self.string(1, 1024, is_text)
    }

    /// `_NUMBER` spelled as RFC 8785 spells the double it denotes.
    fn number(&mut self) -> Option<()> {
        let start = self.i;
        let digits = |r: &mut Self| {
            let n = r.b[r.i..].iter().take_while(|c| c.is_ascii_digit()).count();
            r.i += n;
            n
        };
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                digits(self);
            }
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if digits(self) == 0 {
                return None;
            }
        }
        if self.peek() == Some(b'e') {
            self.i += 1;
            if matches!(self.peek(), Some(b'+') | Some(b'-')) {
                self.i += 1;
            }
            if digits(self) == 0 {
                return None;
            }
        }
        let text = &self.b[start..self.i];
        // ASCII by construction.
        let value: f64 = std::str::from_utf8(text).ok()?.parse().ok()?;
        if !value.is_finite() {
            return None;
        }
        let mut buf = ryu_js::Buffer::new();
        (buf.format_finite(value).as_bytes() == text).then_some(())
    }

    /// `[` item (`,` item)* `]`, or `[]`.
    fn array(&mut self, item: impl Fn(&mut Self) -> Option<()>) -> Option<()> {
        self.lit(b"[")?;
        if self.lit(b"]").is_some() {
            return Some(());
        }
        loop {
            item(self)?;
            if self.lit(b"]").is_some() {
                return Some(());
            }
            self.lit(b",")?;
        }
    }
}

fn two(s: &[u8]) -> u32 {
    (s[0] - b'0') as u32 * 10 + (s[1] - b'0') as u32
}

/// The created_at pattern and a real date (what `datetime.fromisoformat` accepts of it).
fn created_at(s: &[u8]) -> Option<()> {
    // YYYY-MM-DDTHH:MM:SS[.ffffff]Z
    let d = |i: usize| s[i].is_ascii_digit();
    let base = s.len() == 20 || s.len() == 27;
    if !base
        || !(0..4).all(d)
        || s[4] != b'-'
        || !(5..7).all(d)
        || s[7] != b'-'
        || !(8..10).all(d)
        || s[10] != b'T'
        || !(11..13).all(d)
        || s[13] != b':'
        || !(14..16).all(d)
        || s[16] != b':'
        || !(17..19).all(d)
        || s[s.len() - 1] != b'Z'
    {
        return None;
    }
    if s.len() == 27 && (s[19] != b'.' || !(20..26).all(d) || &s[20..26] == b"000000") {
        return None;
    }
    let year = two(&s[0..2]) * 100 + two(&s[2..4]);
    let (month, day) = (two(&s[5..7]), two(&s[8..10]));
    let leap = year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    let ok = year >= 1
        && (1..=days).contains(&day)
        && two(&s[11..13]) <= 23
        && two(&s[14..16]) <= 59
        && two(&s[17..19]) <= 59;
    ok.then_some(())
}

fn hex_digest(d: &[u8]) -> [u8; 64] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (i, b) in d.iter().enumerate() {
        out[2 * i] = HEX[(b >> 4) as usize];
        out[2 * i + 1] = HEX[(b & 15) as usize];
    }
    out
}

/// The key of `line` if it is certainly the canonical line of a valid row
/// with a true `hash` (the Python `scan_line`'s contract); `None`: undecided.
fn scan(line: &[u8]) -> Option<Key> {
    if line.len() > FAST_MAX_LINE_BYTES {
        return None;
    }
    let mut r = Reader { b: line, i: 0 };
    // Members in RFC 8785 order (keys sorted).
    r.lit(b"{\"artifact_uri\":")?;
    r.uri()?;
    let mut spans = Spans::default();
    r.lit(b",\"checksums\":{\"artifact_sha256\":")?;
    let at = r.i;
    r.hex64()?;
    spans.artifact = (at, r.i);
    r.lit(b"},\"configs\":")?;
    r.array(|r| {
        r.lit(b"{\"path\":")?;
        let path = r.text()?;
        if path[0] == b'/' || has_dotdot(path) {
            return None;
        }
        r.lit(b",\"sha256\":")?;
        r.hex64()?;
        r.lit(b"}")
    })?;
    r.lit(b",\"created_at\":")?;
    created_at(r.string(20, 27, |c| {
        c.is_ascii_alphanumeric() || c == b'-' || c == b':' || c == b'.'
    })?)?;
    r.lit(b",\"data_snapshot\":")?;
    r.array(|r| {
        r.lit(b"{\"lakefs_ref\":")?;
        r.uri()?;
        r.lit(b",\"stac\":")?;
        r.uri()?;
        r.lit(b"}")
    })?;
    r.lit(b",\"energy_carbon\":{\"co2e_kg\":")?;
    let at = r.i;
    r.number()?;
    spans.co2 = (at, r.i);
    r.lit(b",\"kwh\":")?;
    let at = r.i;
    r.number()?;
    spans.kwh = (at, r.i);
    r.lit(b",\"method\":")?;
    r.text()?;
    r.lit(b"}")?;
    let hash_at = r.i;
    r.lit(b",\"hash\":")?;
    let hash = r.hex64()?;
    let after_hash = r.i;
    spans.hash = (hash_at, after_hash);
    r.lit(b",\"lakefs_branch\":")?;
    let branch = r.string(1, 256, is_branch_rest)?;
    if !(branch[0].is_ascii_alphanumeric() || branch[0] == b'_') || has_dotdot(branch) {
        return None;
    }
    r.lit(b",\"lakefs_commit\":")?;
    let commit = r.hex64()?;
    r.lit(b",\"lakefs_repo\":")?;
    let repo = r.string(3, 63, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'
    })?;
    if repo[0] == b'-' {
        return None;
    }
    r.lit(b",\"models\":")?;
    r.array(|r| {
        r.lit(b"{\"name\":")?;
        r.name()?;
        r.lit(b",\"sha256\":")?;
        r.hex64()?;
        r.lit(b",\"uri\":")?;
        r.uri()?;
        r.lit(b",\"version\":")?;
        r.name()?;
        r.lit(b"}")
    })?;
    r.lit(b",\"openlineage_run_id\":")?;
    let run = r.string(36, 36, |c| is_hex(c) || c == b'-')?;
    if !run
        .iter()
        .enumerate()
        .all(|(i, &c)| (c == b'-') == matches!(i, 8 | 13 | 18 | 23))
    {
        return None;
    }
    r.lit(b",\"otel_trace_id\":")?;
    let trace = r.string(0, 32, is_hex)?;
    if !(trace.is_empty() || trace.len() == 32) {
        return None;
    }
    let at = r.i;
    r.lit(b",\"prev\":")?;
    let prev = r.hex64()?;
    spans.prev = (at, r.i);
    r.lit(b",\"producer\":")?;
    r.text()?;
    let seq_at = r.i;
    r.lit(b",\"seq\":")?;
    let digits = line[r.i..]
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .count();
    if digits == 0 || digits > 16 || (digits > 1 && line[r.i] == b'0') {
        return None;
    }
    let seq: u64 = std::str::from_utf8(&line[r.i..r.i + digits])
        .ok()?
        .parse()
        .ok()?;
    if seq > MAX_SAFE_INT {
        return None;
    }
    r.i += digits;
    spans.seq = (seq_at, r.i);
    r.lit(b",\"signatures\":{\"in_toto\":")?;
    let at = r.i;
    r.uri()?;
    spans.in_toto = (at, r.i);
    r.lit(b",\"key_id\":")?;
    r.string(1, 256, is_plain)?;
    r.lit(b"}}")?;
    if r.i != line.len() {
        return None;
    }
    if !line.is_ascii() && std::str::from_utf8(line).is_err() {
        return None;
    }
    // The row hash and the line's own hash share everything before `,"hash":"`.
    let mut head = Sha256::new();
    head.update(&line[..hash_at]);
    let mut whole = head.clone();
    head.update(&line[after_hash..]);
    if hex_digest(&head.finalize()) != hash {
        return None;
    }
    whole.update(&line[hash_at..]);
    let mut line_sha = [0u8; 32];
    line_sha.copy_from_slice(&whole.finalize());
    Some(Key {
        seq,
        prev,
        hash,
        commit,
        line_sha,
        spans,
    })
}

fn hex_str(h: &[u8; 64]) -> &str {
    // Lowercase hex digits only (checked when read, or made by hex_digest).
    std::str::from_utf8(h).expect("hex is ASCII")
}

/// The key of a stored line, or None when this scan cannot decide it.
#[pyfunction]
fn scan_line<'py>(py: Python<'py>, line: &[u8]) -> PyResult<Option<Bound<'py, PyTuple>>> {
    let Some(key) = py.allow_threads(|| scan(line)) else {
        return Ok(None);
    };
    Ok(Some(PyTuple::new(
        py,
        [
            key.seq.into_pyobject(py)?.into_any(),
            hex_str(&key.prev).into_pyobject(py)?.into_any(),
            hex_str(&key.hash).into_pyobject(py)?.into_any(),
            hex_str(&key.commit).into_pyobject(py)?.into_any(),
        ],
    )?))
}

struct Run {
    end: usize,
    count: u64,
    first_prev: Option<[u8; 64]>,
    last_hash: Option<[u8; 64]>,
    leaves: Vec<u8>,
    prefixes: Vec<u8>,
}

fn run(data: &[u8], start: usize, mut seq: u64, mut prev: Option<[u8; 64]>) -> Run {
    let mut out = Run {
        end: start,
        count: 0,
        first_prev: None,
        last_hash: None,
        leaves: Vec::new(),
        prefixes: Vec::new(),
    };
    let mut pos = start;
    while pos < data.len() {
        let Some(n) = memchr::memchr(b'\n', &data[pos..]) else {
            break;
        };
        let line = &data[pos..pos + n];
        let Some(key) = scan(line) else { break };
        if key.seq != seq {
            break;
        }
        match prev {
            Some(p) if p != key.prev => break,
            Some(_) => {}
            None => out.first_prev = Some(key.prev),
        }
        let mut leaf = Sha256::new();
        leaf.update([0u8]);
        leaf.update(line);
        out.leaves.extend_from_slice(&leaf.finalize());
        let prefix = u64::from_str_radix(std::str::from_utf8(&key.commit[..16]).expect("hex"), 16)
            .expect("hex");
        out.prefixes.extend_from_slice(&prefix.to_ne_bytes());
        let h = hex_digest(&key.line_sha);
        prev = Some(h);
        out.last_hash = Some(h);
        seq += 1;
        out.count += 1;
        pos += n + 1;
        out.end = pos;
    }
    out
}

/// Check the lines of `data` from byte offset `start` while each is decided
/// here and links on: its seq is `seq`, `seq + 1`, ... and its prev the
/// SHA-256 of the line before it (`prev`; None: unknown, taken from the first
/// line and returned as `first_prev`).
///
/// Returns `(end, count, first_prev, last_hash, leaf_hashes, prefixes)`:
/// `end` is the offset of the first line not taken (`len(data)` when all
/// were), for the caller to decide with the Python path; `leaf_hashes` the
/// RFC 6962 leaf hashes (32 bytes each); `prefixes` each row's first 8
/// commit bytes as native-endian u64.
#[pyfunction]
#[pyo3(signature = (data, start, seq, prev))]
fn check_lines<'py>(
    py: Python<'py>,
    data: &[u8],
    start: usize,
    seq: u64,
    prev: Option<&str>,
) -> PyResult<Bound<'py, PyTuple>> {
    let prev = match prev {
        None => None,
        Some(p) => {
            let b = p.as_bytes();
            if b.len() != 64 {
                return Err(pyo3::exceptions::PyValueError::new_err(
                    "prev must be 64 hex digits",
                ));
            }
            let mut h = [0u8; 64];
            h.copy_from_slice(b);
            Some(h)
        }
    };
    let start = start.min(data.len());
    let out = py.allow_threads(|| run(data, start, seq, prev));
    let hex = |h: Option<[u8; 64]>| h.map(|h| hex_str(&h).to_owned());
    (
        out.end,
        out.count,
        hex(out.first_prev),
        hex(out.last_hash),
        PyBytes::new(py, &out.leaves),
        PyBytes::new(py, &out.prefixes),
    )
        .into_pyobject(py)
}

/// Longest request id the writer accepts, in characters (`IndexCandidate`).
const REQUEST_ID_MAX: usize = 4096;

/// A number token as `orjson` writes it (`value`) against the line's
/// RFC 8785 spelling of it (`line`): true only where both spell the same
/// value and `orjson` would write `value` so itself, which the Python path
/// requires (it re-encodes the candidate and compares). Four forms, all
/// others undecided: an integer (kept an integer: the line spells it the
/// same); a whole float `D.0` below 10^15 (the line writes `D`); a fraction
/// in fixed notation from 1e-5 up to 10^15, where `orjson` and RFC 8785 both
/// write the shortest round-trip digits without an exponent; and the same
/// spelling in exponent notation below 1e-6 or from 1e21, where both write
/// one. (tests/unit/ledger/test_native_scan.py holds this to the Python path.)
fn same_number(value: &[u8], line: &[u8]) -> bool {
    let all_digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    let no_leading_zero = |s: &[u8]| s.len() == 1 || s[0] != b'0';
    if all_digits(value) {
        return value.len() <= 15 && no_leading_zero(value) && value == line;
    }
    if let Some(whole) = value.strip_suffix(b".0") {
        return all_digits(whole) && whole.len() <= 15 && no_leading_zero(whole) && whole == line;
    }
    if value.contains(&b'e') {
        // Exponent notation, which both write below 1e-6 and from 1e21 on, as
        // the shortest digits, `d[.ddd]e±n` (RFC 8785's own checked by the scan).
        let x: f64 = std::str::from_utf8(value)
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or(f64::NAN);
        return value == line && (x < 1e-6 || (1e21..f64::MAX).contains(&x));
    }
    let Some(dot) = value.iter().position(|&c| c == b'.') else {
        return false;
    };
    let (int, frac) = (&value[..dot], &value[dot + 1..]);
    if value != line
        || !all_digits(int)
        || !all_digits(frac)
        || !no_leading_zero(int)
        || int.len() > 15
    {
        return false;
    }
    // ASCII digits and one dot: always a number.
    let x: f64 = std::str::from_utf8(value)
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0.0);
    (1e-5..1e15).contains(&x)
}

/// Whether the candidates-topic `value` links after `prev` (seq `seq`) to
/// exactly `stored`, as the Python `link_candidate` decides it: the value
/// is the bundler's encoding of a candidate whose body is the stored row's
/// without `seq`, `prev` and `hash`, and whose `bundle_sha256` and
/// `attestation_uri` agree with it. Instead of re-encoding the body, the
/// value's bytes are compared with the stored line's, member by member:
/// the scan has shown the line is a canonical valid row whose strings need
/// no escapes, so `orjson` writes them as RFC 8785 does, byte for byte.
///
/// Returns the line's key, or `None`: not decided here (the caller asks the
/// Python path, which may still link it).
fn link_match(value: &[u8], stored: &[u8], seq: u64, prev: &[u8; 64]) -> Option<Key> {
    if value.len() > FAST_MAX_LINE_BYTES {
        return None;
    }
    let key = scan(stored)?;
    if key.seq != seq || &key.prev != prev {
        return None;
    }
    let sp = key.spans;
    let mut r = Reader { b: value, i: 0 };
    r.lit(b"{\"attestation_uri\":")?;
    r.lit(&stored[sp.in_toto.0..sp.in_toto.1])?;
    r.lit(b",\"body\":")?;
    // The body: the line without hash, prev and seq, the energy numbers
    // possibly spelled as orjson writes them.
    let number = |r: &mut Reader, (a, b): (usize, usize)| {
        let n = r.b[r.i..]
            .iter()
            .take_while(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'))
            .count();
        let ok = same_number(&r.b[r.i..r.i + n], &stored[a..b]);
        r.i += n;
        ok.then_some(())
    };
    r.lit(&stored[..sp.co2.0])?;
    number(&mut r, sp.co2)?;
    r.lit(&stored[sp.co2.1..sp.kwh.0])?;
    number(&mut r, sp.kwh)?;
    r.lit(&stored[sp.kwh.1..sp.hash.0])?;
    r.lit(&stored[sp.hash.1..sp.prev.0])?;
    r.lit(&stored[sp.prev.1..sp.seq.0])?;
    r.lit(&stored[sp.seq.1..])?;
    r.lit(b",\"bundle_sha256\":")?;
    r.lit(&stored[sp.artifact.0..sp.artifact.1])?;
    r.lit(b",\"request_id\":")?;
    // Bytes orjson writes as they are (no escapes), up to REQUEST_ID_MAX characters.
    let id = r.string(0, 4 * REQUEST_ID_MAX, is_text)?;
    if id.iter().filter(|&&c| c & 0xC0 != 0x80).count() > REQUEST_ID_MAX {
        return None;
    }
    r.lit(b"}")?;
    if r.i != value.len() || (!id.is_ascii() && std::str::from_utf8(id).is_err()) {
        return None;
    }
    Some(key)
}

/// What `match_run` gives for one matched candidate.
struct Matched {
    commit: [u8; 64],
    leaf: [u8; 32],
    line_sha: [u8; 64],
}

fn match_lines(
    values: &[&[u8]],
    stored: &[&[u8]],
    mut seq: u64,
    mut prev: [u8; 64],
) -> Vec<Matched> {
    let mut out = Vec::new();
    for (value, line) in values.iter().zip(stored) {
        let Some(key) = link_match(value, line, seq, &prev) else {
            break;
        };
        let mut leaf = Sha256::new();
        leaf.update([0u8]);
        leaf.update(line);
        let mut l = [0u8; 32];
        l.copy_from_slice(&leaf.finalize());
        prev = hex_digest(&key.line_sha);
        out.push(Matched {
            commit: key.commit,
            leaf: l,
            line_sha: prev,
        });
        seq += 1;
    }
    out
}

/// How many of `values`, from the first, link one to one onto `stored` (the
/// Python `match_run`, decided natively): `seq` and `prev` are those the
/// first candidate links after (`prev` None: the genesis, seq 0). Stops at
/// the first candidate not decided here; the caller asks the Python path
/// about it and goes on.
///
/// Returns `[(commit, leaf_hash, line_sha256), ...]`, hex but the leaf hash.
#[pyfunction]
#[pyo3(signature = (values, stored, seq, prev))]
fn match_run<'py>(
    py: Python<'py>,
    values: &Bound<'py, PyList>,
    stored: &Bound<'py, PyList>,
    seq: u64,
    prev: Option<&str>,
) -> PyResult<Bound<'py, PyList>> {
    let prev = match prev {
        None => [b'0'; 64],
        Some(p) => p
            .as_bytes()
            .try_into()
            .map_err(|_| pyo3::exceptions::PyValueError::new_err("prev must be 64 hex digits"))?,
    };
    let values: Vec<Bound<'py, PyBytes>> = values
        .iter()
        .map(|v| v.downcast_into::<PyBytes>())
        .collect::<Result<_, _>>()?;
    let stored: Vec<Bound<'py, PyBytes>> = stored
        .iter()
        .map(|v| v.downcast_into::<PyBytes>())
        .collect::<Result<_, _>>()?;
    let v: Vec<&[u8]> = values.iter().map(|b| b.as_bytes()).collect();
    let s: Vec<&[u8]> = stored.iter().map(|b| b.as_bytes()).collect();
    let matched = py.allow_threads(|| match_lines(&v, &s, seq, prev));
    let items = matched
        .iter()
        .map(|m| {
            PyTuple::new(
                py,
                [
                    hex_str(&m.commit).into_pyobject(py)?.into_any(),
                    PyBytes::new(py, &m.leaf).into_any(),
                    hex_str(&m.line_sha).into_pyobject(py)?.into_any(),
                ],
            )
        })
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, items)
}

#[pymodule]
fn kfm_scan(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("SCAN_VERSION", SCAN_VERSION)?;
    m.add("FAST_MAX_LINE_BYTES", FAST_MAX_LINE_BYTES)?;
    m.add_function(wrap_pyfunction!(scan_line, m)?)?;
    m.add_function(wrap_pyfunction!(check_lines, m)?)?;
    m.add_function(wrap_pyfunction!(match_run, m)?)?;
    Ok(())
}
