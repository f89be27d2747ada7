// codex patch 7: a chunked-body decoder with bounded lines.
//
// Upstream used `chunked_transfer::Decoder`, which collects a chunk-size line
// into a vector until it sees a CR, with no limit: a client sending an endless
// chunk-size line grew the server's memory without bound (400 MB sent, 415 MB
// resident, whatever the body size limit). Here every line (chunk size with
// its extensions, trailer fields) is at most `MAX_LINE` bytes, trailers at
// most `MAX_TRAILERS` lines, lines end in CRLF, and the size is plain hex
// that fits a `u64`. Anything else is an `InvalidData` error (answered 400).

use std::convert::TryFrom;
use std::io::{Error, ErrorKind, Read, Result as IoResult};

const MAX_LINE: usize = 4096;
const MAX_TRAILERS: usize = 32;

enum State {
    Size,
    Data(u64),
    DataEnd,
    Done,
}

pub struct ChunkedReader<R> {
    inner: R,
    state: State,
}

fn invalid(message: &'static str) -> Error {
    Error::new(ErrorKind::InvalidData, message)
}

impl<R: Read> ChunkedReader<R> {
    pub fn new(inner: R) -> ChunkedReader<R> {
        ChunkedReader {
            inner,
            state: State::Size,
        }
    }

    fn byte(&mut self) -> IoResult<u8> {
        let mut byte = [0u8];
        loop {
            match self.inner.read(&mut byte) {
                Ok(0) => {
                    return Err(Error::new(
                        ErrorKind::UnexpectedEof,
                        "chunked body cut short",
                    ))
                }
                Ok(_) => return Ok(byte[0]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// One CRLF-terminated line, without the CRLF.
    fn line(&mut self) -> IoResult<Vec<u8>> {
        let mut line = Vec::new();
        loop {
            match self.byte()? {
                b'\r' if self.byte()? == b'\n' => return Ok(line),
                b'\r' | b'\n' => return Err(invalid("a chunked body line does not end in CRLF")),
                byte if line.len() < MAX_LINE => line.push(byte),
                _ => return Err(invalid("a chunked body line is too long")),
            }
        }
    }

    fn chunk_size(&mut self) -> IoResult<u64> {
        let line = self.line()?;
        let digits = line.split(|&b| b == b';').next().unwrap_or_default();
        let digits = std::str::from_utf8(digits)
            .map_err(|_| invalid("a chunk size is not hexadecimal"))?
            .trim_end_matches([' ', '\t']);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid("a chunk size is not hexadecimal"));
        }
        u64::from_str_radix(digits, 16).map_err(|_| invalid("a chunk size is too large"))
    }
}

impl<R: Read> Read for ChunkedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
        loop {
            match self.state {
                State::Done => return Ok(0),
                State::Size => {
                    let size = self.chunk_size()?;
                    if size == 0 {
                        for _ in 0..=MAX_TRAILERS {
                            if self.line()?.is_empty() {
                                self.state = State::Done;
                                return Ok(0);
                            }
                        }
                        return Err(invalid("a chunked body has too many trailer fields"));
                    }
                    self.state = State::Data(size);
                }
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(0);
                    }
                    let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let n = self.inner.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(Error::new(
                            ErrorKind::UnexpectedEof,
                            "chunked body cut short",
                        ));
                    }
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                    return Ok(n);
                }
                State::DataEnd => {
                    if !self.line()?.is_empty() {
                        return Err(invalid("a chunk is longer than its size"));
                    }
                    self.state = State::Size;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &[u8]) -> IoResult<Vec<u8>> {
        let mut out = Vec::new();
        ChunkedReader::new(input).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn decodes_chunks_extensions_and_trailers() {
        let body = decode(b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n").unwrap();
        assert_eq!(body, b"hello world");
    }

    #[test]
    fn refuses_a_chunk_size_line_without_end() {
        let mut input = vec![b'1'; 10 * MAX_LINE];
        input.extend_from_slice(b"\r\n");
        let error = decode(&input).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidData);
        assert!(error.to_string().contains("too long"), "{}", error);
    }

    #[test]
    fn refuses_bad_sizes_bare_lf_and_overlong_chunks() {
        for input in [
            &b"-5\r\nhello\r\n0\r\n\r\n"[..],
            b"zz\r\n\r\n",
            b"11111111111111111\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"3\r\nhello\r\n0\r\n\r\n",
        ] {
            let error = decode(input).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::InvalidData, "{:?}", input);
        }
        assert_eq!(
            decode(b"5\r\nhel").unwrap_err().kind(),
            ErrorKind::UnexpectedEof
        );
    }
}
