use std::io::Error as IoError;
use std::io::{self, Cursor, ErrorKind, Read, Write};

use std::fmt;
use std::net::SocketAddr;

use std::sync::mpsc::Sender;
use std::time::Instant;

use crate::util::budget::{BodyBudget, Reservation};
use crate::util::ChunkedReader;
use crate::{HTTPVersion, Header, Method, Response, StatusCode};

/// Represents an HTTP request made by a client.
///
/// A `Request` object is what is produced by the server, and is your what
/// your code must analyse and answer.
///
/// This object implements the `Send` trait, therefore you can dispatch your requests to
/// worker threads.
///
/// # Pipelining
///
/// If a client sends multiple requests in a row (without waiting for the response), then you will
/// get multiple `Request` objects simultaneously. This is called *requests pipelining*.
/// Tiny-http automatically reorders the responses so that you don't need to worry about the order
/// in which you call `respond` or `into_writer`.
///
/// This mechanic is disabled if:
///
///  - The body of a request is large enough (handling requires pipelining requires storing the
///    body of the request in a buffer ; if the body is too big, tiny-http will avoid doing that)
///  - A request sends a `Expect: 100-continue` header (which means that the client waits to
///    know whether its body will be processed before sending it)
///  - A request sends a `Connection: close` header or `Connection: upgrade` header (used for
///    websockets), which indicates that this is the last request that will be received on this
///    connection
///
/// # Automatic cleanup
///
/// If a `Request` object is destroyed without `into_writer` or `respond` being called,
/// an empty response with a 500 status code (internal server error) will automatically be
/// sent back to the client.
/// This means that if your code fails during the handling of a request, this "internal server
/// error" response will automatically be sent during the stack unwinding.
///
/// # Testing
///
/// If you want to build fake requests to test your server, use [`TestRequest`](crate::test::TestRequest).
pub struct Request {
    // where to read the body from
    // codex patch 9, 14: every body is read before the hand-off, so it is
    // a buffer; `take_body` hands it over without a copy.
    data_reader: Option<Cursor<Vec<u8>>>,

    // if this writer is empty, then the request has been answered
    response_writer: Option<Box<dyn Write + Send + 'static>>,

    remote_addr: Option<SocketAddr>,

    // true if HTTPS, false if HTTP
    secure: bool,

    method: Method,

    path: String,

    http_version: HTTPVersion,

    headers: Vec<Header>,

    body_length: Option<usize>,

    // true if a `100 Continue` response must be sent when `as_reader()` is called
    must_send_continue: bool,

    // If Some, a message must be sent after responding
    // codex patch 3: tells the connection that this request is answered, and
    // whether it may read the next one (false: close the connection).
    notify_when_responded: Option<Sender<bool>>,

    // codex patch 8: the answer closes the connection (`Connection: close`).
    close_connection: bool,

    // codex patch 9: when the request (head and body) had been read.
    received_at: Instant,

    // codex patch 14: the body's share of the in-flight budget, given back
    // when the request (and its body) is dropped.
    _body_reservation: Option<Reservation>,
}

struct NotifyOnDrop<R> {
    sender: Sender<bool>,
    inner: Option<R>,
}

impl<R: Write> Write for NotifyOnDrop<R> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.as_mut().expect("written before drop").write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.as_mut().expect("flushed before drop").flush()
    }
}
impl<R> Drop for NotifyOnDrop<R> {
    fn drop(&mut self) {
        // codex patch 11: what was written goes to the connection first.
        drop(self.inner.take());
        // codex patch 3: the connection reads no more requests (the answer
        // was written raw). Its thread may be gone: not a reason to panic.
        self.sender.send(false).ok();
    }
}

/// Error that can happen when building a `Request` object.
#[derive(Debug)]
pub enum RequestCreationError {
    /// The client expects something we don't understand.
    ExpectationFailed,

    /// Error while reading data from the socket during the creation of the `Request`.
    CreationIoError(IoError),

    // codex patch 6: a request whose framing the server will not guess at
    // (RFC 9112 section 6.3): answered with this status, connection closed.
    /// The request cannot be framed: answer with this status and close.
    Malformed(u16, &'static str),

    // codex patch 14
    /// The body does not fit in the in-flight budget: answer 503 and close.
    OverBudget,
}

impl From<IoError> for RequestCreationError {
    fn from(err: IoError) -> RequestCreationError {
        RequestCreationError::CreationIoError(err)
    }
}

// codex patch 6: how the body is delimited.
enum Framing {
    Empty,
    Length(usize),
    Chunked,
}

// codex patch 6: strict framing. Upstream took the first Content-Length,
// read a negative or overflowing one as "no body", and let
// Transfer-Encoding silently win over Content-Length: each a way for a
// request smuggled past a proxy that frames the message differently.
fn framing(headers: &[Header]) -> Result<Framing, RequestCreationError> {
    use RequestCreationError::Malformed;
    let mut length: Option<usize> = None;
    for header in headers.iter().filter(|h| h.field.equiv("Content-Length")) {
        for value in header.value.as_str().split(',').map(str::trim) {
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Malformed(400, "Content-Length is not a number of bytes"));
            }
            let n = value
                .parse::<usize>()
                .map_err(|_| Malformed(400, "Content-Length is too large"))?;
            if length.is_some_and(|l| l != n) {
                return Err(Malformed(400, "Content-Length headers disagree"));
            }
            length = Some(n);
        }
    }
    let mut codings = Vec::new();
    let mut transfer_encoding = false;
    for header in headers
        .iter()
        .filter(|h| h.field.equiv("Transfer-Encoding"))
    {
        transfer_encoding = true;
        codings.extend(
            header
                .value
                .as_str()
                .split(',')
                .map(|c| c.trim().to_ascii_lowercase())
                .filter(|c| !c.is_empty()),
        );
    }
    if !transfer_encoding {
        return Ok(length.map_or(Framing::Empty, Framing::Length));
    }
    if length.is_some() {
        return Err(Malformed(
            400,
            "both Content-Length and Transfer-Encoding are given",
        ));
    }
    if codings != ["chunked"] {
        return Err(Malformed(
            501,
            "only the chunked transfer coding is supported",
        ));
    }
    Ok(Framing::Chunked)
}

// codex patch 9: the interim answer to `Expect: 100-continue`, sent by the
// connection before it reads the body.
fn send_continue(writer: &mut dyn Write, version: &HTTPVersion) -> io::Result<()> {
    write!(
        writer,
        "HTTP/{}.{} 100 Continue\r\n\r\n",
        version.0, version.1
    )?;
    writer.flush()
}

/// Builds a new request.
///
/// After the request line and headers have been read from the socket, this
/// reads the body (codex patch 9: up to `max_body_bytes`, see below) and
/// returns the request.
#[allow(clippy::too_many_arguments)]
pub fn new_request<R, W>(
    secure: bool,
    method: Method,
    path: String,
    version: HTTPVersion,
    headers: Vec<Header>,
    remote_addr: Option<SocketAddr>,
    mut source_data: R,
    interim: &mut dyn Write,
    writer: W,
    max_body_bytes: usize,
    budget: &std::sync::Arc<BodyBudget>,
) -> Result<Request, RequestCreationError>
where
    R: Read + Send + 'static,
    W: Write + Send + 'static,
{
    let framing = framing(&headers)?;

    // true if the client sent a `Expect: 100-continue` header
    let expects_continue = {
        match headers
            .iter()
            .find(|h: &&Header| h.field.equiv("Expect"))
            .map(|h| h.value.as_str())
        {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("100-continue") => true,
            _ => return Err(RequestCreationError::ExpectationFailed),
        }
    };

    // codex patch 9: the body is read here, by the connection, before the
    // request is handed to a worker (within the body deadline the connection
    // set): a client that stalls its body holds its own connection, never a
    // worker. Upstream buffered bodies up to 1 KiB this way and left larger
    // ones to be read by the worker, then drained what the worker left by
    // allocating a buffer of the whole unread size (a forged Content-Length
    // aborted the process). A body larger than `max_body_bytes` is now left
    // unread and the connection closed after the answer; a chunked one is
    // handed over cut at `max_body_bytes + 1` bytes, so that the handler sees
    // it is too large.
    //
    // codex patch 14: a body is read only once its size (a chunked one's:
    // the most that is read of it) is reserved in the in-flight budget;
    // else the request is refused before any byte of it is read and before
    // a `100 Continue`.
    let mut close_connection = false;
    let body_length = match framing {
        Framing::Length(n) => Some(n),
        _ => None,
    };
    let reserve = match framing {
        Framing::Length(n) if n > 0 && n <= max_body_bytes => n,
        Framing::Chunked => max_body_bytes.saturating_add(1),
        _ => 0,
    };
    let body_reservation = if reserve > 0 {
        Some(
            budget
                .reserve(reserve)
                .ok_or(RequestCreationError::OverBudget)?,
        )
    } else {
        None
    };
    let reader: Cursor<Vec<u8>> = {
        match framing {
            Framing::Empty | Framing::Length(0) => Cursor::new(Vec::new()),
            Framing::Length(n) if n <= max_body_bytes => {
                if expects_continue {
                    send_continue(interim, &version)?;
                }
                let mut body = Vec::with_capacity(n.min(64 * 1024));
                (&mut source_data).take(n as u64).read_to_end(&mut body)?;
                if body.len() < n {
                    let info = "Connection has been closed before we received enough data";
                    return Err(IoError::new(ErrorKind::ConnectionAborted, info).into());
                }
                Cursor::new(body)
            }
            Framing::Length(_) => {
                close_connection = true;
                Cursor::new(Vec::new())
            }
            Framing::Chunked => {
                if expects_continue {
                    send_continue(interim, &version)?;
                }
                let mut body = Vec::new();
                ChunkedReader::new(&mut source_data)
                    .take(max_body_bytes as u64 + 1)
                    .read_to_end(&mut body)?;
                close_connection = body.len() > max_body_bytes;
                Cursor::new(body)
            }
        }
    };

    Ok(Request {
        data_reader: Some(reader),
        response_writer: Some(Box::new(writer) as Box<dyn Write + Send + 'static>),
        remote_addr,
        secure,
        method,
        path,
        http_version: version,
        headers,
        body_length,
        must_send_continue: false,
        notify_when_responded: None,
        close_connection,
        received_at: Instant::now(),
        _body_reservation: body_reservation,
    })
}

impl Request {
    /// Returns true if the request was made through HTTPS.
    #[inline]
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// Returns the method requested by the client (eg. `GET`, `POST`, etc.).
    #[inline]
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// Returns the resource requested by the client.
    #[inline]
    pub fn url(&self) -> &str {
        &self.path
    }

    /// Returns a list of all headers sent by the client.
    #[inline]
    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    /// Returns the HTTP version of the request.
    #[inline]
    pub fn http_version(&self) -> &HTTPVersion {
        &self.http_version
    }

    /// Returns the length of the body in bytes.
    ///
    /// Returns `None` if the length is unknown.
    #[inline]
    pub fn body_length(&self) -> Option<usize> {
        self.body_length
    }

    /// Returns the address of the client that sent this request.
    ///
    /// The address is always `Some` for TCP listeners, but always `None` for UNIX listeners
    /// (as the remote address of a UNIX client is almost always unnamed).
    ///
    /// Note that this is gathered from the socket. If you receive the request from a proxy,
    /// this function will return the address of the proxy and not the address of the actual
    /// user.
    /// When the request, its head and body, had been read (codex patch 9).
    #[inline]
    pub fn received_at(&self) -> Instant {
        self.received_at
    }

    /// Asks for the connection to be closed after the answer: the response
    /// gets `Connection: close` (codex patch 8).
    #[inline]
    pub fn close_connection(&mut self) {
        self.close_connection = true;
    }

    /// Whether the connection closes after the answer (codex patch 8).
    #[inline]
    pub fn closes_connection(&self) -> bool {
        self.close_connection
    }

    #[inline]
    pub fn remote_addr(&self) -> Option<&SocketAddr> {
        self.remote_addr.as_ref()
    }

    // codex patch 12: `upgrade` is gone. The connection writes every answer
    // itself (codex patch 11) and frames every body (codex patch 9): a
    // protocol switch to a raw stream has no place there. A client's
    // `Upgrade` request is ignored, as RFC 9110 section 7.8 allows.

    /// Allows to read the body of the request.
    ///
    /// # Example
    ///
    /// ```ignore
    /// # // (not compiled: rustc_serialize was a dev-dependency of upstream's tests)
    /// # extern crate rustc_serialize;
    /// # extern crate tiny_http;
    /// # use rustc_serialize::json::Json;
    /// # use std::io::Read;
    /// # fn get_content_type(_: &tiny_http::Request) -> &'static str { "" }
    /// # fn main() {
    /// # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
    /// let mut request = server.recv().unwrap();
    ///
    /// if get_content_type(&request) == "application/json" {
    ///     let mut content = String::new();
    ///     request.as_reader().read_to_string(&mut content).unwrap();
    ///     let json: Json = content.parse().unwrap();
    /// }
    /// # }
    /// ```
    ///
    /// If the client sent a `Expect: 100-continue` header with the request, calling this
    ///  function will send back a `100 Continue` response.
    #[inline]
    pub fn as_reader(&mut self) -> &mut dyn Read {
        if self.must_send_continue {
            let msg = Response::new_empty(StatusCode(100));
            msg.raw_print(
                self.response_writer.as_mut().unwrap().by_ref(),
                self.http_version.clone(),
                &self.headers,
                true,
                None,
            )
            .ok();
            self.response_writer.as_mut().unwrap().flush().ok();
            self.must_send_continue = false;
        }

        self.data_reader.as_mut().unwrap()
    }

    // codex patch 14: the body without a copy, so that a body held by a
    // worker is the one the in-flight budget counted (reading it through
    // `as_reader` into a new buffer would hold it twice). Its reservation
    // is given back when the request is dropped.
    /// Takes the body, as read by the connection (what `as_reader` has not
    /// yet read of it); the reader is empty afterwards.
    pub fn take_body(&mut self) -> Vec<u8> {
        let Some(cursor) = self.data_reader.as_mut() else {
            return Vec::new();
        };
        let position = (cursor.position() as usize).min(cursor.get_ref().len());
        let mut body = std::mem::take(cursor.get_mut());
        cursor.set_position(0);
        body.drain(..position);
        body
    }

    /// Turns the `Request` into a writer.
    ///
    /// The writer has a raw access to the stream to the user.
    /// This function is useful for things like CGI.
    ///
    /// Note that the destruction of the `Writer` object may trigger
    /// some events. For exemple if a client has sent multiple requests and the requests
    /// have been processed in parallel, the destruction of a writer will trigger
    /// the writing of the next response.
    /// Therefore you should always destroy the `Writer` as soon as possible.
    #[inline]
    pub fn into_writer(mut self) -> Box<dyn Write + Send + 'static> {
        let writer = self.extract_writer_impl();
        if let Some(sender) = self.notify_when_responded.take() {
            let writer = NotifyOnDrop {
                sender,
                inner: Some(writer),
            };
            Box::new(writer) as Box<dyn Write + Send + 'static>
        } else {
            writer
        }
    }

    /// Extract the response `Writer` object from the Request, dropping this `Writer` has the same side effects
    /// as the object returned by `into_writer` above.
    ///
    /// This may only be called once on a single request.
    fn extract_writer_impl(&mut self) -> Box<dyn Write + Send + 'static> {
        use std::mem;

        assert!(self.response_writer.is_some());

        let mut writer = None;
        mem::swap(&mut self.response_writer, &mut writer);
        writer.unwrap()
    }

    /// Extract the body `Reader` object from the Request.
    ///
    /// This may only be called once on a single request.
    /// Sends a response to this request.
    #[inline]
    pub fn respond<R>(mut self, response: Response<R>) -> Result<(), IoError>
    where
        R: Read,
    {
        let res = self.respond_impl(response);
        if let Some(sender) = self.notify_when_responded.take() {
            // codex patch 3: the connection may read its next request.
            sender.send(!self.close_connection).ok();
        }
        res
    }

    fn respond_impl<R>(&mut self, mut response: Response<R>) -> Result<(), IoError>
    where
        R: Read,
    {
        // codex patch 8: `Connection: close` when either side closes.
        if self.close_connection {
            response.add_header(Header {
                field: "Connection".parse().expect("a valid field name"),
                value: ascii::AsciiString::from_ascii("close").expect("ASCII"),
            });
        } else if response.closes_connection() {
            self.close_connection = true;
        }
        let mut writer = self.extract_writer_impl();

        let do_not_send_body = self.method == Method::Head;

        let result = Self::ignore_client_closing_errors(response.raw_print(
            writer.by_ref(),
            self.http_version.clone(),
            &self.headers,
            do_not_send_body,
            None,
        ))
        .and_then(|()| Self::ignore_client_closing_errors(writer.flush()));
        // codex patch 8: an answer not written whole leaves the connection
        // out of step.
        if result.is_err() {
            self.close_connection = true;
        }
        result
    }

    fn ignore_client_closing_errors(result: io::Result<()>) -> io::Result<()> {
        result.or_else(|err| match err.kind() {
            ErrorKind::BrokenPipe => Ok(()),
            ErrorKind::ConnectionAborted => Ok(()),
            ErrorKind::ConnectionRefused => Ok(()),
            ErrorKind::ConnectionReset => Ok(()),
            _ => Err(err),
        })
    }

    pub(crate) fn with_notify_sender(mut self, sender: Sender<bool>) -> Self {
        self.notify_when_responded = Some(sender);
        self
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> Result<(), fmt::Error> {
        write!(
            formatter,
            "Request({} {} from {:?})",
            self.method, self.path, self.remote_addr
        )
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if self.response_writer.is_some() {
            let response = Response::empty(500);
            let _ = self.respond_impl(response); // ignoring any potential error
            if let Some(sender) = self.notify_when_responded.take() {
                // codex patch 3
                sender.send(!self.close_connection).ok();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Request;

    // codex patch 14
    #[test]
    fn the_body_is_taken_without_what_was_read() {
        let mut request: Request = crate::TestRequest::new().with_body("abcdef").into();
        let mut first = [0u8; 2];
        request.as_reader().read_exact(&mut first).unwrap();
        assert_eq!(request.take_body(), b"cdef");
        assert_eq!(request.take_body(), b"");
        let mut rest = Vec::new();
        request.as_reader().read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    }

    #[test]
    fn must_be_send() {
        #![allow(dead_code)]
        fn f<T: Send>(_: &T) {}
        fn bar(rq: &Request) {
            f(rq);
        }
    }
}
