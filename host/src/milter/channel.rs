//! One milter connection as a stream of packets: writes whole packets, reads one at a time
//! with a bound on its size and a deadline on its arrival, so a peer that stalls, floods or
//! hangs up costs a bounded wait and a clear error.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::time::Instant;

use super::codec::{packet_length, CodecError, Command, Response};

/// Anything a milter connection runs over (TCP or a Unix socket).
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Why a packet could not be exchanged.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("deadline passed")]
    Timeout,
    #[error("connection closed by the peer")]
    Closed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Codec(#[from] CodecError),
}

pub struct Channel {
    stream: BufReader<Box<dyn Io>>,
    /// The longest packet accepted from the peer.
    max_packet: usize,
}

impl Channel {
    pub fn new(stream: Box<dyn Io>, max_packet: usize) -> Channel {
        Channel {
            stream: BufReader::new(stream),
            max_packet,
        }
    }

    /// Writes one command, finished by `deadline`.
    pub async fn send(&mut self, command: &Command, deadline: Instant) -> Result<(), ChannelError> {
        self.write(&command.encode(), deadline).await
    }

    /// Writes one response (the server side), finished by `deadline`.
    pub async fn send_response(
        &mut self,
        response: &Response,
        deadline: Instant,
    ) -> Result<(), ChannelError> {
        self.write(&response.encode(), deadline).await
    }

    async fn write(&mut self, bytes: &[u8], deadline: Instant) -> Result<(), ChannelError> {
        let write = async {
            let stream = self.stream.get_mut();
            stream.write_all(bytes).await?;
            stream.flush().await
        };
        match tokio::time::timeout_at(deadline, write).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(ChannelError::Timeout),
        }
    }

    /// Reads the next response, which must arrive by `deadline`.
    pub async fn response(&mut self, deadline: Instant) -> Result<Response, ChannelError> {
        let (command, data) = self.packet(deadline).await?;
        Ok(Response::decode(command, &data)?)
    }

    /// Reads the next command (the server side), which must arrive by `deadline`.
    pub async fn command(&mut self, deadline: Instant) -> Result<Command, ChannelError> {
        let (command, data) = self.packet(deadline).await?;
        Ok(Command::decode(command, &data)?)
    }

    async fn packet(&mut self, deadline: Instant) -> Result<(u8, Vec<u8>), ChannelError> {
        let max = self.max_packet;
        let read = async {
            let mut header = [0u8; 4];
            match self.stream.read_exact(&mut header).await {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Err(ChannelError::Closed)
                }
                Err(e) => return Err(e.into()),
            }
            // The length is checked before anything is buffered.
            let len = packet_length(header, max)?;
            let mut body = vec![0u8; len];
            self.stream.read_exact(&mut body).await.map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    ChannelError::Closed
                } else {
                    e.into()
                }
            })?;
            let data = body.split_off(1);
            Ok((body[0], data))
        };
        match tokio::time::timeout_at(deadline, read).await {
            Ok(result) => result,
            Err(_) => Err(ChannelError::Timeout),
        }
    }
}
