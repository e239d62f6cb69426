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
    /// The served root, when the server owns it (`serving`).
    _root: Option<tempfile::TempDir>,
}

/// A TCP port free on loopback right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The main-context directives that run nginx in the foreground with its pid file and error log under `dir`.
pub fn foreground_directives(dir: &Path) -> String {
    let p = dir.display();
    format!("daemon off;\nmaster_process off;\nuser root;\npid {p}/nginx.pid;\nerror_log {p}/error.log warn;\n")
}

/// The http-context directives that keep nginx's access log and temporary files under `dir`.
pub fn http_directives(dir: &Path) -> String {
    let p = dir.display();
    format!(
        "    access_log {p}/access.log;\n    client_body_temp_path {p}/body;\n    proxy_temp_path {p}/proxy;\n    \
         fastcgi_temp_path {p}/fastcgi;\n    uwsgi_temp_path {p}/uwsgi;\n    scgi_temp_path {p}/scgi;\n"
    )
}

/// Run `/usr/sbin/nginx` in the prefix `dir` with `conf` (written to `dir/nginx.conf`); its errors go to the test's
/// stderr.
pub fn spawn(dir: &Path, conf: &str) -> std::process::Child {
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    std::process::Command::new("/usr/sbin/nginx")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("nginx is installed (scripts/install-deps.sh installs nginx-light and libnginx-mod-rtmp)")
}

impl Nginx {
    /// Serve `root` over HTTP and run an RTMP `live` application.
    pub async fn start(root: &Path) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let (http_port, rtmp_port) = (free_port(), free_port());
        let conf = format!(
            r#"
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
{foreground}events {{ worker_connections 256; }}
http {{
{http_directives}    types {{
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
            foreground = foreground_directives(dir.path()),
            http_directives = http_directives(dir.path()),
            root = root.display()
        );
        let child = spawn(dir.path(), &conf);
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
            _root: None,
        }
    }

    /// `start` on the temporary dir `root`, which is kept as long as the server runs.
    pub async fn serving(root: tempfile::TempDir) -> Nginx {
        let mut nginx = Nginx::start(root.path()).await;
        nginx._root = Some(root);
        nginx
    }

    /// `start` on the repository's `testdata/`.
    pub async fn testdata() -> Nginx {
        Nginx::start(&Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")).await
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
