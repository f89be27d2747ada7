//! The tests' fake SuperOps GraphQL API as a standalone server, for
//! `scripts/bench-superops.sh`: `fake_superops <tickets>` serves that many
//! tickets and prints its API URL, subdomain and token, then serves until
//! killed.

#[allow(dead_code)]
#[path = "../tests/common/fake_superops.rs"]
mod fake_superops;

fn main() {
    let tickets: i64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let fake = fake_superops::FakeSuperops::start();
    fake.add_tickets(1, tickets);
    println!(
        "http://{}/msp {} {}",
        fake.addr,
        fake_superops::SUBDOMAIN,
        fake_superops::TOKEN
    );
    loop {
        std::thread::park();
    }
}
