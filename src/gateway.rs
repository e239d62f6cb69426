//! `Gateway`: the running server. Binds every enabled listener, starts its tasks and reports the bound
//! addresses (so tests can ask for port 0).

use crate::api::{self, ApiState};
use crate::cluster::relay::edge::RelayedAnchors;
use crate::cluster::tasks::ClusterTasks;
use crate::cluster::{CpuMeter, Load, Registry};
use crate::config::Config;
use crate::config::RemoteViewers;
use crate::egress::whep::WhepService;
use crate::events::Outbox;
use crate::ingest::pull::PullService;
use crate::ingest::rtmp::{self, RtmpContext};
use crate::ingest::whip::WhipService;
use crate::room::RoomHub;
use crate::rtc::RtcEngine;
use crate::store::Store;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use tokio::task::JoinHandle;

/// Why the gateway did not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A listener (`what`: `rtmp`, `rtc` or `http`) cannot bind `addr`.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener: `rtmp`, `rtc` or `http`.
        what: &'static str,
        /// The address it was to bind (for `rtc`, the UDP one).
        addr: SocketAddr,
        /// The bind error.
        source: std::io::Error,
    },
    /// The SQLite store in the data dir cannot be opened.
    #[error("cannot open the database: {0}")]
    Store(#[from] crate::store::StoreError),
    /// Pull tasks that were running at the last stop cannot be started again.
    #[error("cannot resume pull tasks: {0}")]
    Resume(#[from] crate::ingest::pull::PullError),
    /// Cluster mode cannot start (a bad `cluster.redis_url`, a node id that cannot be kept).
    #[error("cluster: {0}")]
    Cluster(String),
    /// A TLS listener's certificate or key cannot be used.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// A running gateway: its shared services and the addresses it bound; dropping it stops its tasks.
pub struct Gateway {
    /// The configuration it runs with (connection caps lowered to fit the open-file limit).
    pub config: Arc<Config>,
    /// The rooms and their anchors.
    pub hub: Arc<RoomHub>,
    /// Address the HTTP server bound (the real port when the config asked for 0); with plain HTTP off
    /// (`http.plain = false`), the HTTPS listener's.
    pub http_addr: SocketAddr,
    /// Address the RTMP listener bound; `None` when RTMP (or plain RTMP) is off.
    pub rtmp_addr: Option<SocketAddr>,
    /// Address the HTTPS listener bound (`http.tls_listen`), if any.
    pub https_addr: Option<SocketAddr>,
    /// Address the RTMPS listener bound (`rtmp.tls_listen`), if any.
    pub rtmps_addr: Option<SocketAddr>,
    /// UDP address the SRT listener bound (`srt.listen`); `None` when SRT is off.
    pub srt_addr: Option<SocketAddr>,
    /// The WebRTC engine, when enabled (`rtc.enabled`).
    pub rtc: Option<Arc<RtcEngine>>,
    /// WHEP playback; `None` when the WebRTC engine is off.
    pub whep: Option<Arc<WhepService>>,
    /// WHIP publishing; `None` when the WebRTC engine is off.
    pub whip: Option<Arc<WhipService>>,
    /// Pull tasks (StartStreamIngest).
    pub pull: Arc<PullService>,
    /// The event callbacks' outbox.
    pub outbox: Arc<Outbox>,
    /// The SQLite store (callbacks, tasks).
    pub store: Arc<Store>,
    /// This node's entry in the cluster (a single node's lists itself alone).
    pub registry: Arc<Registry>,
    /// The cluster's pull tasks as this node takes part in them; `None` on a single node.
    pub cluster_tasks: Option<Arc<crate::cluster::tasks::ClusterTasks>>,
    tasks: Vec<JoinHandle<()>>,
    srt: Option<crate::ingest::srt::SrtListener>,
}

/// How often the recorder folds the histogram samples recorded since into its buckets. Until then it keeps every
/// sample (~16 bytes each): the per-frame delay histogram alone records ~80 a second per viewer, which grew
/// without bound on a gateway nobody scraped (a scrape also folds them).
const METRICS_UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The process-wide Prometheus recorder (a process has one, however many gateways a test starts), with a thread
/// that keeps its histograms folded (`METRICS_UPKEEP_EVERY`).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0])
                .expect("static buckets are valid")
                // Gateway-added delay per frame: source message read -> its RTP packets sent. Fine steps around
                // the 5 ms goal, so a p99 read from the buckets says which side of it a run is.
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full("roomgate_srt_receive_delay_seconds".into()),
                    &[
                        0.01, 0.02, 0.05, 0.08, 0.1, 0.11, 0.12, 0.13, 0.14, 0.16, 0.18, 0.2, 0.25, 0.3, 0.4, 0.5, 1.0,
                        2.0,
                    ],
                )
                .expect("static buckets are valid")
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full("roomgate_gateway_delay_seconds".into()),
                    &[
                        0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.0065, 0.008, 0.01, 0.015,
                        0.02, 0.05, 0.1, 0.5,
                    ],
                )
                .expect("static buckets are valid");
            match builder.install_recorder() {
                Ok(h) => {
                    let upkeep = h.clone();
                    let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || loop {
                        std::thread::sleep(METRICS_UPKEEP_EVERY);
                        upkeep.run_upkeep();
                        // The folded samples' blocks are freed by crossbeam's epoch collector, which cannot collect
                        // them while the fold itself holds the epoch: a pin and flush of our own advances the epoch
                        // and collects them now rather than at some later pin.
                        crossbeam_epoch::pin().flush();
                    });
                    if let Err(e) = spawned {
                        tracing::warn!(error = %e, "cannot start the metrics upkeep thread; histograms grow until scraped");
                    }
                    h
                }
                // Someone else installed a recorder: render an empty, private one rather than fail.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

impl Gateway {
    /// Open the store, bind every enabled listener, start the tasks and resume pull tasks and pending callbacks.
    pub async fn start(mut config: Config) -> Result<Gateway, GatewayError> {
        fit_open_file_limit(&mut config);
        let config = Arc::new(config);
        let hub = RoomHub::new();
        let metrics = metrics_handle();
        let mut tasks = Vec::new();
        let store = {
            let dir = config.data_dir.clone();
            Arc::new(
                tokio::task::spawn_blocking(move || Store::open(&dir))
                    .await
                    .expect("store open task")?,
            )
        };
        let pull = PullService::new(hub.clone(), config.clone(), store.clone());
        let outbox = Outbox::new(store.clone(), config.clone());
        // Subscribed now, forwarded to the outbox once the node knows whether it is in a cluster (below).
        let (room_events, task_events) = (hub.observe(), pull.observe());
        tasks.push(tokio::spawn(outbox.clone().keep_storing()));
        let pending = outbox.resume().await?;
        if pending > 0 {
            tracing::info!(callbacks = pending, "undelivered callbacks queued again");
        }
        // Delivered callbacks and ended tasks past their retention: once now, then hourly.
        tasks.push(tokio::spawn(crate::store::retention::run(
            store.clone(),
            crate::store::retention::Retention::from_days(
                config.callbacks.retention_days,
                config.pull.ended_task_retention_days,
            ),
        )));
        {
            // 202/204 when one kind of media stops while the other goes on.
            let hub = hub.clone();
            let idle = std::time::Duration::from_secs(config.callbacks.media_idle_secs.max(1));
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    hub.sweep_idle_media(idle);
                }
            }));
        }

        // One certificate for every TLS listener, checked for renewals while the gateway runs.
        let certificates = if config.https_listen().is_some() || config.rtmp.enabled && config.rtmps_listen().is_some()
        {
            let files = crate::tls::TlsFiles {
                cert: config.tls.cert_file.clone(),
                key: config.tls.key_file.clone(),
            };
            let certs = crate::tls::Certificates::load(files)?;
            let every = std::time::Duration::from_secs(config.tls.check_every_secs.max(1));
            tasks.push(tokio::spawn(certs.clone().watch(every)));
            Some(certs)
        } else {
            None
        };
        let rtmp_ctx = Arc::new(RtmpContext {
            hub: hub.clone(),
            config: config.clone(),
        });
        let rtmp_slots = rtmp::RtmpSlots::new(&config);
        let rtmp_addr = if config.rtmp.enabled && config.rtmp.plain {
            let (l, bound) = bind("rtmp", config.rtmp.listen).await?;
            tasks.push(tokio::spawn(rtmp::serve(l, rtmp_ctx.clone(), rtmp_slots.clone(), None)));
            Some(bound)
        } else {
            None
        };
        let rtmps_addr = match (&certificates, config.rtmps_listen()) {
            (Some(certs), Some(addr)) if config.rtmp.enabled => {
                let (l, bound) = bind("rtmps", addr).await?;
                let acceptor = Some(certs.acceptor(&[]));
                tasks.push(tokio::spawn(rtmp::serve(
                    l,
                    rtmp_ctx.clone(),
                    rtmp_slots.clone(),
                    acceptor,
                )));
                Some(bound)
            }
            _ => None,
        };

        let (srt_addr, srt) = if config.srt.enabled {
            let ctx = Arc::new(crate::ingest::srt::SrtContext {
                hub: hub.clone(),
                config: config.clone(),
            });
            let (addr, listener) =
                crate::ingest::srt::start(ctx, tokio::runtime::Handle::current()).map_err(|e| GatewayError::Bind {
                    what: "srt",
                    addr: config.srt.listen,
                    source: std::io::Error::other(e),
                })?;
            (Some(addr), Some(listener))
        } else {
            (None, None)
        };

        let (rtc, whep, whip) = if config.rtc.enabled {
            let addr = SocketAddr::new(config.rtc.bind, config.rtc.udp_port);
            let (engine, t) = RtcEngine::start(&config.rtc)
                .await
                .map_err(|source| GatewayError::Bind {
                    what: "rtc",
                    addr,
                    source,
                })?;
            tasks.extend(t);
            let engine = Arc::new(engine);
            let whep = WhepService::new(engine.clone(), hub.clone(), config.clone());
            let whip = WhipService::new(engine.clone(), hub.clone(), config.clone());
            (Some(engine), Some(whep), Some(whip))
        } else {
            (None, None, None)
        };

        let plain_http = if config.http.plain {
            Some(bind("http", config.http.listen).await?)
        } else {
            None
        };
        let https = match (&certificates, config.https_listen()) {
            (Some(certs), Some(addr)) => Some((bind("https", addr).await?, certs.acceptor(&[b"http/1.1"]))),
            _ => None,
        };
        let https_addr = https.as_ref().map(|((_, a), _)| *a);
        // What the node calls its HTTP address (cluster entry, printed URLs): plain HTTP's, else HTTPS's.
        let http_addr = plain_http
            .as_ref()
            .map(|(_, a)| *a)
            .or(https_addr)
            .expect("validated: plain HTTP or HTTPS is on");
        let advertised = https_addr.map_or(("http", http_addr.port()), |a| ("https", a.port()));
        let mut registry = node_registry(&config, advertised, &hub, rtc.clone(), &pull)?;
        if registry.clustered() && !config.cluster.secret.is_empty() {
            // This node's anchors are served to the other nodes' relay links.
            let (l, bound) = bind("relay", config.cluster.relay_listen).await?;
            let secret: Arc<str> = config.cluster.secret.as_str().into();
            tasks.push(tokio::spawn(crate::cluster::relay::owner::serve(
                l,
                hub.clone(),
                secret,
            )));
            let relay = crate::cluster::advertise_relay(&config, bound);
            registry = registry.with_relay(relay);
            if let (Some(whep), RemoteViewers::Relay) = (&whep, config.cluster.whep) {
                let relayed = RelayedAnchors::new(registry.clone(), config.cluster.secret.clone());
                whep.play_remote(Arc::new(relayed));
            }
        }
        if registry.clustered() {
            // The other nodes see this node's rooms, refreshed at once when an anchor joins or leaves.
            let snapshot_hub = hub.clone();
            registry.share_rooms(move || api::rooms::snapshot(&snapshot_hub));
            // Joins are announced to the other nodes (a publisher entering here replaces one with its identity
            // there), and theirs are applied here.
            let (mut events, member) = (hub.observe(), registry.clone());
            tasks.push(tokio::spawn(async move {
                while let Some(ev) = events.recv().await {
                    if let crate::room::RoomEvent::AnchorEntered { key, userid, .. } = &ev {
                        member.announce_join(key, userid).await;
                    }
                    member.poke();
                }
            }));
            tasks.push(tokio::spawn(registry.clone().listen_for_takeovers(hub.clone())));
        }
        tasks.push(tokio::spawn(registry.clone().run()));
        let cluster_tasks = ClusterTasks::new(&registry, pull.clone(), &config.cluster);
        if let Some(t) = &cluster_tasks {
            tasks.push(tokio::spawn(t.clone().run()));
            tasks.push(tokio::spawn(t.clone().listen()));
        }
        let room_events = if registry.clustered() {
            // 101/102 are decided for the cluster: once per room, whichever node's anchors come and go.
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            registry.decide_rooms_into(tx.clone());
            tasks.push(tokio::spawn(crate::cluster::rooms::decide(
                registry.clone(),
                room_events,
                tx,
            )));
            rx
        } else {
            room_events
        };
        tasks.push(tokio::spawn(crate::events::outbox::forward(
            outbox.clone(),
            room_events,
            task_events,
        )));
        let app = api::router(ApiState {
            hub: hub.clone(),
            metrics,
            config: config.clone(),
            whep: whep.clone(),
            whip: whip.clone(),
            pull: Some(pull.clone()),
            outbox: Some(outbox.clone()),
            cloud_rate: Default::default(),
            cloud_replay: Default::default(),
            rtmp_port: rtmp_addr.map(|a| a.port()),
            rtmps_port: rtmps_addr.map(|a| a.port()),
            srt_port: srt_addr.map(|a| a.port()),
            registry: registry.clone(),
            cluster_tasks: cluster_tasks.clone(),
        });
        let limits = api::server::HttpLimits::from(&config.http);
        // One set of connection caps for HTTP and HTTPS together.
        let counter = crate::limits::ConnectionCounter::new(limits.max_connections, limits.max_connections_per_ip);
        if let Some(((l, _), acceptor)) = https {
            let side = api::server::HttpsSide {
                acceptor,
                hsts_max_age_secs: config.tls.hsts_max_age_secs,
            };
            let serve = api::server::serve(l, app.clone(), limits.clone(), counter.clone(), Some(side));
            tasks.push(tokio::spawn(serve));
        }
        if let Some((l, _)) = plain_http {
            tasks.push(tokio::spawn(api::server::serve(l, app, limits, counter, None)));
        }

        // In a cluster, Redis says where tasks run: this node takes its own back from there (its leases), and its
        // SQLite rows are not resumed (another node may have taken them over and ended them since).
        let resumed = if cluster_tasks.is_some() {
            0
        } else {
            let pull = pull.clone();
            tokio::task::spawn_blocking(move || pull.resume_all())
                .await
                .expect("resume task")?
        };
        if resumed > 0 {
            tracing::info!(tasks = resumed, "pull tasks resumed");
        }

        Ok(Gateway {
            config,
            hub,
            pull,
            outbox,
            store,
            http_addr,
            rtmp_addr,
            https_addr,
            rtmps_addr,
            srt_addr,
            rtc,
            whep,
            whip,
            registry,
            cluster_tasks,
            tasks,
            srt,
        })
    }

    /// Stop as a node of the cluster: take this node's entry out of the registry at once (a node that just dies
    /// is gone once its entry expires), then stop.
    pub async fn stop(mut self) {
        if let Some(t) = &self.cluster_tasks {
            // Other nodes resume this node's tasks at their next sync, not after the lease.
            t.release().await;
            self.pull.shutdown();
        }
        if let Err(e) = self.registry.leave().await {
            tracing::warn!(error = %e, "cannot take this node out of the cluster registry; it expires on its own");
        }
        // The 102s of rooms this node was the last in reach the outbox (which stores them) before the tasks stop.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        self.shutdown();
    }

    /// A draining stop's first part: take no new work (other nodes stop placing here; WHIP publishers are sent
    /// elsewhere) and wait until no RTMP or WHIP publisher is left, for at most `timeout`. Pull tasks are not
    /// waited for: they stop with the node and resume where they were when it starts again.
    pub async fn drain(&self, timeout: std::time::Duration) {
        self.registry.drain();
        let publishers = || {
            let rooms = self.hub.rooms();
            rooms
                .iter()
                .flat_map(|r| r.participants())
                .filter(|a| a.source != crate::room::SourceKind::Pull)
                .count()
        };
        tracing::info!(
            publishers = publishers(),
            timeout_secs = timeout.as_secs(),
            "draining: no new work"
        );
        let until = tokio::time::Instant::now() + timeout;
        while publishers() > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        match publishers() {
            0 => tracing::info!("drained: no publisher left"),
            n => tracing::warn!(publishers = n, "drain timeout: stopping with publishers still here"),
        }
    }

    /// Stop accepting; tasks are aborted.
    pub fn shutdown(&mut self) {
        self.pull.shutdown();
        self.srt = None;
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

/// This node's registry: in Redis when `cluster.redis_url` is set, else a single node's. Its load is measured at
/// each refresh: CPU share, WebRTC sessions, anchors, pull tasks.
fn node_registry(
    config: &Config,
    http: (&str, u16),
    hub: &Arc<RoomHub>,
    rtc: Option<Arc<RtcEngine>>,
    pull: &Arc<PullService>,
) -> Result<Arc<Registry>, GatewayError> {
    let id = crate::cluster::node_id(config).map_err(|e| GatewayError::Cluster(format!("node id: {e}")))?;
    let http = crate::cluster::advertise_http(config, http);
    let (hub, pull, cpu) = (hub.clone(), pull.clone(), CpuMeter::default());
    let (max_sessions, max_tasks, max_load) = (config.rtc.max_sessions, config.pull.max_tasks, config.cluster.max_load);
    let load = move || {
        let (cpu, sessions) = (cpu.read(), rtc.as_ref().map_or(0, |r| r.session_count()));
        let pull_tasks = pull.list().len();
        let score = Load::score(cpu, sessions, max_sessions, pull_tasks, max_tasks);
        Load {
            cpu,
            sessions,
            anchors: hub.rooms().iter().map(|r| r.participants().len()).sum(),
            pull_tasks,
            score,
            accepting: score <= max_load,
        }
    };
    if config.cluster.redis_url.is_empty() {
        return Ok(Registry::local(id, http, load));
    }
    let registry = Registry::new(
        &config.cluster.redis_url,
        crate::cluster::Seal::new(&config.cluster.secret),
        id,
        http,
        load,
    )
    .map_err(|e| GatewayError::Cluster(e.to_string()))?;
    tracing::info!(node = registry.node_id(), "cluster mode: this node registers in Redis");
    Ok(registry)
}

/// Raise the open-file limit to its hard limit, log it, and lower the connection caps that would not fit under it
/// (each connection and session holds at least one descriptor).
fn fit_open_file_limit(config: &mut Config) {
    let Some(nofile) = crate::limits::raise_nofile_limit() else {
        return;
    };
    tracing::info!(nofile, "open-file limit");
    let tcp = if config.rtc.tcp_enabled {
        config.rtc.tcp_max_connections
    } else {
        0
    };
    let mut tcp_cap = tcp;
    let warnings = crate::limits::clamp_caps(
        nofile,
        &mut [
            ("http.max_connections", &mut config.http.max_connections),
            ("rtmp.max_connections", &mut config.rtmp.max_connections),
            ("rtc.tcp_max_connections", &mut tcp_cap),
            ("pull.max_tasks", &mut config.pull.max_tasks),
        ],
    );
    if config.rtc.tcp_enabled {
        config.rtc.tcp_max_connections = tcp_cap.max(1);
    }
    config.http.max_connections_per_ip = config.http.max_connections_per_ip.min(config.http.max_connections);
    config.rtc.tcp_max_connections_per_ip = config
        .rtc
        .tcp_max_connections_per_ip
        .min(config.rtc.tcp_max_connections);
    for w in warnings {
        tracing::warn!("{w}");
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A TCP listener on `addr` and the address it got (port 0 picks one), or which listener could not bind.
async fn bind(what: &'static str, addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), GatewayError> {
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| GatewayError::Bind { what, addr, source })?;
    let bound = l.local_addr().expect("bound socket has an address");
    Ok((l, bound))
}
