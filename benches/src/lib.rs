//! Criterion benchmarks and the algorithm simulation of the `lb` workspace.
//!
//! Run everything with `cargo bench` at the workspace root, or one part:
//!
//! - `cargo bench -p lb-benches --bench pick`: pick cost of every algorithm at 3, 100 and 1000
//!   backends, on one thread and on two threads at once, and Maglev table builds.
//! - `cargo bench -p lb-benches --bench simulation`: the deterministic workload replayed through
//!   each algorithm, printed as a table; a skewed-client workload through `ip_hash` with and
//!   without bounded load; and Maglev's disruption on removal.
//!
//! This library itself is empty; the benchmarks are in `benches/benches/`.
