//! `RtmpConnection` driven by rml_rtmp's client session (an independent implementation of the client side)
//! and by hand-made hostile bytes; no sockets.

use super::*;
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;

fn cfg() -> ConnectionConfig {
    ConnectionConfig {
        chunks: ChunkLimits::default(),
        chunk_size: 4096,
        setup_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(30),
    }
}

/// A connection after the handshake, plus every output it produced so far.
fn handshaken(now: Instant) -> RtmpConnection {
    let mut conn = RtmpConnection::new(cfg(), now);
    let mut hs = Handshake::new(PeerType::Client);
    let mut to_server = hs.generate_outbound_p0_and_p1().unwrap();
    loop {
        conn.handle_input(&to_server, now).unwrap();
        let mut from_server = Vec::new();
        while let Some(o) = conn.poll_output() {
            if let Output::Send(b) = o {
                from_server.extend(b);
            }
        }
        if from_server.is_empty() {
            return conn;
        }
        match hs.process_bytes(&from_server).unwrap() {
            HandshakeProcessResult::InProgress { response_bytes } => to_server = response_bytes,
            HandshakeProcessResult::Completed { response_bytes, .. } => {
                conn.handle_input(&response_bytes, now).unwrap();
                while conn.poll_output().is_some() {}
                return conn;
            }
        }
    }
}

/// Move bytes both ways until neither side has more; returns the client events and the server events.
fn pump(
    conn: &mut RtmpConnection,
    client: &mut ClientSession,
    mut to_server: Vec<u8>,
) -> (Vec<ClientSessionEvent>, Vec<Event>, bool) {
    let (mut client_events, mut server_events, mut closed) = (Vec::new(), Vec::new(), false);
    let now = Instant::now();
    while !to_server.is_empty() {
        let _ = conn.handle_input(&to_server, now);
        to_server.clear();
        let mut from_server = Vec::new();
        while let Some(o) = conn.poll_output() {
            match o {
                Output::Send(b) => from_server.extend(b),
                Output::Close => closed = true,
                Output::Event(e) => server_events.push(e),
            }
        }
        for r in client.handle_input(&from_server).unwrap() {
            match r {
                ClientSessionResult::OutboundResponse(p) => to_server.extend(p.bytes),
                ClientSessionResult::RaisedEvent(e) => client_events.push(e),
                _ => {}
            }
        }
    }
    (client_events, server_events, closed)
}

/// A handshaken connection (at `now`) and an rml_rtmp client that sent `connect` to `app`; with what that did.
#[allow(clippy::type_complexity)]
fn connected(
    app: &str,
    now: Instant,
) -> (
    RtmpConnection,
    ClientSession,
    (Vec<ClientSessionEvent>, Vec<Event>, bool),
) {
    let mut conn = handshaken(now);
    let (mut client, _) = ClientSession::new(ClientSessionConfig::new()).unwrap();
    let connect = bytes_of(client.request_connection(app.into()).unwrap());
    let pumped = pump(&mut conn, &mut client, connect);
    (conn, client, pumped)
}

fn bytes_of(r: ClientSessionResult) -> Vec<u8> {
    match r {
        ClientSessionResult::OutboundResponse(p) => p.bytes,
        _ => Vec::new(),
    }
}

#[test]
fn a_publisher_connects_publishes_and_sends_media() {
    let (mut conn, mut client, (ce, se, _)) = connected("push?sdkappid=7", Instant::now());
    assert!(ce.contains(&ClientSessionEvent::ConnectionRequestAccepted), "{ce:?}");
    assert!(se.is_empty());

    let publish = bytes_of(
        client
            .request_publishing("room1?userid=u".into(), PublishRequestType::Live)
            .unwrap(),
    );
    let (_, se, _) = pump(&mut conn, &mut client, publish);
    assert_eq!(
        se,
        vec![Event::PublishRequested {
            stream_key: "room1?userid=u".into(),
            app_query: "sdkappid=7".into()
        }]
    );
    // Nothing is answered until the driver decides.
    assert!(conn.poll_output().is_none());
    conn.accept_publish().unwrap();
    let mut from_server = Vec::new();
    while let Some(Output::Send(b)) = conn.poll_output() {
        from_server.extend(b);
    }
    let events: Vec<_> = client
        .handle_input(&from_server)
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            ClientSessionResult::RaisedEvent(e) => Some(e),
            _ => None,
        })
        .collect();
    assert!(
        events.contains(&ClientSessionEvent::PublishRequestAccepted),
        "{events:?}"
    );
    assert!(conn.is_publishing());

    // A video message larger than the pre-publish 64 KiB cap is fine now.
    let big = Bytes::from(vec![0x17u8; 200_000]);
    let video = bytes_of(
        client
            .publish_video_data(big.clone(), RtmpTimestamp::new(40), false)
            .unwrap(),
    );
    let audio = bytes_of(
        client
            .publish_audio_data(Bytes::from_static(&[0xAF, 1, 2]), RtmpTimestamp::new(41), false)
            .unwrap(),
    );
    let (_, se, closed) = pump(&mut conn, &mut client, [video, audio].concat());
    assert!(!closed);
    assert_eq!(
        se,
        vec![
            Event::Video {
                timestamp: 40,
                data: big
            },
            Event::Audio {
                timestamp: 41,
                data: Bytes::from_static(&[0xAF, 1, 2])
            }
        ]
    );
    let stop = bytes_of(client.stop_publishing().unwrap().remove(0));
    let (_, se, _) = pump(&mut conn, &mut client, stop);
    assert_eq!(se, vec![Event::Unpublished]);
}

#[test]
fn a_refused_publish_gets_an_error_status_and_a_close() {
    let (mut conn, mut client, _) = connected("push", Instant::now());
    let publish = bytes_of(client.request_publishing("r".into(), PublishRequestType::Live).unwrap());
    pump(&mut conn, &mut client, publish);
    conn.refuse("NetStream.Publish.Rejected", "UserSig rejected: expired");
    let mut sent = Vec::new();
    let mut closed = false;
    while let Some(o) = conn.poll_output() {
        match o {
            Output::Send(b) => sent.extend(b),
            Output::Close => closed = true,
            Output::Event(_) => panic!("no events after a refusal"),
        }
    }
    assert!(closed && conn.is_closed());
    assert!(sent.windows(25).any(|w| w == b"UserSig rejected: expired"));
    assert!(sent.windows(26).any(|w| w == b"NetStream.Publish.Rejected"));
}

#[test]
fn the_wrong_app_is_refused_at_connect() {
    let (conn, _, (_, _, closed)) = connected("live", Instant::now());
    assert!(closed && conn.is_closed());
}

/// A raw message on chunk stream 3 with a full header, in chunks of 128 bytes (the default chunk size).
fn raw_message(type_id: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    ChunkWriter::default().write(3, type_id, stream_id, payload, &mut out);
    out
}

#[test]
fn nested_amf0_is_refused_without_recursing() {
    // The payload that aborted the process: strict arrays nested 200 000 deep. As a 1 MB command it is over
    // the 64 KiB cap for messages before publish; within the cap (13 000 levels) the depth cap refuses it.
    for depth in [200_000usize, 13_000] {
        let mut conn = handshaken(Instant::now());
        let mut payload = Vec::new();
        amf0::encode(&[amf0::string("connect"), Amf0Value::Number(1.0)], &mut payload);
        for _ in 0..depth {
            payload.extend_from_slice(&[0x0A, 0, 0, 0, 1]);
        }
        payload.push(0x05);
        for type_id in [MSG_AMF0_COMMAND, 18, MSG_AMF3_COMMAND] {
            let mut conn2 = handshaken(Instant::now());
            let body = if type_id == MSG_AMF3_COMMAND {
                [&[0u8][..], &payload].concat()
            } else {
                payload.clone()
            };
            let e = conn2.handle_input(&raw_message(type_id, 0, &body), Instant::now());
            match (depth, type_id) {
                (200_000, _) => assert!(
                    matches!(e, Err(ConnectionError::Chunk(ChunkError::MessageTooLarge { .. }))),
                    "{e:?}"
                ),
                // Data messages (metadata) are size-capped and never decoded.
                (_, 18) => assert_eq!(e, Ok(())),
                _ => assert_eq!(e, Err(ConnectionError::Amf0(Amf0Error::TooDeep(32)))),
            }
        }
        let e = conn.handle_input(&raw_message(MSG_AMF0_COMMAND, 0, &payload), Instant::now());
        assert!(e.is_err());
        assert!(conn.is_closed());
    }
}

#[test]
fn commands_out_of_order_are_errors() {
    for (cmd, why) in [("createStream", "before connect"), ("publish", "before connect")] {
        let mut conn = handshaken(Instant::now());
        let mut payload = Vec::new();
        amf0::encode(
            &[
                amf0::string(cmd),
                Amf0Value::Number(2.0),
                Amf0Value::Null,
                amf0::string("k"),
            ],
            &mut payload,
        );
        let e = conn
            .handle_input(&raw_message(MSG_AMF0_COMMAND, 1, &payload), Instant::now())
            .unwrap_err();
        assert!(e.to_string().contains(why), "{e}");
    }
    // A command without a transaction id (rml_rtmp used to panic on these).
    let mut conn = handshaken(Instant::now());
    let mut payload = Vec::new();
    amf0::encode(&[amf0::string("connect")], &mut payload);
    assert!(conn
        .handle_input(&raw_message(MSG_AMF0_COMMAND, 0, &payload), Instant::now())
        .is_err());
}

#[test]
fn setup_and_idle_deadlines() {
    let t0 = Instant::now();
    let mut conn = RtmpConnection::new(cfg(), t0);
    assert_eq!(conn.poll_timeout(), t0 + Duration::from_secs(10));
    conn.handle_timeout(t0 + Duration::from_secs(9)).unwrap();
    assert!(!conn.is_closed());
    assert_eq!(
        conn.handle_timeout(t0 + Duration::from_secs(10)),
        Err(ConnectionError::SetupTimeout(10))
    );
    assert!(conn.is_closed());
}

#[test]
fn random_bytes_after_the_handshake_never_panic() {
    let mut seed = 0xDEAD_BEEF_u64;
    for _ in 0..300 {
        let mut conn = handshaken(Instant::now());
        for _ in 0..8 {
            let len = (seed % 700) as usize;
            let bytes = crate::ingest::rtmp::noise(&mut seed, len);
            let _ = conn.handle_input(&bytes, Instant::now());
            while conn.poll_output().is_some() {}
        }
    }
}

#[test]
fn setup_is_bounded_in_commands_and_in_input_while_deciding() {
    // A client that sends answerable commands without end (and may never read the answers) is cut off.
    let mut conn = handshaken(Instant::now());
    let mut payload = Vec::new();
    amf0::encode(
        &[amf0::string("releaseStream"), Amf0Value::Number(2.0), Amf0Value::Null],
        &mut payload,
    );
    let one = raw_message(MSG_AMF0_COMMAND, 0, &payload);
    let mut r = Ok(());
    for _ in 0..=MAX_SETUP_COMMANDS {
        r = conn.handle_input(&one, Instant::now());
    }
    assert_eq!(r, Err(ConnectionError::TooManyCommands));
    assert!(conn.is_closed());

    // While the driver decides a publish, a driver that reads on cannot make us buffer more than 64 KiB.
    let (mut conn, mut client, _) = connected("push", Instant::now());
    let publish = bytes_of(client.request_publishing("r".into(), PublishRequestType::Live).unwrap());
    let (_, se, _) = pump(&mut conn, &mut client, publish);
    assert!(matches!(se.as_slice(), [Event::PublishRequested { .. }]));
    assert!(conn.handle_input(&[0u8; 60_000], Instant::now()).is_ok());
    assert!(matches!(
        conn.handle_input(&[0u8; 10_000], Instant::now()),
        Err(ConnectionError::InputWhileDeciding(_))
    ));
}

#[test]
fn after_an_unpublish_the_connection_is_back_in_setup() {
    let t0 = Instant::now();
    let (mut conn, mut client, _) = connected("push", t0);
    let publish = bytes_of(client.request_publishing("r".into(), PublishRequestType::Live).unwrap());
    pump(&mut conn, &mut client, publish);
    conn.accept_publish().unwrap();
    while conn.poll_output().is_some() {}
    let stop = bytes_of(client.stop_publishing().unwrap().remove(0));
    let (_, se, closed) = pump(&mut conn, &mut client, stop);
    assert_eq!(se, vec![Event::Unpublished]);
    assert!(!closed && !conn.is_publishing());
    // A fresh setup deadline, and media is small again.
    assert!(conn.poll_timeout() > Instant::now() + Duration::from_secs(5));
    let big = raw_message(MSG_VIDEO, 1, &vec![0x17; 100_000]);
    assert!(matches!(
        conn.handle_input(&big, Instant::now()),
        Err(ConnectionError::Chunk(ChunkError::MessageTooLarge { .. }))
    ));
}
