//! In-memory port for tests and benchmarks. (Owned by the pipeline work; placeholder.)
