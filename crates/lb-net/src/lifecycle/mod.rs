//! The process around the balancer: where its listening sockets come from, how it hands them
//! to a successor, and what it tells systemd.
//!
//! A listening socket is bound here (`bind_shared`), inherited from the previous `lb` process
//! during an upgrade, or passed by systemd (socket activation). The last two arrive the same
//! way, as descriptors left open across `exec`, and are taken through one path,
//! [`PassedSockets::take_from_env`]:
//!
//! - `LB_INHERITED_FDS=NAME=FD,FD;@admin=FD` from a predecessor: each listener's sockets by
//!   listener name (every worker's), and the admin endpoint's;
//! - `LISTEN_FDS`/`LISTEN_PID`/`LISTEN_FDNAMES` from systemd, as `sd_listen_fds(3)` reads them
//!   (only when `LISTEN_PID` is this process).
//!
//! The upgrade itself ([`start_successor`]): the old process starts the program again with the
//! same arguments, standard input from `/dev/null`, the sockets in `LB_INHERITED_FDS` and the
//! write end of a pipe in `LB_UPGRADE_READY_FD`. The new process reads its configuration,
//! takes the sockets instead of binding, starts accepting, and writes `ready` to the pipe
//! ([`Readiness`]), or `error: WHY` if it cannot start. Only on `ready` does the old process
//! stop accepting; the sockets never close in between (both processes hold them), so no
//! connection is refused and no accept queue is lost.
//!
//! [`Notifier`] speaks systemd's notification protocol (`sd_notify(3)`), and stays silent
//! without `NOTIFY_SOCKET`.

mod notify;
mod passed;
mod successor;

pub use notify::Notifier;
pub use passed::{PassedSockets, Readiness};
pub use successor::{start_successor, Successor, READY_TIMEOUT};

/// The environment variable naming the descriptors a predecessor hands over.
pub const INHERITED_FDS: &str = "LB_INHERITED_FDS";
/// The environment variable naming the pipe on which a successor reports `ready`.
pub const READY_FD: &str = "LB_UPGRADE_READY_FD";
/// The environment variable giving a successor its predecessor's process id (for its logs).
pub const UPGRADED_FROM: &str = "LB_UPGRADED_FROM";
/// The key of the admin endpoint's socket in [`INHERITED_FDS`] (no listener name starts
/// with `@`).
pub const ADMIN_KEY: &str = "@admin";
