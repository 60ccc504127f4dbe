//! Starting the observer: [`Daemon::new`] binds the listeners, opens the
//! sinks, audit log and recovery, and wires the loop; the checks it makes
//! first (a part this build leaves out, the default socket directory).

use super::*;

/// Creates the default socket's directory when it does not exist
/// (`/run/varta` 0755 for root, a private 0700 directory otherwise).
fn prepare_default_dir(socket: &Path) -> Result<(), DaemonError> {
    if socket != varta_vlp::default_socket_path() {
        return Ok(());
    }
    let Some(dir) = socket.parent() else {
        return Ok(());
    };
    if dir.exists() {
        return Ok(());
    }
    use std::os::unix::fs::DirBuilderExt;
    let mode = if dir == Path::new("/run/varta") {
        0o755
    } else {
        0o700
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(os("cannot create the default socket directory"))
}

/// A configuration naming a part this build leaves out is refused at
/// start rather than silently run without it. Settings are named without
/// dashes: they may come from a flag, the file, or (safety profile) the
/// configuration compiled in.
fn refuse_unbuilt(cfg: &Config) -> Result<(), DaemonError> {
    let mut missing: Vec<&str> = Vec::new();
    if !cfg!(feature = "http") && cfg.metrics.is_some() {
        missing.push("prom-addr needs the HTTP server (feature http)");
    }
    if !cfg!(feature = "http") && cfg.control_socket.is_some() {
        missing.push("control-socket needs the HTTP server (feature http); set it to none");
    }
    if !cfg!(feature = "alerting") && cfg.alertmanager.is_some() {
        missing.push("alertmanager-url needs the Alertmanager client (feature alerting)");
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(DaemonError::NotBuilt(format!(
            "this build leaves out what the configuration asks for: {}",
            missing.join("; ")
        )))
    }
}

pub(super) fn tracker_settings(cfg: &Config, own_pidns: u32) -> TrackerSettings {
    TrackerSettings {
        capacity: cfg.tracker_capacity,
        threshold_ns: u64::try_from(cfg.threshold.as_nanos()).unwrap_or(u64::MAX),
        eviction: cfg.eviction_policy,
        max_beat_rate: cfg.max_beat_rate,
        global_beat_rate: cfg.global_beat_rate,
        global_beat_burst: cfg.global_beat_burst,
        own_pidns,
        allow_cross_namespace: cfg.allow_cross_namespace_agents,
    }
}

impl Daemon {
    /// Binds the socket and prepares the loop. `sink_factory` opens the
    /// configured sinks (default: [`crate::export::configured_sinks`]);
    /// `extra` sinks (e.g. a [`crate::events::Recorder`]) see every event.
    pub fn new(
        config: Config,
        sink_factory: Option<SinkFactory>,
        extra: Vec<Box<dyn Sink>>,
    ) -> Result<Daemon, DaemonError> {
        // The audit log first: a bad audit file must stop the start before
        // the socket exists, not leave a bound socket behind.
        // Signal handlers before anything becomes visible (the socket): a
        // SIGTERM sent as soon as the socket exists must mean a clean exit,
        // not the default action.
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])
            .map_err(os("cannot install signal handlers"))?;
        refuse_unbuilt(&config)?;
        let audit_counters = Arc::new(AuditCounters::default());
        // Measurements for /metrics, only taken when it is served.
        #[cfg(feature = "http")]
        let observations = config
            .metrics
            .as_ref()
            .map(|_| Arc::new(Observations::new()));
        #[cfg(not(feature = "http"))]
        let observations: Option<Arc<Observations>> = None;
        if let Some(o) = &observations {
            let _ = audit_counters.observations.set(o.clone());
        }
        let threshold_ns = Arc::new(std::sync::atomic::AtomicU64::new(
            u64::try_from(config.threshold.as_nanos()).unwrap_or(u64::MAX),
        ));
        let audit = match &config.audit {
            Some(a) => Some(
                AuditLog::open(
                    &AuditSettings {
                        file: a.clone(),
                        queue_capacity: crate::recovery::REQUEST_QUEUE,
                    },
                    std::process::id(),
                    audit_counters.clone(),
                )
                .map_err(|e| DaemonError::Audit(e.to_string()))?,
            ),
            None => None,
        };
        if let Some(p) = &config.watchdog.heartbeat_file {
            health::heartbeat_check(p).map_err(DaemonError::Heartbeat)?;
        }
        prepare_default_dir(&config.socket)?;
        let mut listener =
            UdsListener::bind(&config.socket, config.socket_mode, config.uds_rcvbuf_bytes)?;
        listener.set_policy(UdsPolicy {
            allow_cross_namespace: config.allow_cross_namespace_agents,
        });
        let mut tracker = Tracker::new(tracker_settings(&config, listener.own_pidns()));
        #[cfg(feature = "http")]
        if let Some(m) = &config.metrics {
            // Per-agent series exist for at most this many agents; only
            // those keep beat/stall tallies.
            tracker.set_tally_limit(m.per_agent_limit);
        }
        let counters = Arc::new(Counters::default());
        let udp = match &config.udp {
            Some(u) => Some(UdpListener::bind(
                u,
                u64::try_from(config.threshold.as_nanos()).unwrap_or(u64::MAX),
                counters.clone(),
            )?),
            None => None,
        };
        let poll = Poll::new().map_err(os("cannot create epoll instance"))?;
        let mut clock = ObserverClock::new(config.clock_source);
        let needs_recovery = config.recovery.is_some() || config.audit.is_some();
        // Always: the identity thread answers through it too.
        let waker = Some(Arc::new(
            mio::Waker::new(poll.registry(), WAKE).map_err(os("cannot create the loop's waker"))?,
        ));
        let registry = Arc::new(Registry::new(crate::identity::intern::DEFAULT_MAX_RECORDS));
        let policy = Policy::new(
            &config,
            registry,
            waker.clone().expect("created above"),
            clock.now().0,
        )
        .map_err(os("cannot start the identity thread"))?;
        policy.setup(&mut tracker);
        #[cfg(feature = "http")]
        if let Some(o) = &observations {
            let _ = o.identity.set(policy.stats());
        }
        let names = policy.names();
        let mut bus = EventBus::new();
        bus.add(Box::new(CountingSink::new(counters.clone())));
        bus.add(Box::new(policy.sink()));
        bus.add(Box::new(LogSink::new().with_names(names.clone())));
        for s in extra {
            bus.add(s);
        }
        let recovery = if let (true, Some(waker)) = (needs_recovery, waker.clone()) {
            let r = Recovery::start(
                config.recovery.as_ref(),
                audit,
                // Same origin as ours, so audit observer_ns matches events.
                clock.clone(),
                waker,
                observations.clone(),
            )?;
            bus.add(Box::new(r.tap().with_names(names.clone())));
            Some(r)
        } else {
            None
        };
        #[cfg(feature = "alerting")]
        if let Some(a) = &config.alertmanager {
            // Before base_sinks: a reload never reopens it (restart-only).
            let sink = crate::alert::start(a, names.clone())?;
            #[cfg(feature = "http")]
            if let Some(o) = &observations {
                let _ = o.alerts.set(sink.stats());
            }
            bus.add(Box::new(sink));
        }
        #[cfg(feature = "http")]
        let mut by_name = None;
        #[cfg(feature = "http")]
        if let Some(o) = &observations {
            bus.add(Box::new(OvershootSink::new(
                o.clone(),
                threshold_ns.clone(),
            )));
            let sink = ByNameSink::new(names.registry().clone());
            by_name = Some(sink.shared());
            bus.add(Box::new(sink));
        }
        #[cfg(feature = "http")]
        let prepared = control::prepare(
            &config,
            waker.clone().expect("created above"),
            &names,
            recovery.as_ref().map(Recovery::history),
            &mut bus,
        )?;
        let base_sinks = bus.len();
        let sink_factory = sink_factory.unwrap_or(crate::export::configured_sinks);
        for s in sink_factory(&config, &names).map_err(DaemonError::Sink)? {
            bus.add(s);
        }

        let clock_id = match config.clock_source {
            ClockSource::Monotonic => ClockId::CLOCK_MONOTONIC,
            ClockSource::Boottime => ClockId::CLOCK_BOOTTIME,
        };
        let timer = TimerFd::new(clock_id, TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC)
            .map_err(|e| os("cannot create timerfd")(e.into()))?;
        let registry = poll.registry();
        registry
            .register(&mut SourceFd(&listener.raw_fd()), UDS, Interest::READABLE)
            .map_err(os("cannot watch the socket"))?;
        if let Some(u) = &udp {
            registry
                .register(&mut SourceFd(&u.raw_fd()), UDP, Interest::READABLE)
                .map_err(os("cannot watch the UDP socket"))?;
        }
        registry
            .register(
                &mut SourceFd(&timer.as_fd().as_raw_fd()),
                TIMER,
                Interest::READABLE,
            )
            .map_err(os("cannot watch the timerfd"))?;
        registry
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(os("cannot watch signals"))?;

        let shutdown_at = config
            .shutdown_after
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let health = Arc::new(LoopHealth::new(&clock, config.clock_source));
        #[cfg(feature = "http")]
        let (control, mut api) = match prepared {
            Some(p) => (Some(p.control), Some((p.api, p.listener))),
            None => (None, None),
        };
        #[cfg(feature = "http")]
        let metrics = match (&config.metrics, waker, &observations) {
            (Some(m), Some(waker), Some(observations)) => Some(
                MetricsEndpoint::start(
                    m,
                    waker,
                    MetricsSources {
                        counters: counters.clone(),
                        audit: audit_counters.clone(),
                        recovery: recovery.as_ref().map(Recovery::stats),
                        http: None,
                        export: None,
                        observations: observations.clone(),
                        started: std::time::Instant::now(),
                        tracker_capacity: config.tracker_capacity,
                        granted_rcvbuf: listener.granted_rcvbuf(),
                        per_agent_limit: m.per_agent_limit,
                        udp_sender_capacity: match &config.udp {
                            Some(u)
                                if matches!(u.security, crate::config::UdpSecurity::Secure(_)) =>
                            {
                                u.sender_capacity
                            }
                            _ => 0,
                        },
                        by_name,
                    },
                    health.clone(),
                    api.take(),
                )
                .map_err(DaemonError::Metrics)?,
            ),
            _ => None,
        };
        #[cfg(feature = "http")]
        let http = api.map(control::serve_alone).transpose()?;
        #[cfg(feature = "http")]
        if let (Some(c), Some(o)) = (&control, &observations) {
            let _ = o.control.set(c.shared().stats.clone());
        }
        let mut pulse = Pulse::new(health.clone());
        // Last: opening the device arms it, so nothing after it may fail.
        if let Some(path) = &config.watchdog.hw_watchdog {
            pulse.set_hw(hw::HwWatchdog::open(path)?);
        }
        Ok(Daemon {
            config,
            clock,
            listener,
            udp,
            tracker,
            bus,
            base_sinks,
            sink_factory,
            policy,
            counters,
            poll,
            timer,
            signals,
            armed: None,
            shutdown_at,
            recovery,
            audit_counters,
            health,
            pulse,
            systemd: SystemdEnv::default(),
            // /-/healthy judges the loop by its ticks: tick when idle.
            #[cfg(feature = "http")]
            want_liveness: metrics.is_some(),
            #[cfg(not(feature = "http"))]
            want_liveness: false,
            #[cfg(feature = "http")]
            metrics,
            observations,
            threshold_ns,
            #[cfg(feature = "http")]
            control,
            #[cfg(feature = "http")]
            http,
        }
        .with_listeners())
    }
}
