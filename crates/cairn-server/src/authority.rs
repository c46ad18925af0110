//! Repairs the `:authority` of HTTP/2 requests from etcd 3.4 clients.
//!
//! etcd 3.4's client dials some endpoints (etcdctl `endpoint status`, `endpoint hashkv`,
//! `snapshot save`) with the whole URL as the gRPC target, so its requests carry
//! `:authority: http://127.0.0.1:2379`. Go's HTTP/2 server ignores that; Rust's `h2` refuses the
//! stream as malformed, which etcdctl reports as `RST_STREAM ... PROTOCOL_ERROR`. Newer etcd
//! clients send a correct authority, but 3.4's are everywhere, so the node repairs the header
//! before `h2` sees it.
//!
//! Every connection's client-to-server bytes pass through a [`Rewriter`], which looks at the
//! connection's first header block. A gRPC client names one authority for the whole connection,
//! so if that block's `:authority` is valid (every client but etcd 3.4's), the block and all that
//! follows pass through untouched and unparsed. Otherwise frames other than HEADERS and
//! CONTINUATION pass untouched, and each header block is decoded, its `:authority` repaired, and
//! re-encoded with the rewriter's own HPACK encoder. Re-encoding every block from the first (not
//! just repaired ones) keeps `h2`'s decoder in step with an encoder whose table it has seen from
//! the start. Server-to-client bytes pass through as they are.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use loona_hpack::{Decoder, Encoder};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::codegen::http::uri::Authority;
use tonic::transport::server::{Connected, TcpConnectInfo};

const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
/// The frame size every HTTP/2 peer accepts without negotiation; re-encoded blocks are split into
/// CONTINUATION frames to stay within it.
const FRAME_PAYLOAD_MAX: usize = 16_384;
/// A header block larger than this is refused rather than buffered: gRPC headers are small.
const HEADER_BLOCK_BYTES_MAX: usize = 1 << 20;

const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

/// A header block being collected from a HEADERS frame and its CONTINUATIONs.
struct OpenBlock {
    stream_id: [u8; 4],
    end_stream: bool,
    fragment: Vec<u8>,
    /// The block's frames as the client sent them.
    frames: Vec<u8>,
}

/// What the rewriter does with the bytes it is fed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Waiting for the first header block, which decides.
    Deciding,
    /// The first block's authority was valid: everything passes through as it is.
    PassThrough,
    /// The first block's authority needed repair: every block is decoded and re-encoded.
    Rewriting,
}

/// Rewrites the client-to-server half of one HTTP/2 connection.
pub struct Rewriter {
    mode: Mode,
    preface_left: usize,
    unparsed: Vec<u8>,
    open_block: Option<OpenBlock>,
    decoder: Decoder<'static>,
    encoder: Encoder<'static>,
}

impl Default for Rewriter {
    fn default() -> Self {
        Rewriter {
            mode: Mode::Deciding,
            preface_left: PREFACE_LEN,
            unparsed: Vec::new(),
            open_block: None,
            decoder: Decoder::new(),
            encoder: Encoder::new(),
        }
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

impl Rewriter {
    /// Whether everything from now on passes through as it is, so the caller may hand the
    /// client's bytes to the server without feeding them here.
    pub fn passes_through(&self) -> bool {
        self.mode == Mode::PassThrough
    }

    /// Consumes bytes read from the client and appends what the server should read to `out`.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        if self.mode == Mode::PassThrough {
            debug_assert!(
                self.unparsed.is_empty(),
                "flushed when passing through began"
            );
            out.extend_from_slice(input);
            return Ok(());
        }
        if self.preface_left > 0 {
            let take = self.preface_left.min(input.len());
            out.extend_from_slice(&input[..take]);
            self.preface_left -= take;
            input = &input[take..];
        }
        self.unparsed.extend_from_slice(input);
        let mut consumed = 0;
        while let Some(header) = self.unparsed.get(consumed..consumed + FRAME_HEADER_LEN) {
            let payload_len =
                usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
            let frame_end = consumed + FRAME_HEADER_LEN + payload_len;
            if self.unparsed.len() < frame_end {
                break;
            }
            let frame = self.unparsed[consumed..frame_end].to_vec();
            consumed = frame_end;
            self.frame(&frame, out)?;
            if self.mode == Mode::PassThrough {
                out.extend_from_slice(&self.unparsed[consumed..]);
                consumed = self.unparsed.len();
                break;
            }
        }
        self.unparsed.drain(..consumed);
        Ok(())
    }

    fn frame(&mut self, frame: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        let (kind, flags) = (frame[3], frame[4]);
        let stream_id: [u8; 4] = frame[5..9].try_into().expect("frame header is 9 bytes");
        let payload = &frame[FRAME_HEADER_LEN..];
        match kind {
            TYPE_HEADERS => {
                let fragment = header_fragment(flags, payload)?;
                self.open_block = Some(OpenBlock {
                    stream_id,
                    end_stream: flags & FLAG_END_STREAM != 0,
                    fragment: fragment.to_vec(),
                    frames: frame.to_vec(),
                });
            }
            TYPE_CONTINUATION => {
                let block = self
                    .open_block
                    .as_mut()
                    .ok_or_else(|| invalid("CONTINUATION without HEADERS".into()))?;
                block.fragment.extend_from_slice(payload);
                block.frames.extend_from_slice(frame);
                if block.fragment.len() > HEADER_BLOCK_BYTES_MAX {
                    return Err(invalid(format!(
                        "header block over {HEADER_BLOCK_BYTES_MAX} bytes"
                    )));
                }
            }
            _ => {
                out.extend_from_slice(frame);
                return Ok(());
            }
        }
        if flags & FLAG_END_HEADERS != 0 {
            let block = self.open_block.take().expect("a block is open");
            self.emit(block, out)?;
        }
        Ok(())
    }

    fn emit(&mut self, block: OpenBlock, out: &mut Vec<u8>) -> io::Result<()> {
        let mut headers = Vec::new();
        self.decoder
            .decode_with_cb(&block.fragment, |name, value| {
                headers.push((name.into_owned(), value.into_owned()));
            })
            .map_err(|error| invalid(format!("undecodable header block: {error:?}")))?;
        if self.mode == Mode::Deciding {
            let valid = headers.iter().all(|(name, value)| {
                name.as_slice() != b":authority" || Authority::try_from(value.as_slice()).is_ok()
            });
            if valid {
                self.mode = Mode::PassThrough;
                out.extend_from_slice(&block.frames);
                return Ok(());
            }
            self.mode = Mode::Rewriting;
        }
        headers.retain_mut(|(name, value)| name.as_slice() != b":authority" || repair(value));
        let encoded = self.encoder.encode(
            headers
                .iter()
                .map(|(name, value)| (name.as_slice(), value.as_slice())),
        );
        let mut chunks = encoded.chunks(FRAME_PAYLOAD_MAX).peekable();
        let mut kind = TYPE_HEADERS;
        // An empty block still needs its one HEADERS frame.
        let mut first_empty = encoded.is_empty().then_some(&[][..]);
        while let Some(chunk) = first_empty.take().or_else(|| chunks.next()) {
            let mut flags = if chunks.peek().is_none() {
                FLAG_END_HEADERS
            } else {
                0
            };
            if kind == TYPE_HEADERS && block.end_stream {
                flags |= FLAG_END_STREAM;
            }
            let len = u32::try_from(chunk.len())
                .expect("chunks are at most 16 KiB")
                .to_be_bytes();
            out.extend_from_slice(&len[1..]);
            out.extend_from_slice(&[kind, flags]);
            out.extend_from_slice(&block.stream_id);
            out.extend_from_slice(chunk);
            kind = TYPE_CONTINUATION;
        }
        Ok(())
    }
}

/// The header block fragment of a HEADERS frame, without padding and priority fields.
fn header_fragment(flags: u8, payload: &[u8]) -> io::Result<&[u8]> {
    let malformed = || invalid("malformed HEADERS frame".into());
    let (mut start, mut end) = (0, payload.len());
    if flags & FLAG_PADDED != 0 {
        let padding = usize::from(*payload.first().ok_or_else(malformed)?);
        start += 1;
        end = end.checked_sub(padding).ok_or_else(malformed)?;
    }
    if flags & FLAG_PRIORITY != 0 {
        start += 5;
    }
    payload.get(start..end).ok_or_else(malformed)
}

/// Makes `value` a valid authority if it is not one: `http://host:port/...` becomes `host:port`.
/// Returns false when nothing valid remains, and the header is then dropped (it is optional).
fn repair(value: &mut Vec<u8>) -> bool {
    if Authority::try_from(value.as_slice()).is_ok() {
        return true;
    }
    let text = String::from_utf8_lossy(value);
    let without_scheme = text
        .split_once("://")
        .map_or(text.as_ref(), |(_, rest)| rest);
    let host = without_scheme.split('/').next().unwrap_or_default();
    if Authority::try_from(host).is_ok() {
        *value = host.as_bytes().to_vec();
        return true;
    }
    false
}

/// An accepted client connection whose requests pass through a [`Rewriter`].
pub struct RepairedConnection {
    inner: TcpStream,
    rewriter: Rewriter,
    /// Rewritten bytes not yet handed to the reader, from `ready_from` on.
    ready: Vec<u8>,
    ready_from: usize,
    scratch: Box<[u8]>,
}

impl RepairedConnection {
    pub fn new(inner: TcpStream) -> RepairedConnection {
        RepairedConnection {
            inner,
            rewriter: Rewriter::default(),
            ready: Vec::new(),
            ready_from: 0,
            scratch: vec![0; 64 * 1024].into_boxed_slice(),
        }
    }
}

impl AsyncRead for RepairedConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.ready_from < this.ready.len() {
                let take = (this.ready.len() - this.ready_from).min(buf.remaining());
                buf.put_slice(&this.ready[this.ready_from..this.ready_from + take]);
                this.ready_from += take;
                if this.ready_from == this.ready.len() {
                    this.ready.clear();
                    this.ready_from = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.rewriter.passes_through() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut scratch = ReadBuf::new(&mut this.scratch);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut scratch))?;
            if scratch.filled().is_empty() {
                return Poll::Ready(Ok(()));
            }
            this.rewriter.feed(scratch.filled(), &mut this.ready)?;
        }
    }
}

impl AsyncWrite for RepairedConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Connected for RepairedConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    type Headers = Vec<(Vec<u8>, Vec<u8>)>;

    /// Splits rewritten output into (type, END_STREAM, headers) frames, decoding header blocks as
    /// `h2` would.
    fn server_view(mut bytes: &[u8]) -> Vec<(u8, u8, Headers)> {
        assert!(bytes.starts_with(PREFACE));
        bytes = &bytes[PREFACE.len()..];
        let mut decoder = Decoder::new();
        let mut frames = Vec::new();
        let mut block = Vec::new();
        while !bytes.is_empty() {
            let len =
                usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
            let (kind, flags) = (bytes[3], bytes[4]);
            assert!(len <= FRAME_PAYLOAD_MAX);
            let payload = &bytes[9..9 + len];
            bytes = &bytes[9 + len..];
            if kind == TYPE_HEADERS || kind == TYPE_CONTINUATION {
                block.extend_from_slice(payload);
                if flags & FLAG_END_HEADERS != 0 {
                    frames.push((
                        TYPE_HEADERS,
                        flags & FLAG_END_STREAM,
                        decoder.decode(&block).unwrap(),
                    ));
                    block.clear();
                }
            } else {
                frames.push((kind, flags, Vec::new()));
            }
        }
        frames
    }

    fn authority_of(headers: &[(Vec<u8>, Vec<u8>)]) -> Option<&[u8]> {
        headers
            .iter()
            .find(|(n, _)| n == b":authority")
            .map(|(_, v)| v.as_slice())
    }

    #[test]
    fn urls_in_the_authority_become_authorities() {
        let mut client = Encoder::new();
        let request = |authority: &[u8], client: &mut Encoder| {
            client.encode([
                (&b":method"[..], &b"POST"[..]),
                (b":path", b"/etcdserverpb.Maintenance/Status"),
                (b":authority", authority),
                (b"te", b"trailers"),
            ])
        };
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[])); // SETTINGS passes through
        input.extend(frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS,
            1,
            &request(b"http://127.0.0.1:2379", &mut client),
        ));
        // The same header again, now an index into the client's dynamic table.
        input.extend(frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            3,
            &request(b"http://127.0.0.1:2379", &mut client),
        ));
        input.extend(frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS,
            5,
            &request(b"127.0.0.1:2379", &mut client),
        ));
        input.extend(frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS,
            7,
            &request(b"::not an authority::", &mut client),
        ));

        // Byte by byte, as the worst-case split of reads.
        let mut rewriter = Rewriter::default();
        let mut out = Vec::new();
        for byte in &input {
            rewriter.feed(std::slice::from_ref(byte), &mut out).unwrap();
        }
        let frames = server_view(&out);
        assert_eq!(frames.len(), 5);
        assert_eq!(frames[0].0, 0x4);
        assert_eq!(authority_of(&frames[1].2), Some(&b"127.0.0.1:2379"[..]));
        assert_eq!(authority_of(&frames[2].2), Some(&b"127.0.0.1:2379"[..]));
        assert_eq!(
            frames[2].1, FLAG_END_STREAM,
            "END_STREAM survives the rewrite"
        );
        assert_eq!(authority_of(&frames[3].2), Some(&b"127.0.0.1:2379"[..]));
        assert_eq!(
            authority_of(&frames[4].2),
            None,
            "an unrepairable authority is dropped"
        );
        assert_eq!(frames[4].2.len(), 3, "the other headers stay");
        assert_eq!(frames[1].2[1].1, b"/etcdserverpb.Maintenance/Status");
    }

    #[test]
    fn padded_split_and_oversized_blocks_are_handled() {
        let mut client = Encoder::new();
        let big = vec![b'x'; 40_000];
        let block = client.encode([
            (&b":authority"[..], &b"http://h:1/path"[..]),
            (b"x-big", big.as_slice()),
        ]);
        let (head, tail) = block.split_at(100);
        let mut padded = vec![3u8];
        padded.extend_from_slice(&[0, 0, 0, 0, 7]); // priority fields
        padded.extend_from_slice(head);
        padded.extend_from_slice(&[0, 0, 0]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(TYPE_HEADERS, FLAG_PADDED | FLAG_PRIORITY, 1, &padded));
        for piece in tail.chunks(FRAME_PAYLOAD_MAX) {
            let last = piece.as_ptr_range().end == tail.as_ptr_range().end;
            input.extend(frame(
                TYPE_CONTINUATION,
                if last { FLAG_END_HEADERS } else { 0 },
                1,
                piece,
            ));
        }
        let mut out = Vec::new();
        Rewriter::default().feed(&input, &mut out).unwrap();
        let frames = server_view(&out);
        assert_eq!(frames.len(), 1);
        assert_eq!(authority_of(&frames[0].2), Some(&b"h:1"[..]));
        assert_eq!(frames[0].2[1].1, big);
    }

    #[test]
    fn a_connection_that_starts_with_a_valid_authority_passes_through_untouched() {
        let mut client = Encoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[]));
        for stream in [1, 3] {
            let block = client.encode([
                (&b":method"[..], &b"POST"[..]),
                (b":authority", b"127.0.0.1:2379"),
                (b":path", b"/etcdserverpb.KV/Put"),
            ]);
            input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, stream, &block));
            input.extend(frame(0x0, FLAG_END_STREAM, stream, b"payload"));
        }
        // Later blocks are not even parsed: this one would be refused if it were.
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 5, &[0xff, 0xff]));

        let mut rewriter = Rewriter::default();
        let mut out = Vec::new();
        let (head, tail) = input.split_at(PREFACE.len() + 20);
        for byte in head {
            rewriter.feed(std::slice::from_ref(byte), &mut out).unwrap();
        }
        assert!(
            !rewriter.passes_through(),
            "undecided before the first block ends"
        );
        rewriter.feed(tail, &mut out).unwrap();
        assert!(rewriter.passes_through());
        assert_eq!(out, input, "byte for byte");
    }

    #[test]
    fn garbage_is_refused_not_forwarded() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, b"abc"));
        assert!(Rewriter::default().feed(&input, &mut Vec::new()).is_err());
        let mut input = PREFACE.to_vec();
        input.extend(frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS,
            1,
            &[0xff, 0xff, 0xff, 0xff],
        ));
        assert!(Rewriter::default().feed(&input, &mut Vec::new()).is_err());
    }
}
