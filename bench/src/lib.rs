//! Benchmark support: frame generators shared by the criterion benches.
