//! mailprobe: prove a mail server really moves mail.
//!
//! Folders are layers and imports point one way (see `docs/ARCHITECTURE.md`):
//! `core` and `model` are shared data, `io` and `protocol` speak to servers,
//! `analysis` judges reports, `probe` orchestrates checks, `report` renders them
//! and `app` is the command line. `main.rs` parses arguments and calls
//! [`app::run`]; tests drive the tool in-process the same way.

pub mod analysis;
pub mod app;
pub mod core;
pub mod io;
pub mod model;
pub mod probe;
pub mod protocol;
pub mod report;
