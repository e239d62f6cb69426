//! A real nginx (Debian's, with libnginx-mod-rtmp) on loopback ephemeral ports: an HTTP server for `testdata/`
//! and an RTMP server (`rtmp://127.0.0.1:<port>/live/<name>`) a test can publish into with ffmpeg.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

pub struct Nginx {
    child: std::process::Child,
    pub http: SocketAddr,
    pub rtmp: SocketAddr,
    _dir: tempfile::TempDir,
}

/// A TCP port free on loopback right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Nginx {
    /// Serve `root` over HTTP and run an RTMP `live` application.
    pub async fn start(root: &Path) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let (http_port, rtmp_port) = (free_port(), free_port());
        let p = dir.path().display();
        let conf = format!(
            r#"
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
daemon off;
master_process off;
user root;
pid {p}/nginx.pid;
error_log {p}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {p}/access.log;
    client_body_temp_path {p}/body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    types {{
        video/mp4 mp4;
        video/x-flv flv;
        audio/mpeg mp3;
        application/vnd.apple.mpegurl m3u8;
        video/mp2t ts;
    }}
    server {{
        listen 127.0.0.1:{http_port};
        root {root};
        location /redirect-private/ {{ return 302 http://127.0.0.1:{http_port}/sample-720p30.mp4; }}
    }}
}}
rtmp {{
    server {{
        listen 127.0.0.1:{rtmp_port};
        application live {{ live on; }}
    }}
}}
"#,
            root = root.display()
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = std::process::Command::new("/usr/sbin/nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nginx is installed (scripts/install-deps.sh installs nginx-light and libnginx-mod-rtmp)");
        let http: SocketAddr = format!("127.0.0.1:{http_port}").parse().unwrap();
        let rtmp: SocketAddr = format!("127.0.0.1:{rtmp_port}").parse().unwrap();
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(http).await.is_ok() && tokio::net::TcpStream::connect(rtmp).await.is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Nginx {
            child,
            http,
            rtmp,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
