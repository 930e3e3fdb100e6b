//! strangler-shadow: shadow comparison, noise filtering, redaction and the
//! sled diff store. Filled in by the shadow issues; empty for now.
