//! What a pull runner needs of the gateway, and no more: the room hub to join, the store for progress, the event
//! observers, the configuration and the one way to reach sources (`SourceAccess`). Runners get a `RunnerEnv`, not
//! the `PullService` that owns the tasks.

use super::control::Control;
use super::{policy, proxy, source, IngestEvent, IngestEventKind, IngestTask};
use crate::config::Config;
use crate::room::RoomHub;
use crate::store::{now_ms, Store};
use std::future::Future;
use std::sync::mpsc::{sync_channel, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The gateway as a runner sees it.
pub(crate) struct RunnerEnv {
    pub hub: Arc<RoomHub>,
    pub store: Arc<Store>,
    pub events: TaskEvents,
    pub config: Arc<Config>,
    pub sources: SourceAccess,
}

/// Task events to whoever observes them (callbacks 701/702, the console, tests).
#[derive(Default)]
pub(crate) struct TaskEvents {
    observers: Mutex<Vec<tokio::sync::mpsc::UnboundedSender<IngestEvent>>>,
}

impl TaskEvents {
    /// Receive every task event from now on.
    pub fn observe(&self) -> tokio::sync::mpsc::UnboundedReceiver<IngestEvent> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.observers.lock().expect("observers lock").push(tx);
        rx
    }

    /// Tell every observer what happened to `task`.
    pub fn emit(&self, task: &IngestTask, kind: IngestEventKind) {
        let ev = IngestEvent {
            sdkappid: task.spec().sdk_app_id,
            task_id: task.id.clone(),
            kind,
            at_ms: now_ms(),
        };
        self.observers
            .lock()
            .expect("observers lock")
            .retain(|tx| tx.send(ev.clone()).is_ok());
    }
}

/// How runners reach sources: the address policy, the pre-flight clients (one per policy) and the proxy every
/// http(s) connection of libav goes through. Network checks run on the tokio runtime; a runner thread hands them
/// over and waits without entering the runtime.
pub(crate) struct SourceAccess {
    pull: crate::config::PullConfig,
    /// The pre-flight clients (untrusted, trusted sources), built at the first pre-flight: a gateway that pulls
    /// nothing holds no HTTP client nor the system's CAs.
    http: [OnceLock<reqwest::Client>; 2],
    /// `None` only when loopback cannot be bound.
    proxy: Option<proxy::SourceProxy>,
    /// What rtsps:// relays trust, read at the first rtsps source (`None` when `pull.ca_file` cannot be read
    /// then: rtsps sources fail, logged).
    rtsps: OnceLock<Option<tokio_rustls::TlsConnector>>,
    runtime: tokio::runtime::Handle,
}

impl SourceAccess {
    /// Must be called inside the tokio runtime.
    pub fn new(config: &Config) -> SourceAccess {
        let timeout = Duration::from_secs(config.pull.open_timeout_secs.max(1));
        let proxy = match proxy::SourceProxy::start(timeout) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the source proxy on loopback; http(s) pull tasks will fail");
                None
            }
        };
        SourceAccess {
            rtsps: OnceLock::new(),
            pull: config.pull.clone(),
            http: [OnceLock::new(), OnceLock::new()],
            proxy,
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// The address policy of a task's source.
    pub fn policy(&self, trusted: bool) -> policy::AddressPolicy {
        policy::AddressPolicy::from_config(&self.pull, trusted)
    }

    /// The pre-flight client for that policy.
    pub fn preflight_client(&self, trusted: bool) -> &reqwest::Client {
        self.http[usize::from(trusted)].get_or_init(|| {
            let timeout = Duration::from_secs(self.pull.open_timeout_secs.max(1));
            source::preflight_client(timeout, self.policy(trusted))
        })
    }

    /// The TLS connector of rtsps:// relays (the system's CAs and `pull.ca_file`), built on first use.
    fn rtsps(&self) -> Option<tokio_rustls::TlsConnector> {
        self.rtsps
            .get_or_init(|| {
                let ca_file = &self.pull.ca_file;
                let extra = (!ca_file.as_os_str().is_empty()).then_some(ca_file.as_path());
                match crate::tls::client_config(extra) {
                    Ok(c) => Some(tokio_rustls::TlsConnector::from(Arc::new(c))),
                    Err(e) => {
                        tracing::error!(error = %e, "pull.ca_file cannot be used; rtsps:// pull tasks will fail");
                        None
                    }
                }
            })
            .clone()
    }

    /// A proxy session for one opening of an http(s) source under `policy`; `Err` (logged) when libav's
    /// traffic cannot be held to the proxy.
    pub fn proxy_session(&self, policy: policy::AddressPolicy, label: &str) -> Result<proxy::ProxySession, ()> {
        if std::env::var_os("no_proxy").is_some_and(|v| !v.is_empty()) {
            // libav connects directly to the hosts `no_proxy` names, around the proxy and its checks.
            tracing::error!("the no_proxy environment variable is set: http(s) sources are refused (unset it, or start roomgate with `serve`, which moves it to NO_PROXY)");
            return Err(());
        }
        match &self.proxy {
            Some(p) => Ok(p.session(policy, label)),
            None => {
                tracing::error!("the source proxy is not running: http(s) sources are refused");
                Err(())
            }
        }
    }

    /// A relay on loopback for one opening of an rtsp source, to `target` (an address the policy accepted); the
    /// session's address is where libav connects, its events what the relay refused. `Err` (logged) when
    /// loopback cannot be bound.
    pub fn rtsp_relay(
        &self,
        policy: policy::AddressPolicy,
        label: &str,
        target: std::net::SocketAddr,
        tls_name: Option<String>,
    ) -> Result<proxy::ProxySession, ()> {
        let tls = match tls_name {
            None => None,
            Some(name) => {
                let name = rustls::pki_types::ServerName::try_from(name)
                    .map_err(|e| tracing::warn!(error = %e, "an rtsps:// host that TLS cannot name"))?;
                Some((self.rtsps().ok_or(())?, name))
            }
        };
        let bound = std::net::TcpListener::bind(("127.0.0.1", 0)).and_then(|l| {
            l.set_nonblocking(true)?;
            Ok((l.local_addr()?, l))
        });
        let (addr, listener) = bound.map_err(|e| tracing::error!(error = %e, "cannot bind the RTSP source relay"))?;
        let (mut session, events) = proxy::ProxySession::standalone(policy, label, addr);
        let timeout = Duration::from_secs(self.pull.open_timeout_secs.max(1));
        let task = self.runtime.spawn(async move {
            if let Ok(listener) = tokio::net::TcpListener::from_std(listener) {
                super::rtsp::relay(listener, super::rtsp::Upstream { target, tls }, timeout, events).await;
            }
        });
        session.end_with(task.abort_handle());
        Ok(session)
    }

    /// Run `job` on the runtime and wait for it from a runner thread; `None` when the task is stopped first (the
    /// job is then cancelled) or the runtime is shutting down. A panic of the job goes on in the runner thread
    /// (whose task then fails, as it would have had the job run there).
    pub fn run<T: Send + 'static>(
        &self,
        control: &Control,
        job: impl Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = sync_channel(1);
        let handle = self.runtime.spawn(job);
        let abort = handle.abort_handle();
        self.runtime.spawn(async move {
            let _ = tx.send(handle.await);
        });
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(Ok(v)) => return Some(v),
                Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Ok(Err(_)) => return None,
                Err(RecvTimeoutError::Timeout) if !control.stop_requested() => {}
                Err(_) => {
                    abort.abort();
                    return None;
                }
            }
        }
    }
}
