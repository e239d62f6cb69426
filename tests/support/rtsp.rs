//! A tiny RTSP server for pull tests (an IP camera): it serves one H.264 stream over TCP-interleaved RTP, the RTP
//! made by ffmpeg from a file (looping, in real time), plainly or inside TLS (rtsps), or answers DESCRIBE with a
//! redirect.

#![allow(dead_code)]

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::broadcast;

pub struct RtspServer {
    pub port: u16,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _ffmpeg: Option<tokio::process::Child>,
    _dir: tempfile::TempDir,
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Two free consecutive UDP ports on loopback (RTP and RTCP), bound.
async fn udp_pair() -> (UdpSocket, UdpSocket) {
    loop {
        let rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = rtp.local_addr().unwrap().port();
        if port % 2 == 0 && port < 65534 {
            if let Ok(rtcp) = UdpSocket::bind(("127.0.0.1", port + 1)).await {
                return (rtp, rtcp);
            }
        }
    }
}

impl RtspServer {
    /// Serve `file`'s video (H.264, copied) at `rtsp://127.0.0.1:<port>/<anything>`.
    pub async fn serving(file: &Path) -> RtspServer {
        RtspServer::serving_with(file, None).await
    }

    /// `serving`, inside TLS with `tls` when given (`rtsps://`).
    pub async fn serving_with(file: &Path, tls: Option<tokio_rustls::TlsAcceptor>) -> RtspServer {
        let dir = tempfile::tempdir().unwrap();
        let (rtp, rtcp) = udp_pair().await;
        let rtp_port = rtp.local_addr().unwrap().port();
        let sdp_path = dir.path().join("stream.sdp");
        let ffmpeg = tokio::process::Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-nostdin",
                "-loglevel",
                "error",
                "-re",
                "-stream_loop",
                "-1",
                "-i",
            ])
            .arg(file)
            .args(["-an", "-c:v", "copy", "-f", "rtp", "-sdp_file"])
            .arg(&sdp_path)
            .arg(format!("rtp://127.0.0.1:{rtp_port}?pkt_size=1200"))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("ffmpeg");
        let deadline = Instant::now() + Duration::from_secs(10);
        let sdp = loop {
            if let Ok(s) = std::fs::read_to_string(&sdp_path) {
                if s.contains("m=video") {
                    break s;
                }
            }
            assert!(Instant::now() < deadline, "ffmpeg writes the SDP");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        // The SDP as an RTSP DESCRIBE answers it: no connection address, one control URL for the track.
        let sdp: String = sdp
            .lines()
            .filter(|l| !l.starts_with("c=") && !l.starts_with("SDP:") && !l.trim().is_empty())
            .flat_map(|l| {
                let mut out = vec![l.to_string()];
                if l.starts_with("m=video") {
                    out[0] = "m=video 0 RTP/AVP 96".to_string();
                    out.push("c=IN IP4 0.0.0.0".to_string());
                    out.push("a=control:trackID=0".to_string());
                }
                out
            })
            .map(|l| l + "\r\n")
            .collect();
        let (tx, _) = broadcast::channel::<Arc<Vec<u8>>>(1024);
        let forward = {
            let tx = tx.clone();
            tokio::spawn(async move {
                let _rtcp = rtcp;
                let mut buf = vec![0u8; 2048];
                while let Ok(n) = rtp.recv(&mut buf).await {
                    let _ = tx.send(Arc::new(buf[..n].to_vec()));
                }
            })
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let serve = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let answer = Answer::Media {
                    sdp: sdp.clone(),
                    packets: tx.clone(),
                };
                match tls.clone() {
                    None => drop(tokio::spawn(session(sock, answer))),
                    Some(acceptor) => drop(tokio::spawn(async move {
                        if let Ok(sock) = acceptor.accept(sock).await {
                            session(sock, answer).await;
                        }
                    })),
                }
            }
        });
        RtspServer {
            port,
            tasks: vec![forward, serve],
            _ffmpeg: Some(ffmpeg),
            _dir: dir,
        }
    }

    /// Answer DESCRIBE with `302` to `location`; `cut`: only the head's lines, without the blank line that ends
    /// it, then close (libav acts on a redirect it read up to an end of file).
    pub async fn redirecting(location: String, cut: bool) -> RtspServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let answer = if cut {
            Answer::CutRedirect(location)
        } else {
            Answer::Redirect(location)
        };
        let serve = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(session(sock, answer.clone()));
            }
        });
        RtspServer {
            port,
            tasks: vec![serve],
            _ffmpeg: None,
            _dir: tempfile::tempdir().unwrap(),
        }
    }
}

#[derive(Clone)]
enum Answer {
    Media {
        sdp: String,
        packets: broadcast::Sender<Arc<Vec<u8>>>,
    },
    Redirect(String),
    CutRedirect(String),
}

/// One client connection: answer its requests; after PLAY, send the packets interleaved on channel 0.
async fn session<S>(sock: S, answer: Answer)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut rd, wr) = tokio::io::split(sock);
    let wr = Arc::new(tokio::sync::Mutex::new(wr));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Ok(n) = rd.read(&mut chunk).await else { return };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        // Interleaved RTCP from the client is skipped; requests are answered.
        loop {
            if buf.first() == Some(&b'$') {
                if buf.len() < 4 {
                    break;
                }
                let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
                if buf.len() < 4 + len {
                    break;
                }
                buf.drain(..4 + len);
                continue;
            }
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                break;
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            buf.drain(..end + 4);
            let mut lines = head.lines();
            let first = lines.next().unwrap_or_default().to_string();
            let method = first.split_whitespace().next().unwrap_or_default().to_string();
            let url = first.split_whitespace().nth(1).unwrap_or_default().to_string();
            let cseq = lines
                .find_map(|l| l.strip_prefix("CSeq:").map(|v| v.trim().to_string()))
                .unwrap_or_else(|| "0".into());
            if let (Answer::CutRedirect(location), "DESCRIBE") = (&answer, method.as_str()) {
                let head = format!("RTSP/1.0 302 Moved\r\nCSeq: {cseq}\r\nLocation: {location}\r\n");
                let _ = wr.lock().await.write_all(head.as_bytes()).await;
                return;
            }
            let reply = match (&answer, method.as_str()) {
                (Answer::Redirect(location), "DESCRIBE") => {
                    format!("RTSP/1.0 302 Moved Temporarily\r\nCSeq: {cseq}\r\nLocation: {location}\r\n\r\n")
                }
                (_, "OPTIONS") => format!(
                    "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nPublic: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER\r\n\r\n"
                ),
                (Answer::Media { sdp, .. }, "DESCRIBE") => format!(
                    "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nContent-Base: {}/\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                    url.trim_end_matches('/'),
                    sdp.len()
                ),
                (_, "SETUP") => format!(
                    "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\nSession: 12345678;timeout=60\r\n\r\n"
                ),
                (Answer::Media { .. }, "PLAY") => {
                    format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nSession: 12345678\r\nRange: npt=0.000-\r\n\r\n")
                }
                _ => format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nSession: 12345678\r\n\r\n"),
            };
            if wr.lock().await.write_all(reply.as_bytes()).await.is_err() {
                return;
            }
            // Media after the PLAY answer.
            if let (Answer::Media { packets, .. }, "PLAY") = (&answer, method.as_str()) {
                let mut rx = packets.subscribe();
                let wr = wr.clone();
                tokio::spawn(async move {
                    loop {
                        let p = match rx.recv().await {
                            Ok(p) => p,
                            Err(broadcast::error::RecvError::Lagged(_)) => continue,
                            Err(_) => return,
                        };
                        let mut frame = vec![b'$', 0];
                        frame.extend_from_slice(&(p.len() as u16).to_be_bytes());
                        frame.extend_from_slice(&p);
                        if wr.lock().await.write_all(&frame).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
    }
}
