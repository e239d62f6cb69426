//! Relay links: node-to-node TCP links that carry one anchor's `media::Frame`s from the node it publishes to (the
//! owner, [`owner`]) to a node whose viewers watch it (the edge, [`edge`]), so edge nodes multiply viewer
//! capacity and the owner pays for one link per edge, not one WebRTC session per viewer. The bytes are in
//! [`wire`].

pub mod edge;
pub mod owner;
pub mod wire;

use tokio::io::AsyncReadExt;
use wire::{Decoder, Record, WireError};

/// Why a relay link ended or could not start.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The socket failed (refused, reset, closed).
    #[error("relay link: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent bytes that are not a relay link.
    #[error("relay link: {0}")]
    Wire(#[from] WireError),
    /// The peer did not send what it had to in time; names what.
    #[error("relay link: no {0} in time")]
    Timeout(&'static str),
    /// The peer sent another record than the one expected; names the expected one.
    #[error("relay link: expected {0}")]
    Unexpected(&'static str),
    /// The owner refused the link; holds its reason.
    #[error("relay link refused: {0}")]
    Refused(String),
    /// The peer closed the link.
    #[error("relay link closed by the peer")]
    Closed,
}

/// Read from `sock` until `decoder` has a whole record.
pub(crate) async fn read_record<R: AsyncReadExt + Unpin>(
    sock: &mut R,
    decoder: &mut Decoder,
) -> Result<Record, RelayError> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Some(r) = decoder.next_record()? {
            return Ok(r);
        }
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            return Err(RelayError::Closed);
        }
        decoder.feed(&buf[..n]);
    }
}
