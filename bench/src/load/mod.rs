//! `vswitch-load`: a packet generator and an RFC 2544 / RFC 2889 harness that loads vswitch,
//! the Linux kernel bridge and Open vSwitch's userspace datapath through the same
//! N-namespace topology.
//!
//! * [`frame`] — test frames (sequence number + CLOCK_MONOTONIC timestamp), errored frames;
//! * [`pace`] — the token-bucket pacer; [`search`] — binary search and loss-step logic (pure);
//! * [`sys`] — AF_PACKET sockets with `sendmmsg`/`recvmmsg`, setns threads (all `unsafe`);
//! * [`gen`] — one trial: senders and receivers in the namespaces, counts and latency;
//! * [`target`] — building and tearing down the devices under test;
//! * [`suite`] — the RFC procedures; [`report`] — progress line, tables, PNG plots.

pub mod frame;
pub mod gen;
pub mod pace;
pub mod report;
pub mod search;
pub mod suite;
pub mod sys;
pub mod target;
