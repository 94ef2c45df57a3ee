//! What each command does to the running balancer ([`Handle::execute_command`] calls
//! [`Handle::apply`]): the dispatch, and finding the pool and backend a command names.

use lb_core::{AddOptions, Algorithm, Change};

use super::*;

impl Handle {
    pub(super) async fn apply(&self, command: &Command) -> Result<Reply, Error> {
        let pools = &self.inner.pools;
        Ok(match command {
            Command::Add { pool, target, weight, state, backup } => {
                let runtime = pools.named_or_only(pool.as_deref(), "add")?;
                let addrs = target.resolve().await?;
                // Prefer IPv4 when a name resolves to both: backends usually listen on IPv4,
                // and `localhost` often resolves to ::1 first.
                let addr = addrs.iter().find(|a| a.is_ipv4()).copied().unwrap_or(addrs[0]);
                let options = AddOptions {
                    weight: *weight,
                    admin: state.unwrap_or_default(),
                    backup: *backup,
                };
                // With the time, so that with slow start it ramps (a backend added to a
                // running pool is as cold as one that just came up).
                runtime.pool.add_backend(addr, options, Some(Instant::now().into_std()))?;
                runtime.pool_changed();
                let weight = weight.unwrap_or(lb_core::DEFAULT_WEIGHT);
                let backup = if *backup { ", backup" } else { "" };
                Reply::Done(format!(
                    "added {} (weight {weight}, {}{backup})",
                    named(&runtime, addr),
                    state.unwrap_or_default()
                ))
            }
            Command::Remove(backend) => {
                let (runtime, addr) = self.find(backend, "remove").await?;
                let countdown = self.cancel_drain(&runtime, addr, "remove");
                remove_backend(&runtime.pool, addr)?;
                let name = named(&runtime, addr);
                Reply::Done(format!(
                    "removed {name}; its open connections will finish{}",
                    cancelled(countdown)
                ))
            }
            Command::Drain { backend, deadline, remove } => {
                let (runtime, addr) = self.find(backend, "drain").await?;
                runtime.pool.set_admin_state(addr, AdminState::Drain)?;
                let name = named(&runtime, addr);
                self.start_drain(&runtime, addr, *deadline, *remove);
                // `lb ctl drain ... --wait` reads the backend's name up to the first `: no new`.
                let mut text = format!("draining {name}: no new connections, open ones continue");
                if let Some(d) = deadline {
                    let d = super::drain::format_deadline(*d);
                    text.push_str(&format!(" for up to {d}, then are closed"));
                }
                if *remove {
                    text.push_str("; removed once empty");
                }
                Reply::Done(text)
            }
            Command::Maint(backend) => {
                let (runtime, addr) = self.find(backend, "maint").await?;
                let countdown = self.cancel_drain(&runtime, addr, "maint");
                runtime.pool.set_admin_state(addr, AdminState::Maint)?;
                Reply::Done(format!(
                    "{} in maintenance: no new connections{}",
                    named(&runtime, addr),
                    cancelled(countdown)
                ))
            }
            Command::Enable(backend) => {
                let (runtime, addr) = self.find(backend, "enable").await?;
                // The countdown first, so that the drain's task does not see the new state
                // before the command that set it is named as what cancelled it.
                let countdown = self.cancel_drain(&runtime, addr, "enable");
                runtime.pool.set_admin_state_at(
                    addr,
                    AdminState::Ready,
                    Instant::now().into_std(),
                )?;
                runtime.pool_changed();
                Reply::Done(format!("{} ready{}", named(&runtime, addr), cancelled(countdown)))
            }
            Command::Weight(backend, weight) => {
                let (runtime, addr) = self.find(backend, "weight").await?;
                set_backend_weight(&runtime.pool, addr, *weight)?;
                Reply::Done(format!("{} weight {weight}", named(&runtime, addr)))
            }
            Command::Algorithm { pool: None, algorithm: None } if pools.all().len() > 1 => {
                let all = pools.all();
                let each: Vec<String> =
                    all.iter().map(|p| format!("{} {}", p.name, p.pool.algorithm())).collect();
                Reply::Done(format!(
                    "algorithms: {} (available: {})",
                    each.join(", "),
                    Algorithm::names()
                ))
            }
            Command::Algorithm { pool: Some(name), algorithm: None }
                if pools.get(name).is_none() =>
            {
                // One word that is neither: a mistyped algorithm as often as a mistyped pool.
                return Err(Error::BadCommand(format!(
                    "no algorithm or pool named {name:?}: algorithms are {}; pools are {}",
                    Algorithm::names(),
                    self.pool_names().join(", ")
                )));
            }
            Command::Algorithm { pool, algorithm: None } => {
                let runtime = pools.named_or_only(pool.as_deref(), "algorithm")?;
                let prefix = runtime.log_prefix().map(|p| format!("{p}: ")).unwrap_or_default();
                Reply::Done(format!(
                    "{prefix}algorithm {} (available: {})",
                    runtime.pool.algorithm(),
                    Algorithm::names()
                ))
            }
            Command::Algorithm { pool, algorithm: Some(a) } => {
                let runtime = pools.named_or_only(pool.as_deref(), "algorithm")?;
                runtime.pool.set_algorithm(*a);
                let prefix = runtime.log_prefix().map(|p| format!("{p}: ")).unwrap_or_default();
                Reply::Done(format!("{prefix}algorithm {a}"))
            }
            Command::Stats(None) => Reply::Stats(Box::new(self.stats())),
            Command::Stats(Some(name)) => {
                let stats = self.stats();
                let pool = stats.pools.into_iter().find(|p| p.name == *name && !p.removed);
                Reply::PoolStats(Box::new(pool.ok_or_else(|| pools.unknown(name))?))
            }
            Command::Health(pool) => {
                let mut rows = self.health_by_pool();
                if let Some(name) = pool {
                    rows.retain(|p| p.pool == *name);
                    if rows.is_empty() {
                        return Err(pools.unknown(name));
                    }
                }
                Reply::Health(rows)
            }
            Command::WhatIf(inner) => {
                let (runtime, change) = self.change(inner).await?;
                let what_if = runtime.pool.what_if(&change)?;
                Reply::WhatIf(Box::new(WhatIfReply {
                    pool: runtime.name.to_string(),
                    command: inner.to_string(),
                    what_if,
                }))
            }
            Command::Explain { pool, client } => {
                let runtime = pools.named_or_only(pool.as_deref(), "explain")?;
                let explain = runtime.pool.explain(Some(*client));
                Reply::Explain(Box::new(ExplainReply {
                    pool: runtime.name.to_string(),
                    client: *client,
                    explain,
                }))
            }
            Command::Help => Reply::Help,
            Command::Reload => {
                let reloader = lock(&self.inner.reloader.0).clone();
                let Some(reload) = reloader else {
                    return Err(Error::Reload(
                        "no configuration file to reload (start lb with --config FILE)".into(),
                    ));
                };
                Reply::Done(reload().await?)
            }
            Command::Upgrade => {
                let upgrader = lock(&self.inner.upgrader.0).clone();
                let Some(upgrade) = upgrader else {
                    return Err(Error::Upgrade(
                        "this program does not upgrade itself (no upgrader set)".into(),
                    ));
                };
                Reply::Done(upgrade().await?)
            }
            Command::Quit => {
                self.shutdown();
                Reply::ShuttingDown
            }
        })
    }

    /// The pool a `what-if` is about, and the change its command would make.
    async fn change(&self, command: &Command) -> Result<(Arc<PoolRuntime>, Change), Error> {
        let pools = &self.inner.pools;
        Ok(match command {
            Command::Add { pool, target, weight, state, backup } => {
                let runtime = pools.named_or_only(pool.as_deref(), "what-if add")?;
                let addrs = target.resolve().await?;
                let addr = addrs.iter().find(|a| a.is_ipv4()).copied().unwrap_or(addrs[0]);
                let admin = state.unwrap_or_default();
                (runtime, Change::Add(addr, AddOptions { weight: *weight, admin, backup: *backup }))
            }
            Command::Remove(b) => {
                let (runtime, addr) = self.find(b, "what-if remove").await?;
                (runtime, Change::Remove(addr))
            }
            Command::Weight(b, w) => {
                let (runtime, addr) = self.find(b, "what-if weight").await?;
                (runtime, Change::Weight(addr, *w))
            }
            Command::Drain { backend: b, .. } | Command::Maint(b) | Command::Enable(b) => {
                let (state, name) = match command {
                    Command::Drain { .. } => (AdminState::Drain, "what-if drain"),
                    Command::Maint(_) => (AdminState::Maint, "what-if maint"),
                    _ => (AdminState::Ready, "what-if enable"),
                };
                let (runtime, addr) = self.find(b, name).await?;
                (runtime, Change::Admin(addr, state))
            }
            Command::Algorithm { pool, algorithm: Some(a) } => {
                let runtime = pools.named_or_only(pool.as_deref(), "what-if algorithm")?;
                (runtime, Change::Algorithm(*a))
            }
            other => {
                return Err(Error::BadCommand(format!(
                    "what-if: `{other}` changes no backend choice"
                )))
            }
        })
    }

    /// The pool and address a command's backend names: in its pool if it names one, else in
    /// whichever pool has it (an error if several do, naming them).
    async fn find(
        &self,
        backend: &BackendRef,
        command: &str,
    ) -> Result<(Arc<PoolRuntime>, SocketAddr), Error> {
        let addrs = backend.target.resolve().await?;
        let candidates: Vec<Arc<PoolRuntime>> = match &backend.pool {
            Some(name) => {
                vec![self.inner.pools.get(name).ok_or_else(|| self.inner.pools.unknown(name))?]
            }
            None => self.inner.pools.all().iter().cloned().collect(),
        };
        let mut found: Vec<(Arc<PoolRuntime>, SocketAddr)> = Vec::new();
        for runtime in candidates {
            if let Some(addr) = addrs.iter().copied().find(|a| runtime.pool.get(*a).is_some()) {
                found.push((runtime, addr));
            }
        }
        match found.len() {
            0 => Err(Error::Pool(lb_core::Error::UnknownBackend(addrs[0]))),
            1 => Ok(found.remove(0)),
            _ => {
                let names: Vec<&str> = found.iter().map(|(p, _)| &*p.name).collect();
                Err(Error::BadCommand(format!(
                    "{} is in pools {}: name one, e.g. `{command} {}/{}`",
                    backend.target,
                    names.join(" and "),
                    names[0],
                    backend.target
                )))
            }
        }
    }
}

/// The end of an answer to a command that cancelled a drain's countdown.
fn cancelled(countdown: bool) -> &'static str {
    if countdown {
        "; its drain's countdown is cancelled"
    } else {
        ""
    }
}
