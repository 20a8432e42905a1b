//! The byte path between a socket and tungstenite: a `Read` that hands tungstenite only
//! whole frames the scanner has approved, and a `Write` that writes straight through
//! to the socket and keeps whatever the socket would not take.

use std::io::{self, ErrorKind, Read, Write};

/// Output the socket did not accept yet, sent in order before anything newer.
#[derive(Debug, Default)]
pub(crate) struct Outbuf {
    buf: Vec<u8>,
    head: usize,
}

/// Capacity an emptied output buffer may keep; larger ones are freed.
const KEEP_CAPACITY: usize = 64 << 10;

impl Outbuf {
    pub(crate) fn len(&self) -> usize {
        self.buf.len() - self.head
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn push(&mut self, bytes: &[u8]) {
        // Reclaim the sent prefix only when it is the larger part: each byte moves at
        // most once on average, however the socket slices the writes.
        if self.head > 0 && self.head >= self.buf.len() - self.head {
            self.buf.drain(..self.head);
            self.head = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Writes as much as the socket takes. `Ok(true)` when everything went out.
    pub(crate) fn write_to<W: Write>(&mut self, w: &mut W) -> io::Result<bool> {
        while self.head < self.buf.len() {
            match w.write(&self.buf[self.head..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.head += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.head == self.buf.len() {
            self.head = 0;
            self.buf.clear();
            if self.buf.capacity() > KEEP_CAPACITY {
                self.buf = Vec::new();
            }
            Ok(true)
        } else {
            Ok(false)
        }
    }
}

/// What tungstenite reads from and writes to for one connection.
pub(crate) struct Wire<'a, S> {
    pub(crate) stream: &'a mut S,
    /// Whole frames not yet handed to tungstenite.
    pub(crate) input: &'a [u8],
    pub(crate) out: &'a mut Outbuf,
}

impl<S> Read for Wire<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.input.is_empty() {
            // Not end of stream: only the end of what the scanner approved so far.
            return Err(ErrorKind::WouldBlock.into());
        }
        let n = self.input.len().min(buf.len());
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Ok(n)
    }
}

impl<S: Write> Write for Wire<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.out.is_empty() {
            self.out.push(buf);
            return Ok(buf.len());
        }
        let mut done = 0;
        while done < buf.len() {
            match self.stream.write(&buf[done..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.push(&buf[done..]);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
