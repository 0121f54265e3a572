//! A tonic codec that moves OTLP messages as bytes: the receiver keeps requests encoded (see
//! [`crate::wire`]) and the OTLP exporter forwards them without decoding or re-encoding.

use bytes::{Buf, BufMut, Bytes};
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// Messages in and out are their protobuf bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesCodec;

impl Codec for BytesCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = BytesCodec;
    type Decoder = BytesCodec;

    fn encoder(&mut self) -> Self::Encoder {
        BytesCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        BytesCodec
    }
}

impl Encoder for BytesCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

/// Messages up to this size are copied out of tonic's read buffer: a split would keep the whole
/// buffer alive while the message waits in a batch (an SDK's one-span request of ~200 B held 8 KiB:
/// 1-span requests at 45k/s peaked at 66–68 MiB resident; BENCHMARKS.md, issue 15 round 4).
const COPY_AT_MOST: usize = 16 * 1024;

/// tonic's read buffer per message: a message of up to [`COPY_AT_MOST`] and its first HTTP/2 frame
/// fit without the reallocation (and copy) tonic's default 8 KiB needs when the length is read.
const READ_BUFFER: usize = 2 * COPY_AT_MOST;

impl Decoder for BytesCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        // tonic hands over exactly one message; taking it is a split of its buffer (small ones are
        // then copied, see COPY_AT_MOST).
        let n = src.remaining();
        let message = src.copy_to_bytes(n);
        if n <= COPY_AT_MOST {
            return Ok(Some(Bytes::copy_from_slice(&message)));
        }
        Ok(Some(message))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(READ_BUFFER, 32 * 1024) // the yield threshold (encoding only): tonic's default
    }
}
