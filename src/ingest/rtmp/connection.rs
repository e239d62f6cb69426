//! `RtmpConnection`: one RTMP client from the first handshake byte to the end of its publish, as a state
//! machine fed bytes (`handle_input`) that answers with `Action`s. No sockets here, so it is driven the same
//! way by the server, the tests and the fuzz target.
//!
//! Layers: rml_rtmp's `Handshake`; our `ChunkReader` (bounded, per-chunk-stream) reassembles messages, which
//! are re-sent as canonical single-chunk messages into rml_rtmp's `ServerSession` for the command workflow
//! (connect, createStream, publish); the session's audio/video events feed an `RtmpPublisher`.

use super::chunk::{ChunkLimits, ChunkReader, MSG_ABORT, MSG_SET_CHUNK_SIZE};
use super::publisher::RtmpPublisher;
use crate::auth::{unix_now, RoomRef};
use crate::config::Config;
use crate::ingest::{authorize_publish, Refusal};
use crate::room::{LeaveReason, RoomHub, RoomKey, SourceKind};
use rml_amf0::Amf0Value;
use rml_rtmp::chunk_io::ChunkSerializer;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::messages::{MessagePayload, RtmpMessage as RmlMessage};
use rml_rtmp::sessions::{ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult};
use rml_rtmp::time::RtmpTimestamp;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

/// What the I/O side must do.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Send(Vec<u8>),
    /// Flush what was sent, then close the connection.
    Close,
}

/// What every connection shares.
pub struct RtmpContext {
    pub hub: Arc<RoomHub>,
    pub config: Arc<Config>,
}

struct Publishing {
    stream_id: u32,
    publisher: RtmpPublisher,
}

enum State {
    Handshaking(Box<Handshake>),
    Session(Box<Session>),
    Closed,
}

struct Session {
    rml: ServerSession,
    reader: ChunkReader,
    /// Re-chunks our reassembled messages for `rml` (one chunk each: its chunk size is set to our maximum).
    forward: ChunkSerializer,
    app_query: String,
    publishing: Option<Publishing>,
}

impl Session {
    /// Accept an outstanding rml request (connect, publish) and queue its answer.
    fn accept(&mut self, request_id: u32, actions: &mut Vec<Action>) -> Result<(), Refusal> {
        let results = self
            .rml
            .accept_request(request_id)
            .map_err(|e| Refusal::Malformed(format!("{e:?}")))?;
        for r in results {
            if let ServerSessionResult::OutboundResponse(p) = r {
                actions.push(Action::Send(p.bytes));
            }
        }
        Ok(())
    }
}

pub struct RtmpConnection {
    ctx: Arc<RtmpContext>,
    peer: SocketAddr,
    state: State,
    new_kick_signal: Option<watch::Receiver<Option<LeaveReason>>>,
}

impl RtmpConnection {
    pub fn new(ctx: Arc<RtmpContext>, peer: SocketAddr) -> Self {
        RtmpConnection {
            ctx,
            peer,
            state: State::Handshaking(Box::new(Handshake::new(PeerType::Server))),
            new_kick_signal: None,
        }
    }

    pub fn is_publishing(&self) -> bool {
        matches!(&self.state, State::Session(s) if s.publishing.is_some())
    }

    /// The takeover signal of a publish that just started (once per publish).
    pub fn take_kick_signal(&mut self) -> Option<watch::Receiver<Option<LeaveReason>>> {
        self.new_kick_signal.take()
    }

    /// Bytes from the client, received at `now`.
    pub fn handle_input(&mut self, data: &[u8], now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        match self.step(data, now, &mut actions) {
            Ok(()) => {}
            Err(refusal) => self.refuse(refusal, &mut actions),
        }
        actions
    }

    /// Another publisher took over this identity.
    pub fn on_replaced(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        self.refuse(Refusal::Replaced, &mut actions);
        actions
    }

    /// The client went away (or the server is closing): leave the room normally.
    pub fn on_disconnect(&mut self) {
        if let State::Session(s) = &mut self.state {
            if let Some(p) = s.publishing.take() {
                tracing::info!(peer = %self.peer, "RTMP publisher disconnected");
                p.publisher.finish(LeaveReason::Normal);
            }
        }
        self.state = State::Closed;
    }

    fn step(&mut self, data: &[u8], now: Instant, actions: &mut Vec<Action>) -> Result<(), Refusal> {
        let malformed = |e: &dyn std::fmt::Display| Refusal::Malformed(e.to_string());
        let mut data = data;
        let leftover;
        if let State::Handshaking(hs) = &mut self.state {
            match hs
                .process_bytes(data)
                .map_err(|e| malformed(&format!("handshake: {e:?}")))?
            {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    if !response_bytes.is_empty() {
                        actions.push(Action::Send(response_bytes));
                    }
                    return Ok(());
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    if !response_bytes.is_empty() {
                        actions.push(Action::Send(response_bytes));
                    }
                    let session = self.start_session(actions)?;
                    self.state = State::Session(Box::new(session));
                    leftover = remaining_bytes;
                    data = &leftover;
                }
            }
        }
        let State::Session(session) = &mut self.state else {
            return Ok(());
        };
        session.reader.feed(data);
        while let Some(msg) = session.reader.next_message().map_err(|e| malformed(&e))? {
            if matches!(msg.type_id, MSG_SET_CHUNK_SIZE | MSG_ABORT) {
                continue; // chunking is ours; rml sees whole messages only
            }
            match msg.type_id {
                MSG_AMF0_COMMAND => check_amf0_command(&msg.payload)?,
                // "AMF3" commands: rml decodes them as AMF0, after a leading 0 byte if there is one.
                MSG_AMF3_COMMAND => check_amf0_command(msg.payload.strip_prefix(&[0u8]).unwrap_or(&msg.payload))?,
                _ => {}
            }
            let payload = MessagePayload {
                timestamp: RtmpTimestamp::new(msg.timestamp),
                type_id: msg.type_id,
                message_stream_id: msg.stream_id,
                data: msg.payload,
            };
            let packet = session
                .forward
                .serialize(&payload, true, false)
                .map_err(|e| malformed(&format!("{e:?}")))?;
            // rml_rtmp panics on some malformed input; contain it to this connection as a protocol error.
            let results =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| session.rml.handle_input(&packet.bytes)))
                    .map_err(|_| Refusal::Malformed("message the RTMP session layer could not parse".into()))?
                    .map_err(|e| malformed(&format!("{e:?}")))?;
            for r in results {
                match r {
                    ServerSessionResult::OutboundResponse(p) => actions.push(Action::Send(p.bytes)),
                    ServerSessionResult::RaisedEvent(ev) => Self::on_event(
                        &self.ctx,
                        self.peer,
                        session,
                        &mut self.new_kick_signal,
                        ev,
                        msg.stream_id,
                        now,
                        actions,
                    )?,
                    ServerSessionResult::UnhandleableMessageReceived(_) => {}
                }
            }
        }
        Ok(())
    }

    fn start_session(&self, actions: &mut Vec<Action>) -> Result<Session, Refusal> {
        let rc = &self.ctx.config.rtmp;
        let mut cfg = ServerSessionConfig::new();
        cfg.chunk_size = rc.chunk_size;
        let (rml, results) = ServerSession::new(cfg).map_err(|e| Refusal::Malformed(format!("{e:?}")))?;
        for r in results {
            if let ServerSessionResult::OutboundResponse(p) = r {
                actions.push(Action::Send(p.bytes));
            }
        }
        let mut session = Session {
            rml,
            reader: ChunkReader::new(ChunkLimits {
                max_message_size: rc.max_message_size,
                max_chunk_size: rc.max_chunk_size,
                ..Default::default()
            }),
            forward: ChunkSerializer::new(),
            app_query: String::new(),
            publishing: None,
        };
        // Tell rml our maximum chunk size once, so every forwarded message is a single chunk.
        let big = rc.max_message_size.max(128);
        let msg = RmlMessage::SetChunkSize { size: big }
            .into_message_payload(RtmpTimestamp::new(0), 0)
            .map_err(|e| Refusal::Malformed(format!("{e:?}")))?;
        let packet = session
            .forward
            .serialize(&msg, true, false)
            .map_err(|e| Refusal::Malformed(format!("{e:?}")))?;
        session
            .rml
            .handle_input(&packet.bytes)
            .map_err(|e| Refusal::Malformed(format!("{e:?}")))?;
        session
            .forward
            .set_max_chunk_size(big, RtmpTimestamp::new(0))
            .map_err(|e| Refusal::Malformed(format!("{e:?}")))?;
        Ok(session)
    }

    #[allow(clippy::too_many_arguments)]
    fn on_event(
        ctx: &Arc<RtmpContext>,
        peer: SocketAddr,
        session: &mut Session,
        kick_out: &mut Option<watch::Receiver<Option<LeaveReason>>>,
        ev: ServerSessionEvent,
        stream_id: u32,
        now: Instant,
        actions: &mut Vec<Action>,
    ) -> Result<(), Refusal> {
        match ev {
            ServerSessionEvent::ConnectionRequested { request_id, app_name } => {
                let (app, query) = app_name.split_once('?').unwrap_or((&app_name, ""));
                if app.trim_matches('/') != "push" {
                    return Err(Refusal::WrongApp(app.to_string()));
                }
                session.app_query = query.to_string();
                session.accept(request_id, actions)?;
            }
            ServerSessionEvent::PublishStreamRequested {
                request_id, stream_key, ..
            } => {
                if session.publishing.is_some() {
                    return Err(Refusal::Malformed("a second publish on one connection".into()));
                }
                let started = Instant::now();
                let (room, params) = parse_stream_key(&stream_key, &session.app_query);
                let get = |k: &'static str| {
                    params
                        .get(k)
                        .map(String::as_str)
                        .filter(|v| !v.is_empty())
                        .ok_or(Refusal::MissingParameter(k))
                };
                let sdkappid_raw = get("sdkappid")?;
                let sdkappid: u64 = sdkappid_raw
                    .parse()
                    .map_err(|_| Refusal::BadSdkAppId(sdkappid_raw.to_string()))?;
                let userid = get("userid")?.to_string();
                let usersig = get("usersig")?;
                let room = RoomRef::Str(room);
                authorize_publish(
                    &ctx.config.apps,
                    sdkappid,
                    &room,
                    &userid,
                    usersig,
                    params.get("privatemapkey").map(String::as_str),
                    unix_now(),
                )?;
                session.accept(request_id, actions)?;
                let label = format!(
                    "{sdkappid}/{room_label}/{userid}",
                    room_label = match &room {
                        RoomRef::Str(s) => s.clone(),
                        RoomRef::Num(n) => n.to_string(),
                    }
                );
                let anchor = ctx.hub.join(RoomKey { sdkappid, room }, &userid, SourceKind::Rtmp);
                *kick_out = Some(anchor.kick_signal());
                tracing::info!(%peer, anchor = %label, auth_us = started.elapsed().as_micros() as u64, "RTMP publish started");
                session.publishing = Some(Publishing {
                    stream_id,
                    publisher: RtmpPublisher::new(anchor, label, ctx.config.audio.opus_bitrate),
                });
            }
            ServerSessionEvent::VideoDataReceived { data, timestamp, .. } => {
                if let Some(p) = &mut session.publishing {
                    p.publisher.on_video(timestamp.value, &data, now)?;
                }
            }
            ServerSessionEvent::AudioDataReceived { data, timestamp, .. } => {
                if let Some(p) = &mut session.publishing {
                    p.publisher.on_audio(timestamp.value, &data, now)?;
                }
            }
            ServerSessionEvent::PublishStreamFinished { .. } => {
                if let Some(p) = session.publishing.take() {
                    tracing::info!(%peer, "RTMP publish finished by the client");
                    p.publisher.finish(LeaveReason::Normal);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// End the publish (if any) with `refusal`: tell the client why in an `onStatus` error, log it, close.
    fn refuse(&mut self, refusal: Refusal, actions: &mut Vec<Action>) {
        refusal.count("rtmp");
        let mut stream_id = 1;
        if let State::Session(s) = &mut self.state {
            if let Some(p) = s.publishing.take() {
                stream_id = p.stream_id;
                let reason = match refusal {
                    Refusal::Replaced => LeaveReason::Replaced,
                    ref r => LeaveReason::Ended(r.to_string()),
                };
                tracing::warn!(peer = %self.peer, anchor = ?p.publisher.anchor().participant().userid, reason = %refusal, "RTMP publish ended");
                p.publisher.finish(reason);
            } else {
                tracing::warn!(peer = %self.peer, reason = %refusal, "RTMP publish refused");
            }
            let code = match refusal {
                Refusal::WrongApp(_) => "NetConnection.Connect.Rejected",
                Refusal::BadRoomId(_) | Refusal::MissingParameter(_) => "NetStream.Publish.BadName",
                _ => "NetStream.Publish.Rejected",
            };
            if let Some(bytes) = status_error(self.ctx.config.rtmp.chunk_size, stream_id, code, &refusal.to_string()) {
                actions.push(Action::Send(bytes));
            }
        } else {
            tracing::info!(peer = %self.peer, reason = %refusal, "RTMP connection dropped during handshake");
        }
        self.state = State::Closed;
        actions.push(Action::Close);
    }
}

/// An `onStatus` error for `stream_id`: ffmpeg prints its description ("Server error: ..."), librtmp/OBS
/// closes on the code. Sent with a full (type 0) chunk header as the last message of the connection, so it
/// does not depend on the session's header compression state.
fn status_error(chunk_size: u32, stream_id: u32, code: &str, description: &str) -> Option<Vec<u8>> {
    let mut obj = HashMap::new();
    obj.insert("level".to_string(), Amf0Value::Utf8String("error".into()));
    obj.insert("code".to_string(), Amf0Value::Utf8String(code.into()));
    obj.insert("description".to_string(), Amf0Value::Utf8String(description.into()));
    let msg = RmlMessage::Amf0Command {
        command_name: "onStatus".into(),
        transaction_id: 0.0,
        command_object: Amf0Value::Null,
        additional_arguments: vec![Amf0Value::Object(obj)],
    };
    let payload = msg.into_message_payload(RtmpTimestamp::new(0), stream_id).ok()?;
    let mut ser = ChunkSerializer::new();
    ser.set_max_chunk_size(chunk_size, RtmpTimestamp::new(0)).ok()?;
    Some(ser.serialize(&payload, true, false).ok()?.bytes)
}

const MSG_AMF0_COMMAND: u8 = 20;
const MSG_AMF3_COMMAND: u8 = 17;

/// rml_rtmp expects at least a name, a transaction id and a command object and panics otherwise; check first.
fn check_amf0_command(payload: &[u8]) -> Result<(), Refusal> {
    let mut cursor = std::io::Cursor::new(payload);
    let values = rml_amf0::deserialize(&mut cursor).map_err(|e| Refusal::Malformed(format!("AMF0 command: {e:?}")))?;
    match values.as_slice() {
        [Amf0Value::Utf8String(_), Amf0Value::Number(_), _, ..] => Ok(()),
        _ => Err(Refusal::Malformed(
            "AMF0 command without name, transaction id and command object".into(),
        )),
    }
}

/// Split `<room>?k=v&..` into the room and its parameters; parameters on the app name (`push?k=v`) count too.
pub fn parse_stream_key(stream_key: &str, app_query: &str) -> (String, HashMap<String, String>) {
    let (room, query) = stream_key.split_once('?').unwrap_or((stream_key, ""));
    let mut params = HashMap::new();
    for q in [app_query, query] {
        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
            params.insert(k.to_ascii_lowercase(), v.into_owned());
        }
    }
    (room.trim_matches('/').to_string(), params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_amf0_commands_are_refused_not_panics() {
        // Found by the rtmp_connection fuzz target: rml_rtmp drains 3 values from any command.
        let one_value = rml_amf0::serialize(&vec![Amf0Value::Utf8String("connect".into())]).unwrap();
        assert!(matches!(check_amf0_command(&one_value), Err(Refusal::Malformed(_))));
        let ok = rml_amf0::serialize(&vec![
            Amf0Value::Utf8String("connect".into()),
            Amf0Value::Number(1.0),
            Amf0Value::Null,
        ])
        .unwrap();
        assert!(check_amf0_command(&ok).is_ok());
    }

    #[test]
    fn stream_keys() {
        let (room, p) = parse_stream_key("room_1?sdkappid=1400000001&userid=u&usersig=eJx*a-b_", "");
        assert_eq!(room, "room_1");
        assert_eq!(p["sdkappid"], "1400000001");
        assert_eq!(p["usersig"], "eJx*a-b_");
        let (room, p) = parse_stream_key("r2", "sdkappid=5&UserId=x");
        assert_eq!(
            (room.as_str(), p["sdkappid"].as_str(), p["userid"].as_str()),
            ("r2", "5", "x")
        );
    }
}
