//! The tests' fake Freshservice API as a standalone server, for
//! `scripts/bench-sync.sh`: `fake_freshservice <tickets>` serves that many
//! tickets and prints its API base URL and key, then serves until killed.

#[allow(dead_code)]
#[path = "../tests/common/fake_freshservice.rs"]
mod fake_freshservice;

fn main() {
    let tickets: i64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let fake = fake_freshservice::FakeFreshservice::start();
    fake.add_tickets(1, tickets, 2);
    println!("{} {}", fake.api_base(), fake_freshservice::API_KEY);
    loop {
        std::thread::park();
    }
}
