//! Prints the simulation table for the default workload: `cargo run --release -p lb-core --example simulate`.
fn main() {
    let w = lb_core::sim::Workload::default();
    print!("{}", lb_core::sim::format_table(&lb_core::sim::simulate_all(&w)));
}
