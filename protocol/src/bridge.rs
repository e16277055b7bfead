//! The socket-bridge frame, byte-compatible with upstream clawker:
//! `u32 BE length (= 5 + payload) · u8 type · u32 BE stream id · payload`.

use thiserror::Error;

/// Largest value the length field may hold.
pub const MAX_FRAME_LEN: usize = 1024 * 1024;
/// Smallest value the length field may hold (type + stream id).
pub const MIN_FRAME_LEN: usize = 5;
/// Most payload a single frame can carry.
pub const MAX_PAYLOAD: usize = MAX_FRAME_LEN - MIN_FRAME_LEN;
/// Socket type names carried by OPEN and `CLAWKER_REMOTE_SOCKETS`.
pub const SOCKET_SSH_AGENT: &str = "ssh-agent";
pub const SOCKET_GPG_AGENT: &str = "gpg-agent";
/// A TCP connection to the tunnel's HTTP listener in the container (SPEC.md 6.1).
pub const SOCKET_HTTP: &str = "http";

/// Frame types. Numbers are upstream's and are never reused; an unknown number decodes to
/// [`FrameType::Unknown`] instead of failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameType {
    Data,
    Open,
    Close,
    Pubkey,
    Ready,
    Error,
    /// Ours, not upstream's (SPEC.md 6.3): stream 0, the capabilities an end has and the
    /// window it grants ([`crate::flow::Hello`]). Upstream's container end ignores it.
    Hello,
    /// Ours: credit returned for a flow-controlled stream (payload u32 BE, bytes).
    Window,
    /// Ours: this side sends no more DATA on the stream (half-close); the other
    /// direction goes on.
    Eof,
    Unknown(u8),
}

impl FrameType {
    pub fn to_u8(self) -> u8 {
        match self {
            Self::Data => 1,
            Self::Open => 2,
            Self::Close => 3,
            Self::Pubkey => 4,
            Self::Ready => 5,
            Self::Error => 6,
            Self::Hello => 7,
            Self::Window => 8,
            Self::Eof => 9,
            Self::Unknown(n) => n,
        }
    }

    pub fn from_u8(n: u8) -> Self {
        match n {
            1 => Self::Data,
            2 => Self::Open,
            3 => Self::Close,
            4 => Self::Pubkey,
            5 => Self::Ready,
            6 => Self::Error,
            7 => Self::Hello,
            8 => Self::Window,
            9 => Self::Eof,
            n => Self::Unknown(n),
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameType,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl std::fmt::Debug for Frame {
    // Payloads are agent traffic: show their size only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("kind", &self.kind)
            .field("stream", &self.stream)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BridgeFrameError {
    #[error("bridge frame length {0} is below the minimum of {MIN_FRAME_LEN}")]
    TooShort(usize),
    #[error("bridge frame length {0} exceeds the maximum of {MAX_FRAME_LEN}")]
    TooLong(usize),
    #[error("bridge frame payload of {0} bytes exceeds {MAX_PAYLOAD}")]
    PayloadTooLarge(usize),
}

impl Frame {
    pub fn new(kind: FrameType, stream: u32, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            kind,
            stream,
            payload: payload.into(),
        }
    }

    /// Appends the encoded frame to `dst`.
    pub fn encode_into(&self, dst: &mut Vec<u8>) -> Result<(), BridgeFrameError> {
        encode_parts(self.kind, self.stream, &self.payload, dst)
    }

    pub fn encode(&self) -> Result<Vec<u8>, BridgeFrameError> {
        let mut v = Vec::with_capacity(9 + self.payload.len());
        self.encode_into(&mut v)?;
        Ok(v)
    }
}

/// Bytes before a frame's payload: length (4), type (1), stream id (4).
pub const HEADER_LEN: usize = 4 + MIN_FRAME_LEN;

/// The header of a frame whose payload is `payload_len` bytes long, for writers that put the
/// payload behind it themselves (no copy of the payload).
pub fn header(
    kind: FrameType,
    stream: u32,
    payload_len: usize,
) -> Result<[u8; HEADER_LEN], BridgeFrameError> {
    if payload_len > MAX_PAYLOAD {
        return Err(BridgeFrameError::PayloadTooLarge(payload_len));
    }
    let len = (MIN_FRAME_LEN + payload_len) as u32;
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&len.to_be_bytes());
    h[4] = kind.to_u8();
    h[5..].copy_from_slice(&stream.to_be_bytes());
    Ok(h)
}

/// Encodes a frame from its parts without building a [`Frame`].
pub fn encode_parts(
    kind: FrameType,
    stream: u32,
    payload: &[u8],
    dst: &mut Vec<u8>,
) -> Result<(), BridgeFrameError> {
    let h = header(kind, stream, payload.len())?;
    dst.reserve(HEADER_LEN + payload.len());
    dst.extend_from_slice(&h);
    dst.extend_from_slice(payload);
    Ok(())
}

/// Inspects the head of `buf`: `Ok(None)` when more bytes are needed, `Ok(Some(total))` when a
/// whole frame of `total` bytes (prefix included) is present. The declared length is
/// validated before the caller allocates anything for it.
pub fn peek_frame(buf: &[u8]) -> Result<Option<usize>, BridgeFrameError> {
    let Some(prefix) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    if len < MIN_FRAME_LEN {
        return Err(BridgeFrameError::TooShort(len));
    }
    if len > MAX_FRAME_LEN {
        return Err(BridgeFrameError::TooLong(len));
    }
    Ok((buf.len() >= 4 + len).then_some(4 + len))
}

/// The type, stream id and total length (prefix included) of the whole frame at the head of
/// `buf`, without copying its payload (`buf[HEADER_LEN..total]`); `Ok(None)` when more bytes
/// are needed.
pub fn decode_head(buf: &[u8]) -> Result<Option<(FrameType, u32, usize)>, BridgeFrameError> {
    let Some(total) = peek_frame(buf)? else {
        return Ok(None);
    };
    let kind = FrameType::from_u8(buf[4]);
    let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]);
    Ok(Some((kind, stream, total)))
}

/// Decodes one frame from the head of `buf`, returning it and the bytes consumed.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, BridgeFrameError> {
    let Some((kind, stream, total)) = decode_head(buf)? else {
        return Ok(None);
    };
    Ok(Some((
        Frame {
            kind,
            stream,
            payload: buf[HEADER_LEN..total].to_vec(),
        },
        total,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_bytes_every_type() {
        let cases: [(Frame, &[u8]); 9] = [
            (
                Frame::new(FrameType::Data, 1, b"hi".to_vec()),
                &[0, 0, 0, 7, 1, 0, 0, 0, 1, b'h', b'i'],
            ),
            (
                Frame::new(FrameType::Open, 2, b"ssh-agent".to_vec()),
                &[
                    0, 0, 0, 14, 2, 0, 0, 0, 2, b's', b's', b'h', b'-', b'a', b'g', b'e', b'n',
                    b't',
                ],
            ),
            (
                Frame::new(FrameType::Close, 3, vec![]),
                &[0, 0, 0, 5, 3, 0, 0, 0, 3],
            ),
            (
                Frame::new(FrameType::Pubkey, 0, vec![0x99]),
                &[0, 0, 0, 6, 4, 0, 0, 0, 0, 0x99],
            ),
            (
                Frame::new(FrameType::Ready, 0, vec![]),
                &[0, 0, 0, 5, 5, 0, 0, 0, 0],
            ),
            (
                Frame::new(FrameType::Error, 0, b"x".to_vec()),
                &[0, 0, 0, 6, 6, 0, 0, 0, 0, b'x'],
            ),
            // Ours (SPEC.md 6.3): HELLO with window and half-close, 256 KiB.
            (
                Frame::new(FrameType::Hello, 0, vec![0, 0, 0, 3, 0, 4, 0, 0]),
                &[0, 0, 0, 13, 7, 0, 0, 0, 0, 0, 0, 0, 3, 0, 4, 0, 0],
            ),
            (
                Frame::new(FrameType::Window, 5, vec![0, 1, 0, 0]),
                &[0, 0, 0, 9, 8, 0, 0, 0, 5, 0, 1, 0, 0],
            ),
            (
                Frame::new(FrameType::Eof, 5, vec![]),
                &[0, 0, 0, 5, 9, 0, 0, 0, 5],
            ),
        ];
        for (frame, bytes) in cases {
            assert_eq!(frame.encode().unwrap(), bytes, "{frame:?}");
            let (back, used) = decode(bytes).unwrap().unwrap();
            assert_eq!(back, frame);
            assert_eq!(used, bytes.len());
        }
    }

    #[test]
    fn stream_id_is_big_endian() {
        let b = Frame::new(FrameType::Data, 0x0102_0304, vec![])
            .encode()
            .unwrap();
        assert_eq!(&b[5..9], &[1, 2, 3, 4]);
    }

    #[test]
    fn header_is_the_head_of_the_encoded_frame() {
        let payload = b"agent bytes";
        let whole = Frame::new(FrameType::Data, 7, payload.to_vec())
            .encode()
            .unwrap();
        let h = header(FrameType::Data, 7, payload.len()).unwrap();
        assert_eq!(&whole[..HEADER_LEN], &h);
        assert_eq!(&whole[HEADER_LEN..], payload);
        assert_eq!(
            header(FrameType::Data, 1, MAX_PAYLOAD + 1),
            Err(BridgeFrameError::PayloadTooLarge(MAX_PAYLOAD + 1))
        );
    }

    #[test]
    fn decode_head_agrees_with_decode() {
        let mut two = Frame::new(FrameType::Open, 3, b"ssh-agent".to_vec())
            .encode()
            .unwrap();
        two.extend(Frame::new(FrameType::Close, 3, vec![]).encode().unwrap());
        let (kind, stream, total) = decode_head(&two).unwrap().unwrap();
        let (frame, used) = decode(&two).unwrap().unwrap();
        assert_eq!((kind, stream, total), (frame.kind, frame.stream, used));
        assert_eq!(&two[HEADER_LEN..total], frame.payload.as_slice());
        assert_eq!(decode_head(&two[..total - 1]).unwrap(), None);
        assert!(
            decode_head(&[0, 0, 0, 4, 1]).is_err(),
            "a length below 5 is refused"
        );
    }

    #[test]
    fn unknown_type_is_a_value() {
        let (f, _) = decode(&[0, 0, 0, 5, 200, 0, 0, 0, 9]).unwrap().unwrap();
        assert_eq!(f.kind, FrameType::Unknown(200));
        assert_eq!(f.kind.to_u8(), 200);
    }

    #[test]
    fn partial_and_concatenated_input() {
        let mut two = Frame::new(FrameType::Data, 1, b"abc".to_vec())
            .encode()
            .unwrap();
        two.extend(Frame::new(FrameType::Close, 1, vec![]).encode().unwrap());
        for cut in 0..12 {
            assert_eq!(decode(&two[..cut]).unwrap(), None, "cut at {cut}");
        }
        let (a, n) = decode(&two).unwrap().unwrap();
        assert_eq!(a.payload, b"abc");
        let (b, m) = decode(&two[n..]).unwrap().unwrap();
        assert_eq!(b.kind, FrameType::Close);
        assert_eq!(n + m, two.len());
    }

    #[test]
    fn hostile_lengths_fail_before_allocation() {
        assert_eq!(decode(&[0, 0, 0, 4]), Err(BridgeFrameError::TooShort(4)));
        assert_eq!(decode(&[0, 0, 0, 0]), Err(BridgeFrameError::TooShort(0)));
        assert_eq!(
            decode(&[0xff, 0xff, 0xff, 0xff]),
            Err(BridgeFrameError::TooLong(u32::MAX as usize))
        );
        let max = (MAX_FRAME_LEN as u32).to_be_bytes();
        assert_eq!(decode(&max), Ok(None));
        let over = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes();
        assert!(decode(&over).is_err());
        assert!(
            Frame::new(FrameType::Data, 1, vec![0; MAX_PAYLOAD + 1])
                .encode()
                .is_err()
        );
        assert!(
            Frame::new(FrameType::Data, 1, vec![0; MAX_PAYLOAD])
                .encode()
                .is_ok()
        );
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn roundtrip(kind in 1u8..=9, stream: u32, payload in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let f = Frame::new(FrameType::from_u8(kind), stream, payload);
            let bytes = f.encode().unwrap();
            let (back, used) = decode(&bytes).unwrap().unwrap();
            proptest::prop_assert_eq!(used, bytes.len());
            proptest::prop_assert_eq!(back, f);
        }
    }
}
