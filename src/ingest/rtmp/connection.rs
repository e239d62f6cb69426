//! `RtmpConnection`: one RTMP client from the first handshake byte to the end of its publish, as a sans-IO state
//! machine: bytes and time go in (`handle_input`, `handle_timeout`), `Output`s come out (`poll_output`): bytes
//! to send, a close, and `Event`s for the driver, which decides who may publish and owns the room side. No
//! sockets, no room, no clock of its own, so the server, the tests and the fuzz target drive it the same way.
//!
//! Layers: rml_rtmp's `Handshake`; our `ChunkReader` (bounded per chunk stream and per connection); our AMF0
//! decoder (iterative, depth- and count-capped); the command workflow of a publisher (connect, releaseStream,
//! FCPublish, createStream, publish, FCUnpublish, deleteStream) written here; our `ChunkWriter` for answers.
//! Before a publish is accepted, no message may exceed `ChunkLimits::max_control_size` (64 KiB).

use super::amf0::{self, Amf0Error, Amf0Limits, Amf0Value};
use super::chunk::{ChunkError, ChunkLimits, ChunkReader, RtmpMessage, MSG_AUDIO, MSG_VIDEO};
use super::writer::{ChunkWriter, CSID_COMMAND, CSID_CONTROL};
use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

const MSG_SET_CHUNK_SIZE: u8 = 1;
const MSG_ABORT: u8 = 2;
const MSG_ACK: u8 = 3;
const MSG_USER_CONTROL: u8 = 4;
const MSG_WINDOW_ACK_SIZE: u8 = 5;
const MSG_SET_PEER_BANDWIDTH: u8 = 6;
const MSG_AMF3_COMMAND: u8 = 17;
const MSG_AMF0_COMMAND: u8 = 20;

/// The window we ask the client to acknowledge, and the bandwidth we announce (what ffmpeg and SRS use).
const WINDOW: u32 = 2_500_000;
/// `createStream` calls one connection may make (a publisher needs one).
const MAX_STREAMS: u32 = 8;
/// Commands answered before a publish is accepted (a publisher sends about five): a client that never reads
/// cannot make us queue answers without end.
const MAX_SETUP_COMMANDS: u32 = 32;

/// What the driver must do.
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    /// Write these bytes to the client.
    Send(Vec<u8>),
    /// Flush what was sent, then close the connection.
    Close,
    /// Something for the driver to decide on or carry to the room.
    Event(Event),
}

/// What happened that the driver decides on or carries to the room.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// The client asks to publish `stream_key` on the app it connected to (`app_query` is what followed `?` in
    /// the app name). Nothing more is read until the driver calls `accept_publish` or `refuse`.
    PublishRequested {
        /// The publish command's stream name, normally `<room>?sdkappid=..&userid=..&usersig=..`.
        stream_key: String,
        /// Query of the connect command's app name (`push?<app_query>`); empty when it has none.
        app_query: String,
    },
    /// One FLV video tag body; `timestamp` in milliseconds.
    Video {
        /// The message's absolute RTMP timestamp, ms (deltas summed, wrapping at 2^32).
        timestamp: u32,
        /// The tag body as received, starting with the FLV `VideoTagHeader`.
        data: Bytes,
    },
    /// One FLV audio tag body; `timestamp` in milliseconds.
    Audio {
        /// The message's absolute RTMP timestamp, ms (deltas summed, wrapping at 2^32).
        timestamp: u32,
        /// The tag body as received, starting with the FLV `AudioTagHeader`.
        data: Bytes,
    },
    /// The client ended its publish (deleteStream/closeStream) and may go on talking or close.
    Unpublished,
}

/// Why a connection ends: the protocol was broken.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConnectionError {
    /// The handshake failed (bad version or digest); carries rml_rtmp's error.
    #[error("handshake: {0}")]
    Handshake(String),
    /// The chunk stream is malformed or over a limit.
    #[error("{0}")]
    Chunk(#[from] ChunkError),
    /// An AMF0 command cannot be decoded.
    #[error("AMF0 command: {0}")]
    Amf0(#[from] Amf0Error),
    /// A command out of order or malformed (a second connect or publish, no app or stream name, ...).
    #[error("{0}")]
    Command(String),
    /// The client connected to an app other than `push`; carries the (clipped) name.
    #[error("RTMP app must be 'push' (got {0:?}): use rtmp://HOST/push/<room>?sdkappid=..&userid=..&usersig=..")]
    WrongApp(String),
    /// More than `MAX_SETUP_COMMANDS` commands before a publish was accepted.
    #[error("more than {MAX_SETUP_COMMANDS} commands before publishing")]
    TooManyCommands,
    /// More than `max_control_size` bytes arrived while the driver decided on the publish; carries how many.
    #[error("{0} bytes arrived while the publish was being decided")]
    InputWhileDeciding(usize),
    /// The client asked to play: roomgate takes publishers only.
    #[error("play is not supported: this gateway takes publishers; watch over WHEP")]
    Play,
    /// No accepted publish within the setup timeout; carries it in seconds.
    #[error("no handshake and publish within {0} s")]
    SetupTimeout(u64),
    /// No byte from the client within the idle timeout; carries it in seconds.
    #[error("no data for {0} s")]
    Idle(u64),
}

impl ConnectionError {
    /// How `roomgate_refusals_total` names it.
    pub fn label(&self) -> &'static str {
        match self {
            ConnectionError::WrongApp(_) => "wrong_app",
            ConnectionError::Play => "play",
            ConnectionError::SetupTimeout(_) | ConnectionError::Idle(_) => "timeout",
            ConnectionError::Chunk(ChunkError::MessageTooLarge { .. } | ChunkError::OverBudget(_))
            | ConnectionError::Chunk(ChunkError::TooManyChunkStreams(_))
            | ConnectionError::TooManyCommands
            | ConnectionError::InputWhileDeciding(_)
            | ConnectionError::Amf0(Amf0Error::TooDeep(_) | Amf0Error::TooManyValues(_)) => "limit",
            _ => "malformed",
        }
    }

    /// The `onStatus` code a client is told.
    pub fn status_code(&self) -> &'static str {
        match self {
            ConnectionError::WrongApp(_) => "NetConnection.Connect.Rejected",
            ConnectionError::Play => "NetStream.Play.Failed",
            _ => "NetStream.Publish.Rejected",
        }
    }
}

/// Limits and settings the driver takes from `[rtmp]`.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionConfig {
    /// Chunk reader limits (`rtmp.max_message_size`, `rtmp.max_chunk_size`; the rest at their defaults).
    pub chunks: ChunkLimits,
    /// Chunk size we send with.
    pub chunk_size: u32,
    /// Time to finish the handshake and get a publish accepted.
    pub setup_timeout: Duration,
    /// Time without a byte from the client.
    pub idle_timeout: Duration,
}

impl ConnectionConfig {
    /// The settings of `[rtmp]`; timeouts of at least one second.
    pub fn from_config(rc: &crate::config::RtmpConfig) -> Self {
        ConnectionConfig {
            chunks: ChunkLimits {
                max_message_size: rc.max_message_size,
                max_chunk_size: rc.max_chunk_size,
                ..Default::default()
            },
            chunk_size: rc.chunk_size,
            setup_timeout: Duration::from_secs(rc.handshake_timeout_secs.max(1)),
            idle_timeout: Duration::from_secs(rc.idle_timeout_secs.max(1)),
        }
    }
}

enum Phase {
    Handshaking(Box<Handshake>),
    /// Handshake done; `connected` once `connect` was accepted.
    Session,
    /// Publish requested: input waits in the reader until the driver decides.
    Deciding,
    Publishing,
    Closed,
}

/// One client connection's protocol state.
pub struct RtmpConnection {
    cfg: ConnectionConfig,
    phase: Phase,
    reader: ChunkReader,
    writer: ChunkWriter,
    out: VecDeque<Output>,
    connected: bool,
    app_query: String,
    streams_created: u32,
    /// Commands handled while not publishing.
    setup_commands: u32,
    /// The message stream id the publish came on (status messages go there).
    publish_stream: u32,
    /// Window acknowledgement size the client asked for (0: none).
    peer_window: u32,
    received: u64,
    acked: u64,
    setup_deadline: Instant,
    last_input: Instant,
}

impl RtmpConnection {
    /// A connection at the start of the handshake; `now` starts the setup timeout.
    pub fn new(cfg: ConnectionConfig, now: Instant) -> Self {
        RtmpConnection {
            cfg,
            phase: Phase::Handshaking(Box::new(Handshake::new(PeerType::Server))),
            reader: ChunkReader::new(cfg.chunks),
            writer: ChunkWriter::default(),
            out: VecDeque::new(),
            connected: false,
            app_query: String::new(),
            streams_created: 0,
            setup_commands: 0,
            publish_stream: 1,
            peer_window: 0,
            received: 0,
            acked: 0,
            setup_deadline: now + cfg.setup_timeout,
            last_input: now,
        }
    }

    /// True once a publish was accepted, until it ends.
    pub fn is_publishing(&self) -> bool {
        matches!(self.phase, Phase::Publishing)
    }

    /// True once the connection was refused or failed (its `Close` is queued).
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// The next thing for the driver to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When `handle_timeout` must be called if no input comes first.
    pub fn poll_timeout(&self) -> Instant {
        let idle = self.last_input + self.cfg.idle_timeout;
        match self.phase {
            Phase::Publishing => idle,
            _ => idle.min(self.setup_deadline),
        }
    }

    /// Time passed: close a connection that is idle or slow to start publishing.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ConnectionError> {
        if self.is_closed() || now < self.poll_timeout() {
            return Ok(());
        }
        let e = if !self.is_publishing() && now >= self.setup_deadline {
            ConnectionError::SetupTimeout(self.cfg.setup_timeout.as_secs())
        } else {
            ConnectionError::Idle(self.cfg.idle_timeout.as_secs())
        };
        self.fail(e)
    }

    /// Bytes from the client, received at `now`. An error has already queued the client's status and `Close`;
    /// it is returned so the driver can log and count it.
    pub fn handle_input(&mut self, data: &[u8], now: Instant) -> Result<(), ConnectionError> {
        if self.is_closed() {
            return Ok(());
        }
        self.last_input = now;
        self.received += data.len() as u64;
        // The driver decides before it reads again; a driver that reads on must not make us hold much.
        if matches!(self.phase, Phase::Deciding)
            && self.reader.pending() + data.len() > self.cfg.chunks.max_control_size as usize
        {
            return self.fail(ConnectionError::InputWhileDeciding(self.reader.pending() + data.len()));
        }
        let r = self.take_input(data);
        self.finish(r)
    }

    /// Accept the publish the last `PublishRequested` asked for, and go on reading.
    pub fn accept_publish(&mut self) -> Result<(), ConnectionError> {
        if !matches!(self.phase, Phase::Deciding) {
            return Ok(());
        }
        let sid = self.publish_stream;
        // User control StreamBegin for the stream, then NetStream.Publish.Start (what OBS waits for).
        let mut begin = vec![0, 0];
        begin.extend_from_slice(&sid.to_be_bytes());
        self.send(CSID_CONTROL, MSG_USER_CONTROL, 0, &begin);
        self.status(sid, "status", "NetStream.Publish.Start", "publishing");
        self.reader.allow_media(true);
        self.phase = Phase::Publishing;
        let r = self.process();
        self.finish(r)
    }

    /// End the connection: tell the client `code`/`description` in an `onStatus` error, then close.
    pub fn refuse(&mut self, code: &str, description: &str) {
        if self.is_closed() {
            return;
        }
        if !matches!(self.phase, Phase::Handshaking(_)) {
            self.status(self.publish_stream, "error", code, description);
        }
        self.phase = Phase::Closed;
        self.out.push_back(Output::Close);
    }

    fn finish(&mut self, r: Result<(), ConnectionError>) -> Result<(), ConnectionError> {
        match r {
            Ok(()) => {
                self.ack_if_due();
                Ok(())
            }
            Err(e) => self.fail(e),
        }
    }

    fn fail(&mut self, e: ConnectionError) -> Result<(), ConnectionError> {
        self.refuse(e.status_code(), &e.to_string());
        Err(e)
    }

    fn take_input(&mut self, data: &[u8]) -> Result<(), ConnectionError> {
        let mut data = data;
        let leftover;
        if let Phase::Handshaking(hs) = &mut self.phase {
            match hs
                .process_bytes(data)
                .map_err(|e| ConnectionError::Handshake(e.to_string()))?
            {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    if !response_bytes.is_empty() {
                        self.out.push_back(Output::Send(response_bytes));
                    }
                    return Ok(());
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    if !response_bytes.is_empty() {
                        self.out.push_back(Output::Send(response_bytes));
                    }
                    self.phase = Phase::Session;
                    leftover = remaining_bytes;
                    data = &leftover;
                }
            }
        }
        self.reader.feed(data);
        self.process()
    }

    /// Read and act on whole messages until more bytes are needed or the driver must decide.
    fn process(&mut self) -> Result<(), ConnectionError> {
        while matches!(self.phase, Phase::Session | Phase::Publishing) {
            let Some(msg) = self.reader.next_message()? else {
                break;
            };
            self.on_message(msg)?;
        }
        Ok(())
    }

    fn on_message(&mut self, msg: RtmpMessage) -> Result<(), ConnectionError> {
        match msg.type_id {
            MSG_VIDEO | MSG_AUDIO if self.is_publishing() && msg.stream_id == self.publish_stream => {
                let (timestamp, data) = (msg.timestamp, msg.payload);
                self.out.push_back(Output::Event(if msg.type_id == MSG_VIDEO {
                    Event::Video { timestamp, data }
                } else {
                    Event::Audio { timestamp, data }
                }));
            }
            MSG_WINDOW_ACK_SIZE if msg.payload.len() >= 4 => {
                self.peer_window = u32::from_be_bytes(msg.payload[..4].try_into().expect("4 bytes"));
            }
            MSG_AMF0_COMMAND => self.on_command(&msg.payload, msg.stream_id)?,
            // "AMF3" commands carry AMF0 after a leading format byte.
            MSG_AMF3_COMMAND => self.on_command(msg.payload.get(1..).unwrap_or_default(), msg.stream_id)?,
            // Chunking is applied by the reader; acknowledgements, pings, bandwidth, metadata (data messages,
            // size-capped like every message) and media outside a publish carry nothing we use.
            MSG_SET_CHUNK_SIZE | MSG_ABORT | MSG_ACK | MSG_USER_CONTROL | MSG_SET_PEER_BANDWIDTH => {}
            _ => {}
        }
        Ok(())
    }

    fn on_command(&mut self, payload: &[u8], stream_id: u32) -> Result<(), ConnectionError> {
        if !self.is_publishing() {
            self.setup_commands += 1;
            if self.setup_commands > MAX_SETUP_COMMANDS {
                return Err(ConnectionError::TooManyCommands);
            }
        }
        let values = amf0::decode_all(payload, Amf0Limits::default())?;
        let (name, tx) = match values.as_slice() {
            [Amf0Value::String(name), Amf0Value::Number(tx), ..] => (name.as_str(), *tx),
            _ => {
                return Err(ConnectionError::Command(
                    "command without a name and transaction id".into(),
                ))
            }
        };
        let args = values.get(3..).unwrap_or_default();
        match name {
            "connect" => self.on_connect(tx, values.get(2)),
            "createStream" => {
                self.require_connected(name)?;
                if self.streams_created >= MAX_STREAMS {
                    return Err(ConnectionError::Command(format!(
                        "more than {MAX_STREAMS} createStream calls"
                    )));
                }
                self.streams_created += 1;
                let id = self.streams_created;
                self.result(tx, vec![Amf0Value::Null, Amf0Value::Number(id as f64)]);
                Ok(())
            }
            "releaseStream" | "FCPublish" => {
                if tx != 0.0 {
                    self.result(tx, vec![Amf0Value::Null, Amf0Value::Undefined]);
                }
                Ok(())
            }
            "publish" => {
                self.require_connected(name)?;
                if self.is_publishing() {
                    return Err(ConnectionError::Command("a second publish on one connection".into()));
                }
                if stream_id == 0 || stream_id > self.streams_created {
                    return Err(ConnectionError::Command(format!(
                        "publish on stream {stream_id}, which createStream did not make"
                    )));
                }
                let Some(Amf0Value::String(key)) = args.first() else {
                    return Err(ConnectionError::Command("publish without a stream name".into()));
                };
                self.publish_stream = stream_id;
                self.phase = Phase::Deciding;
                self.out.push_back(Output::Event(Event::PublishRequested {
                    stream_key: key.clone(),
                    app_query: self.app_query.clone(),
                }));
                Ok(())
            }
            "deleteStream" | "closeStream" => {
                if self.is_publishing() {
                    // Back to setup: small messages only, and a new deadline to publish again.
                    self.phase = Phase::Session;
                    self.reader.allow_media(false);
                    self.setup_deadline = self.last_input + self.cfg.setup_timeout;
                    self.setup_commands = 0;
                    self.out.push_back(Output::Event(Event::Unpublished));
                }
                Ok(())
            }
            "play" | "play2" => Err(ConnectionError::Play),
            // FCUnpublish (deleteStream follows), _checkbw, getStreamLength, ...: nothing to do.
            _ => Ok(()),
        }
    }

    fn on_connect(&mut self, tx: f64, object: Option<&Amf0Value>) -> Result<(), ConnectionError> {
        if self.connected {
            return Err(ConnectionError::Command("a second connect".into()));
        }
        let app = object
            .and_then(|o| o.get("app"))
            .and_then(Amf0Value::as_str)
            .ok_or_else(|| ConnectionError::Command("connect without an app name".into()))?;
        let (app, query) = app.split_once('?').unwrap_or((app, ""));
        if app.trim_matches('/') != "push" {
            return Err(ConnectionError::WrongApp(crate::ingest::clip(app)));
        }
        self.app_query = query.to_string();
        self.connected = true;
        self.send(CSID_CONTROL, MSG_WINDOW_ACK_SIZE, 0, &WINDOW.to_be_bytes());
        let mut bw = WINDOW.to_be_bytes().to_vec();
        bw.push(2); // dynamic
        self.send(CSID_CONTROL, MSG_SET_PEER_BANDWIDTH, 0, &bw);
        self.send(CSID_CONTROL, MSG_SET_CHUNK_SIZE, 0, &self.cfg.chunk_size.to_be_bytes());
        self.writer.set_chunk_size(self.cfg.chunk_size);
        let encoding = object
            .and_then(|o| o.get("objectEncoding"))
            .and_then(Amf0Value::as_number)
            .unwrap_or(0.0);
        self.result(
            tx,
            vec![
                amf0::object([
                    ("fmsVer", amf0::string("FMS/3,0,1,123")),
                    ("capabilities", Amf0Value::Number(31.0)),
                ]),
                amf0::object([
                    ("level", amf0::string("status")),
                    ("code", amf0::string("NetConnection.Connect.Success")),
                    ("description", amf0::string("Connection succeeded.")),
                    ("objectEncoding", Amf0Value::Number(encoding)),
                ]),
            ],
        );
        Ok(())
    }

    fn require_connected(&self, command: &str) -> Result<(), ConnectionError> {
        if self.connected {
            Ok(())
        } else {
            Err(ConnectionError::Command(format!("{command} before connect")))
        }
    }

    /// `_result` for transaction `tx` with `values` after it.
    fn result(&mut self, tx: f64, values: Vec<Amf0Value>) {
        let mut v = vec![amf0::string("_result"), Amf0Value::Number(tx)];
        v.extend(values);
        let mut payload = Vec::new();
        amf0::encode(&v, &mut payload);
        self.send(CSID_COMMAND, MSG_AMF0_COMMAND, 0, &payload);
    }

    /// An `onStatus` on `stream_id`: ffmpeg prints the description of an error ("Server error: ..."),
    /// librtmp/OBS act on the code.
    fn status(&mut self, stream_id: u32, level: &str, code: &str, description: &str) {
        let mut payload = Vec::new();
        amf0::encode(
            &[
                amf0::string("onStatus"),
                Amf0Value::Number(0.0),
                Amf0Value::Null,
                amf0::object([
                    ("level", amf0::string(level)),
                    ("code", amf0::string(code)),
                    ("description", amf0::string(description)),
                ]),
            ],
            &mut payload,
        );
        self.send(CSID_COMMAND, MSG_AMF0_COMMAND, stream_id, &payload);
    }

    fn send(&mut self, csid: u8, type_id: u8, stream_id: u32, payload: &[u8]) {
        let mut bytes = Vec::with_capacity(payload.len() + 16);
        self.writer.write(csid, type_id, stream_id, payload, &mut bytes);
        self.out.push_back(Output::Send(bytes));
    }

    /// Acknowledge what we received once a window's worth arrived (clients that ask may wait for it).
    fn ack_if_due(&mut self) {
        if self.peer_window > 0 && self.received - self.acked >= self.peer_window as u64 && !self.is_closed() {
            self.acked = self.received;
            self.send(CSID_CONTROL, MSG_ACK, 0, &(self.received as u32).to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests;
