//! What differs by operating system, one small module per concern, each with the portable
//! path first (the one Linux tests run wherever the OS allows it).

pub mod dirs;
pub mod docker_host;
pub mod fs;
pub mod local;
pub mod process;
