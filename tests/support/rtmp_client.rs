//! A raw RTMP publisher built on rml_rtmp's client session, for streams ffmpeg 5.1 cannot make (Enhanced-RTMP
//! HEVC) and for hostile byte streams.

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// What the server did with our publish.
#[derive(Debug)]
pub struct Outcome {
    pub publish_accepted: bool,
    /// Every byte the server sent after the publish was answered (AMF strings are plain UTF-8 in it).
    pub after_publish: Vec<u8>,
    pub closed_by_server: bool,
}

impl Outcome {
    pub fn said(&self, text: &str) -> bool {
        self.after_publish.windows(text.len()).any(|w| w == text.as_bytes())
    }
}

/// One FLV tag body to send after the publish is accepted.
pub enum Tag {
    Video(Vec<u8>),
    Audio(Vec<u8>),
}

/// Connect to `app`, publish `stream_key`, send `video_tags` (FLV video tag bodies), then read until the
/// server closes (or 5 s pass).
pub fn publish(addr: SocketAddr, app: &str, stream_key: &str, video_tags: Vec<Vec<u8>>) -> Outcome {
    publish_tags(addr, app, stream_key, video_tags.into_iter().map(Tag::Video).collect())
}

/// `publish` with audio and video tags, in order.
pub fn publish_tags(addr: SocketAddr, app: &str, stream_key: &str, tags: Vec<Tag>) -> Outcome {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut hs = Handshake::new(PeerType::Client);
    s.write_all(&hs.generate_outbound_p0_and_p1().unwrap()).unwrap();
    let mut buf = [0u8; 8192];
    let leftover = loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "server closed during handshake");
        match hs.process_bytes(&buf[..n]).unwrap() {
            HandshakeProcessResult::InProgress { response_bytes } => s.write_all(&response_bytes).unwrap(),
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                s.write_all(&response_bytes).unwrap();
                break remaining_bytes;
            }
        }
    };
    let (mut session, _) = ClientSession::new(ClientSessionConfig::new()).unwrap();
    let send = |s: &mut TcpStream, r: ClientSessionResult| {
        if let ClientSessionResult::OutboundResponse(p) = r {
            let _ = s.write_all(&p.bytes);
        }
    };
    let r = session.request_connection(app.to_string()).unwrap();
    send(&mut s, r);
    let mut pending = leftover;
    let mut connected = false;
    let mut accepted = false;
    let mut answered = false;
    let mut after = Vec::new();
    let mut closed = false;
    while !answered {
        if pending.is_empty() {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => {
                    closed = true;
                    break;
                }
                Ok(n) => pending = buf[..n].to_vec(),
            }
        }
        after.extend_from_slice(&pending);
        let results = session.handle_input(&pending).unwrap_or_default();
        pending.clear();
        for r in results {
            match r {
                ClientSessionResult::OutboundResponse(p) => s.write_all(&p.bytes).unwrap(),
                ClientSessionResult::RaisedEvent(ClientSessionEvent::ConnectionRequestAccepted) if !connected => {
                    connected = true;
                    let r = session
                        .request_publishing(stream_key.to_string(), PublishRequestType::Live)
                        .unwrap();
                    send(&mut s, r);
                }
                ClientSessionResult::RaisedEvent(ClientSessionEvent::PublishRequestAccepted) => {
                    accepted = true;
                    answered = true;
                }
                ClientSessionResult::RaisedEvent(ClientSessionEvent::ConnectionRequestRejected { .. }) => {
                    answered = true
                }
                _ => {}
            }
        }
    }
    if accepted {
        after.clear();
        for (i, tag) in tags.into_iter().enumerate() {
            let at = RtmpTimestamp::new(i as u32 * 33);
            let sent = match tag {
                Tag::Video(t) => session.publish_video_data(Bytes::from(t), at, false),
                Tag::Audio(t) => session.publish_audio_data(Bytes::from(t), at, false),
            };
            if let Ok(r) = sent {
                send(&mut s, r);
            }
        }
    }
    if !closed {
        loop {
            match s.read(&mut buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => after.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
    }
    Outcome {
        publish_accepted: accepted,
        after_publish: after,
        closed_by_server: closed,
    }
}
