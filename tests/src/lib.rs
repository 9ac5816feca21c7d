//! Helpers for end-to-end tests: unique namespaces, daemons, cleanup in Drop.
