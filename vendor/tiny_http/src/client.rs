use ascii::AsciiString;

use std::io::Error as IoError;
use std::io::Result as IoResult;
use std::io::{BufReader, BufWriter, Cursor, ErrorKind, Read, Write};

use std::net::{Shutdown, SocketAddr};
use std::str::FromStr;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{HTTPVersion, HeaderField, Method};
use crate::connection::Connection;
use crate::util::refined_tcp_stream::Deadline;
use crate::util::slots::SlotGuard;
use crate::util::RefinedTcpStream;
use crate::util::{SequentialReader, SequentialReaderBuilder, SequentialWriterBuilder};
use crate::{Head, Header, Request, Response, Shared, StatusCode};

/// A ClientConnection is an object that will store a socket to a client
/// and return Request objects.
pub struct ClientConnection {
    // address of the client
    remote_addr: IoResult<Option<SocketAddr>>,

    // sequence of Readers to the stream, so that the data is not read in
    //  the wrong order
    source: SequentialReaderBuilder<BufReader<RefinedTcpStream>>,

    // sequence of Writers to the stream, to avoid writing response #2 before
    //  response #1
    sink: SequentialWriterBuilder<BufWriter<RefinedTcpStream>>,

    // Reader to read the next header from
    next_header_source: SequentialReader<BufReader<RefinedTcpStream>>,

    // set to true if we know that the previous request is the last one
    no_more_requests: bool,

    // true if the connection goes through SSL
    secure: bool,

    // codex patch 4, 5, 9, 13, 14: the bounds, the gate, the body budget,
    // the socket and its read deadline.
    shared: Arc<Shared>,
    socket: Arc<Connection>,
    deadline: Deadline,

    // codex patch 15: the connection's slot, and whether a request began on
    // it (before that, `first_byte_timeout` applies).
    slot: SlotGuard,
    started: bool,

    // codex patch 3, 13: how much unread input `close` drains at most.
    drain_limit: usize,

    // codex patch 11: answers written by workers, for this connection to send
    replies: (Sender<Vec<u8>>, Receiver<Vec<u8>>),
}

// codex patch 11: a worker writes its answer here, in memory, and sends what
// the socket takes at once; the connection sends the rest. Upstream's workers
// wrote to the socket and waited on it, and a client that pipelined without
// reading held each worker answering it until the write timed out (or for
// ever without a timeout). Codex's answers are small JSON documents.
struct ReplyWriter {
    buffer: Vec<u8>,
    socket: Arc<Connection>,
    to: Sender<Vec<u8>>,
}

impl Write for ReplyWriter {
    fn write(&mut self, buf: &[u8]) -> IoResult<usize> {
        self.buffer.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> IoResult<()> {
        Ok(())
    }
}

impl ReplyWriter {
    /// Writes what the socket takes without waiting; returns how much. The
    /// connection is not using its socket meanwhile: it waits for this
    /// answer (codex patch 3).
    /// A TLS connection's answer is all sent by the connection (codex
    /// patch 17): what a TLS session accepts is not yet on the wire, and
    /// the records it holds back would wait for a next write.
    fn write_now(&self) -> usize {
        if self.buffer.is_empty()
            || self.socket.secure()
            || self.socket.set_nonblocking(true).is_err()
        {
            return 0;
        }
        let mut sent = 0;
        let mut socket = &*self.socket;
        while sent < self.buffer.len() {
            match socket.write(&self.buffer[sent..]) {
                Ok(0) => break,
                Ok(n) => sent += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if self.socket.set_nonblocking(false).is_err() {
            // The connection could not wait on its socket any more.
            self.socket.shutdown(Shutdown::Both).ok();
        }
        sent
    }
}

impl Drop for ReplyWriter {
    fn drop(&mut self) {
        // Sent from here as far as the socket takes it at once (almost
        // always all of it: no extra thread on a request's path), the rest
        // by the connection.
        let sent = self.write_now();
        if sent < self.buffer.len() {
            self.buffer.drain(..sent);
            self.to.send(std::mem::take(&mut self.buffer)).ok();
        }
    }
}

/// Why no request could be read.
enum ReadError {
    // codex patch 5, 6: answered with this status, then the connection closes.
    Refused(u16, &'static str),
    // codex patch 13: the gate answered the head; the body stays unread.
    Gated(Response<Cursor<Vec<u8>>>),
    // codex patch 4: the connection closes without an answer (the client
    // went away, or kept an idle connection past the idle timeout).
    Closed,
}

impl ReadError {
    // codex patch 4, 5, 7: what a failed read of the request means.
    fn from_io(error: IoError, started: bool) -> ReadError {
        match error.kind() {
            ErrorKind::TimedOut if started => {
                ReadError::Refused(408, "the request did not arrive in time")
            }
            ErrorKind::InvalidData => ReadError::Refused(400, "the request is malformed"),
            _ => ReadError::Closed,
        }
    }
}

// codex patch 5: the longest request line or header line.
const MAX_LINE: usize = 8 * 1024;
// codex patch 5: the most header fields in one request.
const MAX_HEADERS: usize = 100;
// codex patch 3: unread input drained before closing, so that the answer
// is not destroyed by a reset.
const DRAIN_BYTES: usize = 256 * 1024;
// codex patch 13: what is drained of a body the gate refused.
const GATED_DRAIN_BYTES: usize = 64 * 1024;

impl ClientConnection {
    /// Creates a new `ClientConnection` that takes ownership of the socket
    /// (codex patch 2, 4: one shared socket, with the write timeout set).
    pub(crate) fn new(
        socket: Arc<Connection>,
        shared: Arc<Shared>,
        slot: SlotGuard,
    ) -> ClientConnection {
        let (mut read_socket, write_socket) = RefinedTcpStream::new(socket);
        let remote_addr = read_socket.peer_addr();
        let secure = read_socket.secure();
        let deadline = read_socket.deadline();
        let socket = read_socket.socket();
        socket
            .set_write_timeout(Some(shared.limits.write_timeout))
            .ok();

        let mut source = SequentialReaderBuilder::new(BufReader::with_capacity(1024, read_socket));
        let first_header = source.next().unwrap();

        ClientConnection {
            source,
            sink: SequentialWriterBuilder::new(BufWriter::with_capacity(1024, write_socket)),
            remote_addr,
            next_header_source: first_header,
            no_more_requests: false,
            secure,
            shared,
            socket,
            deadline,
            slot,
            started: false,
            drain_limit: DRAIN_BYTES,
            replies: channel(),
        }
    }

    // codex patch 11: sends the answers workers wrote, in order, within the
    // write timeout.
    pub(crate) fn write_replies(&mut self) -> IoResult<()> {
        while let Ok(reply) = self.replies.1.try_recv() {
            let mut writer = self.sink.next().unwrap();
            writer.write_all(&reply)?;
            writer.flush()?;
        }
        Ok(())
    }

    fn read_byte(&mut self) -> IoResult<u8> {
        let mut byte = [0u8];
        loop {
            match self.next_header_source.read(&mut byte) {
                Ok(0) => return Err(IoError::new(ErrorKind::ConnectionAborted, "Unexpected EOF")),
                Ok(_) => return Ok(byte[0]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    // codex patch 5: reads a line terminated by CRLF, of at most `MAX_LINE`
    // bytes and `budget` bytes (what is left of `max_head_bytes`). Upstream
    // had no limit on a line or on the number of headers, and closed the
    // connection without an answer on a non-ASCII byte. A bare LF is refused
    // (RFC 9112 allows accepting it, but a proxy in front may not split lines
    // the same way).
    fn read_next_line(
        &mut self,
        mut buf: Vec<u8>,
        budget: &mut usize,
    ) -> Result<AsciiString, ReadError> {
        loop {
            let byte = self.read_byte().map_err(|e| ReadError::from_io(e, true))?;
            match byte {
                b'\r' => {
                    let next = self.read_byte().map_err(|e| ReadError::from_io(e, true))?;
                    if next != b'\n' {
                        return Err(ReadError::Refused(
                            400,
                            "a line of the request head has a CR without LF",
                        ));
                    }
                    return AsciiString::from_ascii(buf)
                        .map_err(|_| ReadError::Refused(400, "the request head is not ASCII"));
                }
                b'\n' => {
                    return Err(ReadError::Refused(
                        400,
                        "a line of the request head ends in LF without CR",
                    ));
                }
                _ => {}
            }
            if *budget == 0 {
                return Err(ReadError::Refused(431, "the request head is too large"));
            }
            if buf.len() >= MAX_LINE {
                return Err(ReadError::Refused(
                    431,
                    "a line of the request head is too long",
                ));
            }
            *budget -= 1;
            buf.push(byte);
        }
    }

    fn read(&mut self) -> Result<Request, ReadError> {
        // codex patch 4: an idle connection waits `idle_timeout` for the first
        // byte of a request (and is closed quietly after it); the whole head
        // must then arrive within `header_timeout`, and the body within
        // `body_timeout`. Upstream had no deadline of its own.
        // codex patch 15: a new connection must send its first byte within
        // `first_byte_timeout`; while it waits for a request, the connection
        // is idle and may be closed to make room for another.
        let limits = &self.shared.limits;
        let wait = if self.started {
            limits.idle_timeout
        } else {
            limits.first_byte_timeout
        };
        self.slot.idle();
        self.deadline.set(Some(wait));
        let mut first = self.read_byte().map_err(|e| ReadError::from_io(e, false))?;
        self.slot.busy();
        self.started = true;
        let limits = &self.shared.limits;
        self.deadline.set(Some(limits.header_timeout));
        let mut budget = limits.max_head_bytes;
        // Empty lines before a request line are skipped (RFC 9112 section
        // 2.2; some clients send a CRLF after a body), within the head's
        // budget.
        while first == b'\r' && budget >= 2 {
            if self.read_byte().map_err(|e| ReadError::from_io(e, true))? != b'\n' {
                return Err(ReadError::Refused(400, "the request line is malformed"));
            }
            budget -= 2;
            first = self.read_byte().map_err(|e| ReadError::from_io(e, true))?;
        }

        // reading the request line
        let line = self.read_next_line(vec![first], &mut budget)?;
        let (method, path, version) = parse_request_line(line.as_str())?;

        // getting all headers
        let mut headers = Vec::new();
        loop {
            let line = self.read_next_line(Vec::new(), &mut budget)?;
            if line.is_empty() {
                break;
            }
            if headers.len() == MAX_HEADERS {
                return Err(ReadError::Refused(
                    431,
                    "the request has too many header fields",
                ));
            }
            headers.push(parse_field_line(line.as_str())?);
        }

        // codex patch 13: the gate decides on the head before any byte of
        // the body is read or a `100 Continue` sent.
        let remote_addr = self.remote_addr.as_ref().ok().copied().flatten();
        let head = Head {
            method: &method,
            url: &path,
            http_version: &version,
            headers: &headers,
            remote_addr,
        };
        if let Some(response) = self.shared.gate.check(&head) {
            return Err(ReadError::Gated(response));
        }

        // codex patch 11: the answer is written in memory and sent by the
        // connection; only `100 Continue` goes to the socket directly.
        let writer = ReplyWriter {
            buffer: Vec::new(),
            socket: self.socket.clone(),
            to: self.replies.0.clone(),
        };
        let mut interim = self.sink.next().unwrap();

        // follow-up for next potential request
        let mut data_source = self.source.next().unwrap();
        std::mem::swap(&mut self.next_header_source, &mut data_source);

        // building the next reader
        self.deadline.set(Some(self.shared.limits.body_timeout));
        let request = crate::request::new_request(
            self.secure,
            method,
            path,
            version,
            headers,
            remote_addr,
            data_source,
            &mut interim,
            writer,
            self.shared.limits.max_body_bytes,
            &self.shared.budget,
        );
        drop(interim);
        self.deadline.set(None);
        request.map_err(|e| {
            use crate::request::RequestCreationError;
            match e {
                RequestCreationError::CreationIoError(e) => ReadError::from_io(e, true),
                RequestCreationError::ExpectationFailed => {
                    ReadError::Refused(417, "only Expect: 100-continue is supported")
                }
                RequestCreationError::Malformed(status, message) => {
                    ReadError::Refused(status, message)
                }
                RequestCreationError::OverBudget => ReadError::Refused(
                    503,
                    "too many request bodies are being read at once; retry later",
                ),
            }
        })
    }

    // codex patch 5, 6: answers a request that cannot be served with
    // `status` and a plain-text reason, and closes the connection.
    // A 503 (codex patch 14) says when to retry.
    fn refuse(&mut self, status: u16, message: &str) {
        let mut response =
            Response::from_string(message.to_owned()).with_status_code(StatusCode(status));
        if status == 503 {
            response.add_header(Header {
                field: "Retry-After".parse().expect("a valid field name"),
                value: AsciiString::from_ascii("1").expect("ASCII"),
            });
        }
        self.answer_and_close(response);
    }

    // codex patch 13: writes `response` with `Connection: close`; the
    // connection reads no further request.
    fn answer_and_close(&mut self, mut response: Response<Cursor<Vec<u8>>>) {
        response.add_header(Header {
            field: "Connection".parse().expect("a valid field name"),
            value: AsciiString::from_ascii("close").expect("ASCII"),
        });
        let writer = self.sink.next().unwrap();
        response
            .raw_print(writer, HTTPVersion(1, 1), &[], false, None)
            .ok();
        self.no_more_requests = true;
    }

    // codex patch 3, 4: closes the connection once its last answer is out:
    // the write side first, then what the client still sends is read and
    // discarded for a moment (a bounded amount, within a second), so that
    // closing with unread input does not reset the connection and destroy
    // the answer before the client has read it.
    pub(crate) fn close(self) {
        let ClientConnection {
            source,
            sink,
            next_header_source,
            socket,
            deadline,
            drain_limit,
            ..
        } = self;
        drop(sink);
        // codex patch 17: with TLS's close notification first.
        socket.close_write();
        deadline.set(Some(Duration::from_secs(1)));
        let mut reader = next_header_source;
        let mut buf = [0u8; 4096];
        let mut left = drain_limit;
        while left > 0 {
            match reader.read(&mut buf) {
                Ok(n) if n > 0 => left = left.saturating_sub(n),
                _ => break,
            }
        }
        drop(reader);
        drop(source);
    }
}

impl Iterator for ClientConnection {
    type Item = Request;
    /// Blocks until the next Request is available.
    /// Returns None when no new Requests will come from the client.
    fn next(&mut self) -> Option<Request> {
        // the client sent a "connection: close" header in this previous request
        //  or is using HTTP 1.0, meaning that no new request will come
        if self.no_more_requests {
            return None;
        }

        let rq = match self.read() {
            Ok(rq) => rq,
            Err(ReadError::Refused(status, message)) => {
                self.refuse(status, message);
                return None;
            }
            Err(ReadError::Gated(response)) => {
                self.answer_and_close(response);
                self.drain_limit = GATED_DRAIN_BYTES;
                return None;
            }
            Err(ReadError::Closed) => {
                self.no_more_requests = true;
                return None;
            }
        };

        // updating the status of the connection
        let connection_header = rq
            .headers()
            .iter()
            .find(|h| h.field.equiv("Connection"))
            .map(|h| h.value.as_str());

        let lowercase = connection_header.map(|h| h.to_ascii_lowercase());

        match lowercase {
            Some(ref val) if val.contains("close") => self.no_more_requests = true,
            Some(ref val)
                if !val.contains("keep-alive") && *rq.http_version() == HTTPVersion(1, 0) =>
            {
                self.no_more_requests = true
            }
            None if *rq.http_version() == HTTPVersion(1, 0) => self.no_more_requests = true,
            _ => (),
        };

        // returning the request
        Some(rq)
    }
}

// codex patch 5: any `HTTP/<digit>.<digit>` is a version; one this server
// does not speak (HTTP/2.0, the HTTP/2 connection preface, HTTP/0.9,
// HTTP/3.0) is answered 505 at once and the connection closed. Upstream
// answered 505 after taking a writer for the request it then dropped, and
// the two waited on each other for ever (a thread and the socket leaked per
// request).
fn parse_http_version(version: &str) -> Result<HTTPVersion, ReadError> {
    let bytes = version.as_bytes();
    let (major, minor) = match bytes {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            (major - b'0', minor - b'0')
        }
        _ => return Err(ReadError::Refused(400, "the request line is malformed")),
    };
    match (major, minor) {
        (1, 0) | (1, 1) => Ok(HTTPVersion(major, minor)),
        _ => Err(ReadError::Refused(
            505,
            "this server only supports HTTP versions 1.0 and 1.1",
        )),
    }
}

// codex patch 16: a header field line as RFC 9112 section 5 has it: a
// token, a colon, and a value without control characters other than
// horizontal tab. A line that begins with a space or tab continues the
// previous one (obsolete line folding, section 5.2): refused, since a proxy
// that unfolds it would see other fields than this server (upstream read a
// folded ` Content-Length: 5` as a header of its own). Empty names and
// control characters (a CR or NUL a proxy might treat differently) are
// refused too.
fn parse_field_line(line: &str) -> Result<Header, ReadError> {
    if line.starts_with([' ', '\t']) {
        return Err(ReadError::Refused(
            400,
            "a header field is folded over several lines (obsolete line folding)",
        ));
    }
    let Some((name, value)) = line.split_once(':') else {
        return Err(ReadError::Refused(400, "a header field has no colon"));
    };
    if name.is_empty() {
        return Err(ReadError::Refused(400, "a header field has an empty name"));
    }
    if !name.bytes().all(is_tchar) {
        return Err(ReadError::Refused(
            400,
            "a header field name is not a token",
        ));
    }
    let value = value.trim_matches([' ', '\t']);
    if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(ReadError::Refused(
            400,
            "a header field value holds a control character",
        ));
    }
    match (HeaderField::from_str(name), AsciiString::from_ascii(value)) {
        (Ok(field), Ok(value)) => Ok(Header { field, value }),
        _ => Err(ReadError::Refused(400, "a header field is malformed")),
    }
}

// codex patch 16: RFC 9110 section 5.6.2's `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn parse_request_line(line: &str) -> Result<(Method, String, HTTPVersion), ReadError> {
    // codex patch 5: exactly three parts separated by single spaces.
    let mut parts = line.split(' ');
    let (Some(method), Some(path), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ReadError::Refused(400, "the request line is malformed"));
    };
    let version = parse_http_version(version)?;
    let method = method
        .parse()
        .ok()
        .filter(|_| !method.is_empty() && !path.is_empty())
        .ok_or(ReadError::Refused(400, "the request line is malformed"))?;
    Ok((method, path.to_owned(), version))
}

#[cfg(test)]
mod test {
    #[test]
    fn test_parse_request_line() {
        let (method, path, ver) = super::parse_request_line("GET /hello HTTP/1.1")
            .ok()
            .unwrap();

        assert!(method == crate::Method::Get);
        assert!(path == "/hello");
        assert!(ver == crate::common::HTTPVersion(1, 1));

        assert!(super::parse_request_line("GET /hello").is_err());
        assert!(super::parse_request_line("qsd qsd qsd").is_err());
    }

    // codex patch 16
    #[test]
    fn field_lines_are_strict() {
        let ok = super::parse_field_line("X-Foo: \ta b\t ").ok().unwrap();
        assert!(ok.field.equiv("x-foo"));
        assert_eq!(ok.value.as_str(), "a b");
        for bad in [
            " Content-Length: 5",
            "\tX-Foo: a",
            ": value",
            "X Foo: a",
            "X-Foo a",
            "X-Foo: a\u{1}b",
            "X-Foo: a\u{7f}",
            "X-Foo: \u{1b}[31m",
        ] {
            assert!(super::parse_field_line(bad).is_err(), "{:?}", bad);
        }
    }
}
