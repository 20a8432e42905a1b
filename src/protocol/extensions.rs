//! `Sec-WebSocket-Extensions` negotiation for permessage-deflate (RFC 7692), I/O-free.
//!
//! [`negotiate`] takes the values of every `Sec-WebSocket-Extensions` line of the upgrade
//! request and the server's [`DeflateConfig`], and returns the [`Agreement`] for the
//! first `permessage-deflate` offer the server can honour, or `None` (no header in the
//! 101: the connection runs uncompressed). `Agreement`'s `Display` is the exact value of
//! the response header.
//!
//! # What the caller does
//! - Pass the value of *every* `Sec-WebSocket-Extensions` line, in order (RFC 7230 §3.2.2:
//!   several lines are one comma-separated list).
//! - On `Some(a)`, add `Sec-WebSocket-Extensions: {a}` to the 101 and keep `a` with the
//!   connection (6 bytes, `Copy`). `a.takeover()` tells whether the connection needs a
//!   [`crate::protocol::deflate::ContextWindows`] (window mode only; shared mode never does).
//! - A malformed header is never a 400: see [`Malformed`] for why.
//!
//! # Decline, or 400?
//! RFC 6455 §4.2.1 lists what makes an opening handshake invalid (method, `Host`,
//! `Upgrade`, `Connection`, `Sec-WebSocket-Key`, `Sec-WebSocket-Version`); extensions are
//! not among them, and §9.1 leaves every extension to the server's choice. RFC 7692 §7
//! says a server *declines* an offer with an unknown parameter, an invalid value or a
//! duplicate parameter. So every defect in this header declines: a bad parameter
//! declines that offer (the next one may still be accepted), and a header that does
//! not parse at all (RFC 6455 §9.1 grammar) declines every offer, because once the
//! syntax is broken the boundaries between offers cannot be trusted. Either way the
//! client gets a working, uncompressed connection instead of a failed one.

use std::fmt;

/// How the server compresses (`--compression off | shared | window=BITS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Decline permessage-deflate.
    Off,
    /// No context takeover either way: one compressor and one decompressor per loop,
    /// reset after every message; an idle connection costs nothing extra.
    Shared,
    /// Context takeover both ways with windows of `2^BITS` bytes (9..=15): better ratios,
    /// at most `2 × 2^BITS` bytes of history per connection.
    Window(u8),
}

/// `off`, `shared` or `window=BITS`, as `--compression` takes it.
impl std::str::FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(Compression::Off),
            "shared" => Ok(Compression::Shared),
            _ => match s.strip_prefix("window=").map(str::parse::<u8>) {
                Some(Ok(bits)) if (9..=15).contains(&bits) => Ok(Compression::Window(bits)),
                Some(_) => Err(format!("{s:?}: window bits must be 9..=15")),
                None => Err(format!(
                    "{s:?}: expected off, shared or window=BITS (9..=15)"
                )),
            },
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::Off => f.write_str("off"),
            Compression::Shared => f.write_str("shared"),
            Compression::Window(bits) => write!(f, "window={bits}"),
        }
    }
}

/// Compression settings: the mode, and when a message is worth compressing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateConfig {
    /// What to negotiate.
    pub mode: Compression,
    /// Messages shorter than this go out uncompressed (RSV1 clear): below it deflate's
    /// framing costs more than it saves.
    pub threshold: usize,
    /// zlib compression level, 1 (fastest) ..= 9 (smallest).
    pub level: u8,
}

impl Default for DeflateConfig {
    /// Shared mode: the default keeps an idle connection's cost unchanged.
    fn default() -> Self {
        DeflateConfig::new(Compression::Shared)
    }
}

/// Default [`DeflateConfig::threshold`] in shared mode. Measured on chat-like JSON
/// (`deflate::tests::figures`): a fresh compressor makes 16–32 B messages *bigger*
/// (×1.12, ×1.06), saves 8 % at 64 B and 19 % at 128 B, and every message costs its
/// reset (≈ 3–6 µs below 128 B); from 128 B on the saving is worth it.
pub const SHARED_THRESHOLD: usize = 128;

/// Default [`DeflateConfig::threshold`] in window mode: with the history as dictionary
/// even short messages shrink (32 B to 0.31 of their size, 64 B to 0.22, measured as
/// above), so only the shortest go out plain.
pub const WINDOW_THRESHOLD: usize = 32;

/// Default for [`DeflateConfig::level`]. zlib's default, as Node `ws` and Python
/// `websockets` use: no more bytes on the wire than they send. Level 2 would halve the
/// CPU on 16 KiB JSON (50 vs 113 µs) for 18 % more bytes (`deflate`'s figures).
pub const DEFAULT_LEVEL: u8 = 6;

impl DeflateConfig {
    /// `mode` with its measured default threshold and the default level.
    pub fn new(mode: Compression) -> Self {
        DeflateConfig {
            mode,
            threshold: match mode {
                Compression::Window(_) => WINDOW_THRESHOLD,
                _ => SHARED_THRESHOLD,
            },
            level: DEFAULT_LEVEL,
        }
    }

    /// Rejects settings the codec cannot run with.
    pub fn validate(&self) -> Result<(), String> {
        if let Compression::Window(bits) = self.mode
            && !(9..=15).contains(&bits)
        {
            return Err(format!(
                "compression window bits must be 9..=15, not {bits}"
            ));
        }
        if !(1..=9).contains(&self.level) {
            return Err(format!(
                "compression level must be 1..=9, not {}",
                self.level
            ));
        }
        Ok(())
    }

    /// True when a message of `len` bytes should be compressed.
    pub fn should_compress(&self, len: usize) -> bool {
        self.mode != Compression::Off && len >= self.threshold
    }
}

/// The accepted parameters, as sent in the response (RFC 7692 §7.1). Every field is
/// from the server's point of view of the RFC's names: "server" is our output,
/// "client" our input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreement {
    /// We reset our compressor after every message (no outbound history).
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after every message (no inbound history).
    pub client_no_context_takeover: bool,
    /// Our LZ77 window is at most `2^bits` (8..=15); `None`: not sent, 15.
    pub server_max_window_bits: Option<u8>,
    /// The client's LZ77 window is at most `2^bits` (8..=15); `None`: not sent, 15.
    pub client_max_window_bits: Option<u8>,
}

impl Agreement {
    /// Window bits our compressor must stay within (8..=15).
    pub fn outbound_window_bits(&self) -> u8 {
        self.server_max_window_bits.unwrap_or(15)
    }

    /// Window bits the client's compressor stays within (8..=15).
    #[cfg_attr(not(feature = "deflate"), allow(dead_code))]
    pub fn inbound_window_bits(&self) -> u8 {
        self.client_max_window_bits.unwrap_or(15)
    }

    /// True when either direction keeps context across messages, i.e. the connection
    /// needs a [`crate::protocol::deflate::ContextWindows`].
    pub fn takeover(&self) -> bool {
        !(self.server_no_context_takeover && self.client_no_context_takeover)
    }
}

/// The response header's value, e.g.
/// `permessage-deflate; server_no_context_takeover; client_no_context_takeover`.
impl fmt::Display for Agreement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXTENSION)?;
        if self.server_no_context_takeover {
            f.write_str("; server_no_context_takeover")?;
        }
        if self.client_no_context_takeover {
            f.write_str("; client_no_context_takeover")?;
        }
        if let Some(bits) = self.server_max_window_bits {
            write!(f, "; server_max_window_bits={bits}")?;
        }
        if let Some(bits) = self.client_max_window_bits {
            write!(f, "; client_max_window_bits={bits}")?;
        }
        Ok(())
    }
}

const EXTENSION: &str = "permessage-deflate";

/// The first `permessage-deflate` offer in `values` (every `Sec-WebSocket-Extensions`
/// line, in order) that `config` can honour, with the parameters to answer; `None` to
/// decline (compression off, nothing acceptable offered, or a malformed header).
pub fn negotiate<'a, I>(values: I, config: &DeflateConfig) -> Option<Agreement>
where
    I: IntoIterator<Item = &'a [u8]>,
    I::IntoIter: Clone,
{
    if config.mode == Compression::Off {
        return None;
    }
    let values = values.into_iter();
    // First pass: the whole list must parse, or nothing in it is trusted (module docs).
    for v in values.clone() {
        if Items::new(v).any(|i| i.is_err()) {
            return None;
        }
    }
    let mut offer: Option<Offer> = None;
    for item in values.flat_map(Items::new) {
        match item.ok()? {
            Item::Extension(name) => {
                if let Some(a) = offer.take().and_then(|o| o.accept(config.mode)) {
                    return Some(a);
                }
                offer = name.eq_ignore_ascii_case(EXTENSION).then(Offer::default);
            }
            Item::Param(name, value) => {
                if let Some(o) = &mut offer {
                    o.add(name, value);
                }
            }
        }
    }
    offer.and_then(|o| o.accept(config.mode))
}

/// One permessage-deflate offer's parameters, accumulated as they are parsed.
#[derive(Debug, Default)]
struct Offer {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: offered without a value ("I can limit my window if you say so").
    client_max_window_bits: Option<Option<u8>>,
    /// An unknown, duplicate or invalid parameter: RFC 7692 §7 says decline the offer.
    unacceptable: bool,
}

impl Offer {
    fn add(&mut self, name: &str, value: Option<Value>) {
        let ok = if name.eq_ignore_ascii_case("server_no_context_takeover") {
            value.is_none() && !std::mem::replace(&mut self.server_no_context_takeover, true)
        } else if name.eq_ignore_ascii_case("client_no_context_takeover") {
            value.is_none() && !std::mem::replace(&mut self.client_no_context_takeover, true)
        } else if name.eq_ignore_ascii_case("server_max_window_bits") {
            // §7.1.2.1: a value is required here.
            match value.and_then(|v| v.window_bits()) {
                Some(bits) if self.server_max_window_bits.is_none() => {
                    self.server_max_window_bits = Some(bits);
                    true
                }
                _ => false,
            }
        } else if name.eq_ignore_ascii_case("client_max_window_bits") {
            // §7.1.2.2: no value, or 8..=15.
            let bits = match value {
                None => Some(None),
                Some(v) => v.window_bits().map(Some),
            };
            match bits {
                Some(b) if self.client_max_window_bits.is_none() => {
                    self.client_max_window_bits = Some(b);
                    true
                }
                _ => false,
            }
        } else {
            false
        };
        self.unacceptable |= !ok;
    }

    /// The response to this offer under `mode`, or `None` to decline it.
    fn accept(self, mode: Compression) -> Option<Agreement> {
        if self.unacceptable {
            return None;
        }
        match mode {
            Compression::Off => None,
            // §7.1.1.1/§7.1.1.2: a server may add both no_context_takeover parameters
            // whatever the offer said. server_max_window_bits, when offered, must be
            // answered with the same or a smaller value (§7.1.2.1); we keep the value
            // (8 included: see `deflate`'s docs on window bits 8). client_max_window_bits
            // is ours to omit (§7.1.2.2): our inflater takes any window.
            Compression::Shared => Some(Agreement {
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                server_max_window_bits: self.server_max_window_bits,
                client_max_window_bits: None,
            }),
            Compression::Window(bits) => {
                // Outbound: the client's limit, or ours if smaller. Sent even when not
                // offered (§7.1.2.1 allows it) so the client can size its inflater.
                let server_bits = self.server_max_window_bits.map_or(bits, |b| b.min(bits));
                // Inbound: the client hinted it will not keep context (§7.1.1.2), so
                // make that binding and keep no inbound history; or it can limit its
                // window, so limit it to ours; or it cannot (it might use 32 KiB with
                // context), so require no context takeover, which a server may always do.
                let (client_nct, client_bits) = if self.client_no_context_takeover {
                    (true, None)
                } else if let Some(offered) = self.client_max_window_bits {
                    (false, Some(offered.map_or(bits, |b| b.min(bits))))
                } else {
                    (true, None)
                };
                Some(Agreement {
                    server_no_context_takeover: self.server_no_context_takeover,
                    client_no_context_takeover: client_nct,
                    server_max_window_bits: Some(server_bits),
                    client_max_window_bits: client_bits,
                })
            }
        }
    }
}

/// A parameter value as sent: a token, or the inside of a quoted-string (escapes kept).
#[derive(Debug, Clone, Copy)]
struct Value<'a> {
    raw: &'a [u8],
    quoted: bool,
}

impl Value<'_> {
    /// The value's unescaped bytes (RFC 7230 quoted-pair: `\x` is `x`).
    fn unescaped(&self) -> impl Iterator<Item = u8> + '_ {
        let quoted = self.quoted;
        let mut escaped = false;
        self.raw.iter().filter_map(move |&b| {
            if quoted && !escaped && b == b'\\' {
                escaped = true;
                return None;
            }
            escaped = false;
            Some(b)
        })
    }

    /// `8..=15` written as RFC 7692 §7.1.2 wants it: decimal, no leading zeros, no sign
    /// (after unescaping, a quoted value must be such a token too, §7).
    fn window_bits(&self) -> Option<u8> {
        let mut digits = [0u8; 2];
        let mut n = 0;
        for b in self.unescaped() {
            *digits.get_mut(n)? = b;
            n += 1;
        }
        match &digits[..n] {
            [d @ b'8'..=b'9'] => Some(d - b'0'),
            [b'1', d @ b'0'..=b'5'] => Some(10 + d - b'0'),
            _ => None,
        }
    }
}

/// What the header's grammar yields, in order.
#[derive(Debug, Clone, Copy)]
enum Item<'a> {
    /// An extension name: a new offer starts.
    Extension(&'a str),
    /// A parameter of the current offer, with its value if it has one.
    Param(&'a str, Option<Value<'a>>),
}

/// The header does not follow RFC 6455 §9.1 / RFC 7230 §7 list syntax; the position is
/// for logs and tests. Declines every offer (module docs: why not 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed {
    /// Byte offset into the header value where parsing stopped.
    pub at: usize,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed Sec-WebSocket-Extensions at byte {}", self.at)
    }
}

impl std::error::Error for Malformed {}

/// Checks one header value against the extension-list grammar.
#[cfg(test)]
fn validate(value: &[u8]) -> Result<(), Malformed> {
    Items::new(value).try_for_each(|i| i.map(drop))
}

/// A pull parser over one header value:
/// `extension-list = 1#( token *( OWS ";" OWS token [ OWS "=" OWS ( token / quoted-string ) ] ) )`
/// with empty list elements allowed (RFC 7230 §7) and optional whitespace around
/// separators (RFC 2616's implied LWS, which RFC 6455 §9.1 uses).
struct Items<'a> {
    s: &'a [u8],
    pos: usize,
    /// After an extension name or parameter: `;` or `,` or the end comes next.
    in_element: bool,
    failed: bool,
}

impl<'a> Items<'a> {
    fn new(s: &'a [u8]) -> Self {
        Items {
            s,
            pos: 0,
            in_element: false,
            failed: false,
        }
    }

    fn skip_ows(&mut self) {
        while matches!(self.s.get(self.pos), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn token(&mut self) -> Option<&'a str> {
        let start = self.pos;
        while self.s.get(self.pos).is_some_and(|&b| is_tchar(b)) {
            self.pos += 1;
        }
        // tchar is ASCII, so the slice is UTF-8.
        (self.pos > start)
            .then(|| std::str::from_utf8(&self.s[start..self.pos]).ok())
            .flatten()
    }

    fn quoted(&mut self) -> Option<&'a [u8]> {
        // At the opening quote.
        self.pos += 1;
        let start = self.pos;
        loop {
            match *self.s.get(self.pos)? {
                b'"' => {
                    self.pos += 1;
                    return Some(&self.s[start..self.pos - 1]);
                }
                b'\\' => {
                    let &next = self.s.get(self.pos + 1)?;
                    if !(next == b'\t' || next >= 0x20) || next == 0x7f {
                        return None;
                    }
                    self.pos += 2;
                }
                b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff => self.pos += 1,
                _ => return None,
            }
        }
    }

    fn param(&mut self) -> Option<Item<'a>> {
        let name = self.token()?;
        self.skip_ows();
        if self.s.get(self.pos) != Some(&b'=') {
            return Some(Item::Param(name, None));
        }
        self.pos += 1;
        self.skip_ows();
        let value = if self.s.get(self.pos) == Some(&b'"') {
            Value {
                raw: self.quoted()?,
                quoted: true,
            }
        } else {
            Value {
                raw: self.token()?.as_bytes(),
                quoted: false,
            }
        };
        Some(Item::Param(name, Some(value)))
    }

    fn next_item(&mut self) -> Option<Option<Item<'a>>> {
        loop {
            self.skip_ows();
            if self.in_element {
                match self.s.get(self.pos) {
                    None => return Some(None),
                    Some(b';') => {
                        self.pos += 1;
                        self.skip_ows();
                        return self.param().map(Some);
                    }
                    Some(b',') => {
                        self.pos += 1;
                        self.in_element = false;
                    }
                    Some(_) => return None,
                }
            } else {
                match self.s.get(self.pos) {
                    None => return Some(None),
                    // An empty list element.
                    Some(b',') => self.pos += 1,
                    Some(_) => {
                        let name = self.token()?;
                        self.in_element = true;
                        return Some(Some(Item::Extension(name)));
                    }
                }
            }
        }
    }
}

impl<'a> Iterator for Items<'a> {
    type Item = Result<Item<'a>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.next_item() {
            Some(item) => item.map(Ok),
            None => {
                self.failed = true;
                Some(Err(Malformed { at: self.pos }))
            }
        }
    }
}

/// RFC 7230 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(mode: Compression) -> DeflateConfig {
        DeflateConfig::new(mode)
    }

    /// The response for these header lines, as text ("-" for a decline).
    fn answer(lines: &[&str], mode: Compression) -> String {
        negotiate(lines.iter().map(|l| l.as_bytes()), &cfg(mode))
            .map_or_else(|| "-".to_string(), |a| a.to_string())
    }

    const SHARED: &str =
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

    #[test]
    fn shared_mode_answers_no_context_takeover_both_ways() {
        let s = Compression::Shared;
        for offer in [
            "permessage-deflate",
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; client_max_window_bits=10",
            "permessage-deflate; server_no_context_takeover",
            "permessage-deflate; client_no_context_takeover",
            "permessage-deflate;client_max_window_bits;server_no_context_takeover",
            "  permessage-deflate  ;  client_max_window_bits  ",
            "PerMessage-Deflate; Client_Max_Window_Bits",
        ] {
            assert_eq!(answer(&[offer], s), SHARED, "{offer}");
        }
        // An offered server window must be answered with it (or smaller).
        assert_eq!(
            answer(&["permessage-deflate; server_max_window_bits=10"], s),
            format!("{SHARED}; server_max_window_bits=10")
        );
        assert_eq!(
            answer(
                &["permessage-deflate; client_max_window_bits; server_max_window_bits=8"],
                s
            ),
            format!("{SHARED}; server_max_window_bits=8")
        );
    }

    #[test]
    fn off_declines_everything() {
        assert_eq!(answer(&["permessage-deflate"], Compression::Off), "-");
    }

    #[test]
    fn window_mode_honours_the_clients_limits() {
        let w = Compression::Window(12);
        let table = [
            // Chromium, Firefox, Node ws, Python websockets.
            (
                "permessage-deflate; client_max_window_bits",
                "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12",
            ),
            // A client that cannot limit its window must not keep context.
            (
                "permessage-deflate",
                "permessage-deflate; client_no_context_takeover; server_max_window_bits=12",
            ),
            // Its hint that it keeps none is made binding: no inbound history.
            (
                "permessage-deflate; client_no_context_takeover; client_max_window_bits",
                "permessage-deflate; client_no_context_takeover; server_max_window_bits=12",
            ),
            (
                "permessage-deflate; client_max_window_bits=9; server_max_window_bits=10",
                "permessage-deflate; server_max_window_bits=10; client_max_window_bits=9",
            ),
            (
                "permessage-deflate; client_max_window_bits=15; server_max_window_bits=15",
                "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12",
            ),
            (
                "permessage-deflate; server_no_context_takeover; client_max_window_bits",
                "permessage-deflate; server_no_context_takeover; server_max_window_bits=12; client_max_window_bits=12",
            ),
            (
                "permessage-deflate; client_max_window_bits=8; server_max_window_bits=8",
                "permessage-deflate; server_max_window_bits=8; client_max_window_bits=8",
            ),
        ];
        for (offer, want) in table {
            assert_eq!(answer(&[offer], w), want, "{offer}");
        }
    }

    #[test]
    fn autobahn_section_13_offers() {
        // What autobahn 0.10.9's fuzzingclient sends in 13.1 .. 13.7 (its offers always
        // carry client_no_context_takeover and client_max_window_bits).
        let base = "permessage-deflate; client_no_context_takeover; client_max_window_bits";
        let offers = [
            base.to_string(),
            format!("{base}; server_no_context_takeover"),
            format!("{base}; server_max_window_bits=9"),
            format!("{base}; server_max_window_bits=15"),
            format!("{base}; server_no_context_takeover; server_max_window_bits=9"),
            format!("{base}; server_no_context_takeover; server_max_window_bits=15"),
            format!(
                "{base}; server_no_context_takeover; server_max_window_bits=9, {base}; server_no_context_takeover, {base}"
            ),
        ];
        let shared_bits = [
            "",
            "",
            "; server_max_window_bits=9",
            "; server_max_window_bits=15",
        ];
        for (i, offer) in offers.iter().enumerate() {
            let bits = match i {
                2 | 4 | 6 => shared_bits[2],
                3 | 5 => shared_bits[3],
                _ => "",
            };
            assert_eq!(
                answer(&[offer], Compression::Shared),
                format!("{SHARED}{bits}"),
                "13.{}",
                i + 1
            );
            let a = negotiate([offer.as_bytes()], &cfg(Compression::Window(12))).unwrap();
            assert!(a.client_no_context_takeover, "13.{}", i + 1);
            assert_eq!(a.client_max_window_bits, None);
            assert_eq!(a.server_no_context_takeover, matches!(i, 1 | 4 | 5 | 6));
            let want_bits = match i {
                2 | 4 | 6 => 9,
                _ => 12,
            };
            assert_eq!(a.server_max_window_bits, Some(want_bits), "13.{}", i + 1);
        }
    }

    #[test]
    fn first_acceptable_offer_across_offers_and_lines() {
        let s = Compression::Shared;
        // An unacceptable first offer falls back to the next one.
        assert_eq!(
            answer(
                &[
                    "permessage-deflate; server_max_window_bits=7, permessage-deflate; server_max_window_bits=11"
                ],
                s
            ),
            format!("{SHARED}; server_max_window_bits=11")
        );
        // Other extensions are skipped, their parameters too.
        assert_eq!(
            answer(
                &["x-webkit-deflate-frame; no_context_takeover, permessage-deflate"],
                s
            ),
            SHARED
        );
        assert_eq!(answer(&["foo; server_max_window_bits=9", "bar"], s), "-");
        // Several header lines are one list; the order counts.
        assert_eq!(
            answer(
                &[
                    "foo",
                    "permessage-deflate; bogus",
                    "permessage-deflate; server_max_window_bits=13"
                ],
                s
            ),
            format!("{SHARED}; server_max_window_bits=13")
        );
        assert_eq!(
            answer(
                &[
                    "permessage-deflate; server_max_window_bits=9",
                    "permessage-deflate"
                ],
                s
            ),
            format!("{SHARED}; server_max_window_bits=9")
        );
        // Empty list elements are allowed (RFC 7230 §7).
        assert_eq!(answer(&[", ,permessage-deflate,,"], s), SHARED);
        assert_eq!(answer(&[""], s), "-");
        assert_eq!(answer(&[], s), "-");
    }

    #[test]
    fn quoted_values() {
        let s = Compression::Shared;
        for offer in [
            r#"permessage-deflate; server_max_window_bits="10""#,
            r#"permessage-deflate; server_max_window_bits = "10""#,
            r#"permessage-deflate; server_max_window_bits="1\0""#,
            r#"permessage-deflate; server_max_window_bits="\1\0""#,
        ] {
            assert_eq!(
                answer(&[offer], s),
                format!("{SHARED}; server_max_window_bits=10"),
                "{offer}"
            );
        }
        // A comma or semicolon inside quotes does not split anything; the value is
        // simply invalid, so only that offer is declined.
        assert_eq!(
            answer(
                &[r#"permessage-deflate; server_max_window_bits="1,0", permessage-deflate"#],
                s
            ),
            SHARED
        );
        assert_eq!(
            answer(
                &[
                    r#"x; a="p;q, permessage-deflate", permessage-deflate; client_max_window_bits="9""#
                ],
                s
            ),
            SHARED
        );
        // Unescaped, a quoted value must still be a valid token (§7): these are not.
        for offer in [
            r#"permessage-deflate; server_max_window_bits="""#,
            r#"permessage-deflate; server_max_window_bits=" 10""#,
            r#"permessage-deflate; client_max_window_bits="10 ""#,
        ] {
            assert_eq!(answer(&[offer], s), "-", "{offer}");
        }
    }

    #[test]
    fn absurd_and_invalid_values_decline_the_offer() {
        let s = Compression::Shared;
        for offer in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=0",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_max_window_bits=09",
            "permessage-deflate; server_max_window_bits=+9",
            "permessage-deflate; server_max_window_bits=-9",
            "permessage-deflate; server_max_window_bits=9.0",
            "permessage-deflate; server_max_window_bits=0x9",
            "permessage-deflate; server_max_window_bits=99999999999999999999999999",
            "permessage-deflate; client_max_window_bits=1",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover=true",
            r#"permessage-deflate; client_no_context_takeover="""#,
            "permessage-deflate; unknown_param",
            "permessage-deflate; x=1",
            "permessage-deflate; max_window_bits=10",
        ] {
            assert_eq!(answer(&[offer], s), "-", "{offer}");
            assert_eq!(answer(&[offer], Compression::Window(12)), "-", "{offer}");
            // The next offer is still considered.
            assert_eq!(answer(&[offer, "permessage-deflate"], s), SHARED, "{offer}");
        }
    }

    #[test]
    fn duplicate_parameters_decline_the_offer() {
        for offer in [
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
            "permessage-deflate; server_max_window_bits=10; server_max_window_bits=11",
            "permessage-deflate; client_max_window_bits; client_max_window_bits",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=9",
            "permessage-deflate; client_max_window_bits=9; CLIENT_MAX_WINDOW_BITS=9",
        ] {
            assert_eq!(answer(&[offer], Compression::Shared), "-", "{offer}");
            assert_eq!(answer(&[offer], Compression::Window(12)), "-", "{offer}");
        }
    }

    #[test]
    fn malformed_headers_decline_everything() {
        for line in [
            "permessage-deflate;",
            "permessage-deflate; ",
            "permessage-deflate;; client_max_window_bits",
            "permessage-deflate client_max_window_bits",
            "permessage-deflate; =10",
            "permessage-deflate; server_max_window_bits=",
            "permessage-deflate; server_max_window_bits==10",
            "permessage-deflate; server_max_window_bits=10=11",
            r#"permessage-deflate; server_max_window_bits="10"#,
            r#"permessage-deflate; server_max_window_bits="10\"#,
            r#"permessage-deflate; server_max_window_bits=10"""#,
            "permessage-deflate; server_max_window_bits=\"1\x010\"",
            ";permessage-deflate",
            "permessage-deflate; a=b c",
            "permessage-deflate, (comment)",
            "permessage-deflate; caf\u{e9}",
            "permessage-deflate\x00",
            "permessage-deflate; x=\u{1f600}",
        ] {
            assert!(validate(line.as_bytes()).is_err(), "{line:?}");
            assert_eq!(answer(&[line], Compression::Shared), "-", "{line:?}");
            // A valid offer elsewhere does not rescue a broken header.
            assert_eq!(
                answer(&["permessage-deflate", line], Compression::Shared),
                "-",
                "{line:?}"
            );
        }
        assert!(validate(b"permessage-deflate; a=\"x\\\"y\"; b, c").is_ok());
        assert_eq!(validate(b"a;").unwrap_err().at, 2);
    }

    #[test]
    fn a_large_header_costs_one_pass() {
        // 8 KiB of offers (the request limit) parse in linear time with no allocation.
        let offer = "permessage-deflate; server_max_window_bits=7, ";
        let line = offer.repeat(8192 / offer.len()) + "permessage-deflate";
        assert_eq!(answer(&[&line], Compression::Shared), SHARED);
    }

    #[test]
    fn config_validation_and_threshold() {
        assert!(DeflateConfig::default().validate().is_ok());
        for bits in [0, 8, 16] {
            assert!(cfg(Compression::Window(bits)).validate().is_err());
        }
        assert!(cfg(Compression::Window(9)).validate().is_ok());
        let c = DeflateConfig {
            level: 0,
            ..DeflateConfig::default()
        };
        assert!(c.validate().is_err());
        let c = DeflateConfig::default();
        assert!(!c.should_compress(c.threshold - 1));
        assert!(c.should_compress(c.threshold));
        assert!(!cfg(Compression::Off).should_compress(1 << 20));
        assert_eq!(cfg(Compression::Window(12)).threshold, WINDOW_THRESHOLD);
        assert_eq!(c.threshold, SHARED_THRESHOLD);
    }

    #[test]
    fn mode_from_and_to_text() {
        for (text, mode) in [
            ("off", Compression::Off),
            ("shared", Compression::Shared),
            ("window=9", Compression::Window(9)),
            ("window=15", Compression::Window(15)),
        ] {
            assert_eq!(text.parse::<Compression>(), Ok(mode));
            assert_eq!(mode.to_string(), text);
        }
        for bad in [
            "",
            "on",
            "window",
            "window=",
            "window=8",
            "window=16",
            "window=x",
            "Shared",
        ] {
            assert!(bad.parse::<Compression>().is_err(), "{bad}");
        }
    }

    #[test]
    fn agreement_accessors() {
        let a = negotiate(
            [&b"permessage-deflate; client_max_window_bits"[..]],
            &cfg(Compression::Window(10)),
        )
        .unwrap();
        assert_eq!(
            (a.outbound_window_bits(), a.inbound_window_bits()),
            (10, 10)
        );
        assert!(a.takeover());
        let a = negotiate([&b"permessage-deflate"[..]], &cfg(Compression::Shared)).unwrap();
        assert_eq!(
            (a.outbound_window_bits(), a.inbound_window_bits()),
            (15, 15)
        );
        assert!(!a.takeover());
        assert!(std::mem::size_of::<Option<Agreement>>() <= 6);
    }
}
