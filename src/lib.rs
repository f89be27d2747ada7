//! Codex keeps a local copy of PSA tickets current, from webhooks and from
//! polling.
//!
//! How a webhook delivery flows:
//! 1. `http` (server loop, routes, `auth`) checks the secret, the
//!    allowlist and the rate limit, and reads the body;
//! 2. `delivery` makes the body a `TicketEvent` with its journal entry,
//!    through `psa`'s normalizers (one file per provider);
//! 3. `delivery::deliver` sends it to the writer as a `store` command over
//!    a bounded channel (503 when full) and waits; `http` maps what it came
//!    to (or any failure, in `http/failure.rs`) to the answer;
//! 4. the `store` writer thread applies what is queued in one transaction
//!    (group commit, newest version of each field wins) and answers after
//!    COMMIT, so a 2xx means the event is durable.
//!
//! How a poll flows: the `sync` poller thread (one per provider, one
//! instance leading) asks the PSA's API, through the provider's
//! `psa::PollSource` (changes, removals, the complete listing, lookups),
//! for what changed and sends it through the same writer; what it needs to read (the sync
//! state, active tickets, coverage) it reads on a `store::Reader` of its
//! own, and it publishes its role and runs on a `sync::PollerBoard`.
//! `status` is the one status type (the model, its rendering for
//! `/webhooks/health` and `codex status`, and the board and thread that
//! keep it current) that the status page renders too; `replay` sends journaled deliveries through
//! `delivery` and the writer again. `config` reads `codex.conf` and `reload`
//! applies a changed one; `preflight` checks the database path and the
//! address before a command changes anything; `service` wires it all
//! together, and `systemd` tells systemd how it goes and takes the socket
//! it passes; `logging` writes log lines that a request cannot forge (and
//! that fit journald).

#![forbid(unsafe_code)]

mod backup;
mod commands;
mod config;
mod delivery;
mod error;
mod http;
mod logging;
mod metrics;
mod preflight;
mod psa;
mod readers;
mod reload;
mod replay;
mod send_test;
mod service;
mod status;
mod store;
mod sync;
mod systemd;
mod timestamp;

pub use backup::{BackupError, backup};
pub use commands::{
    CommandError, Migrated, check_config, database_name, gen_secret, load_config, migrate, plan,
    serve, status, sync_once, sync_providers,
};
pub use config::Config;
pub use http::bind;
pub use logging::init as init_logging;
pub use reload::Plan;
pub use replay::{Replayed, Selection, replay};
pub use send_test::{SendTestError, TestEvent, send_test};
pub use service::{Service, ShutdownError, StartError, run};
