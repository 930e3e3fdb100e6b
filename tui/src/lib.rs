//! strangler-tui: the terminal review UI (ratatui), talking to the admin API
//! only. Filled in by the TUI issue; empty for now.
